//! What every Verimail service shares: typed configuration helpers, telemetry set-up, the gRPC
//! server bootstrap (health + reflection), the database connection, the JetStream bus and the
//! transactional outbox with its relay.

pub mod backoff;
pub mod bus;
pub mod config;
pub mod db;
pub mod grpc;
pub mod internal;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod parking;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// RFC 3339 in UTC with millisecond precision: the one text form of a time in every contract.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
