use verimail_gateway::{App, Config};
use verimail_server::cli::{self, Mode};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    verimail_server::telemetry::init("gateway");
    match cli::mode(false)? {
        Mode::CheckConfig => return cli::check_config(Config::from_env()),
        Mode::HealthCheck => return cli::http_ready_check(&Config::from_env()?.http_addr).await,
        _ => {}
    }
    let app = App::build(Config::from_env()?).await?;
    tracing::info!(http = %app.http_addr(), "gateway listening");
    cli::serve(|shutdown| app.run(shutdown)).await
}
