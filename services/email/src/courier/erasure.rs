//! users.deleted: the user's deliveries keep a keyed hash instead of the address, a tombstone
//! keeps any later event of theirs from sending, and their parked messages go.

use super::{CONSUMER, Courier};
use crate::store::{bounces, deliveries, suppressions};
use verimail_events::bus::{Delivery, HandlerError};
use verimail_events::erasure;

impl Courier {
    /// users.deleted: the user's deliveries keep a keyed hash instead of the address, a
    /// tombstone keeps any later event of theirs from sending, and their parked messages go.
    pub(super) async fn erase(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = erasure::decode(delivery)?;
        let erased = self.erase_user(&event.user_id, &event.email, erasure::reason_of(&event)).await?;
        tracing::info!(user_id = %event.user_id, deliveries = erased, "deleted user's addresses erased from deliveries");
        erasure::forget_parked(&self.js, &[CONSUMER], &event.user_id).await
    }

    /// The user's rows, and any other user's that hold `email` (the address the user had, if
    /// the event says: another account's change of address to it), lose the address.
    pub(super) async fn erase_user(
        &self,
        user_id: &str,
        email: &str,
        reason: erasure::Reason,
    ) -> Result<u64, sea_orm::DbErr> {
        let hash = (!email.is_empty()).then(|| self.suppressions.hash(email));
        let write = self.suppressions.relay.begin().await?;
        erasure::bury(&write, &[user_id], reason).await?;
        let erased = deliveries::erase_user(&write, user_id, email, &self.suppressions.address_key).await?;
        suppressions::erase_user(&write, user_id, hash.as_deref()).await?;
        bounces::erase_user(&write, user_id, hash.as_deref()).await?;
        // Its own events about the user (email.address_*) name the address too.
        erasure::forget_events(&write, &[user_id]).await?;
        write.commit().await?;
        Ok(erased)
    }
}
