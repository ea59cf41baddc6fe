//! Builds user-service from its configuration; `main` and the tests build the same thing.

use crate::config::Config;
use crate::domain::PasswordHasher;
use crate::events;
use crate::grpc::UserGrpc;
use crate::store::Migrator;
use sea_orm::DatabaseConnection;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tonic::service::Routes;
use verimail_events::bus::{self, USERS_STREAM};
use verimail_events::outbox::OutboxRelay;
use verimail_events::parking::{self, Parking};
use verimail_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};
use verimail_server::grpc::Service;
use verimail_server::shutdown::Shutdown;

pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    db: DatabaseConnection,
    js: async_nats::jetstream::Context,
    outbox_retention: std::time::Duration,
    stream_replicas: usize,
    limits: crate::limits::UserLimits,
    enumeration_safe: bool,
    fronts: verimail_server::internal::ServiceCredential,
    admin: verimail_server::admin::AdminCredential,
    tls: verimail_server::tls::GrpcTls,
    metrics: Option<TcpListener>,
    hasher: PasswordHasher,
}

impl App {
    /// Connects the database (running migrations) and NATS (waiting for it), declares the
    /// stream it publishes to and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let hasher = PasswordHasher::new(config.hash_cost, config.hash_concurrency)
            .map_err(|e| anyhow::anyhow!("PASSWORD_HASH_*: {e}"))?;
        crate::metrics::metrics();
        let db = verimail_events::db::connect_with::<Migrator>(&config.database).await?;
        let js = async_nats::jetstream::new(bus::connect(&config.nats).await);
        bus::declare_streams(&js, &[USERS_STREAM], config.stream_replicas).await?;
        let listener = verimail_server::grpc::bind("USER_GRPC_ADDR", &config.grpc_addr).await?;
        let addr = listener.local_addr()?;
        Ok(App {
            listener,
            addr,
            db,
            js,
            outbox_retention: config.outbox_retention,
            stream_replicas: config.stream_replicas,
            limits: config.limits,
            enumeration_safe: config.enumeration_safe,
            fronts: config.fronts,
            admin: config.admin,
            tls: config.tls,
            metrics: verimail_server::metrics::bind(&config.metrics_addr).await?,
            hasher,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let relay = OutboxRelay::new(self.db.clone(), self.js.clone()).with_retention(self.outbox_retention);
        let service = UserGrpc {
            db: self.db.clone(),
            hasher: self.hasher,
            relay: relay.clone(),
            limits: crate::limits::UserLimiters::new(&self.limits),
            enumeration_safe: self.enumeration_safe,
            fronts: self.fronts,
            admin: self.admin.clone(),
        };
        let db = self.db.clone();
        let consumer = events::email_verified_consumer(self.stream_replicas);
        let parking = Parking::server(self.js.clone(), vec![consumer.durable], self.admin);
        let handler = move |deliveries| {
            let db = db.clone();
            async move { events::on_email_verified(&db, deliveries).await }
        };
        let (checks, mut background) = verimail_events::backbone_checks(self.js.client(), self.db.clone(), &shutdown);
        background.push(Box::pin(relay.run(shutdown.clone())));
        background.push(Box::pin(bus::consume_batches(self.js.clone(), consumer, handler, shutdown.clone())));
        let service = Service {
            listener: self.listener,
            routes: Routes::new(
                UserServiceServer::new(service).max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES),
            )
            .add_service(parking),
            served: vec![SERVICE_NAME, parking::SERVICE_NAME],
            background,
            checks,
            tls: self.tls,
            metrics: self.metrics,
        };
        verimail_server::grpc::run_service(service, shutdown).await?;
        Ok(())
    }
}
