//! Builds auth-service from its configuration; `main` and the tests build the same thing.

use crate::code::CodeKeys;
use crate::config::Config;
use crate::grpc::AuthGrpc;
use crate::store::Migrator;
use crate::token::TokenKeys;
use sea_orm::DatabaseConnection;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::Routes;
use verimail_events::bus::{self, AUTH_STREAM};
use verimail_events::outbox::OutboxRelay;
use verimail_proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME};
use verimail_server::grpc::Service;
use verimail_server::internal::ServiceCredential;
use verimail_server::limits::{Limiter, Rate};
use verimail_server::shutdown::Shutdown;

pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    db: DatabaseConnection,
    js: async_nats::jetstream::Context,
    outbox_retention: std::time::Duration,
    keys: Arc<TokenKeys>,
    token_lifetime: Duration,
    code_lifetime: Duration,
    verify_per_client: Option<Rate>,
    code_per_email: Option<Rate>,
    code_max_wrong_tries: i32,
    fronts: ServiceCredential,
    issuer: ServiceCredential,
    admin: verimail_server::admin::AdminCredential,
    tls: verimail_server::tls::GrpcTls,
    metrics: Option<TcpListener>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        crate::metrics::register();
        let db = verimail_events::db::connect_with::<Migrator>(&config.database).await?;
        let js = async_nats::jetstream::new(bus::connect(&config.nats).await);
        bus::declare_streams(&js, &[AUTH_STREAM], config.stream_replicas).await?;
        let listener = verimail_server::grpc::bind("AUTH_GRPC_ADDR", &config.grpc_addr).await?;
        let addr = listener.local_addr()?;
        Ok(App {
            listener,
            addr,
            db,
            js,
            outbox_retention: config.outbox_retention,
            keys: Arc::new(config.keys),
            token_lifetime: config.token_lifetime,
            code_lifetime: config.code_lifetime,
            verify_per_client: config.verify_per_client,
            code_per_email: config.code_per_email,
            code_max_wrong_tries: config.code_max_wrong_tries,
            fronts: config.fronts,
            issuer: config.issuer,
            admin: config.admin,
            tls: config.tls,
            metrics: verimail_server::metrics::bind(&config.metrics_addr).await?,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let relay = OutboxRelay::new(self.db.clone(), self.js.clone()).with_retention(self.outbox_retention);
        let grpc = AuthGrpc {
            db: self.db.clone(),
            code_keys: Arc::new(CodeKeys::derive(self.keys.raw_keys())),
            keys: self.keys,
            token_lifetime: self.token_lifetime,
            code_lifetime: self.code_lifetime,
            verify_per_client: Limiter::new("verification attempts from this client", self.verify_per_client),
            code_per_email: Limiter::new("code attempts for this address from this client", self.code_per_email),
            code_max_wrong_tries: self.code_max_wrong_tries,
            claimer: crate::claim::Claimer::start(self.db.clone(), relay.clone()),
            relay: relay.clone(),
            fronts: self.fronts,
            issuer: self.issuer,
            admin: self.admin,
        };
        let (checks, mut background) = verimail_events::backbone_checks(self.js.client(), self.db.clone(), &shutdown);
        background.push(Box::pin(relay.run(shutdown.clone())));
        let service = Service {
            listener: self.listener,
            routes: Routes::new(
                AuthServiceServer::new(grpc).max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES),
            ),
            served: vec![SERVICE_NAME],
            background,
            checks,
            tls: self.tls,
            metrics: self.metrics,
        };
        verimail_server::grpc::run_service(service, shutdown).await?;
        Ok(())
    }
}
