//! auth-service's part of deleting an account (users.deleted): the user's tokens are revoked
//! and lose the address (so a link opened later still finds its account and answers
//! "deleted" or "expired: register again"), their codes keep only a keyed hash of the address
//! (so a code typed later does the same, never "wrong code"), their events leave the outbox, a tombstone
//! stays, and their parked messages leave PARKED.

use crate::code::CodeKeys;
use crate::store::{codes, tokens};
use sea_orm::DbErr;
use verimail_events::bus::{ConsumerSpec, Delivery, HandlerError, StreamSettings};
use verimail_events::erasure;
use verimail_events::outbox::OutboxRelay;

/// auth-service's consumer: of users.deleted alone.
pub const DURABLE: &str = "auth-service";

pub fn consumer(streams: StreamSettings) -> ConsumerSpec {
    erasure::consumer(DURABLE, streams)
}

/// Erases what auth-service holds of the user of `delivery` (idempotent: a second delivery
/// finds nothing left).
pub async fn on_user_deleted(
    relay: &OutboxRelay,
    js: &async_nats::jetstream::Context,
    keys: &CodeKeys,
    delivery: Delivery,
) -> Result<(), HandlerError> {
    let event = erasure::decode(&delivery)?;
    let holder = Holder { user_id: &event.user_id, email: &event.email };
    let (tokens, codes, events) = erase(relay, keys, holder, erasure::reason_of(&event)).await?;
    tracing::info!(user_id = %event.user_id, tokens, codes, events, "deleted user's tokens, codes and events erased");
    erasure::forget_parked(js, &[DURABLE], &event.user_id).await
}

/// A deleted user and the address it had: the rows to erase are the user's, and any other
/// user's that hold the address (a link or code sent to it for another account's change of
/// address to it).
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub user_id: &'a str,
    /// Empty in events from before it was sent: the user's rows alone.
    pub email: &'a str,
}

/// In one transaction: the tombstone, the tokens' addresses and traces dropped (and revoked),
/// the codes' addresses replaced by their keyed hash (and revoked), the user's outbox rows
/// deleted. How many of each.
pub async fn erase(
    relay: &OutboxRelay,
    keys: &CodeKeys,
    holder: Holder<'_>,
    reason: erasure::Reason,
) -> Result<(u64, u64, u64), DbErr> {
    let user_id = holder.user_id;
    let txn = relay.begin().await?;
    erasure::bury(&txn, &[user_id], reason).await?;
    let now = chrono::Utc::now();
    let tokens = tokens::erase(&*txn, user_id, holder.email, crate::code::ERASED).await?;
    let held = codes::holding_address(&*txn, user_id, holder.email, crate::code::ERASED).await?;
    for row in &held {
        // A code whose key is gone can never match again: nothing of the address stays.
        let erased = keys.erased_address(&row.key_id, &row.email).unwrap_or_else(|| crate::code::ERASED.to_owned());
        codes::erase(&*txn, &row.id, &erased, row.revoked_at.unwrap_or(now)).await?;
    }
    let events = erasure::forget_events(&txn, &[user_id]).await?;
    txn.commit().await?;
    Ok((tokens, held.len() as u64, events))
}
