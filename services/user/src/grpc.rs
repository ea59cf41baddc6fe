//! The tonic service: converts requests to domain values first, then works on those.

use crate::domain::{Email, Password, PasswordHasher};
use crate::error::UserError;
use crate::limits::UserLimiters;
use crate::store::{self, Status, user};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use tonic::{Request, Response};
use verimail_events::erasure::Reason;
use verimail_events::outbox::{self, OutboxEvent, OutboxRelay};
use verimail_proto::auth::v1::{IssueAccessTokenRequest, auth_service_client::AuthServiceClient};
use verimail_proto::events::v1 as events;
use verimail_proto::subjects;
use verimail_proto::user::v1::{self as pb, user_service_server::UserService};
use verimail_server::admin::AdminCredential;
use verimail_server::internal::ServiceCredential;
use verimail_server::paging::Page;
use verimail_server::rfc3339;

pub struct UserGrpc {
    pub db: DatabaseConnection,
    pub hasher: PasswordHasher,
    pub relay: OutboxRelay,
    pub limits: UserLimiters,
    pub enumeration_safe: bool,
    /// The gateway's credential: who may name the browser it calls for.
    pub fronts: ServiceCredential,
    /// What the ops RPCs (GetUser, ListUsers) require.
    pub admin: AdminCredential,
    /// The other services of the system, which may look users up (GetUser, BatchGetUsers).
    pub apps: ServiceCredential,
    /// What an unknown address's password is checked against, for the same work.
    pub dummy_hash: String,
    /// Signs access tokens (with user-service's credential).
    pub auth: AuthServiceClient<verimail_server::internal::Internal>,
    pub sign_in_requires_verified: bool,
    /// Checks the access tokens users present to act on their own account (DeleteUser).
    pub access_tokens: verimail_client::TokenVerifier,
    /// `EMAIL_CHECK_DNS`: refuses addresses whose domain cannot receive mail.
    pub domain_check: Option<std::sync::Arc<crate::dns::DomainCheck>>,
}

