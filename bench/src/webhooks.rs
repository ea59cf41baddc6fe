//! Webhooks: how many deliveries per second email-service makes to one local receiver, and, at
//! half that rate, the time to the receiver's 200 from two starts:
//! - an event's publication (what a committing service's relay does at once): the benchmark
//!   publishes users.verified events to JetStream itself, each for a user of its own (a user's
//!   deliveries go one at a time);
//! - users.verified's commit: real verifications (VerifyEmail with fresh tokens of users
//!   registered first), user-service committing each user's status with its event, from the
//!   event's `verified_at` (taken in that transaction) to the 200, on the machine's one clock.
//!
//! A receiver inside the benchmark's process answers every POST with 200.

use crate::load::{Sample, paced};
use async_nats::jetstream;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verimail_proto::email::v1::CreateWebhookEndpointRequest;
use verimail_proto::email::v1::webhook_service_client::WebhookServiceClient;
use verimail_proto::events::v1::UserVerified;
use verimail_proto::subjects;
use verimail_system_tests::Operator;
use verimail_system_tests::procs::{Part, ProcessStack};

/// Events published for the maximum.
const BURST: usize = 2000;

/// An event the receiver answered: when, and the `verified_at` its body says.
#[derive(Clone, Copy)]
struct Answered {
    at: Instant,
    wall: chrono::DateTime<chrono::Utc>,
    verified_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the receiver answered 200, by event id.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<HashMap<String, Answered>>>);

