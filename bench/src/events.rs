//! The event path alone: outbox rows through JetStream to the consumer's ack, with hashing out
//! of the way. The benchmark writes auth.email_verified events straight into auth-service's
//! outbox table (one transaction), for users the verify measurements already verified; auth's
//! own relay publishes them, and user-service's own consumer handles each (its idempotent
//! path: an UPDATE that finds the user verified already, then a read) and acks it.

use async_nats::jetstream;
use sea_orm::TransactionTrait;
use std::time::{Duration, Instant};
use verimail_events::outbox::{self, OutboxEvent};
use verimail_proto::events::v1::EmailVerified;
use verimail_proto::subjects;
use verimail_system_tests::procs::ProcessStack;

/// How long the event path took for `count` events.
pub struct EventPath {
    pub count: usize,
    /// From the commit of the rows until the relay had the last one stored in JetStream.
    pub published: Duration,
    /// From the commit until user-service had acknowledged the last one.
    pub acked: Duration,
}

impl EventPath {
    pub fn json(&self) -> serde_json::Value {
        let rate = |d: Duration| self.count as f64 / d.as_secs_f64();
        serde_json::json!({
            "count": self.count,
            "published_seconds": self.published.as_secs_f64(),
            "published_per_second": rate(self.published),
            "acked_seconds": self.acked.as_secs_f64(),
            "acked_per_second": rate(self.acked),
        })
    }
}

/// Writes `count` EmailVerified events for `users` (round robin) into auth-service's outbox
/// and times them through to user-service's ack (at most two minutes).
pub async fn run(stack: &ProcessStack, users: &[(String, String)], count: usize) -> anyhow::Result<EventPath> {
    anyhow::ensure!(!users.is_empty(), "the event path needs verified users");
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await?);
    let mut stream = js.get_stream(verimail_proto::streams::AUTH).await?;
    let last_before = stream.info().await?.state.last_sequence;
    let target = last_before + count as u64;

    let db = sea_orm::Database::connect(stack.database_url("auth")).await?;
    let now = verimail_server::rfc3339(chrono::Utc::now());
    let rows: Vec<OutboxEvent> = (0..count)
        .map(|n| {
            let (user_id, email) = &users[n % users.len()];
            let event = EmailVerified {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: user_id.clone(),
                email: email.clone(),
                occurred_at: now.clone(),
                registration_event_id: String::new(),
            };
            OutboxEvent::new(event.event_id.clone(), user_id, subjects::AUTH_EMAIL_VERIFIED, &event)
        })
        .collect();
    let txn = db.begin().await?;
    for chunk in rows.chunks(1000) {
        outbox::enqueue_all(&txn, chunk.to_vec()).await?;
    }
    txn.commit().await?;
    let started = Instant::now();
    db.close().await?;

    let deadline = started + Duration::from_secs(120);
    let mut published = None;
    loop {
        if published.is_none() && stream.info().await?.state.last_sequence >= target {
            published = Some(started.elapsed());
        }
        let consumer = stream.consumer_info("user-service").await?;
        if consumer.ack_floor.stream_sequence >= target {
            let acked = started.elapsed();
            return Ok(EventPath { count, published: published.unwrap_or(acked), acked });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "after 120 s user-service had acked up to {} of {target} (relay {})",
            consumer.ack_floor.stream_sequence,
            if published.is_some() { "done" } else { "not done" }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
