//! Using the link of a change-of-address notice: checked first (user-service moves the account
//! back), then spent once; the change's links and codes die, and
//! auth.email_change_undo_requested tells user-service (which acts on it idempotently).

use crate::authority::{Authority, usable_link};
use crate::error::AuthError;
use crate::links::TokenError;
use crate::store::{self, tokens};
use verimail_proto::events::v1 as events;

/// Whose change an undo link was for.
pub struct Undone {
    pub user_id: String,
    pub email: String,
    pub change_id: String,
}

impl Authority {
    /// Uses the undo link `raw` (with `check_only`, answers as a use would and spends
    /// nothing); why not, for one that is not a live undo link.
    pub async fn undo_email_change(&self, raw: &str, check_only: bool) -> Result<Undone, AuthError> {
        let jti = self.keys.open(raw)?;
        let mut write = self.relay.begin().await?;
        let row = usable_link(&write, &jti, crate::links::UNDO_EMAIL_CHANGE).await?;
        let change_id = row.registration_event_id.clone().ok_or(AuthError::Token(TokenError::Invalid))?;
        let undone = Undone { user_id: row.user_id.clone(), email: row.email.clone(), change_id: change_id.clone() };
        if check_only {
            return Ok(undone);
        }
        if tokens::claim(&*write, &[jti.as_str()], tokens::undoes()).await?.is_empty() {
            return Err(AuthError::TokenUsed);
        }
        // The change's links and codes die with it.
        let revoked = store::revoke(&*write, &row.user_id, store::Revoked::Of(&change_id)).await?;
        write.announce(&events::EmailChangeUndoRequested {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: row.user_id.clone(),
            email: row.email.clone(),
            occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
            change_id: change_id.clone(),
        });
        write.commit().await?;
        tracing::info!(user_id = %row.user_id, %change_id, revoked = ?revoked, "change-of-address notice's link used");
        Ok(undone)
    }
}
