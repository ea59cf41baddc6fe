//! Builds auth-service from its configuration; `main` and the tests build the same thing.

use crate::code::CodeKeys;
use crate::config::Config;
use crate::grpc::AuthGrpc;
use crate::links::TokenKeys;
use crate::store::Migrator;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::Routes;
use verimail_events::bus::{self, AUTH_STREAM};
use verimail_events::outbox::OutboxRelay;
use verimail_events::parking::{self, Parking};
use verimail_proto::auth::v1::auth_service_server::{AuthServiceServer, SERVICE_NAME};
use verimail_server::grpc::Background;
use verimail_server::internal::ServiceCredential;
use verimail_server::limits::Rate;
use verimail_server::shutdown::Shutdown;
use verimail_startup::backbone::Backbone;

pub struct App {
    backbone: Backbone,
    streams: verimail_events::bus::StreamSettings,
    retention: verimail_events::retention::Common,
    verification_retention: Duration,
    keys: Arc<TokenKeys>,
    signing_keys: Arc<crate::access::SigningKeys>,
    access_token_lifetime: Duration,
    audience: String,
    token_lifetime: Duration,
    undo_lifetime: Duration,
    reset_lifetime: Duration,
    code_lifetime: Duration,
    verify_per_client: Option<Rate>,
    code_per_email: Option<Rate>,
    code_max_wrong_tries: i32,
    fronts: ServiceCredential,
    issuer: ServiceCredential,
    signs_for: ServiceCredential,
    admin: verimail_server::admin::AdminCredential,
}

impl App {
    /// Connects the database (running migrations) and NATS (waiting for it), declares the
    /// stream it publishes to and binds the gRPC port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        crate::metrics::register();
        let backbone = Backbone::start::<Migrator>(&config.backbone, &[AUTH_STREAM]).await?;
        Ok(App {
            streams: config.backbone.streams,
            backbone,
            retention: config.retention,
            verification_retention: config.verification_retention,
            keys: Arc::new(config.keys),
            signing_keys: Arc::new(config.signing_keys),
            access_token_lifetime: config.access_token_lifetime,
            audience: config.audience,
            token_lifetime: config.token_lifetime,
            undo_lifetime: config.undo_lifetime,
            reset_lifetime: config.reset_lifetime,
            code_lifetime: config.code_lifetime,
            verify_per_client: config.verify_per_client,
            code_per_email: config.code_per_email,
            code_max_wrong_tries: config.code_max_wrong_tries,
            fronts: config.fronts,
            issuer: config.issuer,
            signs_for: config.signs_for,
            admin: config.admin,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.backbone.grpc_addr()
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let db = self.backbone.db.clone();
        let relay = OutboxRelay::new(db.clone(), self.backbone.js.clone());
        let mut retained = self.retention.tables();
        retained.push(Box::new(crate::store::tokens::retention(self.verification_retention)));
        retained.push(Box::new(crate::store::codes::retention(self.verification_retention)));
        let retention = verimail_events::retention::run(db.clone(), retained, shutdown.clone());
        let code_keys = Arc::new(CodeKeys::derive(self.keys.raw_keys()));
        let js = self.backbone.js.clone();
        let limits = self.backbone.limits.clone();
        let erase = {
            let (relay, js, code_keys) = (relay.clone(), js.clone(), code_keys.clone());
            move |delivery| {
                let (relay, js, code_keys) = (relay.clone(), js.clone(), code_keys.clone());
                async move { crate::erasure::on_user_deleted(&relay, &js, &code_keys, delivery).await }
            }
        };
        let deletions = crate::erasure::consumer(self.streams);
        let parking = Parking::server(js.clone(), vec![deletions.durable], self.admin.clone());
        let authority = crate::authority::Authority {
            relay: relay.clone(),
            keys: self.keys,
            code_keys,
            signing_keys: self.signing_keys,
            access_token_lifetime: self.access_token_lifetime,
            audience: self.audience,
            token_lifetime: self.token_lifetime,
            undo_lifetime: self.undo_lifetime,
            reset_lifetime: self.reset_lifetime,
            code_lifetime: self.code_lifetime,
            code_max_wrong_tries: self.code_max_wrong_tries,
        };
        let grpc = AuthGrpc {
            authority,
            verify_per_client: limits.limiter(
                "verify_per_client",
                "verification attempts from this client",
                self.verify_per_client,
            ),
            code_per_email: limits.limiter(
                "code_per_email",
                "code attempts for this address from this client",
                self.code_per_email,
            ),
            claimer: crate::claim::Claimer::start(relay.clone()),
            fronts: self.fronts,
            issuer: self.issuer,
            signs_for: self.signs_for,
            admin: self.admin,
        };
        let routes = Routes::new(
            AuthServiceServer::new(grpc).max_decoding_message_size(verimail_server::grpc::MAX_MESSAGE_BYTES),
        )
        .add_service(parking);
        let background: Vec<Background> = vec![
            Box::pin(relay.run(shutdown.clone())),
            Box::pin(bus::consume(js, deletions, erase, shutdown.clone())),
            Box::pin(retention),
        ];
        let served = vec![SERVICE_NAME, parking::SERVICE_NAME];
        self.backbone.serve(routes, served, background, vec![], shutdown).await
    }
}
