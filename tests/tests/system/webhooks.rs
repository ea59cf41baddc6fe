//! Webhooks on real parts: a receiver outside Rust (tests/webhook_receiver.py, verifying every
//! delivery with the `standardwebhooks` package), endpoints registered over the ops RPCs, and
//! the events of real registrations, verifications and deletions.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::email::v1::webhook_service_client::WebhookServiceClient;
use verimail_proto::email::v1::{
    CreateWebhookEndpointRequest, ListWebhookDeliveriesRequest, ReplayWebhookDeliveriesRequest,
    RotateWebhookSecretRequest, SetWebhookEndpointEnabledRequest, WebhookDeliveryStatus,
};
use verimail_proto::user::v1::{ChangeEmailRequest, DeleteUserRequest};
use verimail_system_tests::{Operator, Ops, Stack, StackOptions};

/// The receiver, a process of its own, killed when the test ends.
struct Receiver {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().expect("a folder for the receiver");
        let port = verimail_testkit::free_port();
        Receiver { child: Receiver::spawn(port, &dir), port, dir }
    }

    fn spawn(port: u16, dir: &tempfile::TempDir) -> std::process::Child {
        use std::io::BufRead as _;
        let script = format!("{}/webhook_receiver.py", env!("CARGO_MANIFEST_DIR"));
        let path = |name: &str| dir.path().join(name).display().to_string();
        let mut child = std::process::Command::new(verimail_system_tests::clients_python())
            .args([script, port.to_string(), path("secret"), path("received"), path("control")])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the clients' Python runs the receiver (scripts/clients.sh setup)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("its output")).read_line(&mut line).expect("a line");
        assert_eq!(line.trim(), "listening", "the receiver did not start (scripts/clients.sh setup)");
        child
    }

    /// Down: nothing listens on its port.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Up again on the same port, appending to the same record.
    fn restart(&mut self) {
        self.kill();
        self.child = Receiver::spawn(self.port, &self.dir);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/verimail", self.port)
    }

    fn set(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("write");
    }

    /// What it recorded, in the order it took it.
    fn received(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("received")).unwrap_or_default();
        text.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn webhooks(stack: &Stack) -> WebhookServiceClient<Ops> {
    webhooks_at(&stack.grpc_addrs[2].to_string())
}

fn webhooks_at(addr: &str) -> WebhookServiceClient<Ops> {
    let channel = verimail_server::tls::GrpcTls::off().channel("test", addr).unwrap();
    WebhookServiceClient::new(Operator::new().channel(channel))
}

async fn create(stack: &Stack, url: &str, types: &[&str]) -> Result<(String, String), tonic::Status> {
    create_at(webhooks(stack), url, types).await
}

