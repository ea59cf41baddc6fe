//! The event backbone of the services that own data: the database connection and its single
//! writer, JetStream streams, publishing, consuming with retry and parking, and the
//! transactional outbox with its relay. What a process needs to serve (configuration, gRPC,
//! metrics plumbing) is `verimail-server`; the names of streams and subjects are the contracts'
//! (`verimail-proto`).

pub mod backbone;
pub mod backoff;
pub mod bus;
pub mod db;
pub mod erasure;
pub mod metrics;
pub mod outbox;
pub mod parking;

#[doc(hidden)]
pub use verimail_server as server;

/// The `main` of a service with a database and a gRPC server, from its crate (which has
/// `App`, `Config` and `store::Migrator`), its name and its default SQLite file:
/// `verimail_events::service_main!(verimail_user, "user-service", "user.db");`
#[macro_export]
macro_rules! service_main {
    ($service:ident, $name:literal, $db_file:literal) => {
        $crate::service_main!($service, $name, $db_file, |_: &[String]| None);
    };
    // `$commands` sees the command line first: `Some(result)` when it was one of the
    // service's own commands, which it has run.
    ($service:ident, $name:literal, $db_file:literal, $commands:expr) => {
        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            use $crate::server::cli::{self, Mode};
            use $service::{App, Config, store::Migrator};
            let commands: fn(&[String]) -> Option<anyhow::Result<()>> = $commands;
            if let Some(done) = commands(&std::env::args().skip(1).collect::<Vec<_>>()) {
                return done;
            }
            let vars = &$crate::server::config::Vars::env();
            $crate::server::telemetry::init($name, vars);
            let migrations = match cli::mode(vars, true)? {
                Mode::Serve(migrations) => migrations,
                Mode::MigrateOnly => return $crate::db::migrate_only::<Migrator>(vars, $db_file).await,
                Mode::CheckConfig => return cli::check_config(vars, Config::from_vars(vars)),
                Mode::HealthCheck => {
                    let (addr, tls) = $crate::backbone::BackboneConfig::health_target(vars, &$service::config::DEFAULTS)?;
                    return cli::grpc_health_check(&addr, &tls).await;
                }
            };
            let mut config = Config::from_vars(vars)?;
            config.backbone.database.migrations = migrations;
            let app = App::build(config).await?;
            tracing::info!(grpc = %app.grpc_addr(), concat!($name, " listening"));
            cli::serve(|shutdown| app.run(shutdown)).await
        }
    };
}
