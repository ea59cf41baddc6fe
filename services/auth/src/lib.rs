//! auth-service: the only holder of keys. Issues the tokens of verification links (a random id
//! and its MAC; what the link is for stays here by that id) and codes, checks them (key,
//! purpose, expiry, single use) and publishes auth.email_verified
//! through its outbox; signs the PASETO v4.public access tokens of signed-in users and
//! publishes the keys that verify them. It stores no users and sends no mail. On users.deleted
//! it erases the address from the user's tokens and codes.

pub mod access;
pub mod app;
pub mod authority;
pub mod claim;
pub mod code;
pub mod config;
pub mod erasure;
pub mod error;
pub mod grpc;
pub mod issue;
pub mod links;
pub mod metrics;
pub mod reset;
pub mod store;
pub mod undo;
pub mod verify;

pub use app::App;
pub use config::Config;

/// auth-service as its start-up knows it: its name, defaults, configuration and commands.
pub const SERVICE: verimail_startup::Service<Config> = verimail_startup::Service {
    name: "auth-service",
    defaults: &config::DEFAULTS,
    config: Config::from_vars,
    commands,
};

/// auth-service's own commands: `--new-signing-key` prints a fresh Ed25519 key (PASERK
/// `k4.secret.…`) for `AUTH_SIGNING_KEYS`.
pub fn commands(args: &[String]) -> Option<anyhow::Result<()>> {
    if args.first().map(String::as_str) != Some("--new-signing-key") {
        return None;
    }
    Some(access::SigningKeys::generate().map_err(anyhow::Error::msg).map(|keys| {
        #[allow(clippy::print_stdout, reason = "the command's output")]
        {
            println!("{}", keys.current_paserk());
        }
    }))
}
