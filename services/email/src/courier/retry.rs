//! RetryDelivery: one more attempt, now, at a delivery that failed or was parked.

use super::{Attempt, Courier, EmailRequest, TEST_KIND};
use crate::address_key::HASHED;
use crate::courier::ledger::Delivery;
use crate::error::EmailError;
use crate::store::deliveries::{self, Claim, DeliveryStatus};
use verimail_proto::subjects;

impl Courier {
    /// RetryDelivery: one more attempt, now, at a delivery that failed or was parked. An
    /// attempt that fails again leaves it as it was, with the new error.
    pub async fn retry(&self, event_id: &str) -> Result<Delivery, EmailError> {
        if let Some(row) = deliveries::get(&self.db, event_id).await? {
            if row.recipient.starts_with(HASHED) {
                return Err(EmailError::Erased);
            }
            // A change's id is not recorded here, and a test email is for no user: each is
            // asked for again instead. Refused before the claim, which would leave it pending.
            let change = [subjects::USERS_EMAIL_CHANGE_REQUESTED, subjects::USERS_EMAIL_CHANGE_NOTICE];
            if change.contains(&row.kind.as_str()) || row.kind.starts_with(TEST_KIND) {
                return Err(EmailError::NotRetryableKind(row.kind));
            }
            if self.suppressions.active(&row.recipient).await?.is_some() {
                return Err(EmailError::Suppressed);
            }
        }
        let write = self.suppressions.relay.begin().await?;
        let claim = deliveries::claim_retry(&*write, event_id, &self.instance).await?;
        write.commit().await?;
        let before = match claim {
            Claim::NotFound => return Err(EmailError::NotFound(event_id.to_owned())),
            Claim::NotRetryable(status) => return Err(EmailError::NotRetryable(status)),
            Claim::Claimed(before) => *before,
        };
        // A registration's own email belongs to it (a reset's too); a resend's registration is
        // not recorded.
        let own = [subjects::USERS_REGISTERED, subjects::USERS_PASSWORD_RESET_REQUESTED];
        let belongs_to = if own.contains(&before.kind.as_str()) { before.event_id.clone() } else { String::new() };
        let request = EmailRequest {
            event_id: before.event_id,
            user_id: before.user_id,
            email: before.recipient,
            belongs_to,
            new_email: String::new(),
            by_email_change: false,
            reset: false,
            locale: before.locale.unwrap_or_default(),
        };
        let (status, error) = match self.attempt(&request, &before.kind).await? {
            Attempt::Sent => (DeliveryStatus::Sent, None),
            Attempt::Failed(reason) => (DeliveryStatus::Failed, Some(reason)),
            Attempt::Transient(failure) => (before.status, Some(failure.to_string())),
        };
        self.record(&request, &before.kind, status, error, before.attempts + 1).await?;
        self.delivery(event_id).await?.ok_or_else(|| EmailError::NotFound(event_id.to_owned()))
    }
}
