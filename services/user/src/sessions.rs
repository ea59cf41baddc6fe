//! Sessions: what SignIn starts (an access token naming the session, and a refresh token that
//! continues it), RefreshSession rotates, and sign-out, an operator, a password change, a
//! deletion or an address change ends. Every end is announced (users.sessions_revoked) in the
//! transaction that ends it and listed by the revocation feed, so verifiers refuse the
//! session's access tokens within seconds.

use crate::accounts::Accounts;
use crate::error::UserError;
use crate::revocation::{EndReason, end};
use crate::store::sessions::{self, Which};
use crate::store::users;
use base64::Engine as _;
use blake2::Digest as _;
use rand::RngCore as _;
use verimail_proto::auth::v1::IssueAccessTokenRequest;
use verimail_server::rfc3339;

/// How every refresh token begins.
pub const REFRESH_PREFIX: &str = "vmr_";

/// Open sessions a user may have; signing in once more ends the least recently used.
pub const MAX_SESSIONS_PER_USER: u64 = 50;

/// The most revoked sessions one page of the feed holds.
pub const MAX_FEED_PAGE: u32 = 1000;

/// A refresh token: `vmr_` and 32 random bytes (base64url); stored only as its hash.
struct RefreshToken {
    text: String,
    hash: String,
}

impl RefreshToken {
    fn generate() -> RefreshToken {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let text = format!("{REFRESH_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
        let hash = hash(&text);
        RefreshToken { text, hash }
    }
}

/// The stored form of a refresh token (BLAKE2b-256, hex: the token is 256 random bits, so an
/// unkeyed hash is enough for a stolen table to be useless).
fn hash(token: &str) -> String {
    let digest = blake2::Blake2b::<blake2::digest::consts::U32>::digest(token.as_bytes());
    verimail_server::hex(&digest)
}

/// Whether `raw` has the shape of a refresh token; INVALID_ARGUMENT otherwise.
pub fn parse_refresh_token(raw: &str) -> Result<&str, UserError> {
    let raw = raw.trim();
    let body = raw.strip_prefix(REFRESH_PREFIX).ok_or_else(|| {
        UserError::invalid("refresh_token", format!("is not a refresh token (they begin with {REFRESH_PREFIX})"))
    })?;
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body) {
        Ok(bytes) if bytes.len() == 32 => Ok(raw),
        _ => Err(UserError::invalid("refresh_token", "is not a refresh token (malformed)")),
    }
}

/// What SignIn and RefreshSession answer.
pub struct Tokens {
    pub access_token: String,
    pub expires_at: String,
    pub refresh_token: String,
    pub session: sessions::Model,
}

impl Accounts {
    /// Starts a session for `user`, who has just proven their password from `client`.
    pub(crate) async fn start_session(&self, user: &users::Model, client: &str) -> Result<Tokens, UserError> {
        let now = chrono::Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let (access_token, access_expires_at) = self.sign_access(user, &id, now).await?;
        let refresh = RefreshToken::generate();
        let max = chrono::Duration::from_std(self.sessions.max).unwrap_or(chrono::Duration::MAX);
        let session = sessions::Model {
            id: id.clone(),
            user_id: user.id.clone(),
            refresh_hash: refresh.hash,
            client: client.to_owned(),
            created_at: now,
            last_used_at: now,
            auth_time: now,
            expires_at: now.checked_add_signed(max).unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            access_expires_at,
            ended_at: None,
            end_reason: None,
            end_seq: None,
        };
        // One statement on the writer (nothing to announce), and beside it the sessions the new
        // one pushes past the cap: the open ones after the newest MAX - 1 besides it, whether
        // or not the read sees it. Sign-ins of one user that race may each miss the others' new
        // rows and leave a few over the cap until the next one; the ends are conditional, so
        // two ending the same session end it once. Sign-in is argon2-bound, and a transaction
        // here (BEGIN, INSERT, SELECT, COMMIT on the one writer) cost a few points of its rate.
        let writer = verimail_events::db::writer(&self.db);
        let (inserted, oldest) = tokio::join!(
            sessions::insert(&writer, session.clone()),
            sessions::beyond(&self.db, &user.id, &id, MAX_SESSIONS_PER_USER - 1),
        );
        inserted?;
        let oldest = oldest?;
        if !oldest.is_empty() {
            let oldest: Vec<&str> = oldest.iter().map(String::as_str).collect();
            let mut write = self.relay.begin().await?;
            end(&mut write, Which::Ids(&oldest), EndReason::Expired).await?;
            write.commit().await?;
        }
        Ok(Tokens { access_token, expires_at: rfc3339(access_expires_at), refresh_token: refresh.text, session })
    }

