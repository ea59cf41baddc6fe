//! Sending what is owed: one worker per enabled endpoint, so a slow or dead endpoint delays no
//! other. Each takes the deliveries due (a user's oldest pending first, never two of one user
//! at once), claims each for the length of an attempt (so instances sharing a database do not
//! send it twice), POSTs it signed, and settles it: delivered on a 2xx, else another attempt
//! after the schedule's next wait (±20%), or parked past its end.

use super::{Webhooks, sign};
use crate::store::webhook_deliveries::{self, attempts};
use crate::store::webhook_endpoints::{self, Model as Endpoint};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use verimail_server::shutdown::Shutdown;

/// Deliveries one endpoint is sent at once (each of a different user).
const IN_FLIGHT: u64 = 4;
/// How often a worker looks for deliveries that came due without a bell.
const POLL: Duration = Duration::from_millis(500);

impl Webhooks {
    /// Runs a worker for each enabled endpoint until `shutdown`, starting and stopping them as
    /// endpoints come, go, and are enabled or disabled.
    pub async fn dispatch(self, shutdown: Shutdown) {
        let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            match webhook_endpoints::all(&self.db).await {
                Ok(endpoints) => {
                    let enabled: Vec<String> = endpoints.into_iter().filter(|e| e.enabled).map(|e| e.id).collect();
                    workers.retain(|id, worker| {
                        let keep = enabled.contains(id) && !worker.is_finished();
                        if !keep {
                            worker.abort();
                        }
                        keep
                    });
                    for id in enabled {
                        let work = self.clone().work(id.clone(), shutdown.clone());
                        workers.entry(id).or_insert_with(|| tokio::spawn(work));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook endpoints could not be read"),
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = self.endpoints_changed.notified() => {}
                () = tokio::time::sleep(POLL * 4) => {}
            }
        }
        for worker in workers.into_values() {
            worker.abort();
        }
    }

    /// One endpoint's worker: it reads the endpoint afresh each round (a rotated secret signs
    /// at once) and ends when the endpoint is gone or disabled.
    async fn work(self, id: String, shutdown: Shutdown) {
        crate::metrics::webhook_endpoint(&id);
        loop {
            let sent = match webhook_endpoints::get(&self.db, &id).await {
                Ok(Some(endpoint)) if endpoint.enabled => match self.send_due(&endpoint).await {
                    Ok(sent) => sent,
                    Err(e) => {
                        tracing::warn!(endpoint = %id, error = %e, "webhook deliveries could not be read");
                        0
                    }
                },
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %id, error = %e, "the webhook endpoint could not be read");
                    0
                }
            };
            if sent > 0 {
                continue;
            }
            tokio::select! {
                () = shutdown.wait() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Sends what is due to `endpoint` now: how many were tried.
    async fn send_due(&self, endpoint: &Endpoint) -> Result<usize, sea_orm::DbErr> {
        let now = chrono::Utc::now();
        let oldest = webhook_deliveries::oldest_pending(&self.db, &endpoint.id).await?;
        let age = oldest.and_then(|at| (now - at).to_std().ok()).unwrap_or_default();
        crate::metrics::webhook_backlog(&endpoint.id, age);
        let due = webhook_deliveries::due(&self.db, &endpoint.id, now, IN_FLIGHT).await?;
        let writer = verimail_events::db::writer(&self.db);
        // Held for the length of an attempt, and a margin: then anyone may try it again.
        let lease = chrono::Duration::from_std(self.config.timeout * 2).unwrap_or(chrono::Duration::MAX);
        let mut claimed = Vec::new();
        for delivery in due {
            if webhook_deliveries::claim(&writer, &delivery, now + lease).await? {
                claimed.push(delivery);
            }
        }
        let tried = claimed.len();
        let attempts = claimed.into_iter().map(|delivery| async move {
            let attempt = self.attempt(endpoint, &delivery).await;
            (delivery, attempt)
        });
        let mut finished_for = Vec::new();
        for (delivery, (attempt, delivered)) in futures::future::join_all(attempts).await {
            let retry_at = (!delivered).then(|| self.next_attempt(delivery.attempts + 1, attempt.at)).flatten();
            let outcome = match (delivered, retry_at) {
                (true, _) => "delivered",
                (false, Some(_)) => "failed",
                (false, None) => "parked",
            };
            let took = Duration::from_millis(u64::try_from(attempt.duration_ms).unwrap_or(0));
            crate::metrics::webhook_attempt(&endpoint.id, outcome, took);
            if !delivered && retry_at.is_none() {
                tracing::warn!(endpoint = %endpoint.id, delivery = %delivery.id, attempts = delivery.attempts + 1, "webhook delivery parked: every attempt failed");
            }
            let finished = delivered || retry_at.is_none();
            webhook_deliveries::settle(&writer, &delivery.id, attempt, delivered, retry_at).await?;
            if finished {
                finished_for.push(delivery.user_id);
            }
        }
        // Users deleted meanwhile: what their finished deliveries said (the address) is not kept.
        let finished_for: Vec<&str> = finished_for.iter().map(String::as_str).collect();
        for user_id in verimail_events::erasure::buried(&self.db, &finished_for).await?.keys() {
            webhook_deliveries::erase_finished(&writer, user_id).await?;
        }
        Ok(tried)
    }

    /// When attempt number `made + 1` is due, after `made` failed ones; none past the schedule.
    fn next_attempt(&self, made: i32, at: chrono::DateTime<chrono::Utc>) -> Option<chrono::DateTime<chrono::Utc>> {
        let wait = *self.config.schedule.get(usize::try_from(made).ok()?.checked_sub(1)?)?;
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        Some(at + chrono::Duration::from_std(wait.mul_f64(jitter)).unwrap_or(chrono::Duration::MAX))
    }

    /// One POST of `delivery` to `endpoint`: the attempt as recorded, and whether it was
    /// delivered (a 2xx).
    async fn attempt(&self, endpoint: &Endpoint, delivery: &webhook_deliveries::Model) -> (attempts::Model, bool) {
        let at = chrono::Utc::now();
        let started = Instant::now();
        let record = |http_status: i32, answer: String| attempts::Model {
            id: uuid::Uuid::now_v7().to_string(),
            delivery_id: delivery.id.clone(),
            at,
            http_status,
            answer,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        };
        let timestamp = at.timestamp();
        let secrets = endpoint.signing_secrets(at);
        let signature = match sign::signatures(&secrets, &delivery.id, timestamp, &delivery.payload) {
            Ok(signature) => signature,
            Err(why) => return (record(0, why), false),
        };
        let Ok(url) = url::Url::parse(&endpoint.url) else {
            return (record(0, format!("{} is not a URL", endpoint.url)), false);
        };
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("user-agent", "Verimail-Webhooks/1".to_owned()),
            ("webhook-id", delivery.id.clone()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        match self.client.post(&url, &headers, delivery.payload.clone()).await {
            Ok(answer) => {
                let delivered = (200..300).contains(&answer.status);
                if !delivered {
                    tracing::info!(endpoint = %endpoint.id, delivery = %delivery.id, status = answer.status, "webhook endpoint refused a delivery");
                }
                (record(i32::from(answer.status), answer.body), delivered)
            }
            Err(why) => (record(0, bounded(&why)), false),
        }
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(super::http::ANSWER_KEPT).collect()
}
