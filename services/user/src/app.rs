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
use verimail_kit::bus::{self, USERS_STREAM};
use verimail_kit::grpc::{Background, Service};
use verimail_kit::outbox::OutboxRelay;
use verimail_kit::parking::{self, Parking};
use verimail_kit::shutdown::Shutdown;
use verimail_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};

pub struct App {
    listener: TcpListener,
    db: DatabaseConnection,
    js: async_nats::jetstream::Context,
    outbox_retention: std::time::Duration,
    stream_replicas: usize,
    limits: crate::limits::UserLimits,
    enumeration_safe: bool,
    fronts: verimail_kit::internal::ServiceCredential,
    admin: verimail_kit::admin::AdminCredential,
    tls: verimail_kit::tls::GrpcTls,
    metrics: Option<TcpListener>,
    hasher: PasswordHasher,
}

impl App {
    /// Connects the database (running migrations) and NATS (waiting for it), declares the
    /// stream it publishes to and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let hasher = PasswordHasher::new(config.hash_cost, config.hash_concurrency)
            .map_err(|e| anyhow::anyhow!("PASSWORD_HASH_*: {e}"))?;
        let db = verimail_kit::db::connect_with::<Migrator>(&config.database).await?;
        let js = async_nats::jetstream::new(bus::connect(&config.nats).await);
        bus::declare_streams(&js, &[USERS_STREAM], config.stream_replicas).await?;
        let listener = verimail_kit::grpc::bind("USER_GRPC_ADDR", &config.grpc_addr).await?;
        Ok(App {
            listener,
            db,
            js,
            outbox_retention: config.outbox_retention,
            stream_replicas: config.stream_replicas,
            limits: config.limits,
            enumeration_safe: config.enumeration_safe,
            fronts: config.fronts,
            admin: config.admin,
            tls: config.tls,
            metrics: verimail_kit::metrics::bind(&config.metrics_addr).await?,
            hasher,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
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
        let background: Vec<Background> = vec![
            Box::pin(relay.run(shutdown.clone())),
            Box::pin(bus::consume_batches(self.js.clone(), consumer, handler, shutdown.clone())),
        ];
        let service = Service {
            listener: self.listener,
            routes: Routes::new(
                UserServiceServer::new(service).max_decoding_message_size(verimail_kit::grpc::MAX_MESSAGE_BYTES),
            )
            .add_service(parking),
            served: vec![SERVICE_NAME, parking::SERVICE_NAME],
            background,
            nats: self.js.client(),
            db: self.db,
            checks: vec![],
            tls: self.tls,
            metrics: self.metrics,
        };
        verimail_kit::grpc::run_service(service, shutdown).await?;
        Ok(())
    }
}
