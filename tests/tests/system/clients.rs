//! The verifiers outside Rust against a real stack: the example services of clients/typescript
//! (Express) and clients/python (FastAPI) verify real access tokens offline with the gateway's
//! keys, follow the revocation feed through the gateway with a named service credential, learn
//! a signing-key rotation, and verify real webhook deliveries. scripts/clients.sh installs and
//! builds them (`just test` does).

use std::time::{Duration, Instant};
use verimail_auth::access::{Holder, SigningKeys};
use verimail_proto::email::v1::webhook_service_client::WebhookServiceClient;
use verimail_proto::email::v1::{CreateWebhookEndpointRequest, SetWebhookEndpointEnabledRequest};
use verimail_proto::user::v1::{SignInRequest, SignOutRequest};
use verimail_system_tests::Operator;
use verimail_system_tests::batch;
use verimail_system_tests::procs::{Part, ProcessStack};
use verimail_system_tests::sha256_hex;

const LIMIT: Duration = Duration::from_secs(60);
/// The secret of the service `orders` (granted the revocation feed only).
const ORDERS: &str = "orders-secret-for-the-feed-0123";
/// A service granted lookups only.
const LOOKUPS: &str = "lookups-only-secret-0123456789";

/// One example service, a process of its own, killed when the test ends.
struct App {
    name: &'static str,
    child: std::process::Child,
    url: String,
}

