//! What every Verimail process needs to serve, the gateway included: configuration, telemetry,
//! the gRPC bootstrap (health that follows the checks it is given, reflection), metrics
//! plumbing, TLS, shutdown, the command line, credentials, rate limits and paging, and the
//! request values every service checks at its edge alike (email addresses).
//! Nothing here knows a database or NATS (that is `verimail-events`), nor one service's rules.

pub mod address;
pub mod admin;
pub mod backoff;
pub mod callers;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod host;
pub mod internal;
pub mod limits;
pub mod locale;
pub mod metrics;
pub mod nats;
pub mod paging;
pub mod shutdown;
pub mod telemetry;
pub mod templates;
pub mod tls;
pub mod variables;

/// Bytes as lower-case hexadecimal: the text form of every hash and MAC kept or shown.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// RFC 3339 in UTC with millisecond precision: the one text form of a time in every contract.
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A time bound given in a request (RFC 3339, any offset): `None` when empty, else
/// INVALID_ARGUMENT naming `field` if it does not parse.
pub fn time_filter(field: &str, value: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, tonic::Status> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|at| Some(at.with_timezone(&chrono::Utc)))
        .map_err(|_| grpc::invalid_argument(field, "must be an RFC 3339 time such as 2026-11-24T09:30:00Z"))
}
