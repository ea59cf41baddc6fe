//! Builds email-service from its configuration; `main` and the tests build the same thing.

use crate::config::Config;
use crate::courier::{self, Courier};
use crate::grpc::EmailGrpc;
use crate::mail::{Mailer, Templates};
use crate::store::Migrator;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::service::Routes;
use verimail_events::bus;
use verimail_events::parking::{self, Parking};
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::email::v1::email_service_server::{EmailServiceServer, SERVICE_NAME};
use verimail_server::grpc::{Check, Service};
use verimail_server::shutdown::Shutdown;

pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    js: async_nats::jetstream::Context,
    courier: Arc<Courier>,
    consumer: bus::ConsumerSpec,
    admin: verimail_server::admin::AdminCredential,
    tls: verimail_server::tls::GrpcTls,
    metrics: Option<TcpListener>,
    smtp_check_interval: std::time::Duration,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let mailer = Mailer::new(&config.mail_target, config.send_timeout).map_err(anyhow::Error::msg)?;
        let auth =
            AuthServiceClient::new(config.credential.channel(config.tls.channel("AUTH_GRPC_ADDR", &config.auth_addr)?));
        crate::metrics::register();
        let db = verimail_events::db::connect_with::<Migrator>(&config.database).await?;
        let js = async_nats::jetstream::new(bus::connect(&config.nats).await);
        let listener = verimail_server::grpc::bind("EMAIL_GRPC_ADDR", &config.grpc_addr).await?;
        let addr = listener.local_addr()?;
        let metrics = verimail_server::metrics::bind(&config.metrics_addr).await?;
        let consumer = courier::consumer(&config);
        let courier = Arc::new(Courier {
            db,
            auth,
            mailer,
            templates: Templates::new()?,
            from: config.from,
            public_base_url: config.public_base_url,
            send_timeout: config.send_timeout,
            instance: config.instance.clone(),
        });
        Ok(App {
            listener,
            addr,
            js,
            courier,
            consumer,
            admin: config.admin,
            tls: config.tls,
            metrics,
            smtp_check_interval: config.smtp_check_interval,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let service = EmailGrpc { courier: self.courier.clone(), admin: self.admin.clone() };
        let courier = self.courier;
        let parking = Parking::server(self.js.clone(), vec![self.consumer.durable], self.admin);
        let db = courier.db.clone();
        let mailer = courier.mailer.clone();
        let (smtp, smtp_probe) = Check::every("smtp", self.smtp_check_interval, shutdown.clone(), move || {
            let mailer = mailer.clone();
            async move { mailer.check().await }
        });
        let (mut checks, mut background) = verimail_events::backbone_checks(self.js.client(), db, &shutdown);
        checks.push(smtp);
        background.push(smtp_probe);
        let handler = move |delivery| courier.clone().handle(delivery);
        background.push(Box::pin(bus::consume(self.js.clone(), self.consumer, handler, shutdown.clone())));
        let service = Service {
            listener: self.listener,
            routes: Routes::new(
                EmailServiceServer::new(service).max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES),
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
