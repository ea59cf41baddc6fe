//! `/metrics` on every process moves by exactly what the flow did.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use verimail_proto::user::v1::RegisterUserRequest;
use verimail_system_tests::batch::wait_until_verified;
use verimail_system_tests::browser::Browser;
use verimail_system_tests::procs::{Part, ProcessStack};

/// The value of the series `name` whose labels include `labels`, from a text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
        let matches =
            series_name == name && labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(stack: &ProcessStack, part: Part) -> String {
    let response = reqwest::get(stack.metrics_url(part)).await.expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    response.text().await.unwrap()
}

/// Scrapes until `want` holds (at most 10 s): counters fed by background work settle late.
async fn settled(stack: &ProcessStack, part: Part, want: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(stack, part).await;
        if want(&text) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_flow_did() {
    let stack = ProcessStack::start().await;
    let browser = Browser::new(&stack.gateway_url);
    let mut users = Vec::new();
    for n in 0..3 {
        let email = format!("m{n}@example.com");
        let request = RegisterUserRequest {
            email: email.clone(),
            password: "correct horse battery".into(),
            ..Default::default()
        };
        users.push((
            email,
            stack.users.clone().register_user(request).await.expect("RegisterUser").into_inner().user_id,
        ));
    }
    // Two users click their links; the third types a wrong code once.
    for (email, user_id) in &users[..2] {
        let link = stack.smtp.wait_for_verification(email, EMAIL_WAIT).await.verification_link();
        assert_eq!(browser.click(&link).await.status, 200);
        assert!(wait_until_verified(&stack.users, user_id, STATUS_WAIT).await);
    }
    let code: u32 =
        stack.smtp.wait_for_verification("m2@example.com", EMAIL_WAIT).await.verification_code().parse().unwrap();
    let wrong = format!("{:06}", (code + 1) % 1_000_000);
    let fields = [("email".to_owned(), "m2@example.com".to_owned()), ("code".to_owned(), wrong)];
    assert_eq!(browser.submit("/verify-code", &fields).await.status, 400);
    // A verified address again: answered like a new registration, counted as "existing".
    let again = RegisterUserRequest {
        email: "m0@example.com".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    stack.users.clone().register_user(again).await.expect("RegisterUser again");
    stack.smtp.wait_for("m0@example.com", 2, EMAIL_WAIT).await; // the verification email and the notice

    let user = settled(&stack, Part::User, |t| {
        sample(t, "verimail_outbox_backlog", &[]) == Some(0.0)
            && sample(t, "verimail_consumer_pending", &[("durable", "user-service")]) == Some(0.0)
    })
    .await;
    let register = [("method", "verimail.user.v1.UserService/RegisterUser"), ("code", "Ok")];
    assert_eq!(sample(&user, "verimail_rpc_requests_total", &register), Some(4.0), "{user}");
    let register_time = [("method", "verimail.user.v1.UserService/RegisterUser")];
    assert_eq!(sample(&user, "verimail_rpc_duration_seconds_count", &register_time), Some(4.0));
    assert_eq!(sample(&user, "verimail_registrations_total", &[("outcome", "new")]), Some(3.0));
    assert_eq!(sample(&user, "verimail_registrations_total", &[("outcome", "existing")]), Some(1.0));
    assert_eq!(sample(&user, "verimail_password_hashes_in_flight", &[]), Some(0.0));
    assert_eq!(sample(&user, "verimail_outbox_oldest_unsent_seconds", &[]), Some(0.0));

    let sent = |kind: &str, t: &str| sample(t, "verimail_emails_total", &[("kind", kind), ("outcome", "sent")]);
    let email = settled(&stack, Part::Email, |t| {
        sent(verimail_proto::subjects::USERS_REGISTERED, t) == Some(3.0)
            && sent(verimail_proto::subjects::USERS_SIGNUP_ATTEMPTED, t) == Some(1.0)
    })
    .await;
    assert_eq!(sent(verimail_proto::subjects::USERS_REGISTERED, &email), Some(3.0), "{email}");
    assert_eq!(sent(verimail_proto::subjects::USERS_SIGNUP_ATTEMPTED, &email), Some(1.0), "{email}");
    assert_eq!(sample(&email, "verimail_consumer_pending", &[("durable", "email-service")]), Some(0.0));

    let auth = scrape(&stack, Part::Auth).await;
    let verified = [("method", "link"), ("outcome", "verified")];
    assert_eq!(sample(&auth, "verimail_verifications_total", &verified), Some(2.0), "{auth}");
    let wrong_code = [("method", "code"), ("outcome", "invalid")];
    assert_eq!(sample(&auth, "verimail_verifications_total", &wrong_code), Some(1.0), "{auth}");
    let issued = [("method", "verimail.auth.v1.AuthService/IssueVerificationToken"), ("code", "Ok")];
    assert_eq!(sample(&auth, "verimail_rpc_requests_total", &issued), Some(3.0), "{auth}");
    let refused = [("method", "verimail.auth.v1.AuthService/VerifyEmailCode"), ("code", "InvalidArgument")];
    assert_eq!(sample(&auth, "verimail_rpc_requests_total", &refused), Some(1.0), "{auth}");

    let gateway = scrape(&stack, Part::Gateway).await;
    let posts = [("method", "POST"), ("route", "/verify-email"), ("status", "200")];
    assert_eq!(sample(&gateway, "verimail_http_requests_total", &posts), Some(2.0), "{gateway}");
    let code_posts = [("method", "POST"), ("route", "/verify-code"), ("status", "400")];
    assert_eq!(sample(&gateway, "verimail_http_requests_total", &code_posts), Some(1.0), "{gateway}");
}

/// email-service's deliverability metrics: a hard bounce counts by class and grows the
/// suppression list; a forged bounce address is counted among the listener's refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_suppressions_and_refusals_are_counted() {
    let bounce_port = verimail_testkit::free_port();
    let env =
        [("BOUNCE_DOMAIN", "bounces.example.com".to_owned()), ("BOUNCE_SMTP_ADDR", format!("127.0.0.1:{bounce_port}"))];
    let stack = ProcessStack::start_with_env(&env).await;
    let request = RegisterUserRequest {
        email: "gone@example.org".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    stack.users.clone().register_user(request).await.expect("RegisterUser");
    let mail = stack.smtp.wait_for_verification("gone@example.org", EMAIL_WAIT).await;
    let before = scrape(&stack, Part::Email).await;
    assert_eq!(sample(&before, "verimail_suppressed_addresses", &[]), Some(0.0), "registered at start");

    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], bounce_port));
    let mut client = crate::bounces::Client::connect_to(addr).await;
    let dsn = crate::bounces::dsn("gone@example.org", "failed", "5.1.1");
    assert!(client.send(&[&mail.from], &dsn).await.1.starts_with("250"));
    let (local, domain) = mail.from.split_once('@').unwrap();
    let forged = format!("{}{}@{domain}", &local[..local.len() - 1], if local.ends_with('0') { '1' } else { '0' });
    assert!(client.send(&[&forged], &dsn).await.0[0].starts_with("550"));

    let after =
        settled(&stack, Part::Email, |text| sample(text, "verimail_suppressed_addresses", &[]) == Some(1.0)).await;
    assert_eq!(sample(&after, "verimail_bounces_total", &[("class", "hard")]), Some(1.0), "{after}");
    assert_eq!(sample(&after, "verimail_suppressed_addresses", &[]), Some(1.0));
    assert_eq!(sample(&after, "verimail_bounce_listener_refusals_total", &[("why", "bad_tag")]), Some(1.0));
}

