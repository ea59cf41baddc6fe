//! The accounts user-service keeps: what every use case works with (the database, the outbox,
//! the hasher, the limits), and the ones that only read or end an account: look-ups, lists as
//! the API shows them, deletion on request. Registration, sign-in and changes of address are
//! in modules of their own, on the same [`Accounts`].

use crate::error::UserError;
use crate::limits::UserLimiters;
use crate::password::{Email, PasswordHasher};
use crate::store::{email_changes, undeliverable, users};
use sea_orm::DatabaseConnection;
use verimail_events::erasure::Reason;
use verimail_events::outbox::OutboxRelay;
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;

pub use crate::store::users::{AccountStatus, Filter};

pub struct Accounts {
    pub(crate) db: DatabaseConnection,
    pub(crate) relay: OutboxRelay,
    pub(crate) hasher: PasswordHasher,
    pub(crate) limits: UserLimiters,
    pub(crate) enumeration_safe: bool,
    /// What an unknown address's password is checked against, for the same work.
    pub(crate) dummy_hash: String,
    /// Signs access tokens (with user-service's credential).
    pub(crate) auth: AuthServiceClient<verimail_server::internal::Internal>,
    pub(crate) sign_in_requires_verified: bool,
    /// `EMAIL_CHECK_DNS`: refuses addresses whose domain cannot receive mail.
    pub(crate) domain_check: Option<std::sync::Arc<crate::dns::DomainCheck>>,
    /// Session lifetimes and the re-authentication window.
    pub(crate) sessions: crate::config::SessionPolicy,
}

/// An account as the API shows it: the user, their pending change of address, and what
/// email-service said of the address they have now.
pub struct Account {
    pub user: users::Model,
    pub pending_change: Option<email_changes::Model>,
    pub undeliverable: Option<undeliverable::Model>,
}

/// Which account a look-up names.
pub enum Key {
    Id(String),
    Email(Email),
}

/// Ids a BatchGetUsers call may ask for.
pub const MAX_BATCH: usize = 100;

impl Accounts {
    pub fn limits(&self) -> &UserLimiters {
        &self.limits
    }

    /// The account `key` names; NOT_FOUND for none.
    pub async fn find(&self, key: Key) -> Result<Account, UserError> {
        let found = match key {
            Key::Id(id) => users::find_by_id(&self.db, &id).await?,
            Key::Email(email) => users::find_by_email(&self.db, email.as_str()).await?,
        };
        let user = found.ok_or(UserError::NotFound)?;
        self.shown(vec![user]).await?.pop().ok_or(UserError::NotFound)
    }

    /// The accounts of these ids (distinct, in the order asked), and the ids that name none.
    pub async fn find_many(&self, ids: Vec<String>) -> Result<(Vec<Account>, Vec<String>), UserError> {
        let mut found: std::collections::HashMap<String, users::Model> =
            users::find_many(&self.db, &ids).await?.into_iter().map(|u| (u.id.clone(), u)).collect();
        let (mut users, mut missing) = (Vec::new(), Vec::new());
        for id in ids {
            match found.remove(&id) {
                Some(user) => users.push(user),
                None => missing.push(id),
            }
        }
        Ok((self.shown(users).await?, missing))
    }

    /// Up to `limit` accounts newest first, after the id `after`.
    pub async fn list(&self, filter: &Filter, after: Option<&str>, limit: u64) -> Result<Vec<Account>, UserError> {
        let rows = users::list(&self.db, filter, after, limit).await?;
        self.shown(rows).await
    }

    /// Deletes the account and announces it (users.deleted); NOT_FOUND for none.
    pub async fn delete(&self, user_id: &str, by_its_holder: bool) -> Result<(), UserError> {
        let mut write = self.relay.begin().await?;
        let Some(deleted) = users::delete(&write, user_id).await? else {
            return Err(UserError::NotFound);
        };
        crate::lifecycle::announce_deleted(&mut write, &[deleted], Reason::Requested).await?;
        write.commit().await?;
        let by = if by_its_holder { "the user" } else { "an operator" };
        tracing::info!(%user_id, by, "account deleted on request");
        Ok(())
    }

    /// The account of this id, as stored.
    pub(crate) async fn user(&self, user_id: &str) -> Result<users::Model, UserError> {
        users::find_by_id(&self.db, user_id).await?.ok_or(UserError::NotFound)
    }

    /// Users as the API shows them, each with their pending change of address and whether
    /// their address can receive mail.
    pub(crate) async fn shown(&self, users: Vec<users::Model>) -> Result<Vec<Account>, UserError> {
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let mut changes = email_changes::pending_of(&self.db, &ids).await?;
        let addresses: Vec<(&str, &str)> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
        let mut undeliverable = undeliverable::of_users(&self.db, &addresses).await?;
        Ok(users
            .into_iter()
            .map(|user| Account {
                pending_change: changes.remove(&user.id),
                undeliverable: undeliverable.remove(&user.id),
                user,
            })
            .collect())
    }

    /// With `EMAIL_CHECK_DNS`, INVALID_ARGUMENT naming `field` for an address whose domain
    /// cannot receive mail. It depends on the address alone: nothing to learn about accounts.
    pub(crate) async fn check_domain(&self, field: &'static str, email: &Email) -> Result<(), UserError> {
        let Some(check) = &self.domain_check else { return Ok(()) };
        let domain = email.as_str().rsplit_once('@').map_or("", |(_, domain)| domain);
        match check.check(domain).await {
            crate::dns::Answer::Receives => Ok(()),
            crate::dns::Answer::NoMail(why) => Err(UserError::invalid(field, format!("{why}: it cannot receive mail"))),
            crate::dns::Answer::Unknown(error) => {
                tracing::warn!(%domain, %error, "EMAIL_CHECK_DNS: no answer from DNS; letting the address through");
                Ok(())
            }
        }
    }
}
