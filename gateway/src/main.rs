use verimail_gateway::{App, Config};
use verimail_kit::shutdown::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    verimail_kit::telemetry::init();
    let app = App::build(Config::from_env()?).await?;
    tracing::info!(http = %app.http_addr(), "gateway listening");
    let shutdown = Shutdown::default();
    tokio::spawn(shutdown.clone().on_signal());
    app.run(shutdown).await
}
