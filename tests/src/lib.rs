//! The whole stack for system tests: a nats-server of its own, the three services and the
//! gateway on free ports with temporary SQLite files, and an SMTP server inside the test.
//! Helpers hide ports and processes; assertions stay in the tests (`tests/tests/system`), and
//! parts that are not Verimail's (nats-server, PostgreSQL) come from `verimail-testkit`.

pub mod batch;
pub mod browser;
pub mod chrome;
pub mod dns;
pub mod otlp;
pub mod pki;
pub mod postfix;
pub mod procs;
pub mod settings;
pub mod smtp;

use procs::Part;
use std::time::Duration;
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_proto::auth::v1::{VerifyEmailRequest, VerifyEmailResponse};
use verimail_proto::email::v1::email_service_client::EmailServiceClient;
use verimail_proto::email::v1::{Delivery, ListDeliveriesRequest};
use verimail_proto::ops::v1::parking_service_client::ParkingServiceClient;
use verimail_proto::ops::v1::{ListParkedRequest, ParkedMessage};
use verimail_proto::user::v1::user_service_client::UserServiceClient;
use verimail_proto::user::v1::{
    GetUserRequest, RegisterUserRequest, SignInRequest, SignInResponse, UserStatus, get_user_request,
};
use verimail_server::admin::AdminCredential;
use verimail_server::config::Vars;
use verimail_server::internal::ServiceCredential;
use verimail_server::limits::Rate;
use verimail_server::shutdown::Shutdown;
use verimail_server::tls::GrpcTls;
use verimail_testkit::NatsCluster;

pub use smtp::{ReceivedMail, SmtpServer};

/// Whether this run is the PostgreSQL variant of the suite (`TEST_DATABASE=postgres`, which
/// `just test` sets for its second pass): every stack then runs each service on a fresh
/// PostgreSQL database instead of a SQLite file.
pub fn on_postgres() -> bool {
    std::env::var("TEST_DATABASE").is_ok_and(|v| v.eq_ignore_ascii_case("postgres"))
}

/// The three services' databases of a stack: PostgreSQL databases on the machine's server,
/// each with its service's tables already migrated by an earlier test and no rows
/// ([`verimail_testkit::PostgresDb::reused`]), or SQLite files in the stack's folder.
pub(crate) struct Databases {
    /// user, auth, email; empty on SQLite.
    postgres: Vec<verimail_testkit::PostgresDb>,
}

impl Databases {
    pub(crate) async fn create(on_postgres: bool) -> Databases {
        use sea_orm_migration::MigratorTrait;
        let mut postgres = Vec::new();
        if on_postgres {
            // A kind per service and set of migrations: a database migrated by another set
            // (another commit, another branch) is never handed to this one.
            let names = |migrations: Vec<Box<dyn sea_orm_migration::MigrationTrait>>| {
                migrations.iter().map(|m| m.name().to_owned()).collect::<Vec<_>>().join(",")
            };
            for (service, migrations) in [
                ("user", names(verimail_user::store::Migrator::migrations())),
                ("auth", names(verimail_auth::store::Migrator::migrations())),
                ("email", names(verimail_email::store::Migrator::migrations())),
            ] {
                let kind = format!("{service}_{:08x}", verimail_testkit::fingerprint(&migrations));
                postgres.push(verimail_testkit::PostgresDb::reused(&kind).await);
            }
        }
        Databases { postgres }
    }

    /// Makes `service`'s PostgreSQL database empty when the stack ends (its tables too), for a
    /// test that dropped or altered one of them.
    pub(crate) fn discard(&self, service: &str) {
        let index = ["user", "auth", "email"].iter().position(|s| *s == service).expect("user, auth or email");
        if let Some(db) = self.postgres.get(index) {
            db.discard();
        }
    }

    /// The database URL of `service` ("user", "auth" or "email"), SQLite files under `dir`.
    pub(crate) fn url(&self, dir: &std::path::Path, service: &str) -> String {
        match (self.postgres.as_slice(), service) {
            ([user, ..], "user") => user.url(),
            ([_, auth, ..], "auth") => auth.url(),
            ([_, _, email], "email") => email.url(),
            _ => format!("sqlite://{}?mode=rwc", dir.join(format!("{service}.db")).display()),
        }
    }
}

