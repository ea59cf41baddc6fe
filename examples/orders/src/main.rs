//! `orders-example`: ORDERS_ADDR (default 127.0.0.1:50070), VERIMAIL_AUTH_URL (auth-service,
//! default http://127.0.0.1:50052), ACCESS_TOKEN_AUDIENCE (default verimail), and for
//! revocation VERIMAIL_USER_URL (user-service, default http://127.0.0.1:50051) with
//! APP_SERVICE_TOKEN (user-service's; not needed in development): a token whose session ended
//! (sign-out, a password change, a deleted account) is refused within about a second. While
//! the feed does not answer (a warning says so), tokens die only at their expiry.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let auth = verimail_client::Connection::new(&var("VERIMAIL_AUTH_URL", "http://127.0.0.1:50052"))?;
    let mut users = verimail_client::Connection::new(&var("VERIMAIL_USER_URL", "http://127.0.0.1:50051"))?;
    if let Ok(token) = std::env::var("APP_SERVICE_TOKEN") {
        users = users.with_service_token(&token)?;
    }
    let verifier = verimail_client::TokenVerifier::from_auth(auth.auth(), var("ACCESS_TOKEN_AUDIENCE", "verimail"))
        .with_revocations(users.users(), std::time::Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind(var("ORDERS_ADDR", "127.0.0.1:50070")).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    verimail_example_orders::serve(listener, verifier, shutdown).await?;
    Ok(())
}
