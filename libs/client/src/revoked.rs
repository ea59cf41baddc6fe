//! The sessions that ended, as a verifier learns them: it polls `UserService/ListRevokedSessions`
//! (or any [`RevocationSource`]) and refuses every token whose `sid` names one, until that
//! session's last token has expired anyway. See docs/events.md, "Revocation".

use crate::connect::WithCredential;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use verimail_proto::user::v1::{ListRevokedSessionsRequest, user_service_client::UserServiceClient};

/// One answer of the feed: sessions ended after the cursor asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevokedPage {
    /// Session id, and when its last access token expires.
    pub revoked: Vec<(String, chrono::DateTime<chrono::Utc>)>,
    /// Where the next poll starts.
    pub cursor: u64,
    /// More are waiting: poll again at once.
    pub more: bool,
}

/// The future [`RevocationSource::fetch`] answers with.
pub type RevokedFuture<'a> = Pin<Box<dyn Future<Output = Result<RevokedPage, String>> + Send + 'a>>;

/// Where ended sessions come from.
pub trait RevocationSource: Send + Sync {
    /// The sessions ended after `after` (0: every one whose tokens may still be live).
    fn fetch(&self, after: u64) -> RevokedFuture<'_>;
}

/// user-service's `ListRevokedSessions`, with `APP_SERVICE_TOKEN` as the credential.
impl RevocationSource for UserServiceClient<WithCredential> {
    fn fetch(&self, after: u64) -> RevokedFuture<'_> {
        let mut client = self.clone();
        Box::pin(async move {
            let page = client
                .list_revoked_sessions(ListRevokedSessionsRequest { after, limit: 0 })
                .await
                .map_err(|status| format!("ListRevokedSessions: {}: {}", status.code(), status.message()))?
                .into_inner();
            let mut revoked = Vec::with_capacity(page.revoked.len());
            for session in page.revoked {
                let expires = chrono::DateTime::parse_from_rfc3339(&session.tokens_expire_at)
                    .map_err(|_| format!("session {}: tokens_expire_at is not RFC 3339", session.session_id))?;
                revoked.push((session.session_id, expires.with_timezone(&chrono::Utc)));
            }
            Ok(RevokedPage { revoked, cursor: page.cursor, more: page.more })
        })
    }
}

/// The ended sessions a verifier knows, kept fresh by a task of its own.
pub(crate) struct Revoked {
    sessions: RwLock<HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// When the feed last answered (never: `None`).
    answered: RwLock<Option<Instant>>,
}

impl Revoked {
    /// Starts polling `source` every `interval` (on the current tokio runtime); the task ends
    /// with the last verifier that holds the answer.
    pub(crate) fn follow(source: impl RevocationSource + 'static, interval: Duration) -> Arc<Revoked> {
        let revoked = Arc::new(Revoked { sessions: RwLock::new(HashMap::new()), answered: RwLock::new(None) });
        tokio::spawn(poll(Arc::downgrade(&revoked), Box::new(source), interval));
        revoked
    }

    pub(crate) fn contains(&self, session_id: &str) -> bool {
        self.sessions.read().is_ok_and(|sessions| sessions.contains_key(session_id))
    }

    /// How long ago the feed last answered; `None` before its first answer.
    pub(crate) fn age(&self) -> Option<Duration> {
        self.answered.read().ok().and_then(|at| at.map(|at| at.elapsed()))
    }

    /// Adds a page; forgets the sessions whose tokens have all expired.
    fn learn(&self, page: RevokedPage) {
        let now = chrono::Utc::now();
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.retain(|_, expires| *expires > now);
            sessions.extend(page.revoked.into_iter().filter(|(_, expires)| *expires > now));
        }
        if let Ok(mut answered) = self.answered.write() {
            *answered = Some(Instant::now());
        }
    }
}

async fn poll(revoked: Weak<Revoked>, source: Box<dyn RevocationSource>, interval: Duration) {
    let mut cursor = 0;
    let mut failing = false;
    loop {
        let Some(held) = revoked.upgrade() else { return };
        let more = match source.fetch(cursor).await {
            Ok(page) => {
                if failing {
                    tracing::info!("the revocation feed answers again");
                    failing = false;
                }
                let more = page.more;
                cursor = page.cursor;
                held.learn(page);
                more
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "the revocation feed does not answer; revoked tokens pass until it does");
                    failing = true;
                }
                false
            }
        };
        drop(held);
        if !more {
            tokio::time::sleep(interval).await;
        }
    }
}