/// Knobs a test may turn; everything else is as in production.
pub struct StackOptions {
    pub token_lifetime: Duration,
    pub code_lifetime: Duration,
    /// email-service's attempts per event and the delays between them.
    pub email_attempts: i64,
    pub email_backoff: Vec<Duration>,
    /// Instances of email-service, named email-1, email-2, …
    pub email_instances: usize,
    /// Instances of user-service, auth-service and the gateway (each gateway calling the
    /// services of its own instance), all on the same databases and NATS.
    pub instances: usize,
    /// Each service on a fresh PostgreSQL database of the machine's server instead of SQLite
    /// (default: [`on_postgres`]).
    pub postgres: bool,
    /// Every rate limit at this rate; `None` turns them off (batches come from one address).
    pub limits: Option<Rate>,
    /// Enumeration-safe registration, as in production by default.
    pub enumeration_safe: bool,
    /// gRPC between every part (and the test's clients) over this TLS; off by default.
    pub tls: Option<pki::TlsPem>,
    /// How often email-service's health probes SMTP (1 s here, 15 s by default).
    pub smtp_check_interval: Duration,
    /// nats-servers: 1, or a cluster of this many with every stream on up to 3 of them.
    pub nats_nodes: usize,
    /// Wrong codes an address takes from all clients (`CODE_MAX_WRONG_TRIES`).
    pub code_max_wrong_tries: i32,
    /// Code checks per mailbox and client (`RATE_LIMIT_CODE_PER_EMAIL`) when the other
    /// limits are off; `limits` when `None`.
    pub code_limit: Option<Rate>,
    /// The gateway's `TRUSTED_PROXIES` (none by default).
    pub trusted_proxies: String,
    /// auth-service reaches its PostgreSQL database through a door a test can close
    /// ([`Stack::auth_database_door`]); needs `postgres`.
    pub auth_database_door: bool,
    /// The gateway's timeouts and connection cap (the production defaults).
    pub gateway_limits: verimail_gateway::serve::Limits,
    /// NATS with a user per service and its permissions (`deploy/kubernetes/base/nats-permissions.conf`),
    /// each service connecting as its own; open NATS otherwise.
    pub nats_permissions: bool,
    /// How long access tokens live (`ACCESS_TOKEN_TTL_SECONDS`; 15 minutes as in production).
    pub access_token_lifetime: Duration,
    /// `SIGN_IN_REQUIRES_VERIFIED` (true as in production).
    pub sign_in_requires_verified: bool,
    /// Wrong passwords per address and client (`SIGN_IN_MAX_FAILURES`) when the other limits
    /// are off; `limits` when `None`.
    pub sign_in_failures: Option<Rate>,
    /// The gateway's `APP_URL` (none by default).
    pub app_url: Option<String>,
    /// `UNVERIFIED_ACCOUNT_TTL_SECONDS` (7 days as in production; `None`: off).
    pub unverified_ttl: Option<Duration>,
    /// Further variables for email-service (DKIM, say), after the others.
    pub email_vars: Vec<settings::Var>,
    /// Further variables for user-service (EMAIL_CHECK_DNS, say), after the others.
    pub user_vars: Vec<settings::Var>,
    /// Further variables for auth-service, after the others.
    pub auth_vars: Vec<settings::Var>,
    /// Further variables for every gateway (BRAND_NAME, say), after the others.
    pub gateway_vars: Vec<settings::Var>,
}

impl StackOptions {
    /// What the process stack runs with: production's token lifetimes and SMTP check
    /// interval, and email retries that outlive a part's restart.
    pub fn for_processes() -> StackOptions {
        StackOptions {
            token_lifetime: Duration::from_secs(24 * 3600),
            email_attempts: 10,
            email_backoff: vec![Duration::from_secs(1)],
            smtp_check_interval: Duration::from_secs(15),
            ..StackOptions::default()
        }
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            token_lifetime: Duration::from_secs(3600),
            code_lifetime: Duration::from_secs(3600),
            email_attempts: 5,
            email_backoff: vec![Duration::from_millis(200)],
            email_instances: 1,
            instances: 1,
            postgres: on_postgres(),
            limits: None,
            enumeration_safe: true,
            tls: None,
            smtp_check_interval: Duration::from_secs(1),
            nats_nodes: 1,
            code_max_wrong_tries: verimail_auth::code::MAX_WRONG_TRIES,
            code_limit: None,
            trusted_proxies: String::new(),
            gateway_limits: Default::default(),
            nats_permissions: false,
            auth_database_door: false,
            access_token_lifetime: Duration::from_secs(900),
            sign_in_requires_verified: true,
            sign_in_failures: None,
            app_url: None,
            unverified_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            email_vars: Vec::new(),
            user_vars: Vec::new(),
            auth_vars: Vec::new(),
            gateway_vars: Vec::new(),
        }
    }
}

/// `message` as a backend that serves browsers sends it for the browser at `client`: naming
/// it in `x-verimail-client-address` (which counts only with the gateway's credential).
pub fn for_browser<T>(message: T, client: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(verimail_server::internal::CLIENT_ADDRESS, client.parse().expect("an address"));
    request
}

