//! What email-service says about users' addresses: email.address_undeliverable (the address
//! is on its suppression list) and email.address_deliverable (an operator lifted it). Kept per
//! user with the address it was about, so GetUser shows it only while the account still has
//! that address: a change of address leaves it behind by itself.

use crate::store::{undeliverable, users};
use prost::Message;
use verimail_events::bus::{ConsumerSpec, Delivery, EMAIL_STREAM, HandlerError, StreamSettings};
use verimail_events::outbox::OutboxRelay;
use verimail_proto::events::v1::{AddressDeliverable, AddressUndeliverable, UndeliverableReason};
use verimail_proto::subjects;

/// The durable that reads email-service's events.
pub const DURABLE: &str = "user-service-undeliverable";

/// email.> on the EMAIL stream (both of email-service's events; nats-server 2.9 filters on one
/// subject).
pub fn consumer(streams: StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, ..ConsumerSpec::new(EMAIL_STREAM, DURABLE, verimail_proto::streams::EMAIL_SUBJECTS) }
}

fn reason_text(reason: UndeliverableReason) -> &'static str {
    match reason {
        UndeliverableReason::HardBounce => "hard_bounce",
        UndeliverableReason::Complaint => "complaint",
        UndeliverableReason::SoftBounces => "soft_bounces",
        UndeliverableReason::Rejected => "rejected",
        UndeliverableReason::Unspecified => "unspecified",
    }
}

/// Records or clears what an event says, for a user who still has the address it names.
/// Idempotent; an event about a deleted user, or an address the user no longer has, changes
/// nothing.
pub async fn on_event(relay: &OutboxRelay, delivery: Delivery) -> Result<(), HandlerError> {
    let undecodable = |e: prost::DecodeError| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
    match delivery.subject.as_str() {
        subjects::EMAIL_ADDRESS_UNDELIVERABLE => {
            let event = AddressUndeliverable::decode(delivery.payload.clone()).map_err(undecodable)?;
            let txn = relay.begin().await?;
            let Some(user) = users::find_by_id(&*txn, &event.user_id).await? else { return Ok(()) };
            if user.email != event.email {
                return Ok(());
            }
            let since = chrono::DateTime::parse_from_rfc3339(&event.occurred_at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| chrono::Utc::now());
            let recorded = undeliverable::Model {
                user_id: event.user_id.clone(),
                email: event.email.clone(),
                reason: reason_text(event.reason()).to_owned(),
                status: (!event.status.is_empty()).then(|| event.status.clone()),
                since,
            };
            undeliverable::replace(&*txn, recorded).await?;
            txn.commit().await?;
            tracing::info!(user_id = %event.user_id, reason = reason_text(event.reason()), "the user's address cannot receive mail");
        }
        subjects::EMAIL_ADDRESS_DELIVERABLE => {
            let event = AddressDeliverable::decode(delivery.payload.clone()).map_err(undecodable)?;
            let write = relay.begin().await?;
            undeliverable::clear(&*write, &event.user_id, &event.email).await?;
            write.commit().await?;
        }
        _ => {}
    }
    Ok(())
}
