//! System tests: every test starts its own stack (nats-server, services, gateway, SMTP).
//! One test binary, so the suite links once.

mod bad_input;
mod bad_input_table;
mod bounces;
mod clients;
mod codes;
mod compose;
mod deliverability;
mod downstream;
mod email_change;
mod enumeration;
mod faults;
mod gateway;
mod grpcurl;
mod internal;
mod kubernetes;
mod lifecycle;
mod limits;
mod mail_layout;
mod metrics;
mod migrations;
mod nats_permissions;
mod operability;
mod ops;
mod pages;
mod passwords;
mod production;
mod real_browser;
mod retention;
mod rotation;
mod sessions;
mod sign_in;
mod smtp;
mod takeover;
mod tls;
mod traces;
mod upgrade;
mod verification;
mod webhooks;

use std::time::Duration;

/// Generous bounds: a loaded two-core CI machine, never a fixed sleep.
pub const EMAIL_WAIT: Duration = Duration::from_secs(20);
pub const STATUS_WAIT: Duration = Duration::from_secs(20);
