use crate::password::HashCost;
use verimail_server::config::{ConfigError, Vars};
use verimail_startup::backbone::{BackboneConfig, Defaults};

/// Where user-service listens and keeps its data unless told otherwise.
pub const DEFAULTS: Defaults = Defaults {
    part: "user",
    grpc: ("USER_GRPC_ADDR", "127.0.0.1:50051"),
    metrics_addr: "127.0.0.1:9101",
    database_file: "user.db",
};

/// user-service's configuration, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses, TLS, the database and NATS: see [`BackboneConfig`].
    pub backbone: BackboneConfig,
    /// `GATEWAY_SERVICE_TOKEN`: the fronts that may name the browser they call for; see
    /// [`ServiceCredential`](verimail_server::internal::ServiceCredential).
    pub fronts: verimail_server::internal::ServiceCredential,
    /// `USER_SERVICE_TOKEN`: presented to auth-service, which signs access tokens for it alone.
    pub credential: verimail_server::internal::ServiceCredential,
    /// The team's own services by name (`SERVICE_CREDENTIALS_FILE`, and `APP_SERVICE_TOKEN` as
    /// the one named `app`): each may look users up or follow the revocation feed as granted,
    /// besides operators; see [`Callers`](verimail_server::callers::Callers).
    pub callers: std::sync::Arc<verimail_server::callers::Callers>,
    /// `AUTH_GRPC_ADDR`: where auth-service signs access tokens.
    pub auth_addr: String,
    /// `SIGN_IN_REQUIRES_VERIFIED` (default `true`): SignIn with the right password for an
    /// unverified address answers FAILED_PRECONDITION (EMAIL_NOT_VERIFIED) and sends a new
    /// verification email; `false` signs in with a token that says `email_verified: false`.
    pub sign_in_requires_verified: bool,
    /// `ADMIN_TOKEN`: what ops RPCs require; see [`AdminCredential`](verimail_server::admin::AdminCredential).
    pub admin: verimail_server::admin::AdminCredential,
    /// `ENUMERATION_SAFE_REGISTRATION` (default `true`): registering an address that has an
    /// account answers like a new registration and emails the owner a notice; `false` answers
    /// ALREADY_EXISTS.
    pub enumeration_safe: bool,
    /// `RATE_LIMIT_*`: see [`UserLimits`].
    pub limits: crate::limits::UserLimits,
    /// `OUTBOX_RETENTION_SECONDS` and `TOMBSTONE_RETENTION_SECONDS`.
    pub retention: verimail_events::retention::Common,
    /// `SESSION_RETENTION_SECONDS` (default 30 days): sessions are deleted this long after they
    /// ended or expired (never while one of their access tokens may be live).
    pub session_retention: std::time::Duration,
    /// `EMAIL_CHANGE_RETENTION_SECONDS` (default 30 days; keep it above auth-service's
    /// `EMAIL_CHANGE_UNDO_TTL_SECONDS`): changes of address are deleted this long after they
    /// were asked for.
    pub email_change_retention: std::time::Duration,
    /// `PASSWORD_HASH_MEMORY_KIB`, `PASSWORD_HASH_ITERATIONS`, `PASSWORD_HASH_PARALLELISM`
    pub hash_cost: HashCost,
    /// `PASSWORD_HASH_CONCURRENCY`: hashes computed at once (default: the number of cores).
    pub hash_concurrency: usize,
    /// `UNVERIFIED_ACCOUNT_TTL_SECONDS` (default 604800, 7 days; `off` keeps them): an account
    /// not verified within this time of its latest registration is deleted, and its address
    /// is free to register again.
    pub unverified_ttl: Option<std::time::Duration>,
    /// `ACCESS_TOKEN_AUDIENCE` (default `verimail`, as auth-service's): the audience of the
    /// access tokens users present to act on their own account.
    pub audience: String,
    /// `EMAIL_CHECK_DNS` (and `EMAIL_DNS_SERVER`): refuse addresses whose domain cannot
    /// receive mail; see [`crate::dns`].
    pub domain_check: Option<std::sync::Arc<crate::dns::DomainCheck>>,
    /// `SESSION_IDLE_TTL_SECONDS` (default 604800, 7 days): a session not refreshed for this
    /// long ends; `SESSION_MAX_TTL_SECONDS` (default 2592000, 30 days): a session ends this
    /// long after SignIn whatever happens; `REAUTH_WINDOW_SECONDS` (default 300): how long
    /// after SignIn an access token alone may change the address or delete the account.
    pub sessions: SessionPolicy,
}

