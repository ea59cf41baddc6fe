//! Batches for the fault tests: register many users, then prove every one of them got exactly
//! one email and ends verified after clicking it.

use crate::Ops;
use crate::browser::Browser;
use crate::smtp::SmtpServer;
use async_nats::jetstream;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use verimail_proto::user::v1::user_service_client::UserServiceClient;
use verimail_proto::user::v1::{GetUserRequest, RegisterUserRequest, UserStatus, get_user_request};

/// The password of every user a batch registers.
pub const PASSWORD: &str = "correct horse battery";

/// The parts a batch goes through, whichever way the stack runs.
pub struct Flow<'a> {
    pub smtp: &'a SmtpServer,
    pub nats_url: String,
    pub gateway_url: &'a str,
    pub users: &'a UserServiceClient<Ops>,
}

impl crate::Stack {
    pub fn flow(&self) -> Flow<'_> {
        Flow { smtp: &self.smtp, nats_url: self.nats.url(), gateway_url: &self.gateway_url, users: &self.users }
    }
}

impl crate::procs::ProcessStack {
    pub fn flow(&self) -> Flow<'_> {
        Flow { smtp: &self.smtp, nats_url: self.nats.url(), gateway_url: &self.gateway_url, users: &self.users }
    }
}

/// Every user of the batch got exactly one email and is verified after clicking it; nothing
/// is left for email-service to do and `parked` messages are parked. Prints the figures the
/// closing note reports.
pub async fn finish(name: &str, flow: Flow<'_>, batch: &[Registered], started: Instant, parked: u64, limit: Duration) {
    finish_with_doubt(name, flow, batch, started, parked, &HashSet::new(), limit).await
}

