//! Getting back in: a password reset through the address (the email's link or code, from
//! auth-service), and a change of password by a signed-in user. Either replaces the hash,
//! ends sessions (a reset every one, a change every other) and tells the address
//! (users.password_changed); a reset also verifies an unverified account, for the email proved
//! the address.

use crate::accounts::Accounts;
use crate::error::UserError;
use crate::password::{Email, Password};
use crate::revocation::{EndReason, end};
use crate::store::sessions::Which;
use crate::store::users;
use verimail_proto::auth::v1::RedeemPasswordResetRequest;
use verimail_proto::events::v1 as events;
use verimail_server::rfc3339;

/// What proves a reset: the email's link token, or its address and code.
pub enum ResetProof {
    Token(String),
    Code { email: Email, code: String },
}

impl Accounts {
    /// Replaces the password of the token's holder, who gave the current one: how many other
    /// sessions ended.
    pub async fn change_password(
        &self,
        holder: &verimail_client::Claims,
        current: Password,
        new: Password,
        client: &str,
    ) -> Result<usize, UserError> {
        let user = self.check_password_of_user(&holder.user_id, current, client).await?;
        let email = Email::parse(&user.email).map_err(|reason| UserError::invalid("email", reason))?;
        new.check_strength(&email).map_err(|reason| UserError::invalid("new_password", reason))?;
        let hash = self.hasher.hash(new).await.map_err(UserError::Hashing)?;
        let mut write = self.relay.begin().await?;
        let Some((user, _)) = users::replace_password(&*write, &user.id, &user.email, &hash, false).await? else {
            return Err(UserError::SessionEnded("the account moved to another address meanwhile; sign in again"));
        };
        write.announce(&changed(&user, false));
        let keep = Which::AllBut { user_id: &user.id, keep: &holder.session_id };
        let ended = end(&mut write, keep, EndReason::PasswordChanged).await?;
        write.commit().await?;
        tracing::info!(user_id = %user.id, ended, "password changed");
        crate::metrics::password("changed");
        Ok(ended)
    }

    /// users.password_reset_requested for the account of `email`, whatever its status; for an
    /// address without one, the same transaction with nothing in it: the same answer either way.
    pub async fn request_password_reset(&self, email: &Email, locale: Option<&str>) -> Result<(), UserError> {
        self.limits.mail_to(email).await.map_err(UserError::Limited)?;
        let user = users::find_by_email(&self.db, email.as_str()).await?;
        let mut write = self.relay.begin().await?;
        if let Some(user) = user {
            write.announce(&events::PasswordResetRequested {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: user.id,
                email: user.email,
                occurred_at: rfc3339(chrono::Utc::now()),
                locale: locale.map(str::to_owned).or(user.locale).unwrap_or_default(),
            });
            crate::metrics::password("reset_requested");
        }
        write.commit().await?;
        Ok(())
    }

    /// Completes a reset: auth-service spends the link or code, then the password is replaced,
    /// every session ends, and an unverified account becomes verified. The account's address.
    pub async fn reset_password(&self, proof: ResetProof, new: Password) -> Result<String, UserError> {
        let mut request = match proof {
            ResetProof::Token(token) => RedeemPasswordResetRequest { token, ..Default::default() },
            ResetProof::Code { email, code } => {
                RedeemPasswordResetRequest { email: email.as_str().to_owned(), code, ..Default::default() }
            }
        };
        // The new password is checked against the address before the link or code is spent.
        let mut auth = self.auth.clone();
        request.check_only = true;
        let checked = auth.redeem_password_reset(request.clone()).await.map_err(UserError::Refused)?.into_inner();
        let email = Email::parse(&checked.email).map_err(|reason| UserError::invalid("email", reason))?;
        new.check_strength(&email).map_err(|reason| UserError::invalid("new_password", reason))?;
        request.check_only = false;
        let redeemed = auth.redeem_password_reset(request).await.map_err(UserError::Refused)?.into_inner();
        let hash = self.hasher.hash(new).await.map_err(UserError::Hashing)?;
        let mut write = self.relay.begin().await?;
        let Some((user, verified)) =
            users::replace_password(&*write, &redeemed.user_id, email.as_str(), &hash, true).await?
        else {
            return Err(UserError::Refused(tonic::Status::failed_precondition(
                "the account was deleted, or moved to another address, since this email",
            )));
        };
        write.announce(&changed(&user, true));
        if verified {
            write.announce_all([crate::verification::verified_event(&user)]);
        }
        let ended = end(&mut write, Which::Users(&[user.id.as_str()]), EndReason::PasswordChanged).await?;
        write.commit().await?;
        tracing::info!(user_id = %user.id, ended, verified, "password reset through the address");
        crate::metrics::password("reset");
        Ok(user.email)
    }
}

/// users.password_changed for `user`.
fn changed(user: &users::Model, reset: bool) -> events::PasswordChanged {
    events::PasswordChanged {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        email: user.email.clone(),
        occurred_at: rfc3339(chrono::Utc::now()),
        reset,
        locale: user.locale.clone().unwrap_or_default(),
    }
}