/// Every event on `subject` (of the stream its prefix names: users., auth., email.), in order,
/// decoded (read without a consumer).
pub async fn events_on<M: prost::Message + Default>(nats_url: &str, subject: &str) -> Vec<M> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("connect to NATS"));
    let name = match subject.split('.').next() {
        Some("email") => verimail_proto::streams::EMAIL,
        Some("auth") => verimail_proto::streams::AUTH,
        _ => verimail_proto::streams::USERS,
    };
    let stream = js.get_stream(name).await.unwrap_or_else(|e| panic!("the {name} stream: {e}"));
    let (mut events, mut next) = (Vec::new(), 1);
    while let Some(message) =
        verimail_events::bus::next_on_subject(&stream, subject, next).await.unwrap_or_else(|e| panic!("{subject}: {e}"))
    {
        next = message.sequence + 1;
        events.push(M::decode(message.payload).unwrap_or_else(|e| panic!("an event on {subject}: {e}")));
    }
    events
}

/// Polls `check` (every 50 ms, at most `limit`) until it holds; fails the test naming `what`.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, check: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The SHA-256 of a service's secret in hex: what `SERVICE_CREDENTIALS_FILE` lists.
pub fn sha256_hex(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret).iter().map(|b| format!("{b:02x}")).collect()
}

/// A scalar of a deployment file (compose.yaml, a Kubernetes manifest) as an environment gives
/// it: text, a number or a boolean as written, null as empty.
pub fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Null => String::new(),
        other => panic!("a value that is not a scalar: {other:?}"),
    }
}

/// The Python that runs the tests' programs outside Rust: the virtualenv scripts/clients.sh
/// makes (`CLIENTS_PYTHON`, else `.tools/python-clients`), which holds clients/python and the
/// pinned packages of its requirements-test.txt (standardwebhooks, FastAPI, uvicorn).
pub fn clients_python() -> String {
    std::env::var("CLIENTS_PYTHON")
        .unwrap_or_else(|_| format!("{}/../.tools/python-clients/bin/python", env!("CARGO_MANIFEST_DIR")))
}

/// Where tests write what a person should be able to look at afterwards (screenshots):
/// `TEST_ARTIFACTS_DIR`, else `test-artifacts` in `CARGO_TARGET_DIR` (or the temporary folder).
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = match (std::env::var_os("TEST_ARTIFACTS_DIR"), std::env::var_os("CARGO_TARGET_DIR")) {
        (Some(dir), _) => std::path::PathBuf::from(dir),
        (None, Some(target)) => std::path::PathBuf::from(target).join("test-artifacts"),
        (None, None) => std::env::temp_dir().join("verimail-test-artifacts"),
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// `message` as a user sends it with their access token (`authorization: Bearer <token>`).
pub fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    request
}

/// The documented nats-server configuration of users and permissions.
pub const NATS_PERMISSIONS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/base/nats-permissions.conf");

/// The NATS password of `service` ("user-service", …) in a stack with
/// [`StackOptions::nats_permissions`], and the variable the configuration reads it from.
pub fn nats_password(service: &str) -> (String, String) {
    let variable = format!("NATS_{}_PASSWORD", service.to_uppercase().replace('-', "_"));
    (variable, format!("test-nats-password-of-{service}"))
}

/// The gateway's credential (`GATEWAY_SERVICE_TOKEN`) of every stack a test starts.
pub const TEST_GATEWAY_TOKEN: &str = "test-gateway-credential-0123456789";

/// email-service's credential (`EMAIL_SERVICE_TOKEN`) of every stack a test starts.
pub const TEST_EMAIL_TOKEN: &str = "test-email-credential-0123456789";

/// user-service's credential (`USER_SERVICE_TOKEN`) of every stack a test starts.
pub const TEST_USER_TOKEN: &str = "test-user-credential-0123456789";

/// The credential of the team's own services (`APP_SERVICE_TOKEN`) of every stack a test starts.
pub const TEST_APP_TOKEN: &str = "test-app-credential-0123456789";

/// The admin credential (`ADMIN_TOKEN`) of every stack a test starts.
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A test's clients speak as an operator and as the gateway (a front that may name the
/// browser it calls for), presenting both credentials; [`Operator::email_service`] speaks as
/// email-service instead, which may have tokens issued.
#[derive(Clone)]
pub struct Operator {
    service: ServiceCredential,
    admin: AdminCredential,
}

impl Operator {
    pub fn new() -> Operator {
        Operator {
            service: ServiceCredential::new(TEST_GATEWAY_TOKEN).expect("a long enough secret"),
            admin: AdminCredential::new(TEST_ADMIN_TOKEN).expect("a long enough secret"),
        }
    }

    pub fn email_service() -> Operator {
        Operator { service: ServiceCredential::new(TEST_EMAIL_TOKEN).expect("a long enough secret"), ..Operator::new() }
    }

    /// As one of the team's own services: `APP_SERVICE_TOKEN` alone, no admin credential.
    pub fn app_service() -> Operator {
        Operator {
            service: ServiceCredential::new(TEST_APP_TOKEN).expect("a long enough secret"),
            admin: AdminCredential::Open,
        }
    }

