//! Builds email-service from its configuration; `main` and the tests build the same thing.

use crate::config::Config;
use crate::courier::{self, Courier};
use crate::grpc::EmailGrpc;
use crate::store::Migrator;
use crate::suppression::Suppressions;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use verimail_events::bus;
use verimail_events::parking::{self, Parking};
use verimail_mail::Mailer;
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::email::v1::email_service_server::{EmailServiceServer, SERVICE_NAME};
use verimail_proto::email::v1::webhook_service_server::{SERVICE_NAME as WEBHOOK_SERVICE_NAME, WebhookServiceServer};
use verimail_server::grpc::{Background, Check};
use verimail_server::shutdown::Shutdown;
use verimail_startup::backbone::Backbone;

pub struct App {
    backbone: Backbone,
    courier: Arc<Courier>,
    consumer: bus::ConsumerSpec,
    admin: verimail_server::admin::AdminCredential,
    smtp_check_interval: std::time::Duration,
    /// The bounce listener, bound, and what it records into.
    bounce_listener: Option<(crate::bounce::listener::Listener, Arc<crate::bounce::inbox::Inbox>)>,
    /// The development mailbox, bound.
    mailbox: Option<crate::mailbox::Mailbox>,
    webhooks: crate::webhooks::Webhooks,
    webhook_consumers: [bus::ConsumerSpec; 2],
    /// The team's services that may run webhooks (granted `webhooks`).
    callers: Arc<verimail_server::callers::Callers>,
    /// What the retention sweep keeps bounded, and for how long.
    retained: Vec<Box<dyn verimail_events::retention::Retained>>,
}

impl App {
    /// Checks the mail target, connects the database (running migrations) and NATS (waiting
    /// for it) and binds the gRPC port; the stream it consumes is declared with its consumer.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let mailer = Mailer::new(&config.mail_target, config.send_timeout)
            .map_err(anyhow::Error::msg)?
            .signing(config.dkim.clone())
            .bouncing_to(config.bounces.clone());
        let auth = AuthServiceClient::new(
            config.credential.channel(config.backbone.tls.channel("AUTH_GRPC_ADDR", &config.auth_addr)?),
        );
        crate::metrics::register();
        let backbone = Backbone::start::<Migrator>(&config.backbone, &[bus::EMAIL_STREAM]).await?;
        let relay = verimail_events::outbox::OutboxRelay::new(backbone.db.clone(), backbone.js.clone());
        let suppressions = Suppressions {
            db: backbone.db.clone(),
            relay,
            address_key: config.address_key.clone(),
            soft: config.soft_limit,
        };
        suppressions.refresh_metric().await;
        let courier = Arc::new(Courier {
            db: backbone.db.clone(),
            auth,
            mailer,
            templates: config.templates.clone(),
            from: config.from.clone(),
            public_base_url: config.public_base_url.clone(),
            send_timeout: config.send_timeout,
            instance: config.instance.clone(),
            js: backbone.js.clone(),
            suppressions: suppressions.clone(),
        });
        let bounce_listener = match (config.bounce_listener.clone(), config.bounces.clone()) {
            (Some(listener), Some(bounces)) => {
                let inbox = crate::bounce::inbox::Inbox { suppressions };
                Some((crate::bounce::listener::Listener::bind(listener, bounces).await?, Arc::new(inbox)))
            }
            _ => None,
        };
        let mailbox = match (&config.mailbox_addr, &config.mail_target) {
            (Some(addr), verimail_mail::MailTarget::Files(dir)) => {
                Some(crate::mailbox::Mailbox::bind(addr, dir.clone()).await?)
            }
            _ => None,
        };
        let webhooks = crate::webhooks::Webhooks::new(backbone.db.clone(), config.webhooks.clone())?;
        let mut retained = config.retention.tables();
        retained.push(Box::new(crate::store::deliveries::retention(config.delivery_retention)));
        retained.push(Box::new(crate::store::bounces::retention(config.delivery_retention)));
        retained.push(Box::new(crate::store::webhook_deliveries::retention(config.webhook_delivery_retention)));
        Ok(App {
            retained,
            webhook_consumers: crate::webhooks::intake::specs(config.backbone.streams),
            callers: config.callers.clone(),
            webhooks,
            mailbox,
            backbone,
            courier,
            consumer: courier::consumer::spec(&config),
            admin: config.admin,
            smtp_check_interval: config.smtp_check_interval,
            bounce_listener,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.backbone.grpc_addr()
    }

    /// Where the development mailbox is bound, if there is one.
    pub fn mailbox_addr(&self) -> Option<SocketAddr> {
        self.mailbox.as_ref().and_then(|mailbox| mailbox.local_addr().ok())
    }

    /// Where the bounce listener is bound, if there is one.
    pub fn bounce_addr(&self) -> Option<SocketAddr> {
        self.bounce_listener.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let js = self.backbone.js.clone();
        let service = EmailServiceServer::new(EmailGrpc { courier: self.courier.clone() })
            .max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES);
        let service = InterceptedService::new(service, self.admin.guard());
        let webhook_service = WebhookServiceServer::new(crate::grpc::WebhookGrpc { webhooks: self.webhooks.clone() });
        let guard = verimail_server::callers::OperatorsOr {
            admin: self.admin.clone(),
            callers: self.callers.clone(),
            grant: verimail_server::callers::Grant::Webhooks,
            service: "WebhookService",
        };
        let webhook_service = InterceptedService::new(webhook_service, guard);
        let [users_intake, email_intake] = self.webhook_consumers;
        let durables = vec![self.consumer.durable, users_intake.durable, email_intake.durable];
        let parking = Parking::server(js.clone(), durables, self.admin);
        let mailer = self.courier.mailer.clone();
        let (smtp, smtp_probe) = Check::every("smtp", self.smtp_check_interval, shutdown.clone(), move || {
            let mailer = mailer.clone();
            async move { mailer.check().await }
        });
        let relay = self.courier.suppressions.relay.clone();
        let courier = self.courier;
        let handler = move |delivery| courier.clone().handle(delivery);
        let mut background: Vec<Background> = vec![
            Box::pin(bus::consume(js.clone(), self.consumer, handler, shutdown.clone())),
            smtp_probe,
            Box::pin(relay.run(shutdown.clone())),
            Box::pin(self.webhooks.clone().dispatch(shutdown.clone())),
        ];
        for intake in [users_intake, email_intake] {
            let webhooks = self.webhooks.clone();
            let take = move |delivery| {
                let webhooks = webhooks.clone();
                async move { webhooks.take(delivery).await }
            };
            background.push(Box::pin(bus::consume(js.clone(), intake, take, shutdown.clone())));
        }
        if let Some((listener, inbox)) = self.bounce_listener {
            background.push(Box::pin(listener.run(inbox, shutdown.clone())));
        }
        if let Some(mailbox) = self.mailbox {
            background.push(Box::pin(mailbox.run(shutdown.clone())));
        }
        let db = self.backbone.db.clone();
        background.push(Box::pin(verimail_events::retention::run(db, self.retained, shutdown.clone())));
        let routes = Routes::new(service).add_service(webhook_service).add_service(parking);
        let served = vec![SERVICE_NAME, WEBHOOK_SERVICE_NAME, parking::SERVICE_NAME];
        self.backbone.serve(routes, served, background, vec![smtp], shutdown).await
    }
}
