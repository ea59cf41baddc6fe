//! email-service: the courier. Consumes the users.* events that ask for an email, asks
//! auth-service for a token, renders a text + HTML email and sends it over SMTP, recording
//! every delivery (pending, sent, failed, parked); reads what comes back and keeps the
//! suppression list; and POSTs the events a team's services act on to the webhook endpoints
//! an operator registers. It decides nothing about users or tokens: it carries what the others
//! decided.
//!
//! Where things are: [`grpc`] is the ops API's adapter over [`courier`] (sending),
//! [`courier::ledger`] (what became of each email), [`suppression`] (what came back) and
//! [`webhooks`] (the events POSTed to a team's endpoints); [`store`] has one module per table;
//! [`app`] puts them together.

pub mod address_key;
pub mod app;
pub mod bounce;
pub mod config;
pub mod courier;
pub mod error;
pub mod grpc;
pub mod mailbox;
pub mod metrics;
pub mod store;
pub mod suppression;
pub mod webhooks;

pub use app::App;
pub use config::Config;

/// email-service as its start-up knows it: its name, defaults, configuration and commands.
pub const SERVICE: verimail_startup::Service<Config> = verimail_startup::Service {
    name: "email-service",
    defaults: &config::DEFAULTS,
    config: Config::from_vars,
    commands,
};

/// The commands email-service runs instead of serving: `--dkim-dns-record` prints the DNS
/// record to publish for the configured DKIM key.
pub fn commands(args: &[String]) -> Option<anyhow::Result<()>> {
    (args.first().map(String::as_str) == Some("--dkim-dns-record"))
        .then(|| verimail_mail::dkim::print_dns_record(&verimail_server::config::Vars::env()))
}