impl Sink {
    /// Listens on a free loopback port: its URL.
    async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let sink = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(sink.clone().answer(stream));
            }
        });
        Ok(url)
    }

    /// Reads one request (headers, then the body its content-length says), records its event
    /// and answers 200.
    async fn answer(self, mut stream: tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        let body_start = loop {
            let Ok(n) = stream.read(&mut buffer).await else { return };
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buffer[..n]);
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while request.len() < body_start + length {
            let Ok(n) = stream.read(&mut buffer).await else { return };
            if n == 0 {
                return;
            }
            request.extend_from_slice(&buffer[..n]);
        }
        let body: serde_json::Value = serde_json::from_slice(&request[body_start..]).unwrap_or_default();
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        let answered = Answered {
            at: Instant::now(),
            wall: chrono::Utc::now(),
            verified_at: body["data"]["verified_at"]
                .as_str()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&chrono::Utc)),
        };
        if let Some(event) = body["event_id"].as_str() {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(event.to_owned()).or_insert(answered);
        }
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn answered(&self, event: &str) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(event).map(|answered| answered.at)
    }

    /// For each event answered from `since` on: from its `verified_at` to its 200.
    fn since_commit(&self, since: chrono::DateTime<chrono::Utc>) -> Vec<Duration> {
        let answered = self.0.lock().unwrap_or_else(|p| p.into_inner());
        answered
            .values()
            .filter(|answered| answered.wall >= since)
            .filter_map(|answered| (answered.wall - answered.verified_at?).to_std().ok())
            .collect()
    }

    /// Waits until `count` events were answered (at most `limit`).
    async fn until(&self, count: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while self.count() < count {
            anyhow::ensure!(Instant::now() < deadline, "{} of {count} webhooks within {limit:?}", self.count());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// Publishes one users.verified event for a new user, as user-service's relay would: its id.
async fn publish(js: &jetstream::Context) -> anyhow::Result<String> {
    let event = UserVerified {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: uuid::Uuid::now_v7().to_string(),
        email: "bench@example.com".into(),
        verified_at: verimail_server::rfc3339(chrono::Utc::now()),
    };
    let headers = verimail_events::bus::event_headers(&event.event_id, "verimail.events.v1.UserVerified");
    js.publish_with_headers(subjects::USERS_VERIFIED, headers, event.encode_to_vec().into()).await?.await?;
    Ok(event.event_id)
}

/// Registers `count` users and waits for their verification emails: each user with the token
/// of its email's link (the newest, should one have been sent twice).
async fn registered_with_emails(stack: &ProcessStack, count: usize) -> anyhow::Result<Vec<crate::verify::Fresh>> {
    use futures::{StreamExt, TryStreamExt};
    let users: Vec<(String, String)> = futures::stream::iter(0..count)
        .map(|_| {
            let mut users = stack.users.clone();
            async move {
                let email = crate::address("hooked");
                let request = crate::register::request(email.clone());
                Ok::<_, anyhow::Error>((users.register_user(request).await?.into_inner().user_id, email))
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let mails = stack.smtp.all();
        let tokens: HashMap<&str, String> = mails
            .iter()
            .filter(|mail| mail.is_verification())
            .filter_map(|mail| Some((mail.to.first()?.as_str(), mail.verification_token())))
            .collect();
        let fresh: Vec<crate::verify::Fresh> = users
            .iter()
            .filter_map(|(user_id, email)| {
                let token = tokens.get(email.as_str())?.clone();
                Some(crate::verify::Fresh { user_id: user_id.clone(), email: email.clone(), token })
            })
            .collect();
        if fresh.len() == count {
            return Ok(fresh);
        }
        anyhow::ensure!(Instant::now() < deadline, "{} of {count} verification emails", fresh.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(table: &mut crate::Table, seconds: u64) -> anyhow::Result<serde_json::Value> {
    let mut stack = ProcessStack::start().await;
    stack.kill(Part::Email);
    stack.set_var(Part::Email, "WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true");
    stack.start_part(Part::Email).await;
    let sink = Sink::default();
    let url = sink.start().await?;
    let channel = verimail_server::tls::GrpcTls::off().channel("bench", &stack.grpc_addr(Part::Email))?;
    let request =
        CreateWebhookEndpointRequest { url, event_types: vec![subjects::USERS_VERIFIED.into()], ..Default::default() };
    WebhookServiceClient::new(Operator::new().channel(channel)).create_webhook_endpoint(request).await?;
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await?);

    // The maximum: a burst, from its first publication to the last 200.
    let meter = crate::cpu_meter(&stack);
    let started = Instant::now();
    let published: Vec<anyhow::Result<String>> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter((0..BURST).map(|_| publish(&js))),
        64,
    ))
    .await;
    published.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    sink.until(BURST, Duration::from_secs(300)).await?;
    let elapsed = started.elapsed();
    let maximum = table.rate(&format!("webhooks delivered to one endpoint, a burst of {BURST}"), BURST, elapsed);
    table.cpu(&meter.per_operation(BURST));

    // At half of it: from each event's publication to its 200.
    let half = maximum / 2.0;
    let before = sink.count();
    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let record = sent.clone();
    let publishing = paced(half, seconds, move |_| {
        let (js, record) = (js.clone(), record.clone());
        async move {
            let at = Instant::now();
            let event = publish(&js).await?;
            record.lock().unwrap_or_else(|p| p.into_inner()).push((event, at));
            Ok(())
        }
    })
    .await?;
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    sink.until(before + sent.len(), Duration::from_secs(120)).await?;
    let latencies = sent.iter().filter_map(|(event, at)| Some(sink.answered(event)?.duration_since(*at))).collect();
    let latency = Sample { latencies, elapsed: publishing.elapsed };
    let row = table.row(&format!("webhook: publication → 200, at half of that ({half:.0}/s)"), &latency, false);

    // At half of it again, from users.verified's commit: real verifications, with the tokens
    // of the emails of users registered first (so only the webhooks run after).
    let count = (half * seconds as f64 * 1.2).ceil() as usize + 16;
    let tokens = crate::verify::Tokens::new(registered_with_emails(&stack, count).await?);
    let before = sink.count();
    let since = chrono::Utc::now();
    let verifying = crate::verify::grpc_at_rate(&stack, &tokens, half, seconds).await?;
    sink.until(before + verifying.latencies.len(), Duration::from_secs(120)).await?;
    let latencies = sink.since_commit(since);
    anyhow::ensure!(latencies.len() == verifying.latencies.len(), "a verification without its webhook");
    let latency = Sample { latencies, elapsed: verifying.elapsed };
    let from_commit =
        table.row(&format!("webhook: users.verified commit → 200, at half of that ({half:.0}/s)"), &latency, false);
    Ok(serde_json::json!({ "per_second": maximum, "at_half": row, "from_commit_at_half": from_commit }))
}
