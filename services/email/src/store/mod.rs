//! email-service's tables, one module each (its entity and every statement on it), and every
//! migration in order. Only the domain modules call these; the gRPC adapter never does.

pub mod bounces;
pub mod deliveries;
pub mod migrations;
pub mod suppressions;
pub mod webhook_deliveries;
pub mod webhook_endpoints;

pub use migrations::Migrator;