impl App {
    /// `program script` listening on `port`, its webhooks signed with `webhook_secret`.
    fn start(name: &'static str, program: &str, script: &str, port: u16, gateway: &str, webhook_secret: &str) -> App {
        let child = std::process::Command::new(program)
            .arg(script)
            .env("VERIMAIL_URL", gateway)
            .env("VERIMAIL_SERVICE_SECRET", ORDERS)
            .env("VERIMAIL_LEEWAY_SECONDS", "0")
            .env("WEBHOOK_SECRET", webhook_secret)
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {program} {script}: {e} (scripts/clients.sh setup)"));
        App { name, child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Waits (at most 30 s) until it answers.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(format!("{}/hooks/received", self.url)).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before it answered: {status}", self.name);
            }
            assert!(Instant::now() < deadline, "{} does not answer", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET /orders with `token`: the status and the body.
    async fn orders(&self, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().get(format!("{}/orders", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.expect("the app answers");
        let status = answer.status().as_u16();
        (status, json(answer).await)
    }

    /// Why it refused `token` (the error code of either framework's body), or "accepted".
    async fn verdict(&self, token: Option<&str>) -> String {
        let (status, body) = self.orders(token).await;
        if status == 200 {
            return "accepted".into();
        }
        let error = body.get("error").or_else(|| body.get("detail")).cloned().unwrap_or_default();
        format!("{status} {}", error["code"].as_str().unwrap_or("?"))
    }

    async fn received(&self) -> Vec<serde_json::Value> {
        let answer = reqwest::get(format!("{}/hooks/received", self.url)).await.expect("the app answers");
        json(answer).await.as_array().cloned().expect("a JSON list")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body as JSON (null if it is not).
async fn json(answer: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&answer.text().await.unwrap_or_default()).unwrap_or_default()
}

fn flip(token: &str) -> String {
    let at = "v4.public.".len() + 20;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_and_python_verifiers_answer_as_require_verified_does_on_a_real_stack() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let python = verimail_system_tests::clients_python();
    let mut stack = ProcessStack::start().await;
    // A named service for the feed, and webhooks to receivers on this machine.
    let credentials = stack.dir.path().join("services.yaml");
    let file = format!(
        "services:\n  - name: orders\n    secrets_sha256: [{}]\n    may: [revocations]\n  \
         - name: lookups\n    secrets_sha256: [{}]\n    may: [lookups]\n",
        sha256_hex(ORDERS),
        sha256_hex(LOOKUPS)
    );
    std::fs::write(&credentials, file).unwrap();
    stack.kill(Part::User);
    stack.set_var(Part::User, "SERVICE_CREDENTIALS_FILE", &credentials.display().to_string());
    stack.start_part(Part::User).await;
    stack.kill(Part::Email);
    stack.set_var(Part::Email, "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
    stack.start_part(Part::Email).await;

    // The feed through the gateway: the caller's own credential, checked by user-service.
    let feed = |secret: Option<&'static str>| {
        let mut request = reqwest::Client::new().get(format!("{}/v1/revoked-sessions?after=0", stack.gateway_url));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        async move {
            let answer = request.send().await.expect("the gateway answers");
            (answer.status().as_u16(), json(answer).await)
        }
    };
    let (status, body) = feed(Some(ORDERS)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked"].is_array() && body["cursor"].is_u64() && body["more"].is_boolean(), "{body}");
    let (status, body) = feed(Some(LOOKUPS)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");
    let (status, body) = feed(Some("a-secret-nobody-holds-0123")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let (status, _) = feed(None).await;
    assert_eq!(status, 401, "no credential");
    let answer = reqwest::get(format!("{}/v1/revoked-sessions?after=minus-one", stack.gateway_url)).await.unwrap();
    assert_eq!(answer.status().as_u16(), 400, "a cursor that is not a number");

    // Each app's webhook endpoint, then the apps.
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addr(Part::Email)).unwrap();
    let hooks = WebhookServiceClient::new(Operator::new().channel(channel));
    let endpoint_secret = |url: String| {
        let request = CreateWebhookEndpointRequest {
            url,
            event_types: vec!["users.verified".into(), "users.sessions_revoked".into()],
            description: "an example service".into(),
        };
        let mut hooks = hooks.clone();
        async move {
            let created = hooks.create_webhook_endpoint(request).await.expect("an endpoint").into_inner();
            (created.endpoint.expect("the endpoint").id, created.secret)
        }
    };
    let ts_script = format!("{root}/clients/typescript/dist/examples/orders.js");
    let py_script = format!("{root}/clients/python/examples/orders.py");
    let (mut apps, mut endpoints) = (Vec::new(), Vec::new());
    for (name, program, script) in [("typescript", "node", ts_script.as_str()), ("python", python.as_str(), &py_script)]
    {
        let port = verimail_testkit::free_port();
        let (endpoint, secret) = endpoint_secret(format!("http://127.0.0.1:{port}/hooks/verimail")).await;
        endpoints.push(endpoint);
        let mut app = App::start(name, program, script, port, &stack.gateway_url, &secret);
        app.ready().await;
        apps.push(app);
    }

    // Ann registers, verifies and signs in: a real session and its access token.
    let users = batch::register(&stack.users, "clients", 0..1, LIMIT).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), LIMIT).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, LIMIT).await;
    let sign_in = |stack: &ProcessStack| {
        let request = SignInRequest { email: users[0].email.clone(), password: batch::PASSWORD.into() };
        let mut client = stack.users.clone();
        async move { client.sign_in(request).await.expect("SignIn").into_inner() }
    };
    let session = sign_in(&stack).await;
    let token = session.access_token.as_str();

    // Tokens made here with the stack's key (and a stranger's), for what SignIn never hands out.
    let old_key = stack.var(Part::Auth, "AUTH_SIGNING_KEYS");
    let signing = SigningKeys::from_paserk(&[old_key.as_str()]).unwrap();
    let holder = |verified: bool| Holder {
        user_id: "0193f1c2-0000-7000-8000-000000000001",
        email: "someone@example.com",
        email_verified: verified,
        session_id: "0193f1c2-0000-7000-8000-0000000000aa",
        auth_time: chrono::Utc::now(),
    };
    let forge = |keys: &SigningKeys, verified: bool, audience: &str, lifetime: u64| {
        keys.sign(&holder(verified), audience, Duration::from_secs(lifetime)).unwrap().token
    };
    let stranger = SigningKeys::generate().unwrap();
    let short = forge(&signing, true, "verimail", 1);
    let cases = [
        ("no token", None, "401 unauthenticated"),
        ("garbage", Some("v4.public.nonsense".to_owned()), "401 malformed"),
        ("tampered", Some(flip(token)), "401 bad_signature"),
        ("wrong audience", Some(forge(&signing, true, "billing", 60)), "401 wrong_audience"),
        ("unknown key", Some(forge(&stranger, true, "verimail", 60)), "401 unknown_key"),
        ("unverified address", Some(forge(&signing, false, "verimail", 60)), "403 email_not_verified"),
    ];
    for app in &apps {
        let (status, body) = app.orders(Some(token)).await;
        assert_eq!(status, 200, "{}: {body}", app.name);
        assert_eq!(body["user_id"].as_str(), Some(users[0].user_id.as_str()), "{}", app.name);
        assert_eq!(body["email"].as_str(), Some(users[0].email.as_str()), "{}", app.name);
        for (what, token, verdict) in &cases {
            assert_eq!(app.verdict(token.as_deref()).await, *verdict, "{}: {what}", app.name);
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for app in &apps {
        assert_eq!(app.verdict(Some(&short)).await, "401 expired", "{}: an expired token (no leeway)", app.name);
    }

    // A rotation: the new key signs, the old one is still published. The new key's tokens are
    // accepted within the verifiers' refetch interval (5 s) and the gateway's (1 s).
    let new_key = SigningKeys::generate().unwrap().current_paserk();
    assert!(stack.terminate(Part::Auth).success());
    stack.set_var(Part::Auth, "AUTH_SIGNING_KEYS", &format!("{new_key},{old_key}"));
    stack.start_part(Part::Auth).await;
    let by_new = sign_in(&stack).await;
    for app in &apps {
        let started = Instant::now();
        while app.verdict(Some(&by_new.access_token)).await != "accepted" {
            assert!(started.elapsed() < Duration::from_secs(15), "{}: the new key is never learnt", app.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!("{}: a new key's token accepted {:?} after the first try", app.name, started.elapsed());
        assert_eq!(app.verdict(Some(token)).await, "accepted", "{}: an old-key token after the rotation", app.name);
    }

    // Sign-out: every verifier refuses the session's token within seconds (the feed every
    // second, and the users.sessions_revoked webhook).
    let request = SignOutRequest { refresh_token: session.refresh_token.clone(), everywhere: false };
    let signed_out = Instant::now();
    assert_eq!(stack.users.clone().sign_out(request).await.expect("SignOut").into_inner().ended_sessions, 1);
    for app in &apps {
        while app.verdict(Some(token)).await != "401 revoked" {
            assert!(
                signed_out.elapsed() < Duration::from_secs(10),
                "{}: the ended session's token still passes",
                app.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{}: the signed-out token refused {:?} after SignOut answered", app.name, signed_out.elapsed());
        assert_eq!(
            app.verdict(Some(&by_new.access_token)).await,
            "accepted",
            "{}: the other session goes on",
            app.name
        );
    }

    // With the webhooks off, the feed alone: within its poll interval and a round trip.
    for id in &endpoints {
        let request = SetWebhookEndpointEnabledRequest { id: id.clone(), enabled: false };
        hooks.clone().set_webhook_endpoint_enabled(request).await.expect("disabled");
    }
    let request = SignOutRequest { refresh_token: by_new.refresh_token.clone(), everywhere: false };
    let signed_out = Instant::now();
    assert_eq!(stack.users.clone().sign_out(request).await.expect("SignOut").into_inner().ended_sessions, 1);
    for app in &apps {
        while app.verdict(Some(&by_new.access_token)).await != "401 revoked" {
            assert!(signed_out.elapsed() < Duration::from_secs(10), "{}: the feed does not refuse it", app.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{}: refused by the feed alone {:?} after SignOut answered", app.name, signed_out.elapsed());
    }

    // The webhooks each app verified: Ann's verification and the end of her session, once each.
    for app in &apps {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let received = app.received().await;
            let of = |kind: &str| received.iter().filter(|e| e["type"] == kind).cloned().collect::<Vec<_>>();
            let (verified, revoked) = (of("users.verified"), of("users.sessions_revoked"));
            if !verified.is_empty() && !revoked.is_empty() {
                assert_eq!(verified.len(), 1, "{}: {received:#?}", app.name);
                assert_eq!(verified[0]["data"]["user_id"].as_str(), Some(users[0].user_id.as_str()));
                let sessions = revoked[0]["data"]["session_ids"].as_array().expect("session ids").clone();
                assert_eq!(sessions.len(), 1, "{}: {received:#?}", app.name);
                break;
            }
            assert!(Instant::now() < deadline, "{}: the webhooks did not arrive: {received:#?}", app.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A delivery that is not signed with its secret is refused and recorded nowhere.
        let forged = reqwest::Client::new()
            .post(format!("{}/hooks/verimail", app.url))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_forged")
            .header("webhook-timestamp", chrono::Utc::now().timestamp().to_string())
            .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
            .body(r#"{"type":"users.verified","timestamp":"x","event_id":"x","data":{}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status().as_u16(), 400, "{}", app.name);
        assert!(app.received().await.iter().all(|e| e["id"] != "msg_forged"), "{}", app.name);
    }

    // Every poll of the feed was the named service's, counted under its name.
    let metrics = reqwest::get(stack.metrics_url(Part::User)).await.unwrap().text().await.unwrap();
    let polls = metrics
        .lines()
        .find(|line| {
            line.starts_with("verimail_service_calls_total{")
                && line.contains(r#"caller="orders""#)
                && line.contains(r#"method="ListRevokedSessions""#)
        })
        .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(polls >= 2.0, "the apps' polls are counted as orders': {polls}");
}
