//! email-service: the courier. Consumes users.registered, users.verification_requested and
//! users.signup_attempted, asks auth-service for a token, renders a text + HTML email and sends
//! it over SMTP, recording every delivery (pending, sent, failed, parked). It decides nothing
//! about users or tokens: it carries what the others decided.

pub mod app;
pub mod config;
pub mod courier;
pub mod error;
pub mod grpc;
pub mod mail;
pub mod metrics;
pub mod store;

pub use app::App;
pub use config::Config;
