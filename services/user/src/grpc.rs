//! The tonic service: converts requests to domain values first, then works on those.

use crate::domain::{Email, Password, PasswordHasher};
use crate::error::UserError;
use crate::limits::UserLimiters;
use crate::store::{self, Status, user};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use tonic::{Request, Response};
use verimail_kit::admin::AdminCredential;
use verimail_kit::bus::subjects;
use verimail_kit::internal::ServiceCredential;
use verimail_kit::outbox::{self, OutboxEvent, OutboxRelay};
use verimail_kit::paging::Page;
use verimail_kit::rfc3339;
use verimail_proto::events::v1 as events;
use verimail_proto::user::v1::{self as pb, user_service_server::UserService};

pub struct UserGrpc {
    pub db: DatabaseConnection,
    pub hasher: PasswordHasher,
    pub relay: OutboxRelay,
    pub limits: UserLimiters,
    pub enumeration_safe: bool,
    pub credential: ServiceCredential,
    /// What the ops RPCs (GetUser, ListUsers) require.
    pub admin: AdminCredential,
}

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register_user(&self, request: Request<pb::RegisterUserRequest>) -> GrpcResult<pb::RegisterUserResponse> {
        self.limits.register_per_client.check(&self.credential.client_of(&request))?;
        let request = request.into_inner();
        let user_id = self.register(&request.email, &request.password).await?;
        Ok(Response::new(pb::RegisterUserResponse { user_id }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> GrpcResult<pb::GetUserResponse> {
        // For operators: a public lookup by email would tell who has an account.
        self.admin.require(&request)?;
        let found = match request.into_inner().key {
            Some(pb::get_user_request::Key::UserId(id)) => {
                let id =
                    uuid::Uuid::parse_str(id.trim()).map_err(|_| UserError::invalid("user_id", "must be a UUID"))?;
                store::find_by_id(&self.db, &id.to_string()).await
            }
            Some(pb::get_user_request::Key::Email(email)) => {
                let email = Email::parse(&email).map_err(|reason| UserError::invalid("email", reason))?;
                store::find_by_email(&self.db, email.as_str()).await
            }
            None => return Err(UserError::invalid("user_id", "give user_id or email").into()),
        };
        let user = found.map_err(UserError::from)?.ok_or(UserError::NotFound)?;
        Ok(Response::new(pb::GetUserResponse { user: Some(to_proto(user)) }))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> GrpcResult<pb::ListUsersResponse> {
        self.admin.require(&request)?;
        let request = request.into_inner();
        let status = match request.status() {
            pb::UserStatus::Unspecified => None,
            pb::UserStatus::Unverified => Some(Status::Unverified),
            pb::UserStatus::Verified => Some(Status::Verified),
        };
        let after = verimail_kit::time_filter("created_after", &request.created_after)?;
        let before = verimail_kit::time_filter("created_before", &request.created_before)?;
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
        Ok(Response::new(pb::ListUsersResponse { users: users.into_iter().map(to_proto).collect(), next_page_token }))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> GrpcResult<pb::ResendVerificationResponse> {
        self.limits.resend_per_client.check(&self.credential.client_of(&request))?;
        let email = Email::parse(&request.into_inner().email).map_err(|reason| UserError::invalid("email", reason))?;
        // Limited by address whether or not it is registered: the answer reveals nothing.
        self.limits.resend_per_email.check(email.as_str())?;
        self.limits.resend_per_email_daily.check(email.as_str())?;
        self.request_verification(&email).await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }
}

fn registered(outcome: &'static str) {
    verimail_kit::metrics::metrics()
        .registrations
        .get_or_create(&verimail_kit::metrics::OutcomeLabel { outcome })
        .inc();
}

impl UserGrpc {
    async fn register(&self, email: &str, password: &str) -> Result<String, UserError> {
        let email = Email::parse(email).map_err(|reason| UserError::invalid("email", reason))?;
        let password = Password::parse(password).map_err(|reason| UserError::invalid("password", reason))?;
        password.check_strength(&email).map_err(|reason| UserError::invalid("password", reason))?;
        self.limits.register_per_email.check(email.as_str()).map_err(UserError::Limited)?;
        if let Some(existing) = store::find_by_email(&self.db, email.as_str()).await? {
            return self.registered_again(existing, Some(password)).await;
        }
        let password_hash = self.hasher.hash(password).await.map_err(UserError::Hashing)?;
        let now = chrono::Utc::now();
        let user_id = uuid::Uuid::now_v7().to_string();
        let event = events::UserRegistered {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: user_id.clone(),
            email: email.as_str().to_owned(),
            occurred_at: rfc3339(now),
        };
        let txn = verimail_kit::db::begin_write(&self.db).await?;
        let inserted = user::Entity::insert(user::ActiveModel {
            id: Set(user_id.clone()),
            email: Set(email.as_str().to_owned()),
            password_hash: Set(password_hash),
            status: Set(Status::Unverified),
            created_at: Set(now),
            updated_at: Set(now),
            verified_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await;
        if let Err(err) = inserted {
            if !verimail_kit::db::is_unique_violation(&err) {
                return Err(err.into());
            }
            // Two registrations of one address at once: the unique index decided against this
            // one, whose password is already hashed.
            drop(txn);
            let existing = store::find_by_email(&self.db, email.as_str()).await?.ok_or(UserError::AlreadyExists)?;
            return self.registered_again(existing, None).await;
        }
        outbox::enqueue(
            &txn,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_REGISTERED, &event),
        )
        .await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(%user_id, email = %verimail_kit::telemetry::email(email.as_str()), event_id = %event.event_id, "user registered");
        registered("new");
        Ok(user_id)
    }

    /// An address that already has an account. Enumeration-safe (the default): the same work
    /// and the same answer as a new registration (a password hash, an event in a transaction,
    /// a fresh id that names no user), and the owner gets a notice instead of a verification
    /// email. Otherwise ALREADY_EXISTS, at once.
    async fn registered_again(&self, existing: user::Model, password: Option<Password>) -> Result<String, UserError> {
        if !self.enumeration_safe {
            return Err(UserError::AlreadyExists);
        }
        if let Some(password) = password {
            self.hasher.hash(password).await.map_err(UserError::Hashing)?;
        }
        let event = events::SignUpAttempted {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: existing.id.clone(),
            email: existing.email,
            occurred_at: rfc3339(chrono::Utc::now()),
        };
        let txn = verimail_kit::db::begin_write(&self.db).await?;
        outbox::enqueue(
            &txn,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_SIGNUP_ATTEMPTED, &event),
        )
        .await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(user_id = %existing.id, event_id = %event.event_id, "sign-up attempted on a registered address");
        registered("existing");
        Ok(uuid::Uuid::now_v7().to_string())
    }

    /// Enqueues users.verification_requested for an unverified user; does nothing otherwise,
    /// and the caller cannot tell which happened.
    async fn request_verification(&self, email: &Email) -> Result<(), UserError> {
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
        };
        outbox::enqueue(
            &self.db,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::USERS_VERIFICATION_REQUESTED, &event),
        )
        .await?;
        self.relay.wake();
        Ok(())
    }
}

fn to_proto(user: user::Model) -> pb::User {
    pb::User {
        id: user.id,
        email: user.email,
        status: match user.status {
            Status::Unverified => pb::UserStatus::Unverified,
            Status::Verified => pb::UserStatus::Verified,
        } as i32,
        created_at: rfc3339(user.created_at),
        updated_at: rfc3339(user.updated_at),
        verified_at: user.verified_at.map(rfc3339).unwrap_or_default(),
    }
}
