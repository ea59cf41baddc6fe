use verimail_gateway::{App, Config};
use verimail_server::cli::{self, Mode};
use verimail_server::config::Vars;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let vars = &Vars::env();
    verimail_server::telemetry::init("gateway", vars);
    match cli::mode(vars, false)? {
        Mode::CheckConfig => return cli::check_config(vars, Config::from_vars(vars)),
        Mode::HealthCheck => return cli::http_ready_check(&verimail_gateway::config::http_addr(vars)).await,
        _ => {}
    }
    let app = App::build(Config::from_vars(vars)?).await?;
    tracing::info!(http = %app.http_addr(), "gateway listening");
    cli::serve(|shutdown| app.run(shutdown)).await
}