    /// Has auth-service sign an access token for `user` in session `session_id`.
    async fn sign_access(
        &self,
        user: &users::Model,
        session_id: &str,
        auth_time: chrono::DateTime<chrono::Utc>,
    ) -> Result<(String, chrono::DateTime<chrono::Utc>), UserError> {
        let request = IssueAccessTokenRequest {
            user_id: user.id.clone(),
            email: user.email.clone(),
            email_verified: user.status == users::AccountStatus::Verified,
            session_id: session_id.to_owned(),
            auth_time: rfc3339(auth_time),
        };
        let signed = self.auth.clone().issue_access_token(request).await.map_err(UserError::Auth)?.into_inner();
        let expires_at = chrono::DateTime::parse_from_rfc3339(&signed.expires_at)
            .map_err(|_| UserError::Auth(tonic::Status::internal("expires_at is not RFC 3339")))?
            .with_timezone(&chrono::Utc);
        Ok((signed.access_token, expires_at))
    }

    /// Exchanges a refresh token for a new pair. UNAUTHENTICATED for an unknown, ended or
    /// expired one; a retired one ends its session (reuse detection).
    pub async fn refresh(&self, token: &str) -> Result<Tokens, UserError> {
        let presented = hash(token);
        let Some(session) = sessions::find_by_refresh_hash(&self.db, &presented).await? else {
            return Err(self.refused_refresh(&presented).await?);
        };
        let now = chrono::Utc::now();
        if !session.is_live(now, self.sessions.idle_chrono()) {
            if session.ended_at.is_none() {
                self.end_sessions(Which::One(&session.id), EndReason::Expired).await?;
            }
            crate::metrics::refreshed("ended");
            return Err(UserError::SessionEnded("the session has ended; sign in again"));
        }
        let user = match self.user(&session.user_id).await {
            Err(UserError::NotFound) => return Err(UserError::SessionEnded("the account is gone")),
            found => found?,
        };
        let (access_token, access_expires_at) = self.sign_access(&user, &session.id, session.auth_time).await?;
        let next = RefreshToken::generate();
        let write = self.relay.begin().await?;
        if !sessions::rotate(&*write, &session.id, &presented, &next.hash, access_expires_at).await? {
            // Another call rotated it in between: the same token used twice.
            drop(write);
            return Err(self.refused_refresh(&presented).await?);
        }
        write.commit().await?;
        crate::metrics::refreshed("rotated");
        let session = sessions::Model { refresh_hash: next.hash, last_used_at: now, access_expires_at, ..session };
        Ok(Tokens { access_token, expires_at: rfc3339(access_expires_at), refresh_token: next.text, session })
    }

    /// The answer to a refresh token that is not current: a retired one ends its session.
    async fn refused_refresh(&self, presented: &str) -> Result<UserError, UserError> {
        let Some(session_id) = sessions::retired_session(&self.db, presented).await? else {
            crate::metrics::refreshed("unknown");
            return Ok(UserError::SessionEnded("the refresh token is not valid; sign in again"));
        };
        let ended = self.end_sessions(Which::One(&session_id), EndReason::RefreshTokenReused).await?;
        if ended > 0 {
            tracing::warn!(%session_id, "a retired refresh token was presented again: the session is ended");
        }
        crate::metrics::refreshed("reused");
        Ok(UserError::SessionEnded("the refresh token was already used; the session has ended, sign in again"))
    }

