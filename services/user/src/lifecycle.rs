//! The end of an account: deleted on request (DeleteUser) or because it was never verified in
//! time (the expiry sweep). One transaction deletes the row, drops the user's events still in
//! the outbox (they carry the address), keeps a tombstone and writes users.deleted, on which
//! every service erases what it holds.

use crate::store::{email_changes, undeliverable, users};
use sea_orm::DbErr;
use std::time::Duration;
use verimail_events::bus::{ConsumerSpec, Delivery, HandlerError, StreamSettings};
use verimail_events::erasure::{self, Reason};
use verimail_events::outbox::{OutboxRelay, Write};
use verimail_proto::events::v1::UserDeleted;
use verimail_server::shutdown::Shutdown;

/// Users one sweep transaction deletes at most.
const SWEEP_BATCH: u64 = 100;

/// The durable that removes user-service's parked messages of deleted users.
pub const DELETIONS_DURABLE: &str = "user-service-deletions";

/// Everything but the rows' own deletion, for users `txn` has just deleted: their outbox rows,
/// changes of address and what email-service said of their addresses go; other accounts'
/// changes of address to their addresses are cancelled and lose the address, with the events
/// that asked for them; their tombstones and users.deleted (with the address, for the other
/// services to do the same) are written.
pub async fn announce_deleted(write: &mut Write<'_>, deleted: &[users::Deleted], reason: Reason) -> Result<(), DbErr> {
    let ids: Vec<&str> = deleted.iter().map(|user| user.id.as_str()).collect();
    let addresses: Vec<&str> = deleted.iter().map(|user| user.email.as_str()).collect();
    erasure::forget_events(write, &ids).await?;
    email_changes::forget(&**write, &ids).await?;
    let others = email_changes::erase_address(&**write, &addresses).await?;
    forget_change_requests(write, &others).await?;
    undeliverable::forget(&**write, &ids).await?;
    erasure::bury(write, &ids, reason).await?;
    crate::revocation::end(
        write,
        crate::store::sessions::Which::Users(&ids),
        crate::revocation::EndReason::AccountDeleted,
    )
    .await?;
    // The clock before any session row (see store::sessions): end them, then forget them.
    crate::store::sessions::forget(&**write, &ids).await?;
    for user in deleted {
        write.announce(&UserDeleted {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            reason: reason.to_proto() as i32,
            occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
            email: user.email.clone(),
        });
    }
    crate::metrics::deleted(reason, deleted.len());
    Ok(())
}

/// Drops from the outbox the events of these changes (`(user, change)`) that carry the
/// address being erased: the request (users.email_change_requested, to the new address) and
/// the notice (users.email_change_notice, to the old one, naming the new).
async fn forget_change_requests(write: &Write<'_>, changes: &[(String, String)]) -> Result<(), DbErr> {
    use prost::Message as _;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use verimail_events::outbox::entity;
    use verimail_proto::events::v1::{EmailChangeNotice, EmailChangeRequested};
    use verimail_proto::subjects::{USERS_EMAIL_CHANGE_NOTICE, USERS_EMAIL_CHANGE_REQUESTED};
    if changes.is_empty() {
        return Ok(());
    }
    let users = changes.iter().map(|(user, _)| user.as_str());
    let rows = entity::Entity::find()
        .filter(entity::Column::AggregateId.is_in(users))
        .filter(entity::Column::Subject.is_in([USERS_EMAIL_CHANGE_REQUESTED, USERS_EMAIL_CHANGE_NOTICE]))
        .all(&**write)
        .await?;
    let change_of = |row: &entity::Model| match row.subject.as_str() {
        USERS_EMAIL_CHANGE_REQUESTED => EmailChangeRequested::decode(row.payload.as_slice()).ok().map(|e| e.change_id),
        _ => EmailChangeNotice::decode(row.payload.as_slice()).ok().map(|e| e.change_id),
    };
    let named = |row: &entity::Model| change_of(row).is_some_and(|id| changes.iter().any(|(_, change)| *change == id));
    let forgotten: Vec<_> = rows.into_iter().filter(named).map(|row| row.id).collect();
    if !forgotten.is_empty() {
        entity::Entity::delete_many().filter(entity::Column::Id.is_in(forgotten)).exec(&**write).await?;
    }
    Ok(())
}

/// How often the sweep looks for expired accounts: a quarter of the TTL, between 250 ms and a
/// minute (an account outlives its TTL by at most that).
pub fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
}

/// Deletes the accounts never verified within `ttl` of their latest registration, a batch per
/// transaction: how many.
pub async fn sweep(relay: &OutboxRelay, ttl: Duration) -> Result<usize, DbErr> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let mut write = relay.begin().await?;
        let deleted = users::delete_expired(&write, cutoff, SWEEP_BATCH).await?;
        if deleted.is_empty() {
            return Ok(total);
        }
        announce_deleted(&mut write, &deleted, Reason::Expired).await?;
        write.commit().await?;
        total += deleted.len();
        tracing::info!(count = deleted.len(), "unverified accounts expired and deleted");
        if (deleted.len() as u64) < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

/// Sweeps every [`sweep_interval`] until `shutdown`; a failed sweep is tried again next time.
pub async fn run_sweeps(relay: OutboxRelay, ttl: Duration, shutdown: Shutdown) {
    let interval = sweep_interval(ttl);
    while !shutdown.is_triggered() {
        if let Err(e) = sweep(&relay, ttl).await {
            tracing::warn!(error = %e, "expiry sweep failed; trying again later");
        }
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// users.deleted, for user-service's own part of the erasure: its parked messages of the user
/// (the row, the outbox rows and the tombstone went with the deletion).
pub fn deletions_consumer(streams: StreamSettings) -> ConsumerSpec {
    erasure::consumer(DELETIONS_DURABLE, streams)
}

pub async fn on_user_deleted(
    js: &async_nats::jetstream::Context,
    durables: &[&str],
    delivery: Delivery,
) -> Result<(), HandlerError> {
    let event = erasure::decode(&delivery)?;
    erasure::forget_parked(js, durables, &event.user_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_four_times_per_ttl_within_bounds() {
        assert_eq!(sweep_interval(Duration::from_secs(7 * 24 * 3600)), Duration::from_secs(60));
        assert_eq!(sweep_interval(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(sweep_interval(Duration::from_millis(400)), Duration::from_millis(250));
    }
}
