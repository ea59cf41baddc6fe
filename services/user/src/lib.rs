//! user-service: owns users (normalized email, argon2id password hash, verification status).
//! Publishes users.registered, users.verification_requested, users.signup_attempted,
//! users.verified, users.deleted and users.sessions_revoked through its outbox and consumes auth.email_verified (and
//! users.deleted, for its parked messages). Deletes accounts never verified in time. Keeps sessions (refresh tokens) and the feed of
//! those that ended. Tokens,
//! codes and mail belong to the others.

pub mod accounts;
pub mod app;
pub mod config;
pub mod dns;
pub mod email_change;
pub mod error;
pub mod grpc;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod password;
pub mod recovery;
pub mod registration;
pub mod revocation;
pub mod sessions;
pub mod sign_in;
pub mod store;
pub mod typos;
pub mod undeliverable;
pub mod verification;

pub use app::App;
pub use config::Config;

/// user-service as its start-up knows it: its name, defaults, configuration and commands.
pub const SERVICE: verimail_startup::Service<Config> = verimail_startup::Service {
    name: "user-service",
    defaults: &config::DEFAULTS,
    config: Config::from_vars,
    commands: verimail_startup::no_commands,
};
