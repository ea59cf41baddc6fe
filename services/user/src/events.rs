//! What user-service consumes: auth.email_verified, which marks the user verified.

use crate::store;
use prost::Message;
use sea_orm::DatabaseConnection;
use verimail_kit::bus::{AUTH_STREAM, ConsumerSpec, Delivery, HandlerError, subjects};
use verimail_proto::events::v1::EmailVerified;

pub fn email_verified_consumer(replicas: usize) -> ConsumerSpec {
    ConsumerSpec { replicas, ..ConsumerSpec::new(AUTH_STREAM, "user-service", subjects::AUTH_EMAIL_VERIFIED) }
}

/// Idempotent: the same event twice leaves the user verified once.
pub async fn on_email_verified(db: &DatabaseConnection, delivery: Delivery) -> Result<(), HandlerError> {
    let event = EmailVerified::decode(delivery.payload)
        .map_err(|e| HandlerError::Permanent(format!("undecodable EmailVerified: {e}")))?;
    match store::mark_verified(db, &event.user_id).await {
        Ok(true) => {
            tracing::info!(user_id = %event.user_id, event_id = %event.event_id, "user verified");
            Ok(())
        }
        Ok(false) => Err(HandlerError::Permanent(format!("no user {}", event.user_id))),
        Err(e) => Err(e.into()),
    }
}
