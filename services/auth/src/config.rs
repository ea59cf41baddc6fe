use crate::access::SigningKeys;
use crate::links::TokenKeys;
use std::time::Duration;
use verimail_server::config::{ConfigError, Vars};
use verimail_startup::backbone::{BackboneConfig, Defaults};

/// Where auth-service listens and keeps its data unless told otherwise.
pub const DEFAULTS: Defaults = Defaults {
    part: "auth",
    grpc: ("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
    metrics_addr: "127.0.0.1:9102",
    database_file: "auth.db",
};

/// auth-service's configuration, from the environment.
pub struct Config {
    /// Addresses, TLS, the database and NATS: see [`BackboneConfig`].
    pub backbone: BackboneConfig,
    /// `GATEWAY_SERVICE_TOKEN`: the fronts that may name the browser they call for.
    pub fronts: verimail_server::internal::ServiceCredential,
    /// `EMAIL_SERVICE_TOKEN`: the only caller that may have tokens issued (email-service).
    pub issuer: verimail_server::internal::ServiceCredential,
    /// `USER_SERVICE_TOKEN`: the only caller that may have access tokens signed (user-service).
    pub signs_for: verimail_server::internal::ServiceCredential,
    /// `ADMIN_TOKEN`: what ops RPCs require; see [`AdminCredential`](verimail_server::admin::AdminCredential).
    pub admin: verimail_server::admin::AdminCredential,
    /// `RATE_LIMIT_VERIFY_PER_CLIENT` (default `30/60`): VerifyEmail and VerifyEmailCode calls
    /// per client address; `RATE_LIMIT_CODE_PER_EMAIL` (default `5/3600`): code checks per
    /// mailbox and client, so one client's guesses spend its own allowance, not the owner's.
    /// `off` turns one off.
    pub verify_per_client: Option<verimail_server::limits::Rate>,
    pub code_per_email: Option<verimail_server::limits::Rate>,
    /// `CODE_MAX_WRONG_TRIES` (default 20, 1 to 1000): wrong codes an address takes, from all
    /// clients together, before its live codes die: the cap on guessing from many addresses.
    pub code_max_wrong_tries: i32,
    /// `OUTBOX_RETENTION_SECONDS` and `TOMBSTONE_RETENTION_SECONDS`.
    pub retention: verimail_events::retention::Common,
    /// `VERIFICATION_RETENTION_SECONDS` (default 30 days): links and codes are deleted this
    /// long after they expire.
    pub verification_retention: std::time::Duration,
    /// `AUTH_TOKEN_KEYS`: comma-separated keys, PASERK `k4.local.…` or 64 hex digits; the first
    /// issues tokens,
    /// all are accepted (rotation: put the new key first and keep the old one until its
    /// tokens have expired).
    pub keys: TokenKeys,
    /// `AUTH_SIGNING_KEYS`: comma-separated Ed25519 keys, PASERK `k4.secret.…`; the first signs
    /// access tokens, all are published for verifiers (rotation: put the new key first and keep
    /// the old one until its tokens have expired, `ACCESS_TOKEN_TTL_SECONDS`).
    pub signing_keys: SigningKeys,
    /// `ACCESS_TOKEN_TTL_SECONDS` (default 900: 15 minutes).
    pub access_token_lifetime: Duration,
    /// `ACCESS_TOKEN_AUDIENCE` (default `verimail`): the `aud` claim verifiers check.
    pub audience: String,
    /// `VERIFICATION_TOKEN_TTL_SECONDS` (default 24 h).
    pub token_lifetime: Duration,
    /// `EMAIL_CHANGE_UNDO_TTL_SECONDS` (default 7 days): how long the link of a
    /// change-of-address notice cancels or undoes the change.
    pub undo_lifetime: Duration,
    /// `VERIFICATION_CODE_TTL_SECONDS`: how long a 6-digit code works (default 1 hour).
    pub code_lifetime: Duration,
    /// `PASSWORD_RESET_TTL_SECONDS`: how long a reset's link and code work (default 1 hour).
    pub reset_lifetime: Duration,
}

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let keys = keys_from(
            vars,
            "AUTH_TOKEN_KEYS",
            "ALLOW_GENERATED_TOKEN_KEY",
            |keys| TokenKeys::from_paserk(keys),
            TokenKeys::generate,
        )?;
        let signing_keys = keys_from(
            vars,
            "AUTH_SIGNING_KEYS",
            "ALLOW_GENERATED_SIGNING_KEY",
            |keys| SigningKeys::from_paserk(keys),
            SigningKeys::generate,
        )?;
        use verimail_server::internal::{EMAIL_TOKEN, GATEWAY_TOKEN, ServiceCredential, USER_TOKEN};
        let fronts = ServiceCredential::from_vars(vars, GATEWAY_TOKEN)?;
        let issuer = ServiceCredential::from_vars(vars, EMAIL_TOKEN)?;
        let signs_for = ServiceCredential::from_vars(vars, USER_TOKEN)?;
        ServiceCredential::ensure_distinct(&[
            (GATEWAY_TOKEN, &fronts),
            (EMAIL_TOKEN, &issuer),
            (USER_TOKEN, &signs_for),
        ])?;
        let audience = vars.string("ACCESS_TOKEN_AUDIENCE", "verimail");
        if audience.trim().is_empty() {
            return Err(ConfigError::new("ACCESS_TOKEN_AUDIENCE", "must not be empty"));
        }
        let backbone = BackboneConfig::from_vars(vars, DEFAULTS)?;
        Ok(Config {
            retention: verimail_events::retention::Common::from_vars(vars, &backbone.streams)?,
            verification_retention: vars
                .seconds("VERIFICATION_RETENTION_SECONDS", verimail_events::retention::DEFAULT)?,
            backbone,
            admin: verimail_server::admin::AdminCredential::from_vars(vars, &[&fronts, &issuer, &signs_for])?,
            fronts,
            issuer,
            signs_for,
            verify_per_client: verimail_server::limits::rate(vars, "RATE_LIMIT_VERIFY_PER_CLIENT", "30/60")?,
            code_per_email: verimail_server::limits::rate(vars, "RATE_LIMIT_CODE_PER_EMAIL", "5/3600")?,
            code_max_wrong_tries: match vars.parse("CODE_MAX_WRONG_TRIES", crate::code::MAX_WRONG_TRIES)? {
                tries @ 1..=1000 => tries,
                _ => return Err(ConfigError::new("CODE_MAX_WRONG_TRIES", "must be between 1 and 1000")),
            },
            keys,
            signing_keys,
            access_token_lifetime: vars.seconds("ACCESS_TOKEN_TTL_SECONDS", Duration::from_secs(900))?,
            audience: audience.trim().to_owned(),
            token_lifetime: vars.seconds("VERIFICATION_TOKEN_TTL_SECONDS", Duration::from_secs(24 * 3600))?,
            undo_lifetime: vars.seconds("EMAIL_CHANGE_UNDO_TTL_SECONDS", Duration::from_secs(7 * 24 * 3600))?,
            reset_lifetime: vars.seconds("PASSWORD_RESET_TTL_SECONDS", Duration::from_secs(3600))?,
            code_lifetime: vars.seconds("VERIFICATION_CODE_TTL_SECONDS", Duration::from_secs(3600))?,
        })
    }
}

/// Keys from `variable` (comma-separated, parsed by `parse`), or in development a generated
/// key that dies with the process; production refuses that unless `allow` is `true`.
fn keys_from<K>(
    vars: &Vars,
    variable: &'static str,
    allow: &'static str,
    parse: fn(&[&str]) -> Result<K, String>,
    generate: fn() -> Result<K, String>,
) -> Result<K, ConfigError> {
    match vars.var(variable) {
        Some(list) => {
            let paserks: Vec<&str> = list.split(',').filter(|k| !k.trim().is_empty()).collect();
            parse(&paserks).map_err(|e| ConfigError::new(variable, e))
        }
        None if vars.is_production() && vars.var(allow).as_deref() != Some("true") => Err(ConfigError::new(
            variable,
            format!(
                "is required in production (a generated key dies with the process; set {allow}=true to accept that)"
            ),
        )),
        None => {
            tracing::warn!(
                "{variable} is not set: generated a key for this run only; what it signs will not survive a restart"
            );
            generate().map_err(|e| ConfigError::new(variable, e))
        }
    }
}
