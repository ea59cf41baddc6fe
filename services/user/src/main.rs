use verimail_kit::shutdown::Shutdown;
use verimail_user::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    verimail_kit::telemetry::init();
    let app = App::build(Config::from_env()?).await?;
    tracing::info!(grpc = %app.grpc_addr(), "user-service listening");
    let shutdown = Shutdown::default();
    tokio::spawn(shutdown.clone().on_signal());
    app.run(shutdown).await
}
