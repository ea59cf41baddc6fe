use crate::token::TokenKeys;
use std::time::Duration;
use verimail_kit::config::{self, ConfigError};

/// auth-service's configuration, from the environment.
pub struct Config {
    /// `OUTBOX_RETENTION_SECONDS`: how long published events stay in the outbox table.
    pub outbox_retention: std::time::Duration,
    /// `AUTH_GRPC_ADDR`
    pub grpc_addr: String,
    /// `DATABASE_URL`
    pub database_url: String,
    /// `NATS_URL`
    pub nats_url: String,
    /// `AUTH_TOKEN_KEYS`: comma-separated PASERK `k4.local.…` keys; the first issues tokens,
    /// all are accepted (rotation: put the new key first and keep the old one until its
    /// tokens have expired).
    pub keys: TokenKeys,
    /// `VERIFICATION_TOKEN_TTL_SECONDS` (default 24 h).
    pub token_lifetime: Duration,
    /// `VERIFICATION_CODE_TTL_SECONDS`: how long a 6-digit code works (default 1 hour).
    pub code_lifetime: Duration,
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let keys = match config::var("AUTH_TOKEN_KEYS") {
            Some(list) => {
                let paserks: Vec<&str> = list.split(',').filter(|k| !k.trim().is_empty()).collect();
                TokenKeys::from_paserk(&paserks).map_err(|e| ConfigError::new("AUTH_TOKEN_KEYS", e))?
            }
            None if config::is_production() && config::var("ALLOW_GENERATED_TOKEN_KEY").as_deref() != Some("true") => {
                return Err(ConfigError::new(
                    "AUTH_TOKEN_KEYS",
                    "is required in production (a generated key dies with the process; \
                     set ALLOW_GENERATED_TOKEN_KEY=true to accept that)",
                ));
            }
            None => {
                let keys = TokenKeys::generate().map_err(|e| ConfigError::new("AUTH_TOKEN_KEYS", e))?;
                tracing::warn!(
                    "AUTH_TOKEN_KEYS is not set: generated a key for this run only; tokens will not survive a restart"
                );
                keys
            }
        };
        Ok(Config {
            outbox_retention: config::seconds("OUTBOX_RETENTION_SECONDS", verimail_kit::outbox::DEFAULT_RETENTION)?,
            grpc_addr: config::string("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
            database_url: config::database_url("auth.db"),
            nats_url: config::nats_url(),
            keys,
            token_lifetime: config::seconds("VERIFICATION_TOKEN_TTL_SECONDS", Duration::from_secs(24 * 3600))?,
            code_lifetime: config::seconds("VERIFICATION_CODE_TTL_SECONDS", Duration::from_secs(3600))?,
        })
    }
}
