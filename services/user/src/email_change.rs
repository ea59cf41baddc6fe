//! Moving an account to another address. ChangeEmail records a pending change and, in the same
//! transaction, asks for two emails: a verification to the new address (its link and code are
//! issued for the change id) and a notice to the current one (its link cancels the change, or
//! undoes it once complete). The address changes when auth.email_verified for the change id
//! arrives, and changes back when auth.email_change_undo_requested does; each writes
//! users.email_changed in the transaction that moves the address.

use crate::accounts::Accounts;
use crate::error::UserError;
use crate::password::{Email, Password};
use crate::store::email_changes::{self, Outcome};
use crate::store::users::{self, AccountStatus};
use sea_orm::DbErr;
use verimail_events::bus::{AUTH_STREAM, ConsumerSpec, Delivery, HandlerError, StreamSettings};
use verimail_events::outbox::{OutboxEvent, OutboxRelay, Write};
use verimail_proto::events::v1 as events;
use verimail_proto::subjects;
use verimail_server::rfc3339;

/// The durable that takes auth.email_change_undo_requested.
pub const UNDO_DURABLE: &str = "user-service-undo";

/// A change asked for: its row, and the events that ask for its emails, for one transaction.
pub struct Requested {
    pub change: email_changes::Model,
    pub events: Vec<OutboxEvent>,
}

/// The change of `user` to `new_email`; `owner` is the account that has that address already,
/// if one does (then its owner gets a notice instead of a verification email).
pub fn request(user: &users::Model, new_email: &str, owner: Option<&users::Model>) -> Requested {
    let now = chrono::Utc::now();
    let change = email_changes::Model {
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
    let mut announced = vec![OutboxEvent::of(&notice)];
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
            announced.push(OutboxEvent::of(&verify));
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
            announced.push(OutboxEvent::of(&attempted));
        }
    }
    Requested { change, events: announced }
}

/// Writes a requested change: older pending ones of the user are cancelled (their links die
/// with them in auth-service, as the new change's are issued).
pub async fn record(write: &mut Write<'_>, requested: Requested) -> Result<email_changes::Model, DbErr> {
    email_changes::cancel_pending(&**write, &requested.change.user_id).await?;
    email_changes::insert(&**write, requested.change.clone()).await?;
    write.announce_all(requested.events);
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
pub async fn complete(relay: &OutboxRelay, user_id: &str, change_id: &str, email: &str) -> Result<Completion, DbErr> {
    let mut write = relay.begin().await?;
    let Some(row) = email_changes::find(&*write, change_id).await? else {
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
    let taken = users::find_by_email(&*write, &row.new_email).await?.is_some();
    if taken || !users::move_address(&*write, user_id, &row.old_email, &row.new_email).await? {
        email_changes::cancel_pending(&*write, user_id).await?;
        write.commit().await?;
        return Ok(Completion::NothingToDo("the new address was taken meanwhile, or the account moved on"));
    }
    email_changes::mark(&*write, change_id, Outcome::Completed).await?;
    write.announce(&changed_event(user_id, change_id, &row.old_email, &row.new_email, false));
    // Every token names the old address: the account's sessions end with it.
    end_sessions(&mut write, user_id).await?;
    write.commit().await?;
    crate::metrics::email_change("completed");
    tracing::info!(%user_id, %change_id, "address changed");
    Ok(Completion::Completed)
}

/// Ends every session of the user (the last statement on a row of the transaction).
async fn end_sessions(write: &mut verimail_events::outbox::Write<'_>, user_id: &str) -> Result<usize, DbErr> {
    use crate::revocation::{EndReason, end};
    end(write, crate::store::sessions::Which::Users(&[user_id]), EndReason::EmailChanged).await
}

fn changed_event(user_id: &str, change_id: &str, old: &str, new: &str, undone: bool) -> events::EmailChanged {
    events::EmailChanged {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        old_email: old.to_owned(),
        new_email: new.to_owned(),
        occurred_at: rfc3339(chrono::Utc::now()),
        change_id: change_id.to_owned(),
        undone,
    }
}

pub fn undo_consumer(streams: StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, ..ConsumerSpec::new(AUTH_STREAM, UNDO_DURABLE, subjects::AUTH_EMAIL_CHANGE_UNDO_REQUESTED) }
}

/// auth.email_change_undo_requested: the notice's link was spent. UserService/UndoEmailChange
/// has given the account back already (then this finds the change undone); an older gateway's
/// direct use of the link has it done here.
pub async fn on_undo_requested(relay: &OutboxRelay, delivery: Delivery) -> Result<(), HandlerError> {
    use prost::Message;
    let event = events::EmailChangeUndoRequested::decode(delivery.payload.clone())
        .map_err(|e| HandlerError::Permanent(format!("undecodable EmailChangeUndoRequested: {e}")))?;
    let outcome = undo(relay, &event.user_id, &event.change_id).await?;
    tracing::info!(user_id = %event.user_id, change_id = %event.change_id, ?outcome, "undo of a change of address");
    Ok(())
}

/// What the link of a change's notice did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// The account is back at `email` (or was there), later changes cancelled or rolled back.
    Restored { email: String },
    /// Undone before, by this notice or an earlier one: nothing changed.
    AlreadyUndone,
    /// Another account has `email`: the account stays; its pending changes were cancelled and
    /// its sessions ended.
    Taken { email: String },
}

