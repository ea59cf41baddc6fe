//! user-service: owns users (normalized email, argon2id password hash, verification status).
//! Publishes users.registered, users.verification_requested and users.signup_attempted through
//! its outbox and consumes auth.email_verified. Tokens, codes and mail belong to the others.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod store;

pub use app::App;
pub use config::Config;
