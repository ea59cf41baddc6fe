//! Password resets: the link and code of a reset email, and using one. A reset's link or code
//! is single use; issuing one, or using one, kills the user's other reset links and codes. A
//! verification link or code is never a reset one, nor the other way round.

use crate::authority::{Authority, not_deleted, usable_link};
use crate::code::{Code, Decision, Refusal};
use crate::error::AuthError;
use crate::issue::Issued;
use crate::links::PASSWORD_RESET;
use crate::store::{self, codes, tokens};

/// Whose password a used reset link or code lets user-service replace.
pub struct Redeemed {
    pub user_id: String,
    pub email: String,
}

impl Authority {
    /// A reset link and code for `user_id`'s `email`, for the reset request `reset`; the
    /// user's earlier unused reset links and codes die.
    pub(crate) async fn issue_reset(&self, user_id: &str, email: &str, reset: &str) -> Result<Issued, AuthError> {
        let issued = self.keys.issue(self.reset_lifetime);
        let registration = Some(reset.to_owned());
        let (code, row) =
            self.code_beside(&issued, user_id, email, issued.expires_at, registration, Some(PASSWORD_RESET))?;
        let write = self.relay.begin().await?;
        store::lock_user(&write, user_id).await?;
        not_deleted(&write, user_id).await?;
        store::revoke_resets(&*write, user_id, None).await?;
        tokens::record(&*write, &issued, user_id, email, Some(reset), Some(PASSWORD_RESET)).await?;
        codes::insert(&*write, row).await?;
        write.commit().await?;
        Ok(Issued {
            token: issued.token,
            expires_at: issued.expires_at,
            code: Some((code.as_str().to_owned(), issued.expires_at)),
        })
    }

    /// Uses the reset link `raw` (with `check_only`, answers as a use would and spends
    /// nothing); why not, for one that is not a live reset link.
    pub async fn redeem_reset_token(&self, raw: &str, check_only: bool) -> Result<Redeemed, AuthError> {
        let jti = self.keys.open(raw)?;
        let write = self.relay.begin().await?;
        let row = usable_link(&write, &jti, PASSWORD_RESET).await?;
        if check_only {
            return Ok(Redeemed { user_id: row.user_id, email: row.email });
        }
        // Claimed only if still live: a concurrent use comes first or not at all.
        if tokens::claim(&*write, &[jti.as_str()], tokens::resets()).await?.is_empty() {
            return Err(AuthError::TokenUsed);
        }
        store::revoke_resets(&*write, &row.user_id, Some(&jti)).await?;
        write.commit().await?;
        tracing::info!(user_id = %row.user_id, "password reset link used");
        Ok(Redeemed { user_id: row.user_id, email: row.email })
    }

    /// Uses a reset code sent to `email` (with `check_only`, spends nothing but a wrong try),
    /// as [`Authority::use_code`] uses a verification code:
    /// only a match says that it expired, was used or is locked; every miss answers alike and
    /// counts a wrong try against the address's live reset codes.
    pub async fn redeem_reset_code(&self, email: &str, code: &Code, check_only: bool) -> Result<Redeemed, AuthError> {
        let max_tries = self.code_max_wrong_tries;
        let write = self.relay.begin().await?;
        let sent = codes::sent_to(&*write, vec![email.to_owned()], Some(PASSWORD_RESET)).await?;
        let matches = |row: &codes::Model| self.code_keys.matches(&row.key_id, &row.user_id, code, &row.code_hash);
        match crate::code::decide(&sent, matches, chrono::Utc::now(), max_tries) {
            Decision::AlreadyUsed(_) => Err(AuthError::CodeUsed),
            Decision::Refused(Refusal::Revoked) => Err(AuthError::CodeRevoked),
            Decision::Refused(Refusal::Locked) => Err(AuthError::CodeLocked),
            Decision::Refused(Refusal::Expired) => Err(AuthError::CodeExpired),
            Decision::Use(row) => {
                not_deleted(&write, &row.user_id).await?;
                if check_only {
                    return Ok(Redeemed { user_id: row.user_id.clone(), email: email.to_owned() });
                }
                if !codes::use_live(&*write, &row.id, max_tries).await? {
                    return Err(AuthError::CodeLocked);
                }
                store::revoke_resets(&*write, &row.user_id, None).await?;
                write.commit().await?;
                tracing::info!(user_id = %row.user_id, "password reset code used");
                Ok(Redeemed { user_id: row.user_id.clone(), email: email.to_owned() })
            }
            Decision::Wrong { live } => {
                codes::count_wrong_try(&*write, live, max_tries).await?;
                write.commit().await?;
                Err(AuthError::invalid("code", "is not valid for this address"))
            }
        }
    }
}
