//! What user-service consumes: auth.email_verified, which marks the user verified and, in the
//! same transaction, puts users.verified (for other services) into the outbox. One for an
//! account deleted since is dropped.

use crate::email_change::Completion;
use crate::store::users::{self, AccountStatus, Verified};
use prost::Message;
use verimail_events::bus::{AUTH_STREAM, ConsumerSpec, Delivery, HandlerError};
use verimail_events::outbox::{OutboxEvent, OutboxRelay};
use verimail_proto::events::v1::{EmailVerified, UserVerified};
use verimail_proto::subjects;

/// Up to 64 events per transaction: under load one commit marks many users.
pub fn email_verified_consumer(streams: verimail_events::bus::StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, batch: 64, ..ConsumerSpec::new(AUTH_STREAM, "user-service", subjects::AUTH_EMAIL_VERIFIED) }
}

/// users.verified for a user this transaction verified.
pub(crate) fn verified_event(user: &users::Model) -> OutboxEvent {
    OutboxEvent::of(&UserVerified {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        email: user.email.clone(),
        verified_at: user.verified_at.map(verimail_server::rfc3339).unwrap_or_default(),
    })
}

fn verified_by(event: &EmailVerified) -> Verified<'_> {
    Verified { user_id: &event.user_id, email: &event.email, registration_event_id: &event.registration_event_id }
}

/// Marks the users of a batch of events verified, in one transaction; answers for each event
/// in order. Idempotent: the same event twice leaves the user verified once. An event for no
/// user, for an address that is not the user's current one or a registration that is not
/// their latest, or one that cannot be decoded, is parked (and verifies nobody).
pub async fn on_email_verified(relay: &OutboxRelay, deliveries: Vec<Delivery>) -> Vec<Result<(), HandlerError>> {
    let events: Vec<Result<EmailVerified, HandlerError>> = deliveries
        .iter()
        .map(|delivery| {
            EmailVerified::decode(delivery.payload.clone())
                .map_err(|e| HandlerError::Permanent(format!("undecodable EmailVerified: {e}")))
        })
        .collect();
    let verified: Vec<Verified> = events.iter().flatten().map(verified_by).collect();
    let marked = async {
        let mut write = relay.begin().await?;
        let (before, newly) = users::mark_verified(&*write, &verified).await?;
        // Users gone: deleted ones (a late click on an expired account's link) are dropped.
        let gone: Vec<&str> = verified.iter().map(|v| v.user_id).filter(|id| !before.contains_key(*id)).collect();
        let deleted = verimail_events::erasure::buried(&*write, &gone).await?;
        write.announce_all(newly.iter().map(verified_event));
        write.commit().await?;
        Ok::<_, sea_orm::DbErr>((before, deleted))
    }
    .await;
    let (before, deleted) = match marked {
        Ok(marked) => marked,
        Err(e) => {
            let retry = HandlerError::from(e).to_string();
            return events.into_iter().map(|event| event.and(Err(HandlerError::Retry(retry.clone())))).collect();
        }
    };
    // Not the current address, or not the latest registration: a change of address's new one?
    let mut changes = std::collections::HashMap::new();
    for event in events.iter().flatten() {
        let Some(user) = before.get(&event.user_id) else { continue };
        if user.accepts(&verified_by(event)) || event.registration_event_id.is_empty() {
            continue;
        }
        let completed =
            crate::email_change::complete(relay, &event.user_id, &event.registration_event_id, &event.email).await;
        changes.insert(event.event_id.clone(), completed);
    }
    events
        .into_iter()
        .zip(&deliveries)
        .map(|(event, delivery)| {
            let event = event?;
            let _in_its_trace = delivery.span.enter();
            let Some(user) = before.get(&event.user_id) else {
                if deleted.contains_key(&event.user_id) {
                    tracing::info!(user_id = %event.user_id, event_id = %event.event_id, "email_verified for a deleted account: dropped");
                    return Ok(());
                }
                return Err(HandlerError::Permanent(format!("no user {}", event.user_id)));
            };
            match changes.remove(&event.event_id) {
                Some(Err(e)) => Err(HandlerError::from(e)),
                Some(Ok(Completion::NotAChange)) => Err(not_this_users(&event)),
                Some(Ok(outcome)) => {
                    tracing::info!(user_id = %event.user_id, event_id = %event.event_id, ?outcome, "new address of a change verified");
                    Ok(())
                }
                None if !user.accepts(&verified_by(&event)) => Err(not_this_users(&event)),
                None => {
                    if user.status == AccountStatus::Unverified {
                        tracing::info!(user_id = %event.user_id, event_id = %event.event_id, "user verified");
                    }
                    Ok(())
                }
            }
        })
        .collect()
}

/// A verification of an address that is not the user's, of a registration that is not their
/// latest, and of no change of theirs: it verifies nothing, and is parked.
fn not_this_users(event: &EmailVerified) -> HandlerError {
    tracing::error!(user_id = %event.user_id, event_id = %event.event_id, "email_verified is for another address or an earlier registration: not verified");
    HandlerError::Permanent(format!(
        "user {} has another address or a later registration than the one verified",
        event.user_id
    ))
}
