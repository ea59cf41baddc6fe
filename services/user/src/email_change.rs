//! Moving an account to another address. ChangeEmail records a pending change and, in the same
//! transaction, asks for two emails: a verification to the new address (its link and code are
//! issued for the change id) and a notice to the current one (its link cancels the change, or
//! undoes it once complete). The address changes when auth.email_verified for the change id
//! arrives, and changes back when auth.email_change_undo_requested does; each writes
//! users.email_changed in the transaction that moves the address.

use crate::store::{self, change};
use sea_orm::{ActiveValue::Set, DatabaseConnection, DbErr, EntityTrait};
use verimail_events::bus::{AUTH_STREAM, ConsumerSpec, Delivery, HandlerError, StreamSettings};
use verimail_events::outbox::{self, OutboxEvent, OutboxRelay};
use verimail_proto::events::v1 as events;
use verimail_proto::subjects;
use verimail_server::rfc3339;

/// The durable that takes auth.email_change_undo_requested.
pub const UNDO_DURABLE: &str = "user-service-undo";

/// A change asked for: its row, and the events that ask for its emails, for one transaction.
pub struct Requested {
    pub change: change::Model,
    pub events: Vec<OutboxEvent>,
}

/// The change of `user` to `new_email`; `owner` is the account that has that address already,
/// if one does (then its owner gets a notice instead of a verification email).
pub fn request(user: &store::user::Model, new_email: &str, owner: Option<&store::user::Model>) -> Requested {
    let now = chrono::Utc::now();
    let change = change::Model {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        old_email: user.email.clone(),
        new_email: new_email.to_owned(),
        taken: owner.is_some(),
        requested_at: now,
        completed_at: None,
        cancelled_at: None,
        undone_at: None,
    };
    let occurred_at = rfc3339(now);
    let notice = events::EmailChangeNotice {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        email: user.email.clone(),
        occurred_at: occurred_at.clone(),
        change_id: change.id.clone(),
        new_email: new_email.to_owned(),
        locale: user.locale.clone().unwrap_or_default(),
    };
    let mut announced =
        vec![OutboxEvent::new(notice.event_id.clone(), &user.id, subjects::USERS_EMAIL_CHANGE_NOTICE, &notice)];
    match owner {
        None => {
            let verify = events::EmailChangeRequested {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: user.id.clone(),
                email: new_email.to_owned(),
                occurred_at,
                change_id: change.id.clone(),
                current_email: user.email.clone(),
                locale: user.locale.clone().unwrap_or_default(),
            };
            announced.push(OutboxEvent::new(
                verify.event_id.clone(),
                &user.id,
                subjects::USERS_EMAIL_CHANGE_REQUESTED,
                &verify,
            ));
        }
        Some(owner) => {
            let attempted = events::SignUpAttempted {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: owner.id.clone(),
                email: owner.email.clone(),
                occurred_at,
                by_email_change: true,
                locale: owner.locale.clone().unwrap_or_default(),
            };
            announced.push(OutboxEvent::new(
                attempted.event_id.clone(),
                &owner.id,
                subjects::USERS_SIGNUP_ATTEMPTED,
                &attempted,
            ));
        }
    }
    Requested { change, events: announced }
}

