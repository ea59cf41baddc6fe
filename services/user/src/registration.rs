//! Registering an address, and asking for another verification email. Both answer the same
//! whether or not the address has an account (enumeration-safe, the default), after the same
//! work.

use crate::accounts::Accounts;
use crate::error::UserError;
use crate::password::{Email, Password};
use crate::store::users::{self, AccountStatus};
use verimail_proto::events::v1 as events;
use verimail_server::rfc3339;

impl Accounts {
    /// Registers `email` with `password` (in `locale`): the new user's id (enumeration-safe,
    /// a fresh id that names no user when the address had an account).
    pub async fn register(&self, email: &Email, password: Password, locale: Option<&str>) -> Result<String, UserError> {
        password.check_strength(email).map_err(|reason| UserError::invalid("password", reason))?;
        self.check_domain("email", email).await?;
        self.limits.register_per_email.check(email.mailbox()).await.map_err(UserError::Limited)?;
        // Hashed whether or not the address is taken: the same work for every answer.
        let password_hash = self.hasher.hash(password).await.map_err(UserError::Hashing)?;
        if let Some(existing) = users::find_by_email(&self.db, email.as_str()).await? {
            return self.registered_again(existing, email, password_hash, locale).await;
        }
        let user_id = uuid::Uuid::now_v7().to_string();
        let registration = uuid::Uuid::now_v7().to_string();
        let mut write = self.relay.begin().await?;
        let new = users::NewUser {
            id: &user_id,
            email: email.as_str(),
            password_hash: &password_hash,
            registration: &registration,
            locale,
        };
        if let Err(err) = users::insert(&*write, new).await {
            if !verimail_events::db::is_unique_violation(&err) {
                return Err(err.into());
            }
            // Two registrations of one address at once: the unique index decided that the
            // other one came first, so this one is a registration again.
            drop(write);
            let existing = users::find_by_email(&self.db, email.as_str()).await?.ok_or(UserError::AlreadyExists)?;
            return self.registered_again(existing, email, password_hash, locale).await;
        }
        write.announce(&registered(&registration, &user_id, email.as_str(), locale));
        write.commit().await?;
        tracing::info!(%user_id, email = %verimail_server::telemetry::email(email.as_str()), event_id = %registration, "user registered");
        crate::metrics::registered("new");
        Ok(user_id)
    }

    /// An address that already has an account.
    ///
    /// Unverified: the newer registration wins. Nobody has shown they control the address, so
    /// the first registrant's password must not outlive the owner's own registration: it is
    /// replaced by this one's, and users.registered goes out again, whose email voids every
    /// earlier link and code of the account (auth-service revokes them as it issues the new).
    ///
    /// Verified: enumeration-safe (the default), the owner gets a notice instead of a
    /// verification email (counted with the resends to that mailbox); otherwise
    /// ALREADY_EXISTS.
    ///
    /// Enumeration-safe, both answer with a fresh id that names no user, after the same work
    /// as a new registration (a password hash, an event in a transaction): UUIDv7 ids carry
    /// their time, so the existing id would tell that the address was taken.
    async fn registered_again(
        &self,
        existing: users::Model,
        email: &Email,
        password_hash: String,
        locale: Option<&str>,
    ) -> Result<String, UserError> {
        let answer =
            |existing_id: String| if self.enumeration_safe { uuid::Uuid::now_v7().to_string() } else { existing_id };
        if existing.status == AccountStatus::Unverified {
            let event_id = uuid::Uuid::now_v7().to_string();
            let mut write = self.relay.begin().await?;
            if users::replace_unverified_password(&*write, &existing.id, &password_hash, &event_id, locale).await? {
                // The newer registrant's language, as their password: theirs is the account now.
                let locale = locale.or(existing.locale.as_deref());
                write.announce(&registered(&event_id, &existing.id, &existing.email, locale));
                // Whoever signed in with the replaced password (SIGN_IN_REQUIRES_VERIFIED=false)
                // holds the account no more.
                let existing_id = [existing.id.as_str()];
                crate::revocation::end(
                    &mut write,
                    crate::store::sessions::Which::Users(&existing_id),
                    crate::revocation::EndReason::Reregistered,
                )
                .await?;
                write.commit().await?;
                tracing::info!(user_id = %existing.id, %event_id, "unverified address registered again: the newer registration replaced the password");
                crate::metrics::registered("replaced");
                return Ok(answer(existing.id));
            }
            // Verified in the meantime: a registration of a verified address, below.
        }
        if !self.enumeration_safe {
            return Err(UserError::AlreadyExists);
        }
        if self.limits.mail_to(email).await.is_err() {
            tracing::info!(user_id = %existing.id, "sign-up notice not sent: the mailbox had its emails for now");
            crate::metrics::registered("existing");
            return Ok(answer(existing.id));
        }
        let event = events::SignUpAttempted {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: existing.id.clone(),
            email: existing.email,
            occurred_at: rfc3339(chrono::Utc::now()),
            by_email_change: false,
            // The owner's language: a stranger's registration does not change it.
            locale: existing.locale.unwrap_or_default(),
        };
        let mut write = self.relay.begin().await?;
        write.announce(&event);
        write.commit().await?;
        tracing::info!(user_id = %existing.id, event_id = %event.event_id, "sign-up attempted on a registered address");
        crate::metrics::registered("existing");
        Ok(answer(existing.id))
    }

    /// Another verification email for `email` (in `locale`, which is stored): for an
    /// unverified account only, limited per mailbox whether or not it is registered. The
    /// caller cannot tell which happened.
    pub async fn resend_verification(&self, email: &Email, locale: Option<&str>) -> Result<(), UserError> {
        self.limits.mail_to(email).await.map_err(UserError::Limited)?;
        self.request_verification(email, locale).await
    }

    /// Enqueues users.verification_requested for an unverified user (in `locale`, which is
    /// stored, else the user's own); does nothing otherwise, and the caller cannot tell which
    /// happened: one lookup and one write transaction either way (empty for an unknown or a
    /// verified address), as for a password reset request.
    pub(crate) async fn request_verification(&self, email: &Email, locale: Option<&str>) -> Result<(), UserError> {
        let user = users::find_by_email(&self.db, email.as_str()).await?;
        // On SQLite through the file's one writer, like every write.
        let mut write = self.relay.begin().await?;
        if let Some(user) = user.filter(|user| user.status == AccountStatus::Unverified) {
            if let Some(locale) = locale {
                users::set_locale(&*write, &user.id, locale).await?;
            }
            write.announce(&events::VerificationRequested {
                event_id: uuid::Uuid::now_v7().to_string(),
                user_id: user.id,
                email: user.email,
                occurred_at: rfc3339(chrono::Utc::now()),
                registration_event_id: user.registration_event_id.unwrap_or_default(),
                locale: locale.map(str::to_owned).or(user.locale).unwrap_or_default(),
            });
        }
        write.commit().await?;
        Ok(())
    }
}

/// users.registered (`event_id`) for `user_id`.
fn registered(event_id: &str, user_id: &str, email: &str, locale: Option<&str>) -> events::UserRegistered {
    events::UserRegistered {
        event_id: event_id.to_owned(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        occurred_at: rfc3339(chrono::Utc::now()),
        locale: locale.unwrap_or_default().to_owned(),
    }
}
