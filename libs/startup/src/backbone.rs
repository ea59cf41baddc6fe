//! What every service with events stands on, started the same way in each: its database
//! (migrated), JetStream, its gRPC and metrics listeners; and served the same way: health that
//! follows NATS, the database and the service's own checks, with its background work beside.

use async_nats::jetstream;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tonic::service::Routes;
use verimail_events::bus::{self, NatsConfig, StreamSpec};
use verimail_events::db::DbConfig;
use verimail_server::config::{ConfigError, Vars};
use verimail_server::grpc::{Background, Check, Service};
use verimail_server::limits::{Store, StoreKind};
use verimail_server::shutdown::Shutdown;
use verimail_server::tls::GrpcTls;

/// The settings every service with events reads alike; each service's `Config` holds one.
#[derive(Debug, Clone)]
pub struct BackboneConfig {
    /// The variable that names the gRPC address (`USER_GRPC_ADDR`, …), for its errors.
    pub grpc_variable: &'static str,
    /// The address the gRPC server listens on.
    pub grpc_addr: String,
    /// `METRICS_ADDR`: where `/metrics` is served (`off`: nowhere).
    pub metrics_addr: String,
    /// `GRPC_TLS_CERT`, `GRPC_TLS_KEY`, `GRPC_TLS_CA`: mutual TLS on gRPC when set.
    pub tls: GrpcTls,
    /// `DATABASE_URL`, `DATABASE_MAX_CONNECTIONS`, and the migration flags.
    pub database: DbConfig,
    /// `NATS_URL`, its credentials (`NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN` or
    /// `NATS_CREDS`) and TLS (`NATS_TLS_*`).
    pub nats: NatsConfig,
    /// `NATS_STREAM_REPLICAS` and `NATS_EVENT_RETENTION_SECONDS`: how the streams the
    /// service declares are kept.
    pub streams: bus::StreamSettings,
    /// `RATE_LIMIT_STORE`: where the rate limits count (every instance's NATS buckets, or this
    /// process's memory).
    pub limits: StoreKind,
    /// The part's name in its limit buckets' names.
    pub part: &'static str,
}

/// Where a service listens and keeps its data by default.
pub struct Defaults {
    /// The part (`user`, `auth`, `email`): in the names of what it keeps in NATS.
    pub part: &'static str,
    /// The variable of the gRPC address, and its default.
    pub grpc: (&'static str, &'static str),
    /// `METRICS_ADDR`'s default.
    pub metrics_addr: &'static str,
    /// The SQLite file under `data/` without `DATABASE_URL`.
    pub database_file: &'static str,
}

impl BackboneConfig {
    /// What `--health-check` needs to reach the instance beside it: its gRPC address and TLS,
    /// and nothing of the rest (templates, keys, the database), which that instance read when
    /// it started: a check of the running instance must not fail on a file changed since.
    pub fn health_target(vars: &Vars, defaults: &Defaults) -> Result<(String, GrpcTls), ConfigError> {
        let (variable, default) = defaults.grpc;
        Ok((vars.string(variable, default), GrpcTls::from_vars(vars)?))
    }

    pub fn from_vars(vars: &Vars, defaults: Defaults) -> Result<BackboneConfig, ConfigError> {
        let (grpc_addr, tls) = Self::health_target(vars, &defaults)?;
        Ok(BackboneConfig {
            grpc_variable: defaults.grpc.0,
            grpc_addr,
            metrics_addr: vars.string("METRICS_ADDR", defaults.metrics_addr),
            tls,
            database: DbConfig::from_vars(vars, defaults.database_file)?,
            nats: NatsConfig::from_vars(vars)?,
            streams: bus::StreamSettings::from_vars(vars)?,
            limits: StoreKind::from_vars(vars)?,
            part: defaults.part,
        })
    }
}

pub struct Backbone {
    pub db: DatabaseConnection,
    pub js: jetstream::Context,
    /// Where the service's rate limits count.
    pub limits: Store,
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Option<TcpListener>,
    tls: GrpcTls,
}

impl Backbone {
    /// Connects the database (running its migrations, `M`) and NATS (waiting for either while
    /// it does not answer), declares `streams` (those the service publishes to) and binds the
    /// gRPC and metrics ports.
    pub async fn start<M: MigratorTrait>(config: &BackboneConfig, streams: &[StreamSpec]) -> anyhow::Result<Backbone> {
        let db = verimail_events::db::connect_with::<M>(&config.database).await?;
        let js = jetstream::new(bus::connect(&config.nats).await);
        bus::declare_streams(&js, streams, config.streams).await?;
        let listener = verimail_server::config::bind(config.grpc_variable, &config.grpc_addr).await?;
        let addr = listener.local_addr()?;
        let metrics = verimail_server::metrics::bind(&config.metrics_addr).await?;
        let limits = Store::new(config.limits, &js, config.part, config.streams.replicas);
        Ok(Backbone { db, js, limits, listener, addr, metrics, tls: config.tls.clone() })
    }

    /// Where the gRPC listener is bound.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `routes` (the services named `served`) until `shutdown`, with `background` beside
    /// them and health SERVING while NATS, the database and each of `checks` are up.
    pub async fn serve(
        self,
        routes: Routes,
        served: Vec<&'static str>,
        mut background: Vec<Background>,
        checks: Vec<Check>,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let (mut all, probes) = backbone_checks(self.js.client(), self.db.clone(), &shutdown);
        all.extend(checks);
        background.extend(probes);
        let service = Service {
            listener: self.listener,
            routes,
            served,
            background,
            checks: all,
            tls: self.tls,
            metrics: self.metrics,
        };
        verimail_server::grpc::run_service(service, shutdown).await
    }
}

/// How often health probes NATS and the database.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The health checks of what a service with events stands on: NATS connected and the database
/// answering (within 2 s), each probed once a second; the probes run among the background tasks.
fn backbone_checks(
    nats: async_nats::Client,
    db: sea_orm::DatabaseConnection,
    shutdown: &Shutdown,
) -> (Vec<Check>, Vec<Background>) {
    let (nats, nats_probe) = Check::every("nats", PROBE_EVERY, shutdown.clone(), move || {
        let state = nats.connection_state();
        async move {
            match state {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(format!("NATS is {other:?}")),
            }
        }
    });
    let (database, database_probe) = Check::every("database", PROBE_EVERY, shutdown.clone(), move || {
        let db = db.clone();
        async move {
            match tokio::time::timeout(std::time::Duration::from_secs(2), db.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer within 2 s".to_owned()),
            }
        }
    });
    (vec![nats, database], vec![nats_probe, database_probe])
}