/// Ids a BatchGetUsers call may ask for.
const MAX_BATCH: usize = 100;

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register_user(&self, request: Request<pb::RegisterUserRequest>) -> GrpcResult<pb::RegisterUserResponse> {
        self.limits.register_per_client.check(&self.fronts.client_of(&request))?;
        let request = request.into_inner();
        let locale = parse_locale(&request.locale)?;
        let user_id = self.register(&request.email, &request.password, locale.as_deref()).await?;
        let did_you_mean = Email::parse(&request.email)
            .ok()
            .and_then(|email| crate::typos::did_you_mean(email.as_str()))
            .unwrap_or_default();
        Ok(Response::new(pb::RegisterUserResponse { user_id, did_you_mean }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> GrpcResult<pb::GetUserResponse> {
        // For operators and services: a public lookup by email would tell who has an account.
        self.lookup_allowed(&request)?;
        let found = match request.into_inner().key {
            Some(pb::get_user_request::Key::UserId(id)) => {
                store::find_by_id(&self.db, &parse_user_id("user_id", &id)?).await
            }
            Some(pb::get_user_request::Key::Email(email)) => {
                let email = Email::parse(&email).map_err(|reason| UserError::invalid("email", reason))?;
                store::find_by_email(&self.db, email.as_str()).await
            }
            None => return Err(UserError::invalid("user_id", "give user_id or email").into()),
        };
        let user = found.map_err(UserError::from)?.ok_or(UserError::NotFound)?;
        let user = with_pending(&self.db, vec![user]).await?.pop();
        Ok(Response::new(pb::GetUserResponse { user }))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> GrpcResult<pb::BatchGetUsersResponse> {
        self.lookup_allowed(&request)?;
        let asked = request.into_inner().user_ids;
        if asked.is_empty() {
            return Err(UserError::invalid("user_ids", "give at least one id").into());
        }
        if asked.len() > MAX_BATCH {
            return Err(UserError::invalid("user_ids", format!("at most {MAX_BATCH} ids, got {}", asked.len())).into());
        }
        let mut ids: Vec<String> = Vec::with_capacity(asked.len());
        for (i, id) in asked.iter().enumerate() {
            let id = parse_user_id("user_ids", id).map_err(|_| UserError::InvalidArgument {
                field: "user_ids",
                reason: format!("[{i}] must be a UUID"),
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut found: std::collections::HashMap<String, user::Model> = store::find_many(&self.db, &ids)
            .await
            .map_err(UserError::from)?
            .into_iter()
            .map(|u| (u.id.clone(), u))
            .collect();
        let (mut users, mut missing_user_ids) = (Vec::new(), Vec::new());
        for id in ids {
            match found.remove(&id) {
                Some(user) => users.push(user),
                None => missing_user_ids.push(id),
            }
        }
        let users = with_pending(&self.db, users).await?;
        Ok(Response::new(pb::BatchGetUsersResponse { users, missing_user_ids }))
    }

    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> GrpcResult<pb::SignInResponse> {
        let client = self.fronts.client_of(&request);
        self.limits.sign_in_per_client.check(&client)?;
        let request = request.into_inner();
        let email = Email::parse(&request.email).map_err(|reason| UserError::invalid("email", reason))?;
        let password = Password::parse(&request.password).map_err(|reason| UserError::invalid("password", reason))?;
        Ok(Response::new(self.sign_in_with(&email, password, &client).await?))
    }

    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> GrpcResult<pb::DeleteUserResponse> {
        let holder = self.account_holder(&request).await?;
        let client = self.fronts.client_of(&request);
        let request = request.into_inner();
        let user_id = parse_user_id("user_id", &request.user_id)?;
        if let Some(holder) = &holder {
            if holder.user_id != user_id {
                return Err(tonic::Status::permission_denied("user_id: an access token deletes only its own account"));
            }
            let password =
                Password::parse(&request.password).map_err(|reason| UserError::invalid("password", reason))?;
            let account = store::find_by_id(&self.db, &user_id).await.map_err(UserError::from)?;
            let account = account.ok_or(UserError::NotFound)?;
            let email = Email::parse(&account.email).map_err(|reason| UserError::invalid("email", reason))?;
            self.check_password_of(&email, Some(account), password, &client).await?;
        }
        let txn = verimail_events::db::begin_write(&self.db).await.map_err(UserError::from)?;
        if !store::delete_user(&txn, &user_id).await.map_err(UserError::from)? {
            return Err(UserError::NotFound.into());
        }
        crate::lifecycle::announce_deleted(&txn, std::slice::from_ref(&user_id), Reason::Requested)
            .await
            .map_err(UserError::from)?;
        txn.commit().await.map_err(UserError::from)?;
        self.relay.wake();
        let by = if holder.is_some() { "the user" } else { "an operator" };
        tracing::info!(%user_id, by, "account deleted on request");
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn change_email(&self, request: Request<pb::ChangeEmailRequest>) -> GrpcResult<pb::ChangeEmailResponse> {
        let client = self.fronts.client_of(&request);
        let holder = self.token_holder(&request).await?;
        let change = self.change_email_of(holder, request.into_inner(), &client).await?;
        Ok(Response::new(pb::ChangeEmailResponse {
            pending_email_change: Some(pending(&change)),
            did_you_mean: crate::typos::did_you_mean(&change.new_email).unwrap_or_default(),
        }))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> GrpcResult<pb::ListUsersResponse> {
        self.admin.require(&request)?;
        let request = request.into_inner();
        let status = match request.status() {
            pb::UserStatus::Unspecified => None,
            pb::UserStatus::Unverified => Some(Status::Unverified),
            pb::UserStatus::Verified => Some(Status::Verified),
        };
        let after = verimail_server::time_filter("created_after", &request.created_after)?;
        let before = verimail_server::time_filter("created_before", &request.created_before)?;
        if let (Some(after), Some(before)) = (after, before)
            && after >= before
        {
            return Err(UserError::invalid("created_before", "must be later than created_after").into());
        }
        let filters = [
            request.status.to_string(),
            after.map(rfc3339).unwrap_or_default(),
            before.map(rfc3339).unwrap_or_default(),
        ];
        let page =
            Page::parse(request.page_size, &request.page_token, 50, 1000, &filters.each_ref().map(String::as_str))?;
        if let Some(last) = &page.after
            && uuid::Uuid::parse_str(last).is_err()
        {
            return Err(UserError::invalid("page_token", "is not a page token from ListUsers").into());
        }
        let rows = store::list(&self.db, status, after, before, page.after.as_deref(), page.fetch())
            .await
            .map_err(UserError::from)?;
        let (users, next_page_token) = page.finish(rows, |user| &user.id);
        Ok(Response::new(pb::ListUsersResponse { users: with_pending(&self.db, users).await?, next_page_token }))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> GrpcResult<pb::ResendVerificationResponse> {
        self.limits.resend_per_client.check(&self.fronts.client_of(&request))?;
        let request = request.into_inner();
        let email = Email::parse(&request.email).map_err(|reason| UserError::invalid("email", reason))?;
        let locale = parse_locale(&request.locale)?;
        // Limited by mailbox whether or not it is registered: the answer reveals nothing.
        self.limits.mail_to(&email)?;
        self.request_verification(&email, locale.as_deref()).await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }
}

impl UserGrpc {
    /// The holder of the access token the call presents (`authorization: Bearer
    /// v4.public.…`): `None` for no such token; UNAUTHENTICATED for one that does not verify.
    async fn token_holder<T>(&self, request: &Request<T>) -> Result<Option<verimail_client::Claims>, tonic::Status> {
        let presented = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = presented
            .and_then(verimail_client::bearer_token)
            .filter(|token| token.starts_with(verimail_client::TOKEN_PREFIX));
        let Some(token) = token else {
            return Ok(None);
        };
        match self.access_tokens.verify(token).await {
            Ok(claims) => Ok(Some(claims)),
            Err(verimail_client::VerifyError::KeysUnavailable(reason)) => {
                Err(tonic::Status::unavailable(format!("cannot check access tokens now: {reason}")))
            }
            Err(e) => Err(tonic::Status::unauthenticated(format!("the access token {e}"))),
        }
    }

    /// Who acts on an account: the holder of the access token the call presents, or `None`
    /// for an operator (the admin credential); UNAUTHENTICATED for neither.
    async fn account_holder<T>(&self, request: &Request<T>) -> Result<Option<verimail_client::Claims>, tonic::Status> {
        let holder = self.token_holder(request).await?;
        if holder.is_none() {
            self.admin.require(request)?;
        }
        Ok(holder)
    }

    /// Checks a password against the account of `email` (a dummy hash for none: the same work
    /// and answer as a wrong password), counting failures per mailbox and client: the account,
    /// or WrongCredentials.
    async fn check_password(&self, email: &Email, password: Password, client: &str) -> Result<user::Model, UserError> {
        let account = store::find_by_email(&self.db, email.as_str()).await?;
        self.check_password_of(email, account, password, client).await
    }

    /// As [`UserGrpc::check_password`], against the account (`user`) as the caller found it.
    async fn check_password_of(
        &self,
        email: &Email,
        user: Option<user::Model>,
        password: Password,
        client: &str,
    ) -> Result<user::Model, UserError> {
        let failures_key = format!("{} {client}", email.mailbox());
        if let Err(refused) = self.limits.sign_in_failures.check(&failures_key) {
            crate::metrics::sign_in("refused");
            return Err(UserError::Limited(refused));
        }
        let stored = user.as_ref().map_or_else(|| self.dummy_hash.clone(), |user| user.password_hash.clone());
        let upgrade = password.clone();
        let checked = self.hasher.check(stored.clone(), password).await.map_err(UserError::Hashing)?;
        let Some(user) = user.filter(|_| checked.matches) else {
            self.limits.sign_in_failures.failed(&failures_key);
            crate::metrics::sign_in("wrong");
            return Err(UserError::WrongCredentials);
        };
        self.limits.sign_in_failures.succeeded(&failures_key);
        if checked.outdated {
            // Parameters raised since this hash was made: now that the password is known, hash
            // it again with the current ones (no reset needed).
            let upgraded = self.hasher.hash(upgrade).await.map_err(UserError::Hashing)?;
            let txn = verimail_events::db::begin_write(&self.db).await?;
            if store::upgrade_hash(&txn, &user.id, &stored, &upgraded).await? {
                tracing::info!(user_id = %user.id, "password hash upgraded to the current parameters");
                crate::metrics::sign_in("rehashed");
            }
            txn.commit().await?;
        }
        Ok(user)
    }

    /// ChangeEmail, for the holder of an access token or the account the request's address
    /// and password open: the change recorded, with its emails asked for.
    async fn change_email_of(
        &self,
        holder: Option<verimail_client::Claims>,
        request: pb::ChangeEmailRequest,
        client: &str,
    ) -> Result<store::change::Model, UserError> {
        let new_email = Email::parse(&request.new_email).map_err(|reason| UserError::invalid("new_email", reason))?;
        let locale = parse_locale(&request.locale)?;
        self.check_domain("new_email", &new_email).await?;
        let mut user = match holder {
            Some(holder) => store::find_by_id(&self.db, &holder.user_id).await?.ok_or(UserError::NotFound)?,
            None => {
                let email = Email::parse(&request.email)
                    .map_err(|reason| UserError::invalid("email", format!("{reason} (or present an access token)")))?;
                let password =
                    Password::parse(&request.password).map_err(|reason| UserError::invalid("password", reason))?;
                self.check_password(&email, password, client).await?
            }
        };
        if user.status != Status::Verified {
            return Err(UserError::NotVerified);
        }
        if user.email == new_email.as_str() {
            return Err(UserError::invalid("new_email", "is already the account's address"));
        }
        self.limits.email_change_per_user.check(&user.id).map_err(UserError::Limited)?;
        self.limits.mail_to(&new_email).map_err(UserError::Limited)?;
        // Taken or free, the same work and the same answer: the owner is told instead.
        let owner = store::find_by_email(&self.db, new_email.as_str()).await?;
        if locale.is_some() {
            user.locale = locale.clone();
        }
        let requested = crate::email_change::request(&user, new_email.as_str(), owner.as_ref());
        let txn = verimail_events::db::begin_write(&self.db).await?;
        if let Some(locale) = &locale {
            store::set_locale(&txn, &user.id, locale).await?;
        }
        let change = crate::email_change::record(&txn, requested).await?;
        txn.commit().await?;
        self.relay.wake();
        crate::metrics::email_change("requested");
        tracing::info!(user_id = %user.id, change_id = %change.id, "change of address requested");
        Ok(change)
    }

    /// GetUser and BatchGetUsers: the services' credential, else the operators'.
    fn lookup_allowed<T>(&self, request: &Request<T>) -> Result<(), tonic::Status> {
        if self.apps.presented_by(request) {
            return Ok(());
        }
        self.admin.require(request)
    }

    /// Checks the password (against a dummy hash for an unknown address: the same work and
    /// the same answer as a wrong password), then has auth-service sign a token.
    async fn sign_in_with(
        &self,
        email: &Email,
        password: Password,
        client: &str,
    ) -> Result<pb::SignInResponse, UserError> {
        let user = self.check_password(email, password, client).await?;
        let verified = user.status == Status::Verified;
        if !verified && self.sign_in_requires_verified {
            // One answer tells the client what to show: "check your inbox", with a new email.
            if self.limits.mail_to(email).is_ok() {
                self.request_verification(email, None).await?;
            }
            crate::metrics::sign_in("not_verified");
            return Err(UserError::NotVerified);
        }
        let request =
            IssueAccessTokenRequest { user_id: user.id.clone(), email: user.email.clone(), email_verified: verified };
        let signed = self.auth.clone().issue_access_token(request).await.map_err(UserError::Auth)?.into_inner();
        crate::metrics::sign_in("signed_in");
        tracing::info!(user_id = %user.id, email_verified = verified, "signed in");
        Ok(pb::SignInResponse {
            access_token: signed.access_token,
            expires_at: signed.expires_at,
            user: with_pending(&self.db, vec![user]).await?.pop(),
        })
    }

    /// With `EMAIL_CHECK_DNS`, INVALID_ARGUMENT naming `field` for an address whose domain
    /// cannot receive mail. It depends on the address alone: nothing to learn about accounts.
    async fn check_domain(&self, field: &'static str, email: &Email) -> Result<(), UserError> {
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

    async fn register(&self, email: &str, password: &str, locale: Option<&str>) -> Result<String, UserError> {
        let email = Email::parse(email).map_err(|reason| UserError::invalid("email", reason))?;
        let password = Password::parse(password).map_err(|reason| UserError::invalid("password", reason))?;
        password.check_strength(&email).map_err(|reason| UserError::invalid("password", reason))?;
        self.check_domain("email", &email).await?;
        self.limits.register_per_email.check(email.mailbox()).map_err(UserError::Limited)?;
        // Hashed whether or not the address is taken: the same work for every answer.
        let password_hash = self.hasher.hash(password).await.map_err(UserError::Hashing)?;
        if let Some(existing) = store::find_by_email(&self.db, email.as_str()).await? {
            return self.registered_again(existing, &email, password_hash, locale).await;
        }
        let now = chrono::Utc::now();
        let user_id = uuid::Uuid::now_v7().to_string();
        let registration = uuid::Uuid::now_v7().to_string();
        let txn = verimail_events::db::begin_write(&self.db).await?;
        let inserted = user::Entity::insert(user::ActiveModel {
            id: Set(user_id.clone()),
            email: Set(email.as_str().to_owned()),
            password_hash: Set(password_hash.clone()),
            status: Set(Status::Unverified),
            created_at: Set(now),
            updated_at: Set(now),
            verified_at: Set(None),
            registration_event_id: Set(Some(registration.clone())),
            locale: Set(locale.map(str::to_owned)),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            if !verimail_events::db::is_unique_violation(&err) {
                return Err(err.into());
            }
            // Two registrations of one address at once: the unique index decided that the
            // other one came first, so this one is a registration again.
            drop(txn);
            let existing = store::find_by_email(&self.db, email.as_str()).await?.ok_or(UserError::AlreadyExists)?;
            return self.registered_again(existing, &email, password_hash, locale).await;
        }
        enqueue_registered(&txn, &registration, &user_id, email.as_str(), locale).await?;
        txn.commit().await?;
        self.relay.wake();
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
        existing: user::Model,
        email: &Email,
        password_hash: String,
        locale: Option<&str>,
    ) -> Result<String, UserError> {
        let answer =
            |existing_id: String| if self.enumeration_safe { uuid::Uuid::now_v7().to_string() } else { existing_id };
        if existing.status == Status::Unverified {
            let event_id = uuid::Uuid::now_v7().to_string();
            let txn = verimail_events::db::begin_write(&self.db).await?;
            if store::replace_unverified_password(&txn, &existing.id, &password_hash, &event_id, locale).await? {
                // The newer registrant's language, as their password: theirs is the account now.
                let locale = locale.or(existing.locale.as_deref());
                enqueue_registered(&txn, &event_id, &existing.id, &existing.email, locale).await?;
                txn.commit().await?;
                self.relay.wake();
                tracing::info!(user_id = %existing.id, %event_id, "unverified address registered again: the newer registration replaced the password");
                crate::metrics::registered("replaced");
                return Ok(answer(existing.id));
            }
            // Verified in the meantime: a registration of a verified address, below.
        }
        if !self.enumeration_safe {
            return Err(UserError::AlreadyExists);
        }
        if self.limits.mail_to(email).is_err() {
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
        let txn = verimail_events::db::begin_write(&self.db).await?;
        outbox::enqueue(
            &txn,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_SIGNUP_ATTEMPTED, &event),
        )
        .await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(user_id = %existing.id, event_id = %event.event_id, "sign-up attempted on a registered address");
        crate::metrics::registered("existing");
        Ok(answer(existing.id))
    }

    /// Enqueues users.verification_requested for an unverified user (in `locale`, which is
    /// stored, else the user's own); does nothing otherwise, and the caller cannot tell which
    /// happened.
    async fn request_verification(&self, email: &Email, locale: Option<&str>) -> Result<(), UserError> {
        let Some(user) = store::find_by_email(&self.db, email.as_str()).await? else {
            return Ok(());
        };
        if user.status != Status::Unverified {
            return Ok(());
        }
        let event = events::VerificationRequested {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id,
            email: user.email,
            occurred_at: rfc3339(chrono::Utc::now()),
            registration_event_id: user.registration_event_id.unwrap_or_default(),
            locale: locale.map(str::to_owned).or(user.locale).unwrap_or_default(),
        };
        // On SQLite through the file's one writer, like every write.
        let txn = verimail_events::db::begin_write(&self.db).await?;
        if let Some(locale) = locale {
            store::set_locale(&txn, &event.user_id, locale).await?;
        }
        outbox::enqueue(
            &txn,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_VERIFICATION_REQUESTED, &event),
        )
        .await?;
        txn.commit().await?;
        self.relay.wake();
        Ok(())
    }
}

/// Writes users.registered (`event_id`) for `user_id` into the outbox of `txn`.
async fn enqueue_registered(
    txn: &sea_orm::DatabaseTransaction,
    event_id: &str,
    user_id: &str,
    email: &str,
    locale: Option<&str>,
) -> Result<(), UserError> {
    let event = events::UserRegistered {
        event_id: event_id.to_owned(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        occurred_at: rfc3339(chrono::Utc::now()),
        locale: locale.unwrap_or_default().to_owned(),
    };
    outbox::enqueue(txn, OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_REGISTERED, &event))
        .await?;
    Ok(())
}

/// A request's optional `locale` in canonical form; INVALID_ARGUMENT naming it otherwise.
fn parse_locale(raw: &str) -> Result<Option<String>, UserError> {
    verimail_server::locale::parse(raw).map_err(|reason| UserError::invalid("locale", reason))
}

/// A user id as its canonical text; INVALID_ARGUMENT naming `field` otherwise.
fn parse_user_id(field: &'static str, id: &str) -> Result<String, UserError> {
    uuid::Uuid::parse_str(id.trim()).map(|id| id.to_string()).map_err(|_| UserError::invalid(field, "must be a UUID"))
}

fn pending(change: &store::change::Model) -> pb::PendingEmailChange {
    pb::PendingEmailChange { email: change.new_email.clone(), requested_at: rfc3339(change.requested_at) }
}

/// Users as the API shows them, each with their pending change of address and whether their
/// address can receive mail.
async fn with_pending(db: &DatabaseConnection, users: Vec<user::Model>) -> Result<Vec<pb::User>, UserError> {
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let changes = store::pending_changes(db, &ids).await?;
    let addresses: Vec<(&str, &str)> = users.iter().map(|u| (u.id.as_str(), u.email.as_str())).collect();
    let undeliverable = crate::undeliverable::of_users(db, &addresses).await?;
    Ok(users
        .into_iter()
        .map(|user| {
            let change = changes.get(&user.id);
            let email_undeliverable = undeliverable.get(&user.id).map(|row| pb::EmailUndeliverable {
                reason: row.reason.clone(),
                status: row.status.clone().unwrap_or_default(),
                since: rfc3339(row.since),
            });
            pb::User { pending_email_change: change.map(pending), email_undeliverable, ..to_proto(user) }
        })
        .collect())
}

fn to_proto(user: user::Model) -> pb::User {
    pb::User {
        pending_email_change: None,
        email_undeliverable: None,
        id: user.id,
        email: user.email,
        status: match user.status {
            Status::Unverified => pb::UserStatus::Unverified,
            Status::Verified => pb::UserStatus::Verified,
        } as i32,
        created_at: rfc3339(user.created_at),
        updated_at: rfc3339(user.updated_at),
        verified_at: user.verified_at.map(rfc3339).unwrap_or_default(),
        locale: user.locale.unwrap_or_default(),
    }
}
