//! Internal RPCs answer only our services, ops RPCs only operators, each caller with its own
//! credential: the gateway may speak for browsers but not have tokens issued, email-service
//! may have tokens issued but not speak for browsers.

use tonic::Code;
use tonic::metadata::MetadataValue;
use verimail_proto::auth::v1::{
    IssueAccessTokenRequest, IssueVerificationTokenRequest, RevokeVerificationTokensRequest,
    auth_service_client::AuthServiceClient,
};
use verimail_proto::email::v1::{
    GetDeliveryRequest, ListDeliveriesRequest, RetryDeliveryRequest, email_service_client::EmailServiceClient,
};
use verimail_proto::ops::v1::{ListParkedRequest, ReplayParkedRequest, parking_service_client::ParkingServiceClient};
use verimail_proto::user::v1::{
    BatchGetUsersRequest, GetUserRequest, ListUsersRequest, RegisterUserRequest, ResendVerificationRequest,
    get_user_request, user_service_client::UserServiceClient,
};
use verimail_server::internal::{SERVICE_TOKEN, ServiceCredential};
use verimail_server::limits::Rate;
use verimail_system_tests::{
    Stack, StackOptions, TEST_ADMIN_TOKEN, TEST_APP_TOKEN, TEST_EMAIL_TOKEN, TEST_GATEWAY_TOKEN, TEST_USER_TOKEN,
    for_browser,
};

/// A caller presenting exactly the given metadata.
#[derive(Clone)]
struct Caller(Vec<(&'static str, &'static str)>);

impl tonic::service::Interceptor for Caller {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in &self.0 {
            request.metadata_mut().insert(*key, MetadataValue::from_static(value));
        }
        Ok(request)
    }
}

type Client = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Caller>;

/// Every ops RPC once, as `caller`: the codes they answered, by name.
async fn ops_rpcs(stack: &Stack, caller: &Caller) -> Vec<(&'static str, Code)> {
    let [user_addr, auth_addr, email_addr] = stack.grpc_addrs;
    let client = |addr: std::net::SocketAddr| -> Client {
        let channel = verimail_server::tls::GrpcTls::off().channel("test", &addr.to_string()).unwrap();
        tonic::service::interceptor::InterceptedService::new(channel, caller.clone())
    };
    let code = |answer: Result<(), tonic::Status>| answer.err().map_or(Code::Ok, |status| status.code());
    let id = "01937b5e-0000-7000-8000-000000000000";
    let mut users = UserServiceClient::new(client(user_addr));
    let mut emails = EmailServiceClient::new(client(email_addr));
    vec![
        (
            "GetUser",
            code(
                users.get_user(GetUserRequest { key: Some(get_user_request::Key::UserId(id.into())) }).await.map(drop),
            ),
        ),
        ("ListUsers", code(users.list_users(ListUsersRequest::default()).await.map(drop))),
        ("ListDeliveries", code(emails.list_deliveries(ListDeliveriesRequest::default()).await.map(drop))),
        ("GetDelivery", code(emails.get_delivery(GetDeliveryRequest { event_id: id.into() }).await.map(drop))),
        ("RetryDelivery", code(emails.retry_delivery(RetryDeliveryRequest { event_id: id.into() }).await.map(drop))),
        (
            "RevokeVerificationTokens",
            code(
                AuthServiceClient::new(client(auth_addr))
                    .revoke_verification_tokens(RevokeVerificationTokensRequest { user_id: id.into() })
                    .await
                    .map(drop),
            ),
        ),
        (
            "ListParked (email)",
            code(
                ParkingServiceClient::new(client(email_addr)).list_parked(ListParkedRequest::default()).await.map(drop),
            ),
        ),
        (
            "ListParked (user)",
            code(
                ParkingServiceClient::new(client(user_addr)).list_parked(ListParkedRequest::default()).await.map(drop),
            ),
        ),
        (
            "ReplayParked",
            code(
                ParkingServiceClient::new(client(user_addr))
                    .replay_parked(ReplayParkedRequest { sequence: 1 })
                    .await
                    .map(drop),
            ),
        ),
    ]
}

