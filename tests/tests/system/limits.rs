//! Rate limits trip at their configured numbers, say when to come back, change nothing while
//! tripped, and recover after the window. Every limit is set to 3 per 4.5 s here: one call
//! back each 1.5 s, so the three calls within the limit may take that long on a busy machine
//! before the fourth is refused (at 3 per 2 s one registration in a loaded CI run was slow
//! enough to earn the fourth).

use std::time::Duration;
use tonic::Code;
use verimail_proto::auth::v1::VerifyEmailCodeRequest;
use verimail_proto::user::v1::{GetUserRequest, RegisterUserRequest, ResendVerificationRequest, get_user_request};
use verimail_server::limits::{Rate, retry_after};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{Stack, StackOptions};

const WINDOW: Duration = Duration::from_millis(4500);

async fn limited_stack() -> Stack {
    Stack::start_with(StackOptions { limits: Some(Rate::new(3, WINDOW)), ..StackOptions::default() }).await
}

fn assert_exhausted(status: &tonic::Status) -> Duration {
    let wait = assert_exhausted_within(status, WINDOW);
    assert!(status.metadata().get("retry-after").is_some(), "a retry-after header too");
    wait
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_per_client_trip_at_three_write_nothing_and_recover() {
    let stack = limited_stack().await;
    for n in 0..3 {
        stack.try_register(&format!("r{n}@example.com"), "correct horse battery").await.expect("within the limit");
    }
    let wait = assert_exhausted(&stack.try_register("r3@example.com", "correct horse battery").await.unwrap_err());
    let lookup = GetUserRequest { key: Some(get_user_request::Key::Email("r3@example.com".into())) };
    assert_eq!(stack.users.clone().get_user(lookup).await.unwrap_err().code(), Code::NotFound, "nothing written");
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    stack.try_register("r3@example.com", "correct horse battery").await.expect("allowed again after the wait it named");
    println!(
        "RegisterUser per client: 3 allowed, the 4th RESOURCE_EXHAUSTED with RetryInfo {wait:?}, allowed again after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_trip_at_three_alike_for_known_and_unknown_addresses_and_recover() {
    let stack = limited_stack().await;
    stack.try_register("known@example.com", "correct horse battery").await.unwrap();
    let resend = |email: &'static str| {
        let mut users = stack.users.clone();
        async move {
            users.resend_verification(ResendVerificationRequest { email: email.into(), ..Default::default() }).await
        }
    };
    resend("known@example.com").await.unwrap();
    resend("known@example.com").await.unwrap();
    resend("nobody@example.com").await.unwrap();
    let known = resend("known@example.com").await.unwrap_err();
    let unknown = resend("nobody@example.com").await.unwrap_err();
    let wait = assert_exhausted(&known);
    assert_exhausted(&unknown);
    assert_eq!(known.message().split(';').next(), unknown.message().split(';').next(), "no difference to read");
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    resend("nobody@example.com").await.expect("recovers");
    println!(
        "ResendVerification per client: 3 allowed, the 4th refused alike for known and unknown addresses (RetryInfo {wait:?}), allowed again after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_checks_and_gateway_posts_per_client_trip_with_429_and_retry_after() {
    let stack = limited_stack().await;
    let check = || {
        let mut auth = stack.auth.clone();
        async move {
            let request = VerifyEmailCodeRequest { email: "gus@example.com".into(), code: "123456".into() };
            auth.verify_email_code(request).await
        }
    };
    for _ in 0..3 {
        assert_eq!(check().await.unwrap_err().code(), Code::InvalidArgument, "a wrong code, within the limit");
    }
    let wait = assert_exhausted(&check().await.unwrap_err());
    println!("VerifyEmailCode per client: 3 wrong codes answered, the 4th RESOURCE_EXHAUSTED with RetryInfo {wait:?}");

    let browser = Browser::new(&stack.gateway_url);
    let form = [("email".to_owned(), "gus@example.com".to_owned())];
    for _ in 0..3 {
        assert_eq!(browser.submit("/resend", &form).await.status, 202);
    }
    let response =
        reqwest::Client::new().post(format!("{}/resend", stack.gateway_url)).form(&form).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let seconds: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    assert!(response.text().await.unwrap().contains("data-page=\"too-many\""));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    assert_eq!(browser.submit("/resend", &form).await.status, 202, "recovers");
    println!(
        "gateway POST /resend per client: 3 answered 202, the 4th 429 with Retry-After: {seconds}, 202 again after it"
    );
}

/// `message` as a backend sends it for the browser at 198.51.100.`n`: each call its own
/// client, so only the limits on the mailbox can trip.
fn from_browser<T>(message: T, n: u8) -> tonic::Request<T> {
    verimail_system_tests::for_browser(message, &format!("198.51.100.{n}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_limits_count_the_mailbox_not_its_spelling_and_sign_up_notices_with_resends() {
    let stack = Stack::start_with(StackOptions {
        limits: Some(Rate::new(3, Duration::from_secs(60))),
        ..StackOptions::default()
    })
    .await;
    let resend = |email: &'static str, n: u8| {
        let mut users = stack.users.clone();
        async move {
            users
                .resend_verification(from_browser(
                    ResendVerificationRequest { email: email.into(), ..Default::default() },
                    n,
                ))
                .await
        }
    };
    // Sub-addresses and case are one mailbox: one allowance.
    for (n, spelling) in [(1, "Victim+1@Example.com"), (2, "victim+2@example.com"), (3, "VICTIM@example.com")] {
        resend(spelling, n).await.expect("within the mailbox's allowance");
    }
    assert_exhausted_for_a_minute(&resend("victim+3@example.com", 4).await.unwrap_err());
    resend("other@example.com", 5).await.expect("another mailbox");

    // A sign-up notice is an email to the mailbox like a resend.
    let owner = stack.try_register("owner@example.com", "correct horse battery").await.unwrap();
    let link = stack.smtp.wait_for("owner@example.com", 1, crate::EMAIL_WAIT).await[0].verification_link();
    Browser::new(&stack.gateway_url).click(&link).await;
    assert!(stack.wait_for_status(&owner, verimail_proto::user::v1::UserStatus::Verified, crate::STATUS_WAIT).await);
    resend("owner@example.com", 6).await.unwrap();
    resend("owner+a@example.com", 7).await.unwrap();
    let again = |n: u8| {
        let mut users = stack.users.clone();
        let request = RegisterUserRequest {
            email: "Owner@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        };
        async move { users.register_user(from_browser(request, n)).await }
    };
    again(8).await.expect("answered as a new registration: the third email of the mailbox, a notice");
    again(9).await.expect("answered as a new registration, though the mailbox had its emails");
    let mails = stack.smtp.wait_for("owner@example.com", 2, crate::EMAIL_WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails_now = stack.smtp.to("owner@example.com");
    assert_eq!(mails_now.len(), 2, "the verification email and one notice: {}", mails.len());
    println!(
        "one mailbox, four spellings: 3 resends answered, the 4th RESOURCE_EXHAUSTED; notices counted with resends: 2 resends + 1 notice sent, the next notice not"
    );
}

fn assert_exhausted_for_a_minute(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = retry_after(status).expect("google.rpc.RetryInfo");
    assert!(wait > WINDOW && wait <= Duration::from_secs(60), "{wait:?}");
}

/// Limits hold across instances: two of every part on one NATS, a client's failures and form
/// posts counted wherever they land. While NATS does not answer, each instance counts alone
/// (no call fails or stalls) and says so in `verimail_limit_checks_unshared_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_failures_and_posts_count_on_every_instance_alike() {
    use verimail_proto::user::v1::SignInRequest;
    use verimail_system_tests::for_browser;
    use verimail_system_tests::procs::{Part, ProcessStack, Scale};
    let extra = [("SIGN_IN_MAX_FAILURES", "5/600".to_owned()), ("RATE_LIMIT_GATEWAY_PER_CLIENT", "5/600".to_owned())];
    let stack = ProcessStack::start_scaled(Scale { nats_nodes: 1, instances: 2 }, &extra).await;
    let users = stack.user_clients();
    let sign_in = |instance: usize, client: &'static str, email: &'static str| {
        let mut users = users[instance].clone();
        async move {
            let request = SignInRequest { email: email.into(), password: "not the password".into() };
            users.sign_in(for_browser(request, client)).await.unwrap_err()
        }
    };
    // Five wrong passwords, on one instance then the other: each answered as wrong.
    for n in 0..5 {
        let status = sign_in(n % 2, "10.7.0.1", "target@example.com").await;
        assert_eq!(status.code(), Code::Unauthenticated, "failure {}: {status:?}", n + 1);
    }
    // The sixth is refused on either.
    for instance in [0, 1] {
        assert_exhausted_within(&sign_in(instance, "10.7.0.1", "target@example.com").await, Duration::from_secs(600));
    }
    assert_eq!(sign_in(1, "10.7.0.2", "target@example.com").await.code(), Code::Unauthenticated, "another client");

    // Form posts from one browser: five on either gateway, the sixth refused on both.
    let gateways = stack.gateway_urls();
    let http = reqwest::Client::new();
    let post = |gateway: &str| http.post(format!("{gateway}/verify-code")).form(&[("code", "000000")]).send();
    for n in 0..5 {
        let status = post(&gateways[n % 2]).await.unwrap().status();
        assert_ne!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "post {}", n + 1);
    }
    for gateway in &gateways {
        let refused = post(gateway).await.unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::TOO_MANY_REQUESTS, "{gateway}");
        assert!(refused.headers().contains_key("retry-after"));
    }

    // NATS out of user-service's reach: a sign-in is still answered, soon, from the instance's
    // own memory, and counted as unshared.
    stack.user_nats_door.set_open(false);
    let started = std::time::Instant::now();
    let status = sign_in(0, "10.7.0.3", "target@example.com").await;
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(took < Duration::from_secs(3), "answered in {took:?}");
    let metrics = reqwest::get(stack.metrics_url(Part::User)).await.unwrap().text().await.unwrap();
    let unshared: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("verimail_limit_checks_unshared_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("verimail_limit_checks_unshared_total");
    assert!(unshared >= 1.0, "{unshared}");
    stack.user_nats_door.set_open(true);
    println!(
        "two instances of user-service and of the gateway: the 6th wrong password and the 6th form post refused on \
         both; with NATS cut off a sign-in answered in {took:?} from memory ({unshared} unshared checks)"
    );
}

/// RESOURCE_EXHAUSTED saying to come back within `window`: the wait.
fn assert_exhausted_within(status: &tonic::Status, window: Duration) -> Duration {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let wait = retry_after(status).expect("google.rpc.RetryInfo");
    assert!(wait > Duration::ZERO && wait <= window, "{wait:?}");
    wait
}

/// Concurrent calls of one client count exactly: 40 resend requests at once against a limit
/// of 30 in NATS, 30 allowed and 10 refused (neither a race that lets more through nor one
/// that refuses what was within the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_of_one_client_count_exactly() {
    let options =
        StackOptions { user_vars: vec![("RATE_LIMIT_RESEND_PER_CLIENT", "30/600".into())], ..StackOptions::default() };
    let stack = Stack::start_with(options).await;
    let calls = (0..40).map(|n| {
        let mut users = stack.users.clone();
        async move {
            let request = ResendVerificationRequest { email: format!("burst{n}@example.com"), ..Default::default() };
            users.resend_verification(request).await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let refused: Vec<_> = answers.iter().filter_map(|answer| answer.as_ref().err()).collect();
    for status in &refused {
        assert_exhausted_within(status, Duration::from_secs(600));
    }
    assert_eq!((answers.len() - refused.len(), refused.len()), (30, 10), "allowed and refused");
}

/// A shared limit's keys leave NATS once their allowance is full again (their time to live),
/// not a whole window after their last use: three clients' resends under 1000 an hour are
/// forgotten within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_limits_keys_go_once_their_allowance_is_full_again() {
    let options = StackOptions {
        user_vars: vec![("RATE_LIMIT_RESEND_PER_CLIENT", "1000/3600".into())],
        sign_in_failures: Some(Rate::new(5, Duration::from_secs(600))),
        ..StackOptions::default()
    };
    let stack = Stack::start_with(options).await;
    for n in 0..3 {
        let request = ResendVerificationRequest { email: format!("ttl{n}@example.com"), ..Default::default() };
        let request = verimail_system_tests::for_browser(request, &format!("203.0.113.{n}"));
        stack.users.clone().resend_verification(request).await.expect("within the limit");
    }
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.expect("NATS"));
    let keys = || {
        let js = js.clone();
        async move {
            let mut bucket = js.get_stream("KV_limits_user_resend_per_client").await.expect("the limit's bucket");
            bucket.info().await.expect("its state").state.messages
        }
    };
    assert_eq!(keys().await, 3, "one key per client");
    // 3.6 s of allowance used each: gone after about 4 s, where the window is an hour.
    let started = std::time::Instant::now();
    verimail_system_tests::eventually("the keys forgotten", Duration::from_secs(15), || async { keys().await == 0 })
        .await;
    println!("three clients' keys left the bucket {:?} after their use (window: 3600 s)", started.elapsed());

    // Sign-ins that succeed at once write nothing; a failure is kept until a success forgets it.
    stack.verified("kim@example.com", "correct horse battery").await;
    let failures = || {
        let js = js.clone();
        async move {
            match js.get_stream("KV_limits_user_sign_in_failures").await {
                Ok(mut bucket) => bucket.info().await.expect("its state").state.messages,
                Err(_) => 0,
            }
        }
    };
    for _ in 0..3 {
        stack.sign_in_from("203.0.113.9", "kim@example.com", "correct horse battery").await.expect("signed in");
    }
    assert_eq!(failures().await, 0, "nothing to remember of sign-ins that succeed");
    stack.sign_in_from("203.0.113.9", "kim@example.com", "not the password").await.unwrap_err();
    assert_eq!(failures().await, 1, "one failure, one key");
    stack.sign_in_from("203.0.113.9", "kim@example.com", "correct horse battery").await.expect("signed in");
    verimail_system_tests::eventually("the failure forgotten", Duration::from_secs(10), || async {
        failures().await == 0
    })
    .await;
}
