//! Using verification tokens, in batches: the VerifyEmail calls waiting at one moment share
//! one write transaction (group commit). A lone click is a batch of one and waits for nobody;
//! under load one commit uses many tokens, where a transaction each spent most of auth-service's
//! time handing statements to the database thread and back.

use crate::error::AuthError;
use crate::links::TokenError;
use crate::store::{self, tokens};
use sea_orm::DbErr;
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};
use verimail_events::outbox::{OutboxEvent, OutboxRelay};
use verimail_proto::auth::v1::VerifyOutcome;
use verimail_proto::events::v1 as events;
use verimail_server::rfc3339;

/// Most tokens one transaction uses.
const MAX_BATCH: usize = 256;

/// One click's authentic token, to be used.
pub struct TokenUse {
    pub jti: String,
    /// The click's `traceparent`: the auth.email_verified it causes continues that trace.
    pub trace: Option<String>,
}

/// What a used (or earlier used) token was for, from its row.
#[derive(Debug, Clone)]
pub struct Used {
    pub outcome: VerifyOutcome,
    pub user_id: String,
    pub email: String,
    /// The trace the token was issued in (the registration's).
    pub issued_in: Option<String>,
}

type Answer = Result<Used, AuthError>;

/// Hands token uses to the task that runs the batches.
#[derive(Clone)]
pub struct Claimer {
    queue: mpsc::Sender<(TokenUse, oneshot::Sender<Answer>)>,
}

impl Claimer {
    /// Starts the batching task; it ends when every `Claimer` is dropped.
    pub fn start(relay: OutboxRelay) -> Claimer {
        let (queue, mut waiting) = mpsc::channel::<(TokenUse, oneshot::Sender<Answer>)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (uses, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                match use_tokens(&relay, &uses).await {
                    Ok(outcomes) => {
                        for (answer, outcome) in answers.into_iter().zip(outcomes) {
                            let _ = answer.send(outcome);
                        }
                    }
                    // Each click gets the database's own error: an outage answers UNAVAILABLE
                    // (safe to retry), not INTERNAL.
                    Err(e) => {
                        for answer in answers {
                            let _ = answer.send(Err(AuthError::Db(e.clone())));
                        }
                    }
                }
            }
        });
        Claimer { queue }
    }

    /// Single use: the first use of a jti verifies (and publishes auth.email_verified in the
    /// same transaction); every later one, or a fresh token of an already verified user,
    /// answers "already verified".
    pub async fn use_token(&self, token_use: TokenUse) -> Answer {
        let stopped = || AuthError::Db(DbErr::Custom("the token batcher has stopped".into()));
        let (answer, outcome) = oneshot::channel();
        self.queue.send((token_use, answer)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// One transaction for the batch: each use's outcome, in order.
async fn use_tokens(relay: &OutboxRelay, uses: &[TokenUse]) -> Result<Vec<Answer>, DbErr> {
    let mut write = relay.begin().await?;
    let jtis: Vec<&str> = uses.iter().map(|u| u.jti.as_str()).collect();
    let claimed = tokens::claim(&*write, &jtis, tokens::verifies()).await?;
    // Why the others were not claimed: never recorded, used already, revoked (a deleted
    // account's are), expired, or not for verifying.
    let unclaimed: Vec<&str> = jtis.iter().copied().filter(|jti| !claimed.contains_key(*jti)).collect();
    let known = tokens::find_many(&*write, &unclaimed).await?;
    let users: Vec<&str> = claimed.values().chain(known.values()).map(|row| row.user_id.as_str()).collect();
    // A registration (or change of address) is verified once, whichever of its links or codes
    // is used first; a later one of the same registration answers "already verified".
    let claimed_jtis: Vec<&str> = claimed.keys().map(String::as_str).collect();
    let mut verified = store::used_registrations(&*write, &users, &claimed_jtis).await?;
    // A deleted account's tokens stay, revoked and without the address, to say so.
    let known_users: Vec<&str> = known.values().map(|row| row.user_id.as_str()).collect();
    let gone = verimail_events::erasure::buried(&*write, &known_users).await?;
    let mut first_use = HashSet::new();
    let mut announcements = Vec::new();
    let now = chrono::Utc::now();
    let outcomes = uses
        .iter()
        .map(|u| {
            if let Some(row) = claimed.get(&u.jti) {
                let registration = (row.user_id.clone(), row.registration_event_id.clone());
                // The same token twice in one batch: the second is a repeat click.
                let outcome = match first_use.insert(u.jti.as_str()) && verified.insert(registration) {
                    true => {
                        // In the click's trace: this batch runs outside the request's span.
                        let mut event = email_verified(&row.user_id, &row.email, row.registration_event_id.as_deref());
                        event.trace_context = u.trace.clone();
                        announcements.push(event);
                        VerifyOutcome::Verified
                    }
                    false => VerifyOutcome::AlreadyVerified,
                };
                return Ok(used(outcome, row));
            }
            // Authentic (its MAC was checked), and no row: pruned long after it expired.
            let row = known.get(&u.jti).ok_or(AuthError::Token(TokenError::Expired))?;
            let unused = row.used_at.is_none();
            if row.purpose.as_deref() == Some(crate::links::UNDO_EMAIL_CHANGE) {
                return Err(AuthError::Token(TokenError::WrongPurpose));
            }
            if let Some(reason) = gone.get(&row.user_id) {
                return Err(AuthError::AccountGone(*reason));
            }
            if unused && row.revoked_at.is_some() {
                return Err(AuthError::TokenRevoked);
            }
            if unused && row.expires_at <= now {
                return Err(AuthError::Token(TokenError::Expired));
            }
            // Used before, or by another instance between its claim and our read.
            Ok(used(VerifyOutcome::AlreadyVerified, row))
        })
        .collect();
    write.announce_all(announcements);
    write.commit().await?;
    Ok(outcomes)
}

/// A token's answer from its row.
fn used(outcome: VerifyOutcome, row: &tokens::Model) -> Used {
    Used { outcome, user_id: row.user_id.clone(), email: row.email.clone(), issued_in: row.trace.clone() }
}

/// auth.email_verified for this user, by the link or code of `registration`, in the trace of
/// the current span: the outbox row that announces a verification.
pub(crate) fn email_verified(user_id: &str, email: &str, registration: Option<&str>) -> OutboxEvent {
    OutboxEvent::of(&events::EmailVerified {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        occurred_at: rfc3339(chrono::Utc::now()),
        registration_event_id: registration.unwrap_or_default().to_owned(),
    })
}
