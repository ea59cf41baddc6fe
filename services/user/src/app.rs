//! Builds user-service from its configuration; `main` and the tests build the same thing.

use crate::config::Config;
use crate::grpc::UserGrpc;
use crate::password::PasswordHasher;
use crate::store::Migrator;
use crate::{lifecycle, verification};
use std::net::SocketAddr;
use tonic::service::Routes;
use verimail_events::bus::{self, USERS_STREAM};
use verimail_events::outbox::OutboxRelay;
use verimail_events::parking::{self, Parking};
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer};
use verimail_server::grpc::Background;
use verimail_server::shutdown::Shutdown;
use verimail_startup::backbone::Backbone;

pub struct App {
    backbone: Backbone,
    retention: verimail_events::retention::Common,
    session_retention: std::time::Duration,
    email_change_retention: std::time::Duration,
    streams: verimail_events::bus::StreamSettings,
    limits: crate::limits::UserLimits,
    enumeration_safe: bool,
    fronts: verimail_server::internal::ServiceCredential,
    admin: verimail_server::admin::AdminCredential,
    callers: std::sync::Arc<verimail_server::callers::Callers>,
    hasher: PasswordHasher,
    dummy_hash: String,
    auth: AuthServiceClient<verimail_server::internal::Internal>,
    sign_in_requires_verified: bool,
    unverified_ttl: Option<std::time::Duration>,
    audience: String,
    domain_check: Option<std::sync::Arc<crate::dns::DomainCheck>>,
    sessions: crate::config::SessionPolicy,
}

/// auth-service's public keys, fetched with user-service's channel.
struct AuthKeys(AuthServiceClient<verimail_server::internal::Internal>);

impl verimail_client::KeySource for AuthKeys {
    fn fetch(&self) -> verimail_client::KeysFuture<'_> {
        let mut auth = self.0.clone();
        Box::pin(async move {
            let request = verimail_proto::auth::v1::GetPublicKeysRequest {};
            let keys = auth
                .get_public_keys(request)
                .await
                .map_err(|status| verimail_client::VerifyError::KeysUnavailable(status.message().to_owned()))?;
            Ok(keys.into_inner().keys.into_iter().map(|key| (key.id, key.paserk)).collect())
        })
    }
}

impl App {
    /// Connects the database (running migrations) and NATS (waiting for it), declares the
    /// stream it publishes to and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let hasher = PasswordHasher::new(config.hash_cost, config.hash_concurrency)
            .map_err(|e| anyhow::anyhow!("PASSWORD_HASH_*: {e}"))?;
        // What an unknown address is checked against: the same work as a real hash, made
        // without hashing (a hashing thread takes its memory area only when it first works).
        let dummy_hash =
            crate::password::dummy_hash(config.hash_cost).map_err(|e| anyhow::anyhow!("PASSWORD_HASH_*: {e}"))?;
        let auth = AuthServiceClient::new(
            config.credential.channel(config.backbone.tls.channel("AUTH_GRPC_ADDR", &config.auth_addr)?),
        );
        crate::metrics::register();
        let backbone = Backbone::start::<Migrator>(&config.backbone, &[USERS_STREAM]).await?;
        Ok(App {
            backbone,
            retention: config.retention,
            session_retention: config.session_retention,
            email_change_retention: config.email_change_retention,
            streams: config.backbone.streams,
            limits: config.limits,
            enumeration_safe: config.enumeration_safe,
            fronts: config.fronts,
            admin: config.admin,
            callers: {
                let names = config.callers.names().join(", ");
                tracing::info!(callers = %names, "the team's services that may call by name");
                config.callers
            },
            hasher,
            dummy_hash,
            auth,
            sign_in_requires_verified: config.sign_in_requires_verified,
            unverified_ttl: config.unverified_ttl,
            audience: config.audience,
            domain_check: config.domain_check,
            sessions: config.sessions,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.backbone.grpc_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (db, js) = (self.backbone.db.clone(), self.backbone.js.clone());
        let relay = OutboxRelay::new(db.clone(), js.clone());
        let accounts = crate::accounts::Accounts {
            db: db.clone(),
            relay: relay.clone(),
            hasher: self.hasher,
            limits: crate::limits::UserLimiters::new(&self.limits, &self.backbone.limits),
            enumeration_safe: self.enumeration_safe,
            dummy_hash: self.dummy_hash,
            auth: self.auth.clone(),
            sign_in_requires_verified: self.sign_in_requires_verified,
            domain_check: self.domain_check,
            sessions: self.sessions,
        };
        let service = UserGrpc {
            accounts,
            fronts: self.fronts,
            admin: self.admin.clone(),
            callers: self.callers,
            access_tokens: verimail_client::TokenVerifier::new(AuthKeys(self.auth), self.audience),
        };
        let consumer = verification::email_verified_consumer(self.streams);
        let deletions = lifecycle::deletions_consumer(self.streams);
        let undo = crate::email_change::undo_consumer(self.streams);
        let undeliverable = crate::undeliverable::consumer(self.streams);
        let durables = vec![consumer.durable, deletions.durable, undo.durable, undeliverable.durable];
        let parking = Parking::server(js.clone(), durables.clone(), self.admin);
        let handler = {
            let relay = relay.clone();
            move |deliveries| {
                let relay = relay.clone();
                async move { verification::on_email_verified(&relay, deliveries).await }
            }
        };
        let forget = {
            let js = js.clone();
            move |delivery| {
                let (js, durables) = (js.clone(), durables.clone());
                async move { lifecycle::on_user_deleted(&js, &durables, delivery).await }
            }
        };
        let undone = {
            let relay = relay.clone();
            move |delivery| {
                let relay = relay.clone();
                async move { crate::email_change::on_undo_requested(&relay, delivery).await }
            }
        };
        let reported = {
            let relay = relay.clone();
            move |delivery| {
                let relay = relay.clone();
                async move { crate::undeliverable::on_event(&relay, delivery).await }
            }
        };
        let mut background: Vec<Background> = vec![
            Box::pin(bus::consume(js.clone(), undeliverable, reported, shutdown.clone())),
            Box::pin(bus::consume(js.clone(), undo, undone, shutdown.clone())),
            Box::pin(relay.clone().run(shutdown.clone())),
            Box::pin(bus::consume(js.clone(), deletions, forget, shutdown.clone())),
            Box::pin(bus::consume_batches(js, consumer, handler, shutdown.clone())),
        ];
        background.push(Box::pin(crate::revocation::run_expiry(
            db.clone(),
            relay.clone(),
            self.sessions.idle,
            shutdown.clone(),
        )));
        let mut retained = self.retention.tables();
        retained.push(Box::new(crate::store::sessions::retention(self.session_retention)));
        retained.push(Box::new(crate::store::email_changes::retention(self.email_change_retention)));
        background.push(Box::pin(verimail_events::retention::run(db.clone(), retained, shutdown.clone())));
        if let Some(ttl) = self.unverified_ttl {
            background.push(Box::pin(lifecycle::run_sweeps(relay, ttl, shutdown.clone())));
        }
        let routes = Routes::new(
            UserServiceServer::new(service).max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES),
        )
        .add_service(parking);
        let served = vec![SERVICE_NAME, parking::SERVICE_NAME];
        self.backbone.serve(routes, served, background, vec![], shutdown).await
    }
}
