//! auth-service: the only holder of token keys. Issues PASETO v4.local email verification
//! tokens, checks them (key, purpose, expiry, single use) and publishes auth.email_verified
//! through its outbox.

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
