//! Proving the password: sign-in, and the checks that acts on an account ask for. A wrong
//! password and an unknown address give the same answer after the same work.

use crate::accounts::{Account, Accounts};
use crate::error::UserError;
use crate::password::{Email, Password};
use crate::store::users::{self, AccountStatus};

/// A signed-in user: their session's tokens, and their account.
pub struct SignedIn {
    pub tokens: crate::sessions::Tokens,
    pub account: Option<Account>,
}

impl Accounts {
    /// Checks the password (against a dummy hash for an unknown address: the same work and
    /// the same answer as a wrong password), then starts a session.
    pub async fn sign_in(&self, email: &Email, password: Password, client: &str) -> Result<SignedIn, UserError> {
        let user = self.check_password(email, password, client).await?;
        let verified = user.status == AccountStatus::Verified;
        if !verified && self.sign_in_requires_verified {
            // One answer tells the client what to show: "check your inbox", with a new email.
            if self.limits.mail_to(email).await.is_ok() {
                self.request_verification(email, None).await?;
            }
            crate::metrics::sign_in("not_verified");
            return Err(UserError::NotVerified);
        }
        let tokens = self.start_session(&user, client).await?;
        crate::metrics::sign_in("signed_in");
        tracing::info!(user_id = %user.id, session_id = %tokens.session.id, email_verified = verified, "signed in");
        Ok(SignedIn { tokens, account: self.shown(vec![user]).await?.pop() })
    }

    /// Checks a password against the account of `email` (a dummy hash for none: the same work
    /// and answer as a wrong password), counting failures per mailbox and client: the account,
    /// or WrongCredentials.
    pub(crate) async fn check_password(
        &self,
        email: &Email,
        password: Password,
        client: &str,
    ) -> Result<users::Model, UserError> {
        let account = users::find_by_email(&self.db, email.as_str()).await?;
        self.check_password_of(email, account, password, client).await
    }

    /// The password of the account `user_id`, checked as [`Accounts::check_password`] checks it.
    pub async fn check_password_of_user(
        &self,
        user_id: &str,
        password: Password,
        client: &str,
    ) -> Result<users::Model, UserError> {
        let account = self.user(user_id).await?;
        let email = Email::parse(&account.email).map_err(|reason| UserError::invalid("email", reason))?;
        self.check_password_of(&email, Some(account), password, client).await
    }

    /// As [`Accounts::check_password`], against the account (`user`) as the caller found it.
    async fn check_password_of(
        &self,
        email: &Email,
        user: Option<users::Model>,
        password: Password,
        client: &str,
    ) -> Result<users::Model, UserError> {
        let failures_key = format!("{} {client}", email.mailbox());
        if let Err(refused) = self.limits.sign_in_failures.check(&failures_key).await {
            crate::metrics::sign_in("refused");
            return Err(UserError::Limited(refused));
        }
        let stored = user.as_ref().map_or_else(|| self.dummy_hash.clone(), |user| user.password_hash.clone());
        let upgrade = password.clone();
        let checked = self.hasher.check(stored.clone(), password).await.map_err(UserError::Hashing)?;
        let Some(user) = user.filter(|_| checked.matches) else {
            self.limits.sign_in_failures.failed(&failures_key).await;
            crate::metrics::sign_in("wrong");
            return Err(UserError::WrongCredentials);
        };
        self.limits.sign_in_failures.succeeded(&failures_key).await;
        if checked.outdated {
            self.upgrade_hash(&user, &stored, upgrade).await?;
        }
        Ok(user)
    }

    /// Parameters raised since this hash was made: now that the password is known, hash it
    /// again with the current ones (no reset needed).
    async fn upgrade_hash(&self, user: &users::Model, stored: &str, password: Password) -> Result<(), UserError> {
        let upgraded = self.hasher.hash(password).await.map_err(UserError::Hashing)?;
        let write = self.relay.begin().await?;
        if users::upgrade_hash(&*write, &user.id, stored, &upgraded).await? {
            tracing::info!(user_id = %user.id, "password hash upgraded to the current parameters");
            crate::metrics::sign_in("rehashed");
        }
        write.commit().await?;
        Ok(())
    }
}