    pub fn channel(&self, channel: tonic::transport::Channel) -> Ops {
        tonic::service::interceptor::InterceptedService::new(channel, self.clone())
    }
}

impl Default for Operator {
    fn default() -> Self {
        Operator::new()
    }
}

impl tonic::service::Interceptor for Operator {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let request = self.service.call(request)?;
        self.admin.call(request)
    }
}

/// A channel of a test's client: see [`Operator`].
pub type Ops = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Operator>;

/// One instance of user-service (with its auth-service) and its gateway.
pub struct Instance {
    pub users: UserServiceClient<Ops>,
    pub gateway_url: String,
}

pub struct Stack {
    pub users: UserServiceClient<Ops>,
    pub auth: AuthServiceClient<Ops>,
    /// auth-service as email-service calls it: the only caller IssueVerificationToken answers.
    pub issuer: AuthServiceClient<Ops>,
    pub emails: EmailServiceClient<Ops>,
    /// The parking RPCs of email-service and of user-service.
    pub email_parking: ParkingServiceClient<Ops>,
    pub user_parking: ParkingServiceClient<Ops>,
    pub auth_parking: ParkingServiceClient<Ops>,
    pub gateway_url: String,
    pub smtp: SmtpServer,
    /// The PASERK key auth-service issues with, so a test can forge tokens it signs.
    pub token_key: String,
    /// The PASERK `k4.secret` key auth-service signs access tokens with.
    pub signing_key: String,
    pub grpc_addrs: [std::net::SocketAddr; 3],
    /// The first email-service's bounce listener (with `BOUNCE_SMTP_ADDR` among `email_vars`).
    pub bounce_addr: Option<std::net::SocketAddr>,
    /// The first email-service's development mailbox (with `SMTP_URL` empty among `email_vars`).
    pub mailbox_addr: Option<std::net::SocketAddr>,
    /// Every instance's user-service and gateway ([`StackOptions::instances`]); the first is
    /// the one the fields above name.
    pub instances: Vec<Instance>,
    /// One nats-server, or a cluster ([`StackOptions::nats_nodes`]).
    pub nats: NatsCluster,
    /// Between auth-service and its database, with [`StackOptions::auth_database_door`].
    pub auth_database_door: Option<std::sync::Arc<verimail_testkit::TcpDoor>>,
    /// What the first instance's gateway was configured with: see [`Stack::start_gateway`].
    gateway_vars: Vec<settings::Var>,
    shutdown: Shutdown,
    _data: tempfile::TempDir,
    databases: Databases,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    /// A stack with these options: every part configured through its own parser from the
    /// variables [`StackOptions::vars_for`] gives it, beside the addresses, databases, NATS and
    /// keys of this stack.
    pub async fn start_with(options: StackOptions) -> Stack {
        verimail_server::telemetry::init("verimail-tests", &Vars::env());
        let nats = start_nats(&options);
        let smtp = SmtpServer::start();
        let data = tempfile::tempdir().expect("temporary data folder");
        let databases = Databases::create(options.postgres).await;
        let auth_database_door = options.auth_database_door.then(|| auth_database_door(&databases));
        let shutdown = Shutdown::default();
        let client_tls = options.tls.as_ref().map_or_else(GrpcTls::off, pki::TlsPem::grpc_tls);
        let tls_vars = options.tls.as_ref().map(|pem| pem.write(data.path())).unwrap_or_default();
        // Every instance of auth-service holds the same token key.
        let token_key = verimail_auth::links::TokenKeys::generate().expect("token key").current_paserk();
        let signing_key = verimail_auth::access::SigningKeys::generate().expect("signing key").current_paserk();
        // What `part` is given: its options' variables, this stack's and its own.
        let given = |part: Part, own: Vec<settings::Var>| {
            let mut vars = options.vars_for(part);
            vars.extend(tls_vars.iter().cloned());
            vars.push(("METRICS_ADDR", "127.0.0.1:0".into()));
            // Every part NATS (the gateway for its shared limits); the services their databases.
            vars.extend(nats_vars(&nats, part, options.nats_permissions));
            if let Some(service) = part.database() {
                let db = match (&auth_database_door, part) {
                    (Some((_, through_door)), Part::Auth) => through_door.clone(),
                    _ => databases.url(data.path(), service),
                };
                vars.push(("DATABASE_URL", db));
            }
            vars.extend(own);
            Vars::from_pairs(vars)
        };
        let operator = Operator::new();
        let channel = |addr: std::net::SocketAddr| {
            operator.channel(client_tls.channel("test", &addr.to_string()).expect("channel"))
        };
        let mut instances = Vec::new();
        let mut part_addrs = Vec::new();
        for _ in 0..options.instances.max(1) {
            let (user_addr, auth_addr, gateway_url) = start_instance(&given, &token_key, &signing_key, &shutdown).await;
            instances.push(Instance { users: UserServiceClient::new(channel(user_addr)), gateway_url });
            part_addrs.push((user_addr, auth_addr));
        }
        let gateway_urls: Vec<String> = instances.iter().map(|instance| instance.gateway_url.clone()).collect();
        let auth_addrs: Vec<_> = part_addrs.iter().map(|(_, auth)| *auth).collect();
        let emails = start_email_instances(&given, &options, &smtp, &auth_addrs, &gateway_urls, &shutdown).await;
        let (email_addr, bounce_addr, mailbox_addr) = emails[0];
        let (user_addr, auth_addr) = part_addrs[0];
        let gateway_url = instances[0].gateway_url.clone();
        let mut gateway_vars = options.vars_for(Part::Gateway);
        gateway_vars.extend(tls_vars.iter().cloned());
        // This stack's NATS (for the shared limit), never the machine's.
        gateway_vars.extend(nats_vars(&nats, Part::Gateway, options.nats_permissions));
        gateway_vars.extend(gateway_addrs(user_addr, auth_addr));

        Stack {
            users: UserServiceClient::new(channel(user_addr)),
            auth: AuthServiceClient::new(channel(auth_addr)),
            issuer: AuthServiceClient::new(
                Operator::email_service().channel(client_tls.channel("test", &auth_addr.to_string()).expect("channel")),
            ),
            emails: EmailServiceClient::new(channel(email_addr)),
            email_parking: ParkingServiceClient::new(channel(email_addr)),
            user_parking: ParkingServiceClient::new(channel(user_addr)),
            auth_parking: ParkingServiceClient::new(channel(auth_addr)),
            gateway_url,
            smtp,
            token_key,
            signing_key,
            grpc_addrs: [user_addr, auth_addr, email_addr],
            bounce_addr,
            mailbox_addr,
            instances,
            nats,
            auth_database_door: auth_database_door.map(|(door, _)| door),
            gateway_vars,
            shutdown,
            _data: data,
            databases,
        }
    }

