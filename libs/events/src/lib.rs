//! The event backbone of the services that own data: the database connection and its single
//! writer, JetStream streams, publishing, consuming with retry and parking, and the
//! transactional outbox with its relay. What a process needs to serve (configuration, gRPC,
//! metrics plumbing) is `verimail-server`; the names of streams and subjects are the contracts'
//! (`verimail-proto`).

pub use verimail_server::backoff;
pub mod bus;
pub mod db;
pub mod erasure;
pub mod metrics;
pub mod outbox;
pub mod parking;
pub mod retention;
