//! The events webhooks carry, and the JSON body each is POSTed as (docs/webhooks.md):
//! `{"type": …, "timestamp": …, "event_id": …, "data": {…}}`.

use prost::Message as _;
use serde_json::json;
use verimail_proto::events::v1 as events;
use verimail_proto::subjects;

/// The event types an endpoint may want.
pub const EVENT_TYPES: [&str; 5] = [
    subjects::USERS_VERIFIED,
    subjects::USERS_EMAIL_CHANGED,
    subjects::USERS_DELETED,
    subjects::USERS_SESSIONS_REVOKED,
    subjects::EMAIL_ADDRESS_UNDELIVERABLE,
];

/// One event as webhooks carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub event_type: &'static str,
    pub user_id: String,
    /// The JSON body.
    pub body: String,
}

fn event(
    event_type: &'static str,
    event_id: String,
    user_id: String,
    occurred_at: &str,
    data: serde_json::Value,
) -> Event {
    let body = json!({ "type": event_type, "timestamp": occurred_at, "event_id": event_id, "data": data });
    Event { event_id, event_type, user_id, body: body.to_string() }
}

/// The event a message on `subject` carries, if webhooks carry it; an undecodable one is an
/// error.
pub fn read(subject: &str, payload: &[u8]) -> Result<Option<Event>, prost::DecodeError> {
    Ok(Some(match subject {
        subjects::USERS_VERIFIED => {
            let e = events::UserVerified::decode(payload)?;
            let data = json!({ "user_id": e.user_id, "email": e.email, "verified_at": e.verified_at });
            event(subjects::USERS_VERIFIED, e.event_id, e.user_id, &e.verified_at, data)
        }
        subjects::USERS_EMAIL_CHANGED => {
            let e = events::EmailChanged::decode(payload)?;
            let data = json!({
                "user_id": e.user_id, "old_email": e.old_email, "new_email": e.new_email,
                "change_id": e.change_id, "undone": e.undone, "occurred_at": e.occurred_at,
            });
            event(subjects::USERS_EMAIL_CHANGED, e.event_id, e.user_id, &e.occurred_at, data)
        }
        subjects::USERS_DELETED => {
            let e = events::UserDeleted::decode(payload)?;
            // Not the address: a deletion should spread it no further.
            let reason = match e.reason() {
                events::DeletionReason::Expired => "expired",
                events::DeletionReason::Requested => "requested",
                events::DeletionReason::Unspecified => "unspecified",
            };
            let data = json!({ "user_id": e.user_id, "reason": reason, "occurred_at": e.occurred_at });
            event(subjects::USERS_DELETED, e.event_id, e.user_id, &e.occurred_at, data)
        }
        subjects::USERS_SESSIONS_REVOKED => {
            let e = events::SessionsRevoked::decode(payload)?;
            let reason = e.reason().as_str_name().trim_start_matches("SESSION_END_REASON_").to_ascii_lowercase();
            let data = json!({
                "user_id": e.user_id, "session_ids": e.session_ids, "reason": reason,
                "tokens_expire_at": e.tokens_expire_at, "occurred_at": e.occurred_at,
            });
            event(subjects::USERS_SESSIONS_REVOKED, e.event_id, e.user_id, &e.occurred_at, data)
        }
        subjects::EMAIL_ADDRESS_UNDELIVERABLE => {
            let e = events::AddressUndeliverable::decode(payload)?;
            let reason = e.reason().as_str_name().trim_start_matches("UNDELIVERABLE_REASON_").to_ascii_lowercase();
            let data = json!({
                "user_id": e.user_id, "email": e.email, "reason": reason, "status": e.status,
                "bounce_reason": e.bounce_reason, "delivery_id": e.delivery_id, "occurred_at": e.occurred_at,
            });
            event(subjects::EMAIL_ADDRESS_UNDELIVERABLE, e.event_id, e.user_id, &e.occurred_at, data)
        }
        _ => return Ok(None),
    }))
}