async fn issue_token(stack: &Stack, caller: &Caller) -> Code {
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[1].to_string()).unwrap();
    let request = IssueVerificationTokenRequest {
        user_id: "01937b5e-0000-7000-8000-000000000000".into(),
        email: "a@example.com".into(),
        ..Default::default()
    };
    AuthServiceClient::with_interceptor(channel, caller.clone())
        .issue_verification_token(request)
        .await
        .err()
        .map_or(Code::Ok, |status| status.code())
}

/// IssueAccessToken as `caller`: the code it answered.
async fn sign_token(stack: &Stack, caller: &Caller) -> Code {
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[1].to_string()).unwrap();
    let request = IssueAccessTokenRequest {
        user_id: "01937b5e-0000-7000-8000-000000000000".into(),
        email: "a@example.com".into(),
        email_verified: true,
        session_id: "01937b5e-0000-7000-8000-0000000000aa".into(),
        auth_time: "2026-12-05T00:00:00Z".into(),
    };
    AuthServiceClient::with_interceptor(channel, caller.clone())
        .issue_access_token(request)
        .await
        .err()
        .map_or(Code::Ok, |status| status.code())
}

/// BatchGetUsers as `caller`: the code it answered.
async fn batch_lookup(stack: &Stack, caller: &Caller) -> Code {
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
    let request = BatchGetUsersRequest { user_ids: vec!["01937b5e-0000-7000-8000-000000000000".into()] };
    UserServiceClient::with_interceptor(channel, caller.clone())
        .batch_get_users(request)
        .await
        .err()
        .map_or(Code::Ok, |status| status.code())
}

