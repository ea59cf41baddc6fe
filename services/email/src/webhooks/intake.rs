//! What is owed: two durable consumers (the USERS stream, and email-service's own EMAIL
//! stream) record, for each event webhooks carry, one delivery for each endpoint that wants
//! it, in one transaction, before the message is acknowledged: nothing is lost between an
//! event's commit and its delivery. One message at a time, so a user's events are recorded in
//! the order their stream holds them.

use super::{Webhooks, payload};
use crate::store::webhook_deliveries::{self, Status};
use crate::store::webhook_endpoints;
use verimail_events::bus::{ConsumerSpec, Delivery, EMAIL_STREAM, HandlerError, StreamSettings, USERS_STREAM};

/// The consumers' durable names.
pub const USERS_CONSUMER: &str = "email-service-webhooks";
pub const EMAIL_CONSUMER: &str = "email-service-webhooks-email";

/// The two consumers.
pub fn specs(streams: StreamSettings) -> [ConsumerSpec; 2] {
    let spec = |stream, durable, filter| {
        let mut spec = ConsumerSpec::new(stream, durable, filter);
        spec.streams = streams;
        spec.concurrency = 1;
        spec
    };
    [
        spec(USERS_STREAM, USERS_CONSUMER, verimail_proto::streams::USERS_SUBJECTS),
        spec(EMAIL_STREAM, EMAIL_CONSUMER, verimail_proto::streams::EMAIL_SUBJECTS),
    ]
}

impl Webhooks {
    /// Records what `delivery`'s event owes each endpoint that wants it.
    pub async fn take(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let event = payload::read(&delivery.subject, &delivery.payload)
            .map_err(|e| HandlerError::Permanent(format!("{}: undecodable: {e}", delivery.subject)))?;
        let Some(event) = event else { return Ok(()) };
        let endpoints = webhook_endpoints::all(&self.db).await?;
        let now = chrono::Utc::now();
        let owed: Vec<webhook_deliveries::Model> = endpoints
            .iter()
            .filter(|endpoint| endpoint.wants(event.event_type))
            .map(|endpoint| webhook_deliveries::Model {
                id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                endpoint_id: endpoint.id.clone(),
                event_id: event.event_id.clone(),
                event_type: event.event_type.to_owned(),
                user_id: event.user_id.clone(),
                payload: event.body.clone(),
                status: Status::Pending,
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
                delivered_at: None,
            })
            .collect();
        let writer = verimail_events::db::writer(&self.db);
        if !owed.is_empty() {
            webhook_deliveries::owe(&writer, owed).await?;
            self.wake.notify_waiters();
        }
        if event.event_type == verimail_proto::subjects::USERS_DELETED {
            webhook_deliveries::erase_finished(&writer, &event.user_id).await?;
        }
        Ok(())
    }
}
