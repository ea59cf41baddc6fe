//! Start-up of a service with data. Each service's `main.rs` is its table of contents and
//! takes these steps in this order:
//!
//! 1. configuration: [`Vars`] from the environment (each service's `Config` reads them);
//! 2. telemetry: [`telemetry::init`], logs and traces;
//! 3. the command line: [`command`] runs a one-off mode (`--migrate-only`, `--check-config`,
//!    `--health-check`, or the service's own) or says how to serve;
//! 4. store and backbone: the service's `App::build`, over a [`backbone::Backbone`] (the
//!    database, migrated; NATS and its streams; the gRPC and metrics listeners);
//! 5. serve: [`serve`] runs the service until SIGTERM or Ctrl-C, then drains it.

pub mod backbone;

pub use verimail_server::cli::Migrations;
pub use verimail_server::config::Vars;
pub use verimail_server::telemetry;

use backbone::{BackboneConfig, Defaults};
use sea_orm_migration::MigratorTrait;
use std::net::SocketAddr;
use verimail_server::cli::{self, Mode};
use verimail_server::config::ConfigError;
use verimail_server::shutdown::Shutdown;

/// A service with data, as its start-up knows it.
pub struct Service<C> {
    /// The binary's name, in logs and traces.
    pub name: &'static str,
    /// Where it listens and keeps its data by default.
    pub defaults: &'static Defaults,
    /// Reads its configuration.
    pub config: fn(&Vars) -> Result<C, ConfigError>,
    /// Its own commands, which see the arguments first: `Some(result)` when they were one of
    /// them, now run.
    pub commands: fn(&[String]) -> Option<anyhow::Result<()>>,
}

/// No commands of its own.
pub fn no_commands(_: &[String]) -> Option<anyhow::Result<()>> {
    None
}

/// What the command line asks of `service`: `Some` the migrations to serve with, or `None`
/// when it asked for a one-off command, which has run.
pub async fn command<M: MigratorTrait, C>(service: &Service<C>, vars: &Vars) -> anyhow::Result<Option<Migrations>> {
    if let Some(done) = (service.commands)(&std::env::args().skip(1).collect::<Vec<_>>()) {
        return done.map(|()| None);
    }
    match cli::mode(vars, true)? {
        Mode::Serve(migrations) => Ok(Some(migrations)),
        Mode::MigrateOnly => {
            verimail_events::db::migrate_only::<M>(vars, service.defaults.database_file).await.map(|()| None)
        }
        Mode::CheckConfig => cli::check_config(vars, (service.config)(vars)).map(|()| None),
        Mode::HealthCheck => {
            let (addr, tls) = BackboneConfig::health_target(vars, service.defaults)?;
            cli::grpc_health_check(&addr, &tls).await.map(|()| None)
        }
    }
}

/// Serves what `run` runs (a built service) until SIGTERM or Ctrl-C, then drains it; says
/// where it listens first.
pub async fn serve<F, Fut>(name: &str, grpc: SocketAddr, run: F) -> anyhow::Result<()>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    tracing::info!(%grpc, "{name} listening");
    cli::serve(run).await
}
