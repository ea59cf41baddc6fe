//! Webhooks: the events a team's services act on, POSTed to the endpoints an operator
//! registers, in the Standard Webhooks format (`sign`), at least once and in order per user,
//! retried on a schedule over about a day and parked at its end (`dispatch`), from durable
//! consumers of the USERS and EMAIL streams that record what is owed before they acknowledge
//! (`intake`); endpoints only where they may go (`guard`). docs/webhooks.md is the contract.

pub mod dispatch;
pub mod endpoints;
pub mod guard;
pub mod http;
pub mod intake;
pub mod payload;
pub mod sign;

use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use verimail_server::config::{ConfigError, Vars};

/// How webhooks go out (`WEBHOOK_*`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `WEBHOOK_ALLOW_PRIVATE_NETWORKS` (default false): endpoints at loopback, private and
    /// link-local addresses too (tests, or a receiver inside your own network).
    pub allow_private: bool,
    /// `WEBHOOK_TIMEOUT_SECONDS` (default 10): one attempt, connection to the last byte read.
    pub timeout: Duration,
    /// `WEBHOOK_RETRY_SCHEDULE` (seconds, comma-separated): the wait before each attempt after
    /// the first; past the last the delivery is parked.
    pub schedule: Vec<Duration>,
}

/// The default schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after the first attempt
/// (about 27.6 hours, eight attempts), each wait ±20% at random.
pub const SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

impl WebhookConfig {
    pub fn from_vars(vars: &Vars) -> Result<WebhookConfig, ConfigError> {
        let schedule = match vars.var("WEBHOOK_RETRY_SCHEDULE") {
            None => SCHEDULE.map(Duration::from_secs).to_vec(),
            Some(text) => text
                .split(',')
                .map(|wait| {
                    wait.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ConfigError::new("WEBHOOK_RETRY_SCHEDULE", "seconds, comma-separated (e.g. 5,300,1800)")
                })?,
        };
        let allow_private = vars.parse("WEBHOOK_ALLOW_PRIVATE_NETWORKS", false)?;
        if allow_private && vars.is_production() {
            tracing::warn!("WEBHOOK_ALLOW_PRIVATE_NETWORKS is on: webhooks may reach addresses inside your network");
        }
        Ok(WebhookConfig {
            allow_private,
            timeout: vars.seconds("WEBHOOK_TIMEOUT_SECONDS", Duration::from_secs(10))?,
            schedule,
        })
    }
}

/// Webhooks' state: the database, the HTTP client, and two bells: one the workers hear
/// (deliveries are owed), one the dispatcher hears (endpoints changed).
#[derive(Clone)]
pub struct Webhooks {
    pub db: DatabaseConnection,
    pub client: Arc<http::Client>,
    pub config: WebhookConfig,
    pub wake: Arc<Notify>,
    pub endpoints_changed: Arc<Notify>,
}

impl Webhooks {
    pub fn new(db: DatabaseConnection, config: WebhookConfig) -> anyhow::Result<Webhooks> {
        let client = http::Client::new(config.allow_private, config.timeout).map_err(anyhow::Error::msg)?;
        Ok(Webhooks {
            db,
            client: Arc::new(client),
            config,
            wake: Arc::new(Notify::new()),
            endpoints_changed: Arc::new(Notify::new()),
        })
    }
}
