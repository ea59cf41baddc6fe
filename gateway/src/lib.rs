//! The gateway: the pages behind the verification link (verify, result, resend), the public
//! keys of access tokens as JSON (`/.well-known/verimail-keys`), `/healthz` (alive) and
//! `/readyz` (the services it calls answer SERVING).
//! Thin on purpose: every decision is a gRPC call to a service, and it holds no data (no
//! database, no NATS: it depends on `verimail-server` alone).

pub mod client;
pub mod config;
pub mod link;
pub mod pages;
pub mod routes;
pub mod serve;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic_health::pb::health_client::HealthClient;
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::user::v1::user_service_client::UserServiceClient;
use verimail_server::shutdown::Shutdown;

pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    gateway: Arc<routes::Gateway>,
    metrics: Option<TcpListener>,
    limits: serve::Limits,
}

/// The gateways' shared limits on NATS (connected in the background: until NATS answers, and
/// whenever it does not, each gateway counts alone), or each one's memory.
async fn limit_store(nats: Option<&(verimail_server::nats::NatsConfig, usize)>) -> verimail_server::limits::Store {
    use verimail_server::limits::{Store, StoreKind};
    let Some((nats, replicas)) = nats else { return Store::memory() };
    match verimail_server::nats::connect_in_background(nats).await {
        Ok(client) => Store::new(StoreKind::Nats, &async_nats::jetstream::new(client), "gateway", *replicas),
        Err(error) => {
            tracing::warn!(%error, "cannot reach NATS for the shared limits; this gateway counts alone");
            Store::memory()
        }
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let auth = config.credential.channel(config.tls.channel("AUTH_GRPC_ADDR", &config.auth_addr)?);
        let users_as_caller = config.tls.channel("USER_GRPC_ADDR", &config.user_addr)?;
        let users = config.credential.channel(users_as_caller.clone());
        let gateway = routes::Gateway {
            upstreams: [
                ("user-service", HealthClient::new(users.clone())),
                ("auth-service", HealthClient::new(auth.clone())),
            ],
            auth: AuthServiceClient::new(auth),
            users: UserServiceClient::new(users),
            pages: config.pages,
            logo: config.logo,
            content_security_policy: routes::content_security_policy(&config.image_sources)?,
            posts_per_client: limit_store(config.limit_store.as_ref()).await.limiter(
                "posts_per_client",
                "form posts from this address",
                config.posts_per_client,
            ),
            trusted_proxies: config.trusted_proxies,
            keys: routes::KeysCache::default(),
            request_timeout: config.limits.request_timeout,
            users_as_caller,
        };
        let listener = verimail_server::config::bind("GATEWAY_HTTP_ADDR", &config.http_addr).await?;
        let metrics = verimail_server::metrics::bind(&config.metrics_addr).await?;
        let addr = listener.local_addr()?;
        Ok(App { listener, addr, gateway: Arc::new(gateway), metrics, limits: config.limits })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        if let Some(listener) = self.metrics {
            tokio::spawn(verimail_server::metrics::serve(listener, shutdown.clone()));
        }
        serve::serve(self.listener, routes::router(self.gateway), self.limits, shutdown).await;
        Ok(())
    }
}
