//! auth-service: the only holder of token keys. Issues PASETO v4.local email verification
//! tokens and codes, checks them (key, purpose, expiry, single use) and publishes
//! auth.email_verified through its outbox. It stores no users and sends no mail.

pub mod app;
pub mod claim;
pub mod code;
pub mod config;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod store;
pub mod token;

pub use app::App;
pub use config::Config;
