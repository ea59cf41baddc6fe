//! The end of sessions, whoever ends them: the clock's next value, the rows marked ended, and
//! users.sessions_revoked for each user, in the caller's transaction; and the expiry of
//! sessions past their lifetimes. The feed (ListRevokedSessions) reads what this writes.

use crate::store::sessions::{self, Which};
use sea_orm::DbErr;
use std::time::Duration;
use verimail_events::outbox::{OutboxRelay, Write};
use verimail_proto::events::v1::{SessionEndReason, SessionsRevoked};
use verimail_server::rfc3339;
use verimail_server::shutdown::Shutdown;

/// Why sessions end, as stored and announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SignedOut,
    RefreshTokenReused,
    PasswordChanged,
    AccountDeleted,
    EmailChanged,
    Operator,
    Expired,
    Reregistered,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::SignedOut => "signed_out",
            EndReason::RefreshTokenReused => "refresh_token_reused",
            EndReason::PasswordChanged => "password_changed",
            EndReason::AccountDeleted => "account_deleted",
            EndReason::EmailChanged => "email_changed",
            EndReason::Operator => "operator",
            EndReason::Expired => "expired",
            EndReason::Reregistered => "reregistered",
        }
    }

    fn to_proto(self) -> SessionEndReason {
        match self {
            EndReason::SignedOut => SessionEndReason::SignedOut,
            EndReason::RefreshTokenReused => SessionEndReason::RefreshTokenReused,
            EndReason::PasswordChanged => SessionEndReason::PasswordChanged,
            EndReason::AccountDeleted => SessionEndReason::AccountDeleted,
            EndReason::EmailChanged => SessionEndReason::EmailChanged,
            EndReason::Operator => SessionEndReason::Operator,
            EndReason::Expired => SessionEndReason::Expired,
            EndReason::Reregistered => SessionEndReason::Reregistered,
        }
    }
}

/// Ends the open sessions `which` names and announces it, one users.sessions_revoked per user:
/// how many ended. Call it as the transaction's last statement on a row (see the store).
pub async fn end(write: &mut Write<'_>, which: Which<'_>, reason: EndReason) -> Result<usize, DbErr> {
    let seq = sessions::tick(write).await?;
    let ended = sessions::end(write, which, reason.as_str(), seq).await?;
    let mut by_user: std::collections::BTreeMap<&str, Vec<&sessions::Ended>> = Default::default();
    for session in &ended {
        by_user.entry(session.user_id.as_str()).or_default().push(session);
    }
    let now = rfc3339(chrono::Utc::now());
    for (user_id, ended) in by_user {
        let latest = ended.iter().map(|s| s.access_expires_at).max().unwrap_or_else(chrono::Utc::now);
        write.announce(&SessionsRevoked {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            session_ids: ended.iter().map(|s| s.id.clone()).collect(),
            reason: reason.to_proto() as i32,
            tokens_expire_at: rfc3339(latest),
            occurred_at: now.clone(),
        });
    }
    if !ended.is_empty() {
        crate::metrics::sessions_ended(reason.as_str(), ended.len());
        tracing::info!(reason = reason.as_str(), sessions = ended.len(), "sessions ended");
    }
    Ok(ended.len())
}

/// Ends the open sessions past one of their lifetimes, a batch per transaction: how many.
pub async fn end_expired(
    db: &sea_orm::DatabaseConnection,
    relay: &OutboxRelay,
    idle: Duration,
) -> Result<usize, DbErr> {
    let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::MAX);
    let mut total = 0;
    loop {
        let expired = sessions::expired(db, chrono::Utc::now(), idle, EXPIRY_BATCH).await?;
        let ids: Vec<&str> = expired.iter().map(String::as_str).collect();
        if !ids.is_empty() {
            let mut write = relay.begin().await?;
            total += end(&mut write, Which::Ids(&ids), EndReason::Expired).await?;
            write.commit().await?;
        }
        if (ids.len() as u64) < EXPIRY_BATCH {
            return Ok(total);
        }
    }
}

/// Ends expired sessions every minute until `shutdown` (each instance; the ends are
/// conditional, so two instances end a session once).
pub async fn run_expiry(db: sea_orm::DatabaseConnection, relay: OutboxRelay, idle: Duration, shutdown: Shutdown) {
    while !shutdown.is_triggered() {
        if let Err(e) = end_expired(&db, &relay, idle).await {
            tracing::warn!(error = %e, "session expiry failed; trying again later");
        }
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Sessions one expiry transaction ends at most.
const EXPIRY_BATCH: u64 = 100;