async fn create_at(
    mut client: WebhookServiceClient<Ops>,
    url: &str,
    types: &[&str],
) -> Result<(String, String), tonic::Status> {
    let request = CreateWebhookEndpointRequest {
        url: url.to_owned(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        description: "the test's receiver".into(),
    };
    let created = client.create_webhook_endpoint(request).await?.into_inner();
    Ok((created.endpoint.expect("the endpoint").id, created.secret))
}

/// The newest delivery of `endpoint` once it is parked (at most 15 s).
async fn first_parked(stack: &Stack, endpoint: &str) -> verimail_proto::email::v1::WebhookDelivery {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let request = ListWebhookDeliveriesRequest { endpoint_id: endpoint.to_owned(), ..Default::default() };
        let listed = webhooks(stack).list_webhook_deliveries(request).await.unwrap().into_inner().deliveries;
        if let Some(delivery) = listed.first().filter(|d| d.status() == WebhookDeliveryStatus::Parked) {
            return delivery.clone();
        }
        assert!(Instant::now() < deadline, "not parked: {listed:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `limit`) until `done` holds of what the receiver took.
async fn until(
    receiver: &Receiver,
    limit: Duration,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let received = receiver.received();
        if done(&received) {
            return received;
        }
        assert!(Instant::now() < deadline, "not received within {limit:?}; so far: {received:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_standard_webhooks_receiver_once_each_in_order_through_its_failures() {
    let email_vars = vec![
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        ("WEBHOOK_RETRY_SCHEDULE", "0.2,0.4,0.8,1.6,3.2".to_owned()),
    ];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let receiver = Receiver::start();
    // It fails the first five requests: deliveries are retried, on schedule.
    receiver.set("control", "fail 5");
    let (endpoint, secret) = create(&stack, &receiver.url(), &["users.verified", "users.deleted"]).await.unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    receiver.set("secret", &secret);

    let mut users = Vec::new();
    for n in 0..3 {
        users.push(stack.verified(&format!("hooked{n}@example.com"), "correct horse battery").await);
    }
    let deleted = &users[0];
    stack
        .users
        .clone()
        .delete_user(DeleteUserRequest { user_id: deleted.clone(), ..Default::default() })
        .await
        .unwrap();

    let received = until(&receiver, Duration::from_secs(30), |received| {
        let types: Vec<&str> = received.iter().filter_map(|r| r["type"].as_str()).collect();
        types.iter().filter(|t| **t == "users.verified").count() == 3 && types.contains(&"users.deleted")
    })
    .await;
    // Each verifies, once each (a second arrival would carry its first's webhook-id), and the
    // deleted user's verification came before its deletion.
    assert_eq!(once_each_in_order(&received, &["users.verified", "users.deleted"]), 4, "{received:#?}");
    assert!(received.iter().any(|r| r["user_id"] == deleted.as_str() && r["type"] == "users.deleted"));

    // The deleted user's address is kept nowhere, the bodies sent about it included.
    verimail_system_tests::eventually("the deleted address is forgotten", Duration::from_secs(10), || async {
        stack.find_everywhere("hooked0@example.com").await.is_empty()
    })
    .await;

    // What the operator sees: each delivered, the failed attempts with their answers.
    let request = ListWebhookDeliveriesRequest { endpoint_id: endpoint.clone(), ..Default::default() };
    let listed = webhooks(&stack).list_webhook_deliveries(request).await.unwrap().into_inner().deliveries;
    assert_eq!(listed.len(), 4, "{listed:#?}");
    assert!(listed.iter().all(|d| d.status() == WebhookDeliveryStatus::Delivered), "{listed:#?}");
    let failed: usize = listed.iter().map(|d| d.attempts.iter().filter(|a| a.http_status == 500).count()).sum();
    assert_eq!(failed, 5, "the five 500s, each recorded: {listed:#?}");
    assert!(listed.iter().all(|d| d.attempts.last().is_some_and(|a| a.http_status == 200)));
    // And the metrics, per endpoint.
    let metrics = verimail_server::metrics::render();
    let series =
        |outcome: &str| format!("verimail_webhook_attempts_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} ");
    assert!(metrics.contains(&format!("{}5\n", series("failed"))), "{metrics}");
    assert!(metrics.contains(&format!("{}4\n", series("delivered"))), "{metrics}");
    let histogram = format!("verimail_webhook_attempt_duration_seconds_count{{endpoint=\"{endpoint}\"}} 9");
    assert!(metrics.contains(&histogram), "{metrics}");
    assert!(metrics.contains(&format!("verimail_webhook_backlog_age_seconds{{endpoint=\"{endpoint}\"}}")), "{metrics}");

    // Disabled, an endpoint takes nothing; its deliveries wait, and go out once it is enabled.
    let disable = SetWebhookEndpointEnabledRequest { id: endpoint.clone(), enabled: false };
    assert!(
        !webhooks(&stack).set_webhook_endpoint_enabled(disable).await.unwrap().into_inner().endpoint.unwrap().enabled
    );
    let late = stack.verified("late@example.com", "correct horse battery").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!receiver.received().iter().any(|r| r["user_id"] == late.as_str()), "sent while disabled");
    let enable = SetWebhookEndpointEnabledRequest { id: endpoint.clone(), enabled: true };
    webhooks(&stack).set_webhook_endpoint_enabled(enable).await.unwrap();
    until(&receiver, Duration::from_secs(10), |received| received.iter().any(|r| r["user_id"] == late.as_str())).await;

    // A rotated secret: the previous one signs beside it, so the receiver still holding it
    // verifies; once it holds the new one, that verifies too.
    let rotate = RotateWebhookSecretRequest { id: endpoint.clone(), previous_valid_seconds: 0 };
    let rotated = webhooks(&stack).rotate_webhook_secret(rotate).await.unwrap().into_inner();
    assert!(
        rotated.secret.starts_with("whsec_") && rotated.secret != secret && !rotated.previous_valid_until.is_empty()
    );
    let before = stack.verified("rotating@example.com", "correct horse battery").await;
    until(&receiver, Duration::from_secs(10), |received| received.iter().any(|r| r["user_id"] == before.as_str()))
        .await;
    receiver.set("secret", &rotated.secret);
    let after = stack.verified("rotated@example.com", "correct horse battery").await;
    until(&receiver, Duration::from_secs(10), |received| received.iter().any(|r| r["user_id"] == after.as_str())).await;
    assert!(receiver.received().iter().all(|r| r.get("invalid").is_none()), "{:#?}", receiver.received());

    // A replay sends a delivered delivery again, with its webhook-id (not a deleted user's:
    // what it said is erased).
    let again = listed.iter().find(|d| d.user_id != *deleted).expect("a living user's").id.clone();
    let replay = ReplayWebhookDeliveriesRequest {
        endpoint_id: endpoint.clone(),
        delivery_id: again.clone(),
        ..Default::default()
    };
    assert_eq!(webhooks(&stack).replay_webhook_deliveries(replay).await.unwrap().into_inner().replayed, 1);
    until(&receiver, Duration::from_secs(10), |received| {
        received.iter().filter(|r| r["id"] == again.as_str()).count() == 2
    })
    .await;
    let vague = ReplayWebhookDeliveriesRequest { endpoint_id: endpoint.clone(), ..Default::default() };
    let refused = webhooks(&stack).replay_webhook_deliveries(vague).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

/// Without WEBHOOK_ALLOW_PRIVATE_NETWORKS, endpoints inside the network are refused when they
/// are registered, and a name that resolves to one reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_inside_the_network_are_refused() {
    let stack = Stack::start_with(StackOptions {
        email_vars: vec![("WEBHOOK_RETRY_SCHEDULE", "0.2".to_owned())],
        ..StackOptions::default()
    })
    .await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://localhost:8080/hook",
        "ftp://example.com/hook",
    ] {
        let refused = create(&stack, url, &["users.verified"]).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}: {refused:?}");
    }
    let unknown = create(&stack, "https://example.com/hook", &["users.registered"]).await.unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument, "not an event webhooks carry: {unknown:?}");

    // A name of this machine (from /etc/hosts) resolves to loopback: registered, since a name
    // may move, but no connection is made to it.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let name = hosts
        .lines()
        .filter(|line| line.starts_with("127.") || line.starts_with("::1"))
        .flat_map(|line| line.split_whitespace().skip(1))
        .find(|name| !name.starts_with('#') && *name != "localhost" && !name.ends_with(".localhost"))
        .expect("/etc/hosts names this machine at a loopback address besides localhost")
        .to_owned();
    let receiver = Receiver::start();
    let url = format!("http://{name}:{}/hooks", receiver.port);
    let (endpoint, secret) = create(&stack, &url, &["users.verified"]).await.unwrap();
    receiver.set("secret", &secret);
    stack.verified("inside@example.com", "correct horse battery").await;
    let refused = first_parked(&stack, &endpoint).await;
    assert_eq!(refused.attempts.len(), 2, "the first attempt and one retry: {refused:#?}");
    for attempt in &refused.attempts {
        assert_eq!(attempt.http_status, 0, "{attempt:?}");
        assert!(attempt.answer.contains("no public address"), "{attempt:?}");
    }
    assert!(receiver.received().is_empty(), "the receiver heard nothing");
}

