//! email-service: the courier. Consumes users.registered and users.verification_requested,
//! asks auth-service for a token, renders a text + HTML email and sends it over SMTP,
//! recording every delivery (pending, sent, failed, parked).

pub mod app;
pub mod config;
pub mod courier;
pub mod grpc;
pub mod mail;
pub mod metrics;
pub mod store;

pub use app::App;
pub use config::Config;