    /// Another gateway in front of this stack's services, configured as the first one but for
    /// `vars` (a brand, a rate limit, an address nothing answers at): its URL. It stops with
    /// the stack.
    pub async fn start_gateway(&self, vars: Vec<settings::Var>) -> String {
        let vars = Vars::from_pairs(self.gateway_vars.iter().cloned().chain(vars));
        let config = verimail_gateway::Config::from_vars(&vars).expect("the extra gateway's configuration");
        let gateway = built("gateway", verimail_gateway::App::build(config)).await;
        let url = format!("http://{}", gateway.http_addr());
        tokio::spawn(gateway.run(self.shutdown.clone()));
        url
    }

    /// Registers through the gRPC API as the gateway would (no rate limit names a browser):
    /// the new user's id, or the status RegisterUser answered.
    pub async fn try_register(&self, email: &str, password: &str) -> Result<String, tonic::Status> {
        self.try_register_in(email, password, "").await
    }

    /// As [`Stack::try_register`], for a user of the language `locale` (BCP 47; empty: none).
    pub async fn try_register_in(&self, email: &str, password: &str, locale: &str) -> Result<String, tonic::Status> {
        let request = RegisterUserRequest { email: email.into(), password: password.into(), locale: locale.into() };
        self.users.clone().register_user(request).await.map(|r| r.into_inner().user_id)
    }

    /// Registers, and the new user's id; a refusal fails the test.
    pub async fn register(&self, email: &str, password: &str) -> String {
        self.register_in(email, password, "").await
    }

    /// As [`Stack::register`], for a user of the language `locale`.
    pub async fn register_in(&self, email: &str, password: &str, locale: &str) -> String {
        let registered = self.try_register_in(email, password, locale).await;
        registered.unwrap_or_else(|status| panic!("RegisterUser {email}: {status:?}"))
    }

    /// VerifyEmail with the token of a link, as the gateway's POST sends it.
    pub async fn verify(&self, token: &str) -> Result<VerifyEmailResponse, tonic::Status> {
        self.auth.clone().verify_email(VerifyEmailRequest { token: token.into() }).await.map(|r| r.into_inner())
    }

    /// One page of ListDeliveries; a refusal fails the test.
    pub async fn deliveries(&self, request: ListDeliveriesRequest) -> Vec<Delivery> {
        let listed = self.emails.clone().list_deliveries(request).await.expect("ListDeliveries");
        listed.into_inner().deliveries
    }