/// Each event of `received` once (a repeat carries the first's webhook-id), and each user's in
/// the order `expected` gives: how many events.
fn once_each_in_order(received: &[serde_json::Value], expected: &[&str]) -> usize {
    let mut ids: HashMap<&str, &str> = HashMap::new();
    let mut per_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in received {
        assert!(r.get("invalid").is_none(), "a signature did not verify: {r}");
        let (event, id) = (r["event_id"].as_str().unwrap(), r["id"].as_str().unwrap());
        match ids.insert(event, id) {
            Some(first) => assert_eq!(first, id, "event {event} came again under another webhook-id"),
            None => per_user.entry(r["user_id"].as_str().unwrap()).or_default().push(r["type"].as_str().unwrap()),
        }
    }
    for (user, types) in &per_user {
        let order: Vec<usize> = types.iter().map(|t| expected.iter().position(|e| e == t).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{user}'s events out of order: {types:?}");
    }
    ids.len()
}

/// The fault test: the whole flow (register, verify, change address, delete) while the
/// receiver answers 500 for a while and is down, and user-service and nats-server are killed
/// and restarted: every event still arrives, once each (a repeat only with its webhook-id), in
/// order per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_receiver_fails_and_user_service_and_nats_server_die() {
    use verimail_system_tests::batch;
    use verimail_system_tests::procs::{Part, ProcessStack};
    const USERS: usize = 20;
    let limit = Duration::from_secs(60);
    let mut stack = ProcessStack::start().await;
    stack.kill(Part::Email);
    stack.set_var(Part::Email, "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
    stack.set_var(Part::Email, "WEBHOOK_RETRY_SCHEDULE", &["0.2"; 40].join(","));
    stack.start_part(Part::Email).await;
    let mut receiver = Receiver::start();
    receiver.set("control", "fail 15");
    let email_addr = stack.grpc_addr(Part::Email);
    const FLOW: [&str; 3] = ["users.verified", "users.email_changed", "users.deleted"];
    let (_endpoint, secret) = create_at(webhooks_at(&email_addr), &receiver.url(), &FLOW).await.unwrap();
    receiver.set("secret", &secret);

    let users = batch::register(&stack.users, &format!("faulted-{}", std::process::id()), 0..USERS, limit).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), limit).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, limit).await;
    // The middle half move to another address (the first quarter of them are deleted later).
    let movers = &users[USERS / 4..USERS * 3 / 4];
    for user in movers {
        let new_email = user.email.replace("@", "+moved@");
        let request = ChangeEmailRequest {
            email: user.email.clone(),
            password: batch::PASSWORD.into(),
            new_email: new_email.clone(),
            ..Default::default()
        };
        stack.users.clone().change_email(request).await.expect("ChangeEmail");
        // The one email to the new address: "Confirm your new email address", with its link.
        let link = stack.smtp.wait_for(&new_email, 1, limit).await.remove(0).verification_link();
        let page = verimail_system_tests::browser::Browser::new(&stack.gateway_url).click(&link).await;
        assert_eq!(page.kind(), "verified", "{new_email}");
    }
    // The verifications and changes are committed and on their way: everything dies at once.
    receiver.kill();
    stack.kill(Part::User);
    stack.nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.nats.restart();
    stack.start_part(Part::User).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.restart();
    // Half the accounts are deleted: their deletions come after their verifications.
    for user in users.iter().take(USERS / 2) {
        let request = DeleteUserRequest { user_id: user.user_id.clone(), ..Default::default() };
        let deadline = Instant::now() + limit;
        while let Err(status) = stack.users.clone().delete_user(request.clone()).await {
            assert!(Instant::now() < deadline, "DeleteUser: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let wanted = USERS + movers.len() + USERS / 2;
    let received = until(&receiver, limit, |received| {
        let mut events: Vec<&str> = received.iter().filter_map(|r| r["event_id"].as_str()).collect();
        events.sort_unstable();
        events.dedup();
        events.len() >= wanted
    })
    .await;
    let events = once_each_in_order(&received, &FLOW);
    assert_eq!(events, wanted, "every event, none more");
    let changed = received.iter().filter(|r| r["type"] == "users.email_changed").count();
    assert!(changed >= movers.len(), "every change of address: {changed}");
    let repeats = received.len() - events;
    println!(
        "webhooks through faults: {events} events, {} arrivals ({repeats} repeats, each with its webhook-id)",
        received.len()
    );
}

/// A redirect is never followed, not even to where the endpoint itself is allowed: the 302 is
/// a failed attempt, recorded, and the delivery is parked at the schedule's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_never_followed() {
    let email_vars =
        vec![("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned()), ("WEBHOOK_RETRY_SCHEDULE", "0.2".to_owned())];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let receiver = Receiver::start();
    // Where it points would take the delivery (the receiver itself, at another path).
    receiver.set("control", &format!("redirect http://127.0.0.1:{}/elsewhere", receiver.port));
    let (endpoint, secret) = create(&stack, &receiver.url(), &["users.verified"]).await.unwrap();
    receiver.set("secret", &secret);
    stack.verified("redirected@example.com", "correct horse battery").await;
    let parked = first_parked(&stack, &endpoint).await;
    assert!(parked.attempts.iter().all(|a| a.http_status == 302), "{parked:#?}");
    assert!(receiver.received().is_empty(), "the redirect was followed: {:#?}", receiver.received());
}

/// One slow endpoint delays no other: each has its own worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_delays_no_other() {
    let email_vars = vec![("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned())];
    let stack = Stack::start_with(StackOptions { email_vars, ..StackOptions::default() }).await;
    let (slow, fast) = (Receiver::start(), Receiver::start());
    slow.set("control", "slow 6");
    for receiver in [&slow, &fast] {
        let (_, secret) = create(&stack, &receiver.url(), &["users.verified"]).await.unwrap();
        receiver.set("secret", &secret);
    }
    let started = Instant::now();
    for n in 0..3 {
        stack.verified(&format!("quick{n}@example.com"), "correct horse battery").await;
    }
    until(&fast, Duration::from_secs(5), |received| received.len() == 3).await;
    let took = started.elapsed();
    assert!(slow.received().is_empty(), "the slow one answered already ({took:?})");
    println!("the fast endpoint had its 3 within {took:?} of the first registration, the slow one none");
    until(&slow, Duration::from_secs(20), |received| received.len() == 3).await;
}
