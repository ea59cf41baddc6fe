//! email-service: the courier. Consumes users.registered, users.verification_requested and
//! users.signup_attempted, asks auth-service for a token, renders a text + HTML email and sends
//! it over SMTP, recording every delivery (pending, sent, failed, parked). It decides nothing
//! about users or tokens: it carries what the others decided.

pub mod app;
pub mod bounce;
pub mod config;
pub mod courier;
pub mod dkim;
pub mod error;
pub mod grpc;
pub mod human;
pub mod mail;
pub mod mailbox;
pub mod metrics;
pub mod store;
pub mod suppression;

pub use app::App;
pub use config::Config;

/// The commands email-service runs instead of serving: `--dkim-dns-record` prints the DNS
/// record to publish for the configured DKIM key.
pub fn commands(args: &[String]) -> Option<anyhow::Result<()>> {
    (args.first().map(String::as_str) == Some("--dkim-dns-record"))
        .then(|| dkim::print_dns_record(&verimail_server::config::Vars::env()))
}
