//! user-service's tables, one module each (its entity and every statement on it), and every
//! migration in order. Only the domain modules call these; the gRPC adapter never does.

pub mod email_changes;
pub mod migrations;
pub mod sessions;
pub mod undeliverable;
pub mod users;

pub use migrations::Migrator;