const ADMIN: (&str, &str) = ("authorization", "Bearer test-admin-token-0123456789");
const USER: (&str, &str) = (SERVICE_TOKEN, TEST_USER_TOKEN);
const APP: (&str, &str) = (SERVICE_TOKEN, TEST_APP_TOKEN);
const GATEWAY: (&str, &str) = (SERVICE_TOKEN, TEST_GATEWAY_TOKEN);
const EMAIL: (&str, &str) = (SERVICE_TOKEN, TEST_EMAIL_TOKEN);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_and_ops_rpcs_each_take_their_own_credential() {
    let stack = Stack::start().await;
    assert_eq!(ADMIN.1, format!("Bearer {TEST_ADMIN_TOKEN}"));
    let refused = [
        ("nothing", Caller(vec![])),
        ("the gateway's credential", Caller(vec![GATEWAY])),
        ("email-service's credential", Caller(vec![EMAIL])),
        ("a wrong admin token", Caller(vec![("authorization", "Bearer not-the-admin-token-at-all")])),
        ("the admin token without Bearer", Caller(vec![("authorization", "test-admin-token-0123456789")])),
        ("the admin token as the service credential", Caller(vec![(SERVICE_TOKEN, "test-admin-token-0123456789")])),
    ];
    for (who, caller) in &refused {
        for (rpc, code) in ops_rpcs(&stack, caller).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} as {who}");
        }
    }
    // The operator gets answers (NOT_FOUND for the made-up ids, OK for the lists).
    let answered = ops_rpcs(&stack, &Caller(vec![ADMIN])).await;
    println!("as the operator: {answered:?}");
    for (rpc, code) in answered {
        assert!(matches!(code, Code::Ok | Code::NotFound), "{rpc} as the operator: {code:?}");
    }
    // IssueVerificationToken takes email-service's credential only: a compromised gateway,
    // the one part on the internet, cannot mint links.
    for (who, caller) in [("nothing", Caller(vec![])), ("the admin credential", Caller(vec![ADMIN]))] {
        assert_eq!(issue_token(&stack, &caller).await, Code::Unauthenticated, "IssueVerificationToken as {who}");
    }
    assert_eq!(issue_token(&stack, &Caller(vec![GATEWAY])).await, Code::PermissionDenied, "as the gateway");
    assert_eq!(issue_token(&stack, &Caller(vec![USER])).await, Code::PermissionDenied, "as user-service");
    assert_eq!(issue_token(&stack, &Caller(vec![EMAIL])).await, Code::Ok);
    // IssueAccessToken takes user-service's credential only: it has checked the password.
    for (who, caller) in [("nothing", vec![]), ("the admin credential", vec![ADMIN]), ("a service's", vec![APP])] {
        assert_eq!(sign_token(&stack, &Caller(caller)).await, Code::Unauthenticated, "IssueAccessToken as {who}");
    }
    for (who, caller) in [("the gateway", GATEWAY), ("email-service", EMAIL)] {
        assert_eq!(
            sign_token(&stack, &Caller(vec![caller])).await,
            Code::PermissionDenied,
            "IssueAccessToken as {who}"
        );
    }
    assert_eq!(sign_token(&stack, &Caller(vec![USER])).await, Code::Ok);
    // The team's own services look users up with their credential, and do nothing else.
    for (rpc, code) in ops_rpcs(&stack, &Caller(vec![APP])).await {
        let expected = if rpc == "GetUser" { Code::NotFound } else { Code::Unauthenticated };
        assert_eq!(code, expected, "{rpc} as a service");
    }
    assert_eq!(batch_lookup(&stack, &Caller(vec![APP])).await, Code::Ok, "BatchGetUsers as a service");
    assert_eq!(batch_lookup(&stack, &Caller(vec![ADMIN])).await, Code::Ok, "BatchGetUsers as the operator");
    for (who, caller) in [("nothing", vec![]), ("the gateway", vec![GATEWAY]), ("user-service", vec![USER])] {
        assert_eq!(batch_lookup(&stack, &Caller(caller)).await, Code::Unauthenticated, "BatchGetUsers as {who}");
    }
    // Public RPCs need nothing.
    let plain = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
    UserServiceClient::new(plain)
        .register_user(RegisterUserRequest {
            email: "pub@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .expect("a public RPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trusted_caller_may_name_the_client_it_calls_for() {
    let stack = Stack::start_with(StackOptions {
        limits: Some(Rate::new(3, std::time::Duration::from_secs(60))),
        ..StackOptions::default()
    })
    .await;
    let plain = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
    let resend_as = |client: &'static str, credential: Option<&'static str>| {
        let channel = plain.clone();
        async move {
            let request = for_browser(
                ResendVerificationRequest { email: format!("{client}@example.com"), ..Default::default() },
                client,
            );
            if let Some(secret) = credential {
                let credential = ServiceCredential::new(secret).unwrap();
                return UserServiceClient::new(credential.channel(channel)).resend_verification(request).await;
            }
            UserServiceClient::new(channel).resend_verification(request).await
        }
    };
    // An outsider naming a new "client" each time is still one client: its own address.
    for client in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        resend_as(client, None).await.expect("within the limit");
    }
    assert_eq!(resend_as("10.0.0.4", None).await.unwrap_err().code(), Code::ResourceExhausted);
    // So is email-service: it has tokens issued, it does not speak for browsers.
    let email = resend_as("10.0.2.1", Some(TEST_EMAIL_TOKEN)).await.unwrap_err();
    assert_eq!(email.code(), Code::ResourceExhausted, "counted as its own address, spent above");
    // The gateway speaks for many browsers: each has its own allowance.
    for client in ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5"] {
        resend_as(client, Some(TEST_GATEWAY_TOKEN)).await.expect("a browser's own allowance");
    }
}