    /// The first delivery `request` lists that `wanted` accepts, polling (every 50 ms, at most
    /// `limit`) while email-service has not recorded it yet.
    pub async fn delivery_where(
        &self,
        request: ListDeliveriesRequest,
        wanted: impl Fn(&Delivery) -> bool,
        limit: Duration,
    ) -> Delivery {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.deliveries(request.clone()).await.into_iter().find(&wanted) {
                return found;
            }
            assert!(tokio::time::Instant::now() < deadline, "no such delivery within {limit:?}: {request:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a service (its parking client: [`Stack::email_parking`], [`Stack::user_parking`])
    /// holds parked.
    pub async fn parked(client: &ParkingServiceClient<Ops>) -> Vec<ParkedMessage> {
        client.clone().list_parked(ListParkedRequest::default()).await.expect("ListParked").into_inner().messages
    }

    /// Polls GetUser (every 20 ms, at most `limit`) until the user has `status`.
    pub async fn wait_for_status(&self, user_id: &str, status: UserStatus, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.status_of(user_id).await == status {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// For a test that damages `service`'s tables: its PostgreSQL database is made empty when
    /// the stack ends instead of being handed, tables kept, to the next test.
    pub fn discard_database(&self, service: &str) {
        self.databases.discard(service);
    }

    /// The database URL of a service of this stack ("user", "auth" or "email").
    pub fn database_url(&self, service: &str) -> String {
        self.databases.url(self._data.path(), service)
    }

    /// The one value `sql` selects from `service`'s database, as text (SQL that SQLite and
    /// PostgreSQL both speak).
    pub async fn query_text(&self, service: &str, sql: &str) -> String {
        use sea_orm::{ConnectionTrait, Statement};
        let db = sea_orm::Database::connect(self.database_url(service)).await.expect("open a service database");
        let text = format!("SELECT CAST(({sql}) AS TEXT)");
        let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), text)).await.unwrap();
        row.expect("a row").try_get_by_index::<String>(0).expect("a text value")
    }

    /// Runs one statement on `service`'s database, behind the service's back (a test that sets
    /// up what an older version left, say): the rows it changed.
    pub async fn execute(&self, service: &str, sql: &str) -> u64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = sea_orm::Database::connect(self.database_url(service)).await.expect("open a service database");
        let done = db.execute_raw(Statement::from_string(db.get_database_backend(), sql)).await;
        done.expect("the statement runs").rows_affected()
    }

    /// Registers `email` and clicks the link of its verification email (waiting for the email
    /// and the status): the verified user's id.
    pub async fn verified(&self, email: &str, password: &str) -> String {
        let user_id = self.register(email, password).await;
        let wait = Duration::from_secs(20);
        let link = self.smtp.wait_for_verification(email, wait).await.verification_link();
        assert_eq!(browser::Browser::new(&self.gateway_url).click(&link).await.kind(), "verified");
        assert!(self.wait_for_status(&user_id, UserStatus::Verified, wait).await, "{email} is verified");
        user_id
    }

    /// A session for `user_id` written behind user-service's back (for a user who cannot sign
    /// in, say an unverified one), and an access token for it signed with the stack's key,
    /// proving the password `signed_in_ago` ago.
    pub async fn forge_session(&self, user_id: &str, email: &str, signed_in_ago: Duration) -> String {
        use verimail_user::store::sessions;
        let db = sea_orm::Database::connect(self.database_url("user")).await.expect("open user-service's database");
        let now = chrono::Utc::now();
        let auth_time = now - chrono::Duration::from_std(signed_in_ago).expect("a duration");
        let id = uuid::Uuid::new_v4().to_string();
        let row = sessions::Model {
            id: id.clone(),
            user_id: user_id.to_owned(),
            refresh_hash: format!("forged {id}"),
            client: "test".into(),
            created_at: auth_time,
            last_used_at: now,
            auth_time,
            expires_at: now + chrono::Duration::hours(1),
            access_expires_at: now + chrono::Duration::minutes(1),
            ended_at: None,
            end_reason: None,
            end_seq: None,
        };
        sessions::insert(&db, row).await.expect("insert a session");
        let signing = verimail_auth::access::SigningKeys::from_paserk(&[self.signing_key.as_str()]).expect("the key");
        let holder = verimail_auth::access::Holder { user_id, email, email_verified: true, session_id: &id, auth_time };
        signing.sign(&holder, "verimail", Duration::from_secs(60)).expect("a token").token
    }

    /// user-service without the test's credentials: for calls that carry a user's own
    /// ([`with_bearer`]).
    pub fn plain_users(&self) -> UserServiceClient<tonic::transport::Channel> {
        let url = format!("http://{}", self.grpc_addrs[0]);
        UserServiceClient::new(tonic::transport::Channel::from_shared(url).expect("a URL").connect_lazy())
    }

    /// Every place `needle` is stored in the three databases: `service.table.column` of each
    /// column (of any type: text, and bytes such as event payloads) where a row holds it.
    pub async fn find_everywhere(&self, needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for service in ["user", "auth", "email"] {
            found.extend(find_in_database(&self.database_url(service), service, needle).await);
        }
        found
    }

