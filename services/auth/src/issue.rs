//! Issuing the link and code of a verification email, or the link of a change-of-address
//! notice. A new registration's link revokes those of earlier registrations; a link of a
//! superseded registration, or for a deleted account, is not issued.

use crate::authority::{Authority, not_deleted};
use crate::code::Code;
use crate::error::AuthError;
use crate::store::{self, codes, tokens};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A registration's address.
    Registration,
    /// The new address of a change.
    EmailChange,
    /// A change notice's way back (needs the change id).
    UndoEmailChange,
    /// A password reset (needs the reset's id).
    PasswordReset,
}

/// An issued link, and the code beside it (an undo link has none).
pub struct Issued {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub code: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

impl Authority {
    /// A link (and a code) for `user_id`'s `email`, for `registration` (or the change of
    /// address it names).
    pub async fn issue(
        &self,
        user_id: &str,
        email: &str,
        purpose: Purpose,
        registration: Option<String>,
    ) -> Result<Issued, AuthError> {
        if purpose == Purpose::UndoEmailChange {
            let change = registration
                .ok_or_else(|| AuthError::invalid("registration_event_id", "an undo link needs the change id"))?;
            return self.issue_undo(user_id, email, &change).await;
        }
        if purpose == Purpose::PasswordReset {
            let reset = registration
                .ok_or_else(|| AuthError::invalid("registration_event_id", "a reset link needs the reset's id"))?;
            return self.issue_reset(user_id, email, &reset).await;
        }
        let issued = self.keys.issue(self.token_lifetime);
        // A code beside the link. Earlier tokens and codes of the same registration stay valid
        // (two emails in flight); those of earlier registrations die.
        let code_expires_at =
            chrono::Utc::now() + chrono::Duration::from_std(self.code_lifetime).unwrap_or(chrono::Duration::zero());
        let (code, row) = self.code_beside(&issued, user_id, email, code_expires_at, registration.clone(), None)?;
        let write = self.relay.begin().await?;
        store::lock_user(&write, user_id).await?;
        // email-service behind on users.deleted: nothing for an account that is gone.
        not_deleted(&write, user_id).await?;
        if let Some(registration) = &registration {
            if tokens::superseded(&*write, user_id, registration).await? {
                return Err(AuthError::RegistrationSuperseded);
            }
            let (tokens, codes) = store::revoke(&*write, user_id, store::Revoked::Before(registration)).await?;
            if tokens + codes > 0 {
                tracing::info!(%user_id, tokens, codes, "tokens and codes of earlier registrations revoked");
            }
        }
        let recorded = (purpose == Purpose::EmailChange).then_some(crate::links::EMAIL_CHANGE);
        tokens::record(&*write, &issued, user_id, email, registration.as_deref(), recorded).await?;
        codes::insert(&*write, row).await?;
        write.commit().await?;
        Ok(Issued {
            token: issued.token,
            expires_at: issued.expires_at,
            code: Some((code.as_str().to_owned(), code_expires_at)),
        })
    }

    /// A fresh code to send beside the link `issued` (for the same key), and its row: stored as
    /// a keyed hash only.
    pub(crate) fn code_beside(
        &self,
        issued: &crate::links::IssuedToken,
        user_id: &str,
        email: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
        registration: Option<String>,
        purpose: Option<&str>,
    ) -> Result<(Code, codes::Model), AuthError> {
        let code = Code::generate();
        let code_hash = self
            .code_keys
            .hash(&issued.key_id, user_id, &code)
            .ok_or_else(|| AuthError::Issue("no code key for the current token key".into()))?;
        let row = codes::Model {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.to_owned(),
            email: email.to_owned(),
            key_id: issued.key_id.clone(),
            code_hash,
            issued_at: chrono::Utc::now(),
            expires_at,
            wrong_tries: 0,
            used_at: None,
            revoked_at: None,
            registration_event_id: registration,
            purpose: purpose.map(str::to_owned),
        };
        Ok((code, row))
    }

    /// What an issue now would answer, with a sample token and code; nothing is recorded.
    pub fn preview(&self, purpose: Purpose) -> Issued {
        let now = chrono::Utc::now();
        let after = |lifetime: std::time::Duration| {
            now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero())
        };
        let (lifetime, code) = match purpose {
            Purpose::UndoEmailChange => (self.undo_lifetime, None),
            Purpose::PasswordReset => {
                (self.reset_lifetime, Some((crate::links::SAMPLE_CODE.to_owned(), after(self.reset_lifetime))))
            }
            _ => (self.token_lifetime, Some((crate::links::SAMPLE_CODE.to_owned(), after(self.code_lifetime)))),
        };
        Issued { token: crate::links::SAMPLE_TOKEN.to_owned(), expires_at: after(lifetime), code }
    }

    /// The link of a change-of-address notice: single use, for `undo_lifetime`, no code.
    async fn issue_undo(&self, user_id: &str, email: &str, change: &str) -> Result<Issued, AuthError> {
        let purpose = crate::links::UNDO_EMAIL_CHANGE;
        let issued = self.keys.issue(self.undo_lifetime);
        let write = self.relay.begin().await?;
        not_deleted(&write, user_id).await?;
        tokens::record(&*write, &issued, user_id, email, Some(change), Some(purpose)).await?;
        write.commit().await?;
        Ok(Issued { token: issued.token, expires_at: issued.expires_at, code: None })
    }
}
