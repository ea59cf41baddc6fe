use verimail_auth::store::Migrator;
use verimail_auth::{App, Config};
use verimail_kit::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    verimail_kit::telemetry::init("auth-service");
    let migrations = verimail_kit::db::migrations_from_command_line::<Migrator>("auth.db").await?;
    let Some(migrations) = migrations else { return Ok(()) };
    let mut config = Config::from_env()?;
    config.database.migrations = migrations;
    let app = App::build(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), "auth-service listening");
    let shutdown = Shutdown::default();
    tokio::spawn(shutdown.clone().on_signal());
    let result = app.run(shutdown).await;
    // Export the spans still buffered; the exporter needs the runtime, so not on a worker.
    let _ = tokio::task::spawn_blocking(verimail_kit::telemetry::flush).await;
    result
}