    /// SignIn as a client of its own (limited by the test's address).
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<SignInResponse, tonic::Status> {
        self.users
            .clone()
            .sign_in(SignInRequest { email: email.into(), password: password.into() })
            .await
            .map(|r| r.into_inner())
    }

    /// SignIn as the gateway would, for the browser at `client`.
    pub async fn sign_in_from(
        &self,
        client: &str,
        email: &str,
        password: &str,
    ) -> Result<SignInResponse, tonic::Status> {
        let request = SignInRequest { email: email.into(), password: password.into() };
        self.users.clone().sign_in(for_browser(request, client)).await.map(|reply| reply.into_inner())
    }

    pub async fn status_of(&self, user_id: &str) -> UserStatus {
        self.user(user_id).await.status()
    }

    /// GetUser by id, as an operator; a refusal fails the test.
    pub async fn user(&self, user_id: &str) -> verimail_proto::user::v1::User {
        let request = GetUserRequest { key: Some(get_user_request::Key::UserId(user_id.to_owned())) };
        self.users.clone().get_user(request).await.expect("GetUser").into_inner().user.expect("a user")
    }
}

/// Where `needle` is stored in the database at `url` (see [`Stack::find_everywhere`]).
pub async fn find_in_database(url: &str, service: &str, needle: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let db = sea_orm::Database::connect(url).await.expect("open a service database");
    let backend = db.get_database_backend();
    let rows = |sql: &str| db.query_all_raw(Statement::from_string(backend, sql));
    // (table, column, whether it holds bytes)
    let columns: Vec<(String, String, bool)> = match backend {
        DbBackend::Postgres => rows(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema()",
        )
        .await
        .expect("list columns")
        .iter()
        .map(|r| {
            let kind: String = r.try_get_by_index(2).expect("a type");
            (r.try_get_by_index(0).expect("a table"), r.try_get_by_index(1).expect("a column"), kind == "bytea")
        })
        .collect(),
        _ => {
            let tables = rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                .await
                .expect("list tables");
            let mut columns = Vec::new();
            for table in tables {
                let table: String = table.try_get_by_index(0).expect("a table");
                let info = rows(&format!("SELECT name FROM pragma_table_info('{table}')")).await.expect("columns");
                for column in info {
                    columns.push((table.clone(), column.try_get_by_index(0).expect("a column"), false));
                }
            }
            columns
        }
    };
    assert!(columns.len() > 5, "{service}: found only {} columns to search", columns.len());
    let needle = needle.replace('\'', "''");
    let mut found = Vec::new();
    for (table, column, bytes) in columns {
        let holds = match (backend, bytes) {
            (DbBackend::Postgres, true) => format!("position(convert_to('{needle}', 'UTF8') in \"{column}\") > 0"),
            (DbBackend::Postgres, false) => format!("CAST(\"{column}\" AS TEXT) LIKE '%{needle}%'"),
            // SQLite reads a blob cast to text as its bytes.
            _ => format!("CAST(\"{column}\" AS TEXT) LIKE '%{needle}%'"),
        };
        let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE {holds}");
        let count = rows(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let count: i64 = count[0].try_get_by_index(0).expect("a count");
        if count > 0 {
            found.push(format!("{service}.{table}.{column} ({count} rows)"));
        }
    }
    found
}

/// A listening address on a free port of this machine.
const ANY_PORT: &str = "127.0.0.1:0";

/// A door in front of auth-service's PostgreSQL database (a test closes it to cut the
/// database off), and the database's URL through it.
fn auth_database_door(databases: &Databases) -> (std::sync::Arc<verimail_testkit::TcpDoor>, String) {
    let auth = databases.postgres.get(1).expect("auth_database_door needs postgres");
    let door = verimail_testkit::TcpDoor::open(auth.server_addr());
    let url = auth.url_through(door.port());
    (door, url)
}

/// Where a gateway listens, and the services it calls.
fn gateway_addrs(user_addr: std::net::SocketAddr, auth_addr: std::net::SocketAddr) -> [settings::Var; 4] {
    [
        ("METRICS_ADDR", "127.0.0.1:0".into()),
        ("USER_GRPC_ADDR", user_addr.to_string()),
        ("AUTH_GRPC_ADDR", auth_addr.to_string()),
        ("GATEWAY_HTTP_ADDR", ANY_PORT.into()),
    ]
}

/// The instances of email-service a stack runs: they share its database and its durable
/// consumer; each calls the auth-service (and links to the gateway) of one instance, in turn.
/// Each one's gRPC, bounce and mailbox addresses.
async fn start_email_instances(
    given: &impl Fn(Part, Vec<settings::Var>) -> Vars,
    options: &StackOptions,
    smtp: &SmtpServer,
    auth_addrs: &[std::net::SocketAddr],
    gateway_urls: &[String],
    shutdown: &Shutdown,
) -> Vec<(std::net::SocketAddr, Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
    let mut started = Vec::new();
    for n in 1..=options.email_instances.max(1) {
        let auth_addr = auth_addrs[(n - 1) % auth_addrs.len()];
        // The stack's SMTP server, unless the test puts something (an MTA) between.
        let smtp_url = options.email_vars.iter().find(|(name, _)| *name == "SMTP_URL");
        let own = vec![
            ("EMAIL_GRPC_ADDR", ANY_PORT.to_owned()),
            ("AUTH_GRPC_ADDR", auth_addr.to_string()),
            ("SMTP_URL", smtp_url.map_or_else(|| smtp.url(), |(_, url)| url.clone())),
            ("PUBLIC_BASE_URL", gateway_urls[(n - 1) % gateway_urls.len()].clone()),
            ("EMAIL_INSTANCE_ID", format!("email-{n}")),
        ];
        let config =
            verimail_email::Config::from_vars(&given(Part::Email, own)).expect("email-service's test configuration");
        let email = built("email-service", verimail_email::App::build(config)).await;
        started.push((email.grpc_addr(), email.bounce_addr(), email.mailbox_addr()));
        tokio::spawn(email.run(shutdown.clone()));
    }
    started
}

/// One instance: auth-service (with `token_key` and `signing_key`), user-service and a gateway calling them,
/// each configured from `given`, running until `shutdown`: user-service's and auth-service's
/// addresses and the gateway's URL.
async fn start_instance(
    given: &impl Fn(Part, Vec<settings::Var>) -> Vars,
    token_key: &str,
    signing_key: &str,
    shutdown: &Shutdown,
) -> (std::net::SocketAddr, std::net::SocketAddr, String) {
    let vars = given(
        Part::Auth,
        vec![
            ("AUTH_GRPC_ADDR", ANY_PORT.into()),
            ("AUTH_TOKEN_KEYS", token_key.into()),
            ("AUTH_SIGNING_KEYS", signing_key.into()),
        ],
    );
    let config = verimail_auth::Config::from_vars(&vars).expect("auth-service's test configuration");
    let auth = built("auth-service", verimail_auth::App::build(config)).await;
    let auth_addr = auth.grpc_addr();

    let vars = given(Part::User, vec![("USER_GRPC_ADDR", ANY_PORT.into()), ("AUTH_GRPC_ADDR", auth_addr.to_string())]);
    let config = verimail_user::Config::from_vars(&vars).expect("user-service's test configuration");
    let user = built("user-service", verimail_user::App::build(config)).await;
    let user_addr = user.grpc_addr();

    let own = vec![
        ("GATEWAY_HTTP_ADDR", ANY_PORT.into()),
        ("USER_GRPC_ADDR", user_addr.to_string()),
        ("AUTH_GRPC_ADDR", auth_addr.to_string()),
    ];
    let config =
        verimail_gateway::Config::from_vars(&given(Part::Gateway, own)).expect("the gateway's test configuration");
    let gateway = built("gateway", verimail_gateway::App::build(config)).await;
    let gateway_url = format!("http://{}", gateway.http_addr());
    tokio::spawn(auth.run(shutdown.clone()));
    tokio::spawn(user.run(shutdown.clone()));
    tokio::spawn(gateway.run(shutdown.clone()));
    (user_addr, auth_addr, gateway_url)
}

/// A part built, within a minute: one that cannot reach NATS or its database waits for it
/// for ever by design (a service must outlast its dependencies' restarts), a test must not.
async fn built<T, E: std::fmt::Debug>(part: &str, build: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(Duration::from_secs(60), build).await {
        Ok(built) => built.unwrap_or_else(|e| panic!("{part} builds: {e:?}")),
        Err(_) => panic!(
            "{part} was not built within 60 s (NATS or its database not ready?): {}",
            verimail_testkit::nats_report()
        ),
    }
}

/// One nats-server, a cluster, or a server with a user per service
/// ([`StackOptions::nats_permissions`]).
fn start_nats(options: &StackOptions) -> NatsCluster {
    if options.nats_permissions {
        let passwords = ["user-service", "auth-service", "email-service", "gateway"].map(nats_password).to_vec();
        let server = verimail_testkit::NatsServer::start_configured(std::path::Path::new(NATS_PERMISSIONS), passwords);
        NatsCluster { nodes: vec![server] }
    } else {
        NatsCluster::start(options.nats_nodes)
    }
}

/// Where `part` finds NATS, and as whom where NATS has users.
fn nats_vars(nats: &NatsCluster, part: Part, with_users: bool) -> Vec<settings::Var> {
    let mut vars = vec![("NATS_URL", nats.url())];
    if with_users {
        vars.push(("NATS_USER", part.binary().to_owned()));
        vars.push(("NATS_PASSWORD", nats_password(part.binary()).1));
    }
    vars
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