/// Seven days.
pub const DEFAULT_UNVERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl Config {
    pub fn from_vars(vars: &Vars) -> Result<Config, ConfigError> {
        let default_cost = HashCost::default();
        let hash_cost = HashCost {
            memory_kib: vars.parse("PASSWORD_HASH_MEMORY_KIB", default_cost.memory_kib)?,
            iterations: vars.parse("PASSWORD_HASH_ITERATIONS", default_cost.iterations)?,
            parallelism: vars.parse("PASSWORD_HASH_PARALLELISM", default_cost.parallelism)?,
        };
        if vars.is_production()
            && (hash_cost.memory_kib < default_cost.memory_kib || hash_cost.iterations < default_cost.iterations)
        {
            return Err(ConfigError::new(
                "PASSWORD_HASH_MEMORY_KIB",
                "argon2id cost below m=19456 KiB, t=2 is refused in production",
            ));
        }
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
        use verimail_server::internal::{APP_TOKEN, GATEWAY_TOKEN, ServiceCredential, USER_TOKEN};
        let fronts = ServiceCredential::from_vars(vars, GATEWAY_TOKEN)?;
        let credential = ServiceCredential::from_vars(vars, USER_TOKEN)?;
        // Optional: without it only operators look users up.
        let apps = ServiceCredential::optional_from_vars(vars, APP_TOKEN)?;
        ServiceCredential::ensure_distinct(&[(GATEWAY_TOKEN, &fronts), (USER_TOKEN, &credential), (APP_TOKEN, &apps)])?;
        let admin = verimail_server::admin::AdminCredential::from_vars(vars, &[&fronts, &credential, &apps])?;
        // The team's services by name (SERVICE_CREDENTIALS_FILE), APP_SERVICE_TOKEN among them.
        let callers = verimail_server::callers::Callers::from_vars(vars, &[&fronts, &credential])?;
        if let Some(name) = vars.var("ADMIN_TOKEN").as_deref().and_then(|admin| callers.holder_of(admin)) {
            return Err(ConfigError::new(
                "ADMIN_TOKEN",
                format!("is the secret of the service {name}: operators and services hold separate credentials"),
            ));
        }
        let backbone = BackboneConfig::from_vars(vars, DEFAULTS)?;
        Ok(Config {
            retention: verimail_events::retention::Common::from_vars(vars, &backbone.streams)?,
            session_retention: vars.seconds("SESSION_RETENTION_SECONDS", verimail_events::retention::DEFAULT)?,
            email_change_retention: vars
                .seconds("EMAIL_CHANGE_RETENTION_SECONDS", verimail_events::retention::DEFAULT)?,
            backbone,
            admin,
            fronts,
            credential,
            callers: std::sync::Arc::new(callers),
            auth_addr: vars.string("AUTH_GRPC_ADDR", "127.0.0.1:50052"),
            sign_in_requires_verified: vars.parse("SIGN_IN_REQUIRES_VERIFIED", true)?,
            enumeration_safe: vars.parse("ENUMERATION_SAFE_REGISTRATION", true)?,
            limits: crate::limits::UserLimits::from_vars(vars)?,
            hash_cost,
            hash_concurrency: vars.parse("PASSWORD_HASH_CONCURRENCY", cores)?,
            unverified_ttl: vars.seconds_or_off("UNVERIFIED_ACCOUNT_TTL_SECONDS", DEFAULT_UNVERIFIED_TTL)?,
            audience: vars.string("ACCESS_TOKEN_AUDIENCE", "verimail"),
            domain_check: crate::dns::DomainCheck::from_vars(vars)?.map(std::sync::Arc::new),
            sessions: session_policy(vars)?,
        })
    }
}

fn session_policy(vars: &Vars) -> Result<SessionPolicy, ConfigError> {
    use std::time::Duration;
    let policy = SessionPolicy {
        idle: vars.seconds("SESSION_IDLE_TTL_SECONDS", Duration::from_secs(7 * 24 * 3600))?,
        max: vars.seconds("SESSION_MAX_TTL_SECONDS", Duration::from_secs(30 * 24 * 3600))?,
        reauth_window: vars.seconds("REAUTH_WINDOW_SECONDS", Duration::from_secs(300))?,
    };
    if policy.idle.is_zero() || policy.max.is_zero() {
        return Err(ConfigError::new("SESSION_IDLE_TTL_SECONDS", "session lifetimes must be at least a second"));
    }
    if policy.idle > policy.max {
        return Err(ConfigError::new("SESSION_IDLE_TTL_SECONDS", "must not be longer than SESSION_MAX_TTL_SECONDS"));
    }
    Ok(policy)
}

/// The lifetimes: `SESSION_IDLE_TTL_SECONDS`, `SESSION_MAX_TTL_SECONDS`, `REAUTH_WINDOW_SECONDS`.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: std::time::Duration,
    pub max: std::time::Duration,
    /// How recent a sign-in lets an access token alone change the address or delete the account.
    pub reauth_window: std::time::Duration,
}

impl SessionPolicy {
    pub fn idle_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.idle).unwrap_or(chrono::Duration::MAX)
    }
}