    /// The session `id` if it can still be used; UNAUTHENTICATED otherwise (what an access
    /// token presented to user-service itself must pass, beyond its signature).
    pub async fn live_session(&self, id: &str) -> Result<sessions::Model, UserError> {
        match sessions::find(&self.db, id).await? {
            Some(session) if session.is_live(chrono::Utc::now(), self.sessions.idle_chrono()) => Ok(session),
            _ => Err(UserError::SessionEnded("the access token's session has ended; sign in again")),
        }
    }

    /// The session of a refresh token, if it can still be used (for SignOut without an
    /// access token); UNAUTHENTICATED otherwise.
    pub async fn session_of_refresh_token(&self, token: &str) -> Result<sessions::Model, UserError> {
        match sessions::find_by_refresh_hash(&self.db, &hash(token)).await? {
            Some(session) if session.ended_at.is_none() => Ok(session),
            _ => Err(UserError::SessionEnded("the refresh token is not valid")),
        }
    }

    /// Ends sessions in a transaction of their own (sign-out, an operator, reuse, expiry at
    /// use): how many ended.
    pub async fn end_sessions(&self, which: Which<'_>, reason: EndReason) -> Result<usize, UserError> {
        let mut write = self.relay.begin().await?;
        let ended = end(&mut write, which, reason).await?;
        write.commit().await?;
        Ok(ended)
    }

    /// Ends the user's session `session_id`: NOT_FOUND when the user has no such session.
    pub async fn end_session_of(&self, user_id: &str, session_id: &str, reason: EndReason) -> Result<usize, UserError> {
        match sessions::find(&self.db, session_id).await? {
            Some(session) if session.user_id == user_id => self.end_sessions(Which::One(session_id), reason).await,
            _ => Err(UserError::NotFound),
        }
    }

    /// The user's sessions that can still be used, most recently used first.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<sessions::Model>, UserError> {
        let now = chrono::Utc::now();
        let idle = self.sessions.idle_chrono();
        Ok(sessions::open_of(&self.db, user_id).await?.into_iter().filter(|s| s.is_live(now, idle)).collect())
    }

    /// When a session stops being usable unless used again.
    pub fn idle_expiry(&self, session: &sessions::Model) -> chrono::DateTime<chrono::Utc> {
        session
            .last_used_at
            .checked_add_signed(self.sessions.idle_chrono())
            .unwrap_or(session.expires_at)
            .min(session.expires_at)
    }

    /// Whether `auth_time` is recent enough for an access token alone to take the account
    /// away (change its address, delete it).
    pub fn recently_authenticated(&self, auth_time: chrono::DateTime<chrono::Utc>) -> bool {
        let window = chrono::Duration::from_std(self.sessions.reauth_window).unwrap_or_default();
        chrono::Utc::now() - auth_time <= window
    }

    /// The revocation feed: sessions ended after `after` whose tokens may still be live.
    pub async fn revoked_after(&self, after: u64, limit: u32) -> Result<RevokedPage, UserError> {
        let limit = if limit == 0 { MAX_FEED_PAGE } else { limit.min(MAX_FEED_PAGE) };
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut rows = sessions::ended_after(&self.db, after, chrono::Utc::now(), u64::from(limit)).await?;
        let full = rows.len() == limit as usize;
        if full && let Some(&(last, ..)) = rows.last() {
            // Never half a clock value: the next page starts after the last whole one.
            let whole: Vec<_> = rows.iter().filter(|row| row.0 != last).cloned().collect();
            if !whole.is_empty() {
                rows = whole;
            }
        }
        let cursor = rows.last().map_or(after, |row| row.0);
        Ok(RevokedPage {
            revoked: rows.into_iter().map(|(_, id, user_id, expires)| (id, user_id, expires)).collect(),
            cursor: u64::try_from(cursor).unwrap_or_default(),
            more: full,
        })
    }
}

/// A page of the revocation feed.
pub struct RevokedPage {
    /// Session, user, when the session's last access token expires.
    pub revoked: Vec<(String, String, chrono::DateTime<chrono::Utc>)>,
    pub cursor: u64,
    pub more: bool,
}
