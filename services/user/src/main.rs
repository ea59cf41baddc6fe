//! user-service's start-up, step by step: configuration, telemetry, the command line (serve,
//! or a one-off mode), store and backbone (`App::build`), serve.

use verimail_startup::{Vars, command, serve, telemetry};
use verimail_user::{App, SERVICE, store::Migrator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vars = &Vars::env();
    telemetry::init(SERVICE.name, vars);
    let Some(migrations) = command::<Migrator, _>(&SERVICE, vars).await? else { return Ok(()) };
    let mut config = (SERVICE.config)(vars)?;
    config.backbone.database.migrations = migrations;
    let app = App::build(config).await?;
    serve(SERVICE.name, app.grpc_addr(), |shutdown| app.run(shutdown)).await
}