/// Gives the account back the address it had when the notice of `change_id` was sent: every
/// change asked for since is cancelled (pending) or rolled back (completed), every session
/// ends, and a password-reset email goes to the restored address. Idempotent: a change once
/// undone (by its own notice, or rolled back by an earlier one's) is never undone again, so a
/// later notice, sent to an address the account was moved to, cannot take it back.
pub async fn undo(relay: &OutboxRelay, user_id: &str, change_id: &str) -> Result<Undo, DbErr> {
    let mut write = relay.begin().await?;
    let Some(row) = email_changes::find(&*write, change_id).await? else { return Ok(Undo::AlreadyUndone) };
    let Some(user) = users::find_by_id(&*write, user_id).await? else { return Ok(Undo::AlreadyUndone) };
    if row.user_id != user_id || row.undone_at.is_some() {
        return Ok(Undo::AlreadyUndone);
    }
    let since = email_changes::since(&*write, user_id, change_id).await?;
    let pending: Vec<&str> =
        since.iter().filter(|c| c.completed_at.is_none() && c.cancelled_at.is_none()).map(|c| c.id.as_str()).collect();
    email_changes::mark_many(&*write, &pending, Outcome::Cancelled).await?;
    if user.email != row.old_email {
        let owner = users::find_by_email(&*write, &row.old_email).await?;
        if owner.is_some() || !users::move_address(&*write, user_id, &user.email, &row.old_email).await? {
            end_sessions(&mut write, user_id).await?;
            write.commit().await?;
            tracing::warn!(%user_id, %change_id, "change not undone: another account has the earlier address now");
            crate::metrics::email_change("undo_taken");
            return Ok(Undo::Taken { email: row.old_email });
        }
        write.announce(&changed_event(user_id, change_id, &user.email, &row.old_email, true));
    }
    let rolled_back: Vec<&str> = since
        .iter()
        .filter(|c| c.id == row.id || (c.completed_at.is_some() && c.undone_at.is_none()))
        .map(|c| c.id.as_str())
        .collect();
    email_changes::mark_many(&*write, &rolled_back, Outcome::Undone).await?;
    // Whoever moved the account may know the password: a way to choose a new one.
    write.announce(&events::PasswordResetRequested {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        email: row.old_email.clone(),
        occurred_at: rfc3339(chrono::Utc::now()),
        locale: user.locale.clone().unwrap_or_default(),
    });
    end_sessions(&mut write, user_id).await?;
    write.commit().await?;
    crate::metrics::email_change("undone");
    tracing::info!(%user_id, %change_id, cancelled = pending.len(), rolled_back = rolled_back.len(), "account given back its address from a change's notice");
    Ok(Undo::Restored { email: row.old_email })
}

/// Who asks for a change of address: the holder of an access token, or whoever presents the
/// account's address and password.
pub enum Requester {
    Holder { user_id: String },
    Password { email: Email, password: Password },
}

impl Accounts {
    /// ChangeEmail: the change recorded, with its emails asked for.
    pub async fn change_email(
        &self,
        requester: Requester,
        new_email: &Email,
        locale: Option<String>,
        client: &str,
    ) -> Result<email_changes::Model, UserError> {
        self.check_domain("new_email", new_email).await?;
        let mut user = match requester {
            Requester::Holder { user_id } => self.user(&user_id).await?,
            Requester::Password { email, password } => self.check_password(&email, password, client).await?,
        };
        if user.status != AccountStatus::Verified {
            return Err(UserError::NotVerified);
        }
        if user.email == new_email.as_str() {
            return Err(UserError::invalid("new_email", "is already the account's address"));
        }
        self.limits.email_change_per_user.check(&user.id).await.map_err(UserError::Limited)?;
        self.limits.mail_to(new_email).await.map_err(UserError::Limited)?;
        // Taken or free, the same work and the same answer: the owner is told instead.
        let owner = users::find_by_email(&self.db, new_email.as_str()).await?;
        if locale.is_some() {
            user.locale = locale.clone();
        }
        let requested = request(&user, new_email.as_str(), owner.as_ref());
        let mut write = self.relay.begin().await?;
        if let Some(locale) = &locale {
            users::set_locale(&*write, &user.id, locale).await?;
        }
        let change = record(&mut write, requested).await?;
        write.commit().await?;
        crate::metrics::email_change("requested");
        tracing::info!(user_id = %user.id, change_id = %change.id, "change of address requested");
        Ok(change)
    }
}

impl Accounts {
    /// UserService/UndoEmailChange: auth-service checks the notice's link, the account is given
    /// back its address ([`undo`]), then the link is spent (unless the address is taken: it
    /// stays usable for when it is free again). Spending after the move is safe: the move is
    /// idempotent, so a spend that fails leaves a link that would change nothing more.
    pub async fn undo_email_change(&self, token: &str) -> Result<Undo, UserError> {
        use verimail_proto::auth::v1::UndoEmailChangeRequest;
        let mut auth = self.auth.clone();
        let check = UndoEmailChangeRequest { token: token.to_owned(), check_only: true };
        let checked = auth.undo_email_change(check).await.map_err(UserError::Refused)?.into_inner();
        let outcome = undo(&self.relay, &checked.user_id, &checked.change_id).await?;
        if !matches!(outcome, Undo::Taken { .. }) {
            let spend = UndoEmailChangeRequest { token: token.to_owned(), check_only: false };
            if let Err(status) = auth.undo_email_change(spend).await {
                tracing::warn!(code = ?status.code(), message = status.message(), "undo link not spent (the undo itself is done)");
            }
        }
        Ok(outcome)
    }
}