/// A client may send any token as a method, to any path: the gateway's series stay a few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_paths_share_one_label_each() {
    let stack = ProcessStack::start().await;
    let client = reqwest::Client::new();
    for n in 0..40 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{n}").as_bytes()).expect("a token");
        let response = client.request(method, format!("{}/verify-email", stack.gateway_url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405);
        let response = client.get(format!("{}/nowhere/{n}", stack.gateway_url)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404);
    }
    let gateway = scrape(&stack, Part::Gateway).await;
    let series: Vec<&str> = gateway.lines().filter(|line| line.starts_with("verimail_http_requests_total{")).collect();
    assert!(series.len() <= 4, "{series:#?}");
    let invented = [("method", "_OTHER"), ("route", "/verify-email"), ("status", "405")];
    assert_eq!(sample(&gateway, "verimail_http_requests_total", &invented), Some(40.0), "{gateway}");
    let nowhere = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(sample(&gateway, "verimail_http_requests_total", &nowhere), Some(40.0), "{gateway}");
    assert!(!gateway.contains("INVENTED"), "{gateway}");
}

/// Every metric deploy/prometheus/alerts.yaml alerts on and deploy/grafana/verimail.json draws
/// is one a running stack exports: a query naming a metric that does not exist (a rename, a
/// typo) would never fire or draw nothing, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_name_only_metrics_the_parts_export() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).expect("alerts.yaml");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/verimail.json")).expect("the dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut queries: Vec<(String, String)> = Vec::new();
    let rules: serde_json::Value = serde_saphyr::from_str(&alerts).expect("alerts.yaml is YAML");
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        queries.push((format!("alert {}", rule["alert"]), rule["expr"].as_str().expect("an expr").to_owned()));
    }
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((format!("panel {}", panel["title"]), target["expr"].as_str().expect("an expr").to_owned()));
        }
    }
    assert!(queries.len() >= 30, "{} queries", queries.len());

    // Every part, after a registration (so the sweeps, the relay and the consumers have
    // reported at least once), with a webhook endpoint (whose series start at its worker).
    let mut stack = ProcessStack::start().await;
    stack.kill(Part::Email);
    stack.set_var(Part::Email, "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
    stack.start_part(Part::Email).await;
    let channel = verimail_server::tls::GrpcTls::off().channel("test", &stack.grpc_addr(Part::Email)).unwrap();
    let request = verimail_proto::email::v1::CreateWebhookEndpointRequest {
        url: format!("{}/healthz", stack.gateway_url),
        event_types: vec!["users.verified".into()],
        description: "the contract's".into(),
    };
    verimail_proto::email::v1::webhook_service_client::WebhookServiceClient::new(
        verimail_system_tests::Operator::new().channel(channel),
    )
    .create_webhook_endpoint(request)
    .await
    .expect("an endpoint");
    let users = verimail_system_tests::batch::register(&stack.users, "contract", 0..1, Duration::from_secs(30)).await;
    verimail_system_tests::batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), EMAIL_WAIT).await;
    let mut exported = std::collections::BTreeSet::new();
    for part in [Part::User, Part::Auth, Part::Email, Part::Gateway] {
        let text =
            settled(&stack, part, |text| part == Part::Gateway || text.contains("verimail_retention_oldest_seconds"))
                .await;
        for line in text.lines() {
            // `# TYPE name kind`: the family, whose samples add _total, _bucket, _count, _sum.
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("a kind");
                exported.insert(family.to_owned());
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_count", "_sum"],
                    _ => &[],
                };
                exported.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
            }
        }
    }
    let mut missing = Vec::new();
    for (query, expr) in &queries {
        let named =
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("verimail_"));
        for metric in named {
            if !exported.contains(metric) {
                missing.push(format!("{query}: {metric}"));
            }
        }
    }
    assert!(missing.is_empty(), "metrics no part exports:\n{}\nexported: {exported:#?}", missing.join("\n"));
}