/// The team's services by name (SERVICE_CREDENTIALS_FILE): each may call what it is granted
/// and nothing else, with either of its secrets while one is rotated, within its own rate;
/// an unknown secret, or one taken out of the file, is UNAUTHENTICATED; each name is counted
/// in `verimail_service_calls_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_services_each_call_what_they_are_granted_and_are_counted_by_name() {
    use verimail_proto::user::v1::ListRevokedSessionsRequest;
    const ORDERS_OLD: &str = "orders-secret-being-rotated-out";
    const ORDERS: &str = "orders-secret-rotated-in-0123";
    const FEED: &str = "revocation-feed-secret-0123456";
    const HOOKS: &str = "webhook-runner-secret-01234567";
    let sha256 = verimail_system_tests::sha256_hex;
    let stack_with = |orders_secrets: Vec<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.yaml");
        let hashes: Vec<String> = orders_secrets.iter().map(|s| sha256(s)).collect();
        let file = format!(
            "services:\n  - name: orders\n    secrets_sha256: [{}]\n    may: [lookups, batch_lookups]\n  \
             - name: feed\n    secrets_sha256: [{}]\n    may: [revocations]\n    rate: 3/600\n  \
             - name: hooks\n    secrets_sha256: [{}]\n    may: [webhooks]\n",
            hashes.join(", "),
            sha256(FEED),
            sha256(HOOKS)
        );
        std::fs::write(&path, file).unwrap();
        let vars = vec![("SERVICE_CREDENTIALS_FILE", path.display().to_string())];
        let options = StackOptions { user_vars: vars.clone(), email_vars: vars, ..StackOptions::default() };
        async move { (Stack::start_with(options).await, dir) }
    };
    let (stack, _dir) = stack_with(vec![ORDERS_OLD, ORDERS]).await;
    let users = |secret: &'static str| {
        let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
        UserServiceClient::with_interceptor(channel, Caller(vec![(SERVICE_TOKEN, secret)]))
    };
    let code = |answer: Result<(), tonic::Status>| answer.err().map_or(Code::Ok, |status| status.code());
    let lookup = |secret: &'static str| {
        let mut client = users(secret);
        async move {
            let request = GetUserRequest {
                key: Some(get_user_request::Key::UserId("01937b5e-0000-7000-8000-000000000000".into())),
            };
            code(client.get_user(request).await.map(drop))
        }
    };
    let feed = |secret: &'static str| {
        let mut client = users(secret);
        async move { code(client.list_revoked_sessions(ListRevokedSessionsRequest::default()).await.map(drop)) }
    };
    assert_eq!(lookup(ORDERS).await, Code::NotFound, "orders looks users up (none here)");
    assert_eq!(lookup(ORDERS_OLD).await, Code::NotFound, "with its old secret too, while it rotates");
    assert_eq!(batch_lookup(&stack, &Caller(vec![(SERVICE_TOKEN, ORDERS)])).await, Code::Ok);
    assert_eq!(feed(ORDERS).await, Code::PermissionDenied, "orders was not granted the feed");
    assert_eq!(lookup(FEED).await, Code::PermissionDenied, "feed was not granted lookups");
    for _ in 0..3 {
        assert_eq!(feed(FEED).await, Code::Ok);
    }
    assert_eq!(feed(FEED).await, Code::ResourceExhausted, "feed's own rate: 3 in 10 minutes");
    assert_eq!(lookup(ORDERS).await, Code::NotFound, "one caller's rate is no other's");
    assert_eq!(lookup("a-secret-nobody-holds-0123").await, Code::Unauthenticated);
    // email-service's WebhookService: for operators, and for the services granted webhooks.
    let endpoints = |secret: &'static str| {
        let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[2].to_string()).unwrap();
        let mut client = verimail_proto::email::v1::webhook_service_client::WebhookServiceClient::with_interceptor(
            channel,
            Caller(vec![(SERVICE_TOKEN, secret)]),
        );
        async move {
            let request = verimail_proto::email::v1::ListWebhookEndpointsRequest {};
            code(client.list_webhook_endpoints(request).await.map(drop))
        }
    };
    assert_eq!(endpoints(HOOKS).await, Code::Ok);
    assert_eq!(endpoints(ORDERS).await, Code::PermissionDenied, "orders was not granted webhooks");
    assert_eq!(lookup(HOOKS).await, Code::PermissionDenied, "hooks was not granted lookups");
    assert_eq!(lookup(TEST_APP_TOKEN).await, Code::NotFound, "APP_SERVICE_TOKEN is the caller named app");
    let metrics = verimail_server::metrics::render();
    for (caller, method) in [
        ("orders", "GetUser"),
        ("orders", "BatchGetUsers"),
        ("feed", "ListRevokedSessions"),
        ("app", "GetUser"),
        ("hooks", "WebhookService"),
    ] {
        let series = format!("verimail_service_calls_total{{caller=\"{caller}\",method=\"{method}\"}}");
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }
    drop(stack);

    // The old secret taken out of the file: a call presenting it is UNAUTHENTICATED.
    let (stack, _dir) = stack_with(vec![ORDERS]).await;
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addrs[0].to_string()).unwrap();
    let mut revoked = UserServiceClient::with_interceptor(channel, Caller(vec![(SERVICE_TOKEN, ORDERS_OLD)]));
    let request = GetUserRequest { key: Some(get_user_request::Key::Email("a@example.com".into())) };
    assert_eq!(revoked.get_user(request).await.unwrap_err().code(), Code::Unauthenticated);
}