/// Writes a requested change: older pending ones of the user are cancelled (their links die
/// with them in auth-service, as the new change's are issued).
pub async fn record(txn: &sea_orm::DatabaseTransaction, requested: Requested) -> Result<change::Model, DbErr> {
    store::cancel_pending(txn, &requested.change.user_id).await?;
    let row = requested.change.clone();
    change::Entity::insert(change::ActiveModel {
        id: Set(row.id),
        user_id: Set(row.user_id),
        old_email: Set(row.old_email),
        new_email: Set(row.new_email),
        taken: Set(row.taken),
        requested_at: Set(row.requested_at),
        completed_at: Set(None),
        cancelled_at: Set(None),
        undone_at: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    outbox::enqueue_all(txn, requested.events).await?;
    Ok(requested.change)
}

/// What became of a verification of a change's new address.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    Completed,
    /// Completed before (a redelivery), or cancelled or replaced since: nothing to do.
    NothingToDo(&'static str),
    /// It names no change of the user to that address (a stale link of an earlier
    /// registration, or a forgery): parked, as before changes existed.
    NotAChange,
}

/// The change `change_id` of `user_id`, its new address `email` verified: the account moves
/// there, unless the change was cancelled, replaced or done already, or the address was taken
/// by another account meanwhile (then the change is cancelled).
pub async fn complete(
    db: &DatabaseConnection,
    relay: &OutboxRelay,
    user_id: &str,
    change_id: &str,
    email: &str,
) -> Result<Completion, DbErr> {
    let txn = verimail_events::db::begin_write(db).await?;
    let Some(row) = change::Entity::find_by_id(change_id.to_owned()).one(&txn).await? else {
        return Ok(Completion::NotAChange);
    };
    if row.user_id != user_id || row.new_email != email || row.taken {
        return Ok(Completion::NotAChange);
    }
    if row.completed_at.is_some() {
        return Ok(Completion::NothingToDo("completed before"));
    }
    if row.cancelled_at.is_some() {
        return Ok(Completion::NothingToDo("cancelled or replaced"));
    }
    // Registered by someone else meanwhile, or the account moved on: the change cannot be. (A
    // registration racing this one makes the move below fail; the retry lands here.)
    let taken = store::find_by_email(&txn, &row.new_email).await?.is_some();
    if taken || !store::move_address(&txn, user_id, &row.old_email, &row.new_email).await? {
        store::cancel_pending(&txn, user_id).await?;
        txn.commit().await?;
        return Ok(Completion::NothingToDo("the new address was taken meanwhile, or the account moved on"));
    }
    mark(&txn, change_id, change::Column::CompletedAt).await?;
    let changed = changed_event(user_id, change_id, &row.old_email, &row.new_email, false);
    outbox::enqueue(&txn, changed).await?;
    txn.commit().await?;
    relay.wake();
    crate::metrics::email_change("completed");
    tracing::info!(%user_id, %change_id, "address changed");
    Ok(Completion::Completed)
}

async fn mark(txn: &sea_orm::DatabaseTransaction, change_id: &str, column: change::Column) -> Result<(), DbErr> {
    use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
    change::Entity::update_many()
        .col_expr(column, Expr::value(chrono::Utc::now()))
        .filter(change::Column::Id.eq(change_id))
        .exec(txn)
        .await?;
    Ok(())
}

fn changed_event(user_id: &str, change_id: &str, old: &str, new: &str, undone: bool) -> OutboxEvent {
    let event = events::EmailChanged {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        old_email: old.to_owned(),
        new_email: new.to_owned(),
        occurred_at: rfc3339(chrono::Utc::now()),
        change_id: change_id.to_owned(),
        undone,
    };
    OutboxEvent::new(event.event_id.clone(), user_id, subjects::USERS_EMAIL_CHANGED, &event)
}

pub fn undo_consumer(streams: StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, ..ConsumerSpec::new(AUTH_STREAM, UNDO_DURABLE, subjects::AUTH_EMAIL_CHANGE_UNDO_REQUESTED) }
}

/// The notice's link was used: a pending change is cancelled; a completed one moves the
/// account back to the address the notice went to (unless another account has it by now, or
/// the account moved on since).
pub async fn on_undo_requested(
    db: &DatabaseConnection,
    relay: &OutboxRelay,
    delivery: Delivery,
) -> Result<(), HandlerError> {
    use prost::Message;
    let event = events::EmailChangeUndoRequested::decode(delivery.payload.clone())
        .map_err(|e| HandlerError::Permanent(format!("undecodable EmailChangeUndoRequested: {e}")))?;
    let txn = verimail_events::db::begin_write(db).await?;
    let Some(row) = change::Entity::find_by_id(event.change_id.clone()).one(&txn).await? else {
        tracing::info!(user_id = %event.user_id, change_id = %event.change_id, "undo of an unknown change (the account was deleted?): nothing to do");
        return Ok(());
    };
    if row.user_id != event.user_id || row.undone_at.is_some() || row.cancelled_at.is_some() {
        return Ok(());
    }
    if row.completed_at.is_none() {
        mark(&txn, &row.id, change::Column::CancelledAt).await?;
        txn.commit().await?;
        crate::metrics::email_change("cancelled");
        tracing::info!(user_id = %row.user_id, change_id = %row.id, "change of address cancelled from its notice");
        return Ok(());
    }
    let moved = match store::move_address(&txn, &row.user_id, &row.new_email, &row.old_email).await {
        Ok(moved) => moved,
        Err(e) if verimail_events::db::is_unique_violation(&e) => false,
        Err(e) => return Err(e.into()),
    };
    if !moved {
        tracing::warn!(user_id = %row.user_id, change_id = %row.id, "change not undone: the account moved on, or its earlier address has another account now");
        return Ok(());
    }
    mark(&txn, &row.id, change::Column::UndoneAt).await?;
    outbox::enqueue(&txn, changed_event(&row.user_id, &row.id, &row.new_email, &row.old_email, true)).await?;
    txn.commit().await?;
    relay.wake();
    crate::metrics::email_change("undone");
    tracing::info!(user_id = %row.user_id, change_id = %row.id, "change of address undone from its notice");
    Ok(())
}