/// As [`finish`], where the emails to `in_doubt` (deliveries a crash interrupted between
/// handing the email to SMTP and recording the answer) may have arrived twice.
pub async fn finish_with_doubt(
    name: &str,
    flow: Flow<'_>,
    batch: &[Registered],
    started: Instant,
    parked: u64,
    in_doubt: &HashSet<String>,
    limit: Duration,
) {
    expect_one_email_each(flow.smtp, batch, in_doubt, limit).await;
    wait_until_drained(&flow.nats_url, verimail_proto::streams::USERS, "email-service", limit).await;
    expect_one_email_each(flow.smtp, batch, in_doubt, limit).await;
    click_all_and_expect_verified(flow.smtp, flow.gateway_url, flow.users, batch, limit).await;
    assert_eq!(parked_count(&flow.nats_url).await, parked, "parked messages");
    let doubt =
        if in_doubt.is_empty() { String::new() } else { format!(" ({} in doubt at the crash)", in_doubt.len()) };
    println!(
        "fault {name}: batch {} users, {} emails expected, {} received{doubt}, {:.1} s",
        batch.len(),
        batch.len(),
        batch.iter().map(|u| verification_emails(flow.smtp, &u.email).len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
}

/// Waits (at most `limit`) until the SMTP server has accepted `count` emails in all: a point
/// in the middle of a batch to inject a fault at.
pub async fn wait_for_emails(smtp: &SmtpServer, count: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while smtp.all().len() < count {
        assert!(Instant::now() < deadline, "fewer than {count} emails within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The verification emails sent to `address` (a retried registration may add a notice).
pub fn verification_emails(smtp: &SmtpServer, address: &str) -> Vec<crate::ReceivedMail> {
    smtp.to(address).into_iter().filter(|m| m.is_verification()).collect()
}

/// Requests in flight at once.
const PARALLEL: usize = 16;

#[derive(Debug, Clone)]
pub struct Registered {
    pub email: String,
    pub user_id: String,
}

/// Registers `count` users named `<prefix>-<n>@example.com`, retrying a call that fails
/// because the service is away (a fault test may be restarting it) until `limit`.
pub async fn register(
    users: &UserServiceClient<Ops>,
    prefix: &str,
    range: std::ops::Range<usize>,
    limit: Duration,
) -> Vec<Registered> {
    let deadline = Instant::now() + limit;
    futures::stream::iter(range)
        .map(|n| {
            let mut users = users.clone();
            let email = format!("{prefix}-{n}@example.com");
            async move {
                loop {
                    let request =
                        RegisterUserRequest { email: email.clone(), password: PASSWORD.into(), ..Default::default() };
                    match users.register_user(request).await {
                        Err(status) if status.code() != tonic::Code::AlreadyExists => {
                            assert!(Instant::now() < deadline, "cannot register {email} within {limit:?}: {status}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // Registered, now or by an earlier try whose answer was lost. The id is
                        // looked up rather than taken from the answer: a retry is answered like a
                        // new registration (enumeration safety) with an id that names no user.
                        _ => {
                            let user_id = user_id_of(&mut users, &email, deadline).await;
                            return Registered { email, user_id };
                        }
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await
}

/// The id of the user with `email`, retrying (until `deadline`) while user-service is away.
async fn user_id_of(users: &mut UserServiceClient<Ops>, email: &str, deadline: Instant) -> String {
    loop {
        let request = GetUserRequest { key: Some(get_user_request::Key::Email(email.to_owned())) };
        match users.get_user(request).await {
            Ok(reply) => return reply.into_inner().user.expect("a user").id,
            Err(status) => {
                assert!(Instant::now() < deadline, "cannot look up {email}: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until JetStream has nothing left for `durable` to handle (nothing pending, nothing
/// awaiting an ack), so that counting emails afterwards also counts any duplicate.
pub async fn wait_until_drained(nats_url: &str, stream: &str, durable: &str, limit: Duration) {
    let js =
        jetstream::new(async_nats::connect(verimail_events::bus::servers(nats_url)).await.expect("connect to NATS"));
    let deadline = Instant::now() + limit;
    loop {
        let drained = async {
            let info = js.get_stream(stream).await.ok()?.consumer_info(durable).await.ok()?;
            Some(info.num_pending == 0 && info.num_ack_pending == 0)
        }
        .await;
        if drained == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{durable} still had work on {stream} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until each user has at least one email (at most `limit`), then asserts that each has
/// exactly one, but for the addresses `in_doubt`, which may have two.
pub async fn expect_one_email_each(
    smtp: &SmtpServer,
    batch: &[Registered],
    in_doubt: &HashSet<String>,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let missing = batch.iter().filter(|u| verification_emails(smtp, &u.email).is_empty()).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} of {} users got no email within {limit:?}", batch.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let twice: Vec<_> = batch
        .iter()
        .filter(|u| verification_emails(smtp, &u.email).len() > if in_doubt.contains(&u.email) { 2 } else { 1 })
        .map(|u| u.email.as_str())
        .collect();
    assert!(twice.is_empty(), "{} users got more than one email: {twice:?}", twice.len());
}

/// Clicks every user's link as a browser would and waits until GetUser says verified for all.
pub async fn click_all_and_expect_verified(
    smtp: &SmtpServer,
    gateway_url: &str,
    users: &UserServiceClient<Ops>,
    batch: &[Registered],
    limit: Duration,
) {
    let browser = Browser::new(gateway_url);
    let browser = &browser;
    futures::stream::iter(batch)
        .map(|user| async move {
            let link = verification_emails(smtp, &user.email)[0].verification_link();
            let page = browser.click(&link).await;
            assert_eq!((page.status, page.kind()), (200, "verified"), "{}: {}", user.email, page.html);
            Ok::<_, ()>(())
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .expect("every click");
    for user in batch {
        assert!(
            wait_until_verified(users, &user.user_id, limit).await,
            "{} is not verified within {limit:?}",
            user.email
        );
    }
}

/// How many messages sit in the PARKED stream (none when it does not exist yet).
pub async fn parked_count(nats_url: &str) -> u64 {
    let js =
        jetstream::new(async_nats::connect(verimail_events::bus::servers(nats_url)).await.expect("connect to NATS"));
    match js.get_stream(verimail_proto::streams::PARKED).await {
        Ok(mut stream) => stream.info().await.expect("PARKED stream info").state.messages,
        Err(_) => 0,
    }
}

/// Waits (at most `limit`) until grpc.health.v1 at `addr` reports `want` for `service`.
pub async fn wait_for_health(addr: &str, service: &str, want: tonic_health::ServingStatus, limit: Duration) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let want = want as i32;
    let channel = verimail_server::tls::GrpcTls::off().channel("test", addr).expect("channel");
    let deadline = Instant::now() + limit;
    loop {
        let reply = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: service.into() }).await;
        let status = reply.map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == want) {
            return;
        }
        assert!(Instant::now() < deadline, "{service} at {addr} did not report {want} within {limit:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls GetUser (every 20 ms, at most `limit`) until the user is verified.
pub async fn wait_until_verified(users: &UserServiceClient<Ops>, user_id: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut users = users.clone();
    loop {
        let request = GetUserRequest { key: Some(get_user_request::Key::UserId(user_id.to_owned())) };
        let status = users.get_user(request).await.map(|r| r.into_inner().user.expect("a user").status());
        if matches!(status, Ok(UserStatus::Verified)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
