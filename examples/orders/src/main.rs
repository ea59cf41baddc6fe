//! `orders-example`: ORDERS_ADDR (default 127.0.0.1:50070), VERIMAIL_AUTH_URL (auth-service,
//! default http://127.0.0.1:50052), ACCESS_TOKEN_AUDIENCE (default verimail).
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let auth = verimail_client::Connection::new(&var("VERIMAIL_AUTH_URL", "http://127.0.0.1:50052"))?;
    let verifier = verimail_client::TokenVerifier::from_auth(auth.auth(), var("ACCESS_TOKEN_AUDIENCE", "verimail"));
    let listener = tokio::net::TcpListener::bind(var("ORDERS_ADDR", "127.0.0.1:50070")).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    verimail_example_orders::serve(listener, verifier, shutdown).await?;
    Ok(())
}
