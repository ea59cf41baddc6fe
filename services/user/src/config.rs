use crate::domain::HashCost;
use verimail_server::config::{ConfigError, Vars};

/// user-service's configuration, from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEWAY_SERVICE_TOKEN`: the fronts that may name the browser they call for; see
    /// [`ServiceCredential`](verimail_server::internal::ServiceCredential).
    pub fronts: verimail_server::internal::ServiceCredential,
    /// `ADMIN_TOKEN`: what ops RPCs require; see [`AdminCredential`](verimail_server::admin::AdminCredential).
    pub admin: verimail_server::admin::AdminCredential,
    /// `GRPC_TLS_CERT`, `GRPC_TLS_KEY`, `GRPC_TLS_CA`: mutual TLS on gRPC when set.
    pub tls: verimail_server::tls::GrpcTls,
    /// `METRICS_ADDR`: where `/metrics` is served (`off`: nowhere).
    pub metrics_addr: String,
    /// `ENUMERATION_SAFE_REGISTRATION` (default `true`): registering an address that has an
    /// account answers like a new registration and emails the owner a notice; `false` answers
    /// ALREADY_EXISTS.
    pub enumeration_safe: bool,
    /// `RATE_LIMIT_*`: see [`UserLimits`].
    pub limits: crate::limits::UserLimits,
    /// `OUTBOX_RETENTION_SECONDS`: how long published events stay in the outbox table.
    pub outbox_retention: std::time::Duration,
    /// `USER_GRPC_ADDR`
    pub grpc_addr: String,
    /// `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS`, and the migration flags.
    pub database: verimail_events::db::DbConfig,
    /// `NATS_URL`, its credentials (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN` or
    /// `NATS_CREDS`) and TLS (`NATS_TLS_*`).
    pub nats: verimail_events::bus::NatsConfig,
    /// `NATS_STREAM_REPLICAS`: servers that keep each stream this service declares.
    pub stream_replicas: usize,
    /// `PASSWORD_HASH_MEMORY_KIB`, `PASSWORD_HASH_ITERATIONS`, `PASSWORD_HASH_PARALLELISM`
    pub hash_cost: HashCost,
    /// `PASSWORD_HASH_CONCURRENCY`: hashes computed at once (default: the number of cores).
    pub hash_concurrency: usize,
}

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
        let fronts =
            verimail_server::internal::ServiceCredential::from_vars(vars, verimail_server::internal::GATEWAY_TOKEN)?;
        Ok(Config {
            admin: verimail_server::admin::AdminCredential::from_vars(vars, &[&fronts])?,
            fronts,
            tls: verimail_server::tls::GrpcTls::from_vars(vars)?,
            metrics_addr: vars.string("METRICS_ADDR", "127.0.0.1:9101"),
            enumeration_safe: vars.parse("ENUMERATION_SAFE_REGISTRATION", true)?,
            limits: crate::limits::UserLimits::from_vars(vars)?,
            outbox_retention: vars.seconds("OUTBOX_RETENTION_SECONDS", verimail_events::outbox::DEFAULT_RETENTION)?,
            grpc_addr: vars.string("USER_GRPC_ADDR", "127.0.0.1:50051"),
            database: verimail_events::db::DbConfig::from_vars(vars, "user.db")?,
            nats: verimail_events::bus::NatsConfig::from_vars(vars)?,
            stream_replicas: verimail_events::bus::stream_replicas(vars)?,
            hash_cost,
            hash_concurrency: vars.parse("PASSWORD_HASH_CONCURRENCY", cores)?,
        })
    }
}
