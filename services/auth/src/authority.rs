//! What auth-service decides, whoever asks: the keys, the lifetimes and the tables behind every
//! token and code. Issuing is in `issue`, using codes in `verify`, undo links in `undo`; each
//! is a part of [`Authority`]. None of them knows gRPC: the adapter in `grpc` calls them.

use crate::code::CodeKeys;
use crate::error::AuthError;
use crate::links::TokenKeys;
use crate::store;
use sea_orm::DatabaseTransaction;
use std::sync::Arc;
use std::time::Duration;
use verimail_events::outbox::OutboxRelay;

pub struct Authority {
    pub(crate) relay: OutboxRelay,
    pub(crate) keys: Arc<TokenKeys>,
    pub(crate) code_keys: Arc<CodeKeys>,
    /// Signs access tokens.
    pub(crate) signing_keys: Arc<crate::access::SigningKeys>,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) audience: String,
    pub(crate) token_lifetime: Duration,
    /// How long a change-of-address notice's link works.
    pub(crate) undo_lifetime: Duration,
    /// How long a password reset's link and code work.
    pub(crate) reset_lifetime: Duration,
    pub(crate) code_lifetime: Duration,
    /// Wrong tries an address's codes take from all clients before they die.
    pub(crate) code_max_wrong_tries: i32,
}

/// An access token, signed.
pub struct SignedAccess {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl Authority {
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Revokes every unused verification token and code of the user: how many of each.
    pub async fn revoke_all(&self, user_id: &str) -> Result<(u64, u64), AuthError> {
        let write = self.relay.begin().await?;
        let counts = store::revoke(&*write, user_id, store::Revoked::All).await?;
        write.commit().await?;
        tracing::info!(%user_id, tokens = counts.0, codes = counts.1, "verification tokens and codes revoked");
        Ok(counts)
    }

    /// Signs an access token for the holder (whose password user-service has just checked).
    pub fn sign_access_token(&self, holder: &crate::access::Holder) -> Result<SignedAccess, AuthError> {
        let signed = self
            .signing_keys
            .sign(holder, &self.audience, self.access_token_lifetime)
            .map_err(|e| AuthError::Issue(e.to_string()))?;
        crate::metrics::access_token_signed(holder.email_verified);
        Ok(SignedAccess { token: signed.token, expires_at: signed.expires_at })
    }

    /// The keys that verify access tokens, and the audience and issuer they carry.
    pub fn public_keys(&self) -> (Vec<crate::access::PublishedKey>, &str) {
        (self.signing_keys.published(), &self.audience)
    }
}

/// The link `jti` names, if it can be used now as a link of `purpose` (its account not
/// deleted); why not otherwise: AccountGone, WrongPurpose, used, revoked, expired. An
/// authentic link (its MAC checked) whose row is gone was pruned long after it expired
/// (VERIFICATION_RETENTION_SECONDS): expired.
pub(crate) async fn usable_link(
    txn: &DatabaseTransaction,
    jti: &str,
    purpose: &str,
) -> Result<store::tokens::Model, AuthError> {
    use crate::links::TokenError;
    let row = store::tokens::find(txn, jti).await?.ok_or(AuthError::Token(TokenError::Expired))?;
    not_deleted(txn, &row.user_id).await?;
    match row.refusal(purpose) {
        Some(refusal) => Err(refusal),
        None => Ok(row),
    }
}

/// AccountGone when the user's account was deleted: nothing is issued or undone for it.
pub(crate) async fn not_deleted(txn: &DatabaseTransaction, user_id: &str) -> Result<(), AuthError> {
    match verimail_events::erasure::buried(txn, &[user_id]).await?.get(user_id) {
        Some(reason) => Err(AuthError::AccountGone(*reason)),
        None => Ok(()),
    }
}
