//! The tonic adapter of UserService: each method parses its request into domain values,
//! checks who is calling, calls [`Accounts`] and maps the answer. Nothing else happens here.

use crate::accounts::{Account, AccountStatus, Accounts, Filter, Key, MAX_BATCH};
use crate::email_change::{Requester, Undo};
use crate::error::UserError;
use crate::password::{Email, Password};
use crate::recovery::ResetProof;
use crate::revocation::EndReason;
use crate::store::sessions::Which;
use tonic::{Request, Response};
use verimail_proto::user::v1::{self as pb, user_service_server::UserService};
use verimail_server::admin::AdminCredential;
use verimail_server::callers::Grant;
use verimail_server::internal::ServiceCredential;
use verimail_server::paging::Page;
use verimail_server::rfc3339;

pub struct UserGrpc {
    pub accounts: Accounts,
    /// The gateway's credential: who may name the browser it calls for.
    pub fronts: ServiceCredential,
    /// What the ops RPCs (GetUser, ListUsers) require.
    pub admin: AdminCredential,
    /// The other services of the system, which may look users up (GetUser, BatchGetUsers).
    pub callers: std::sync::Arc<verimail_server::callers::Callers>,
    /// Checks the access tokens users present to act on their own account.
    pub access_tokens: verimail_client::TokenVerifier,
}

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl UserService for UserGrpc {
    async fn register_user(&self, request: Request<pb::RegisterUserRequest>) -> GrpcResult<pb::RegisterUserResponse> {
        self.accounts.limits().register_per_client.check(&self.fronts.client_of(&request)).await?;
        let request = request.into_inner();
        let locale = parse_locale(&request.locale)?;
        let email = parse_email("email", &request.email)?;
        let password = parse_password(&request.password)?;
        let user_id = self.accounts.register(&email, password, locale.as_deref()).await?;
        let did_you_mean = crate::typos::did_you_mean(email.as_str()).unwrap_or_default();
        Ok(Response::new(pb::RegisterUserResponse { user_id, did_you_mean }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> GrpcResult<pb::GetUserResponse> {
        // For operators and services: a public lookup by email would tell who has an account.
        self.service_or_operator(&request, Grant::Lookups, "GetUser")?;
        let key = match request.into_inner().key {
            Some(pb::get_user_request::Key::UserId(id)) => Key::Id(parse_user_id("user_id", &id)?),
            Some(pb::get_user_request::Key::Email(email)) => Key::Email(parse_email("email", &email)?),
            None => return Err(UserError::invalid("user_id", "give user_id or email").into()),
        };
        let account = self.accounts.find(key).await?;
        Ok(Response::new(pb::GetUserResponse { user: Some(to_proto(account)) }))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> GrpcResult<pb::BatchGetUsersResponse> {
        self.service_or_operator(&request, Grant::BatchLookups, "BatchGetUsers")?;
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
        let (users, missing_user_ids) = self.accounts.find_many(ids).await?;
        let users = users.into_iter().map(to_proto).collect();
        Ok(Response::new(pb::BatchGetUsersResponse { users, missing_user_ids }))
    }

    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> GrpcResult<pb::SignInResponse> {
        let client = self.fronts.client_of(&request);
        self.accounts.limits().sign_in_per_client.check(&client).await?;
        let request = request.into_inner();
        let email = parse_email("email", &request.email)?;
        let password = parse_password(&request.password)?;
        let signed_in = self.accounts.sign_in(&email, password, &client).await?;
        let tokens = signed_in.tokens;
        Ok(Response::new(pb::SignInResponse {
            session: Some(self.session(&tokens.session, Some(&tokens.session.id))),
            access_token: tokens.access_token,
            expires_at: tokens.expires_at,
            refresh_token: tokens.refresh_token,
            user: signed_in.account.map(to_proto),
        }))
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
            self.step_up(holder, &request.password, &client, "deleting the account").await?;
        }
        self.accounts.delete(&user_id, holder.is_some()).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn change_email(&self, request: Request<pb::ChangeEmailRequest>) -> GrpcResult<pb::ChangeEmailResponse> {
        let client = self.fronts.client_of(&request);
        let holder = self.token_holder(&request).await?;
        let request = request.into_inner();
        let new_email = parse_email("new_email", &request.new_email)?;
        let locale = parse_locale(&request.locale)?;
        let requester = match holder {
            Some(holder) => {
                self.step_up(&holder, &request.password, &client, "changing the address").await?;
                Requester::Holder { user_id: holder.user_id }
            }
            None => {
                let email = Email::parse(&request.email)
                    .map_err(|reason| UserError::invalid("email", format!("{reason} (or present an access token)")))?;
                Requester::Password { email, password: parse_password(&request.password)? }
            }
        };
        let change = self.accounts.change_email(requester, &new_email, locale, &client).await?;
        let did_you_mean = crate::typos::did_you_mean(&change.new_email).unwrap_or_default();
        Ok(Response::new(pb::ChangeEmailResponse {
            pending_email_change: Some(pending(change.new_email, change.requested_at)),
            did_you_mean,
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> GrpcResult<pb::RefreshSessionResponse> {
        let request = request.into_inner();
        let token = crate::sessions::parse_refresh_token(&request.refresh_token)?;
        let tokens = self.accounts.refresh(token).await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            session: Some(self.session(&tokens.session, Some(&tokens.session.id))),
            access_token: tokens.access_token,
            expires_at: tokens.expires_at,
            refresh_token: tokens.refresh_token,
        }))
    }

    async fn sign_out(&self, request: Request<pb::SignOutRequest>) -> GrpcResult<pb::SignOutResponse> {
        let holder = self.token_holder(&request).await?;
        let request = request.into_inner();
        let (user_id, session_id) = match holder {
            Some(holder) => (holder.user_id, holder.session_id),
            None if request.refresh_token.trim().is_empty() => {
                return Err(tonic::Status::unauthenticated(
                    "sign out with the session's access token (`authorization: Bearer …`) or its refresh_token",
                ));
            }
            None => {
                let token = crate::sessions::parse_refresh_token(&request.refresh_token)?;
                let session = self.accounts.session_of_refresh_token(token).await?;
                (session.user_id, session.id)
            }
        };
        let which = match request.everywhere {
            true => Which::Users(&[user_id.as_str()]),
            false => Which::One(&session_id),
        };
        let ended = self.accounts.end_sessions(which, EndReason::SignedOut).await?;
        Ok(Response::new(pb::SignOutResponse { ended_sessions: count(ended) }))
    }

    async fn list_sessions(&self, request: Request<pb::ListSessionsRequest>) -> GrpcResult<pb::ListSessionsResponse> {
        let holder = self.account_holder(&request).await?;
        let asked = request.into_inner().user_id;
        let (user_id, current) = match &holder {
            Some(holder) if asked.trim().is_empty() => (holder.user_id.clone(), Some(holder.session_id.as_str())),
            Some(holder) => {
                let user_id = parse_user_id("user_id", &asked)?;
                if user_id != holder.user_id {
                    return Err(tonic::Status::permission_denied(
                        "user_id: an access token lists only its own sessions",
                    ));
                }
                (user_id, Some(holder.session_id.as_str()))
            }
            None => (parse_user_id("user_id", &asked)?, None),
        };
        let sessions = self.accounts.sessions_of(&user_id).await?;
        let sessions = sessions.iter().map(|session| self.session(session, current)).collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> GrpcResult<pb::RevokeSessionsResponse> {
        self.operator(&request)?;
        let request = request.into_inner();
        let user_id = parse_user_id("user_id", &request.user_id)?;
        let ended = if request.session_id.trim().is_empty() {
            self.accounts.end_sessions(Which::Users(&[user_id.as_str()]), EndReason::Operator).await?
        } else {
            let session_id = parse_user_id("session_id", &request.session_id)?;
            self.accounts.end_session_of(&user_id, &session_id, EndReason::Operator).await?
        };
        Ok(Response::new(pb::RevokeSessionsResponse { ended_sessions: count(ended) }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> GrpcResult<pb::ChangePasswordResponse> {
        let client = self.fronts.client_of(&request);
        let Some(holder) = self.token_holder(&request).await? else {
            return Err(tonic::Status::unauthenticated("an access token is required: `authorization: Bearer <token>`"));
        };
        let request = request.into_inner();
        let current = parse_password_in("current_password", &request.current_password)?;
        let new = parse_password_in("new_password", &request.new_password)?;
        let ended = self.accounts.change_password(&holder, current, new, &client).await?;
        Ok(Response::new(pb::ChangePasswordResponse { ended_sessions: count(ended) }))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> GrpcResult<pb::RequestPasswordResetResponse> {
        self.accounts.limits().resend_per_client.check(&self.fronts.client_of(&request)).await?;
        let request = request.into_inner();
        let email = parse_email("email", &request.email)?;
        let locale = parse_locale(&request.locale)?;
        self.accounts.request_password_reset(&email, locale.as_deref()).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> GrpcResult<pb::ResetPasswordResponse> {
        self.accounts.limits().sign_in_per_client.check(&self.fronts.client_of(&request)).await?;
        let request = request.into_inner();
        let new = parse_password_in("new_password", &request.new_password)?;
        let proof = match request.token.trim() {
            "" => {
                let email = Email::parse(&request.email)
                    .map_err(|reason| UserError::invalid("email", format!("{reason} (or give the link's token)")))?;
                if request.code.trim().is_empty() {
                    return Err(UserError::invalid("code", "is required with email (or give the link's token)").into());
                }
                ResetProof::Code { email, code: request.code.trim().to_owned() }
            }
            token => ResetProof::Token(token.to_owned()),
        };
        let email = self.accounts.reset_password(proof, new).await?;
        Ok(Response::new(pb::ResetPasswordResponse { email }))
    }

    async fn undo_email_change(
        &self,
        request: Request<pb::UndoEmailChangeRequest>,
    ) -> GrpcResult<pb::UndoEmailChangeResponse> {
        self.accounts.limits().sign_in_per_client.check(&self.fronts.client_of(&request)).await?;
        let token = request.into_inner().token;
        if token.trim().is_empty() {
            return Err(UserError::invalid("token", "is required").into());
        }
        let (outcome, email) = match self.accounts.undo_email_change(token.trim()).await? {
            Undo::Restored { email } => (pb::UndoOutcome::Restored, email),
            Undo::AlreadyUndone => (pb::UndoOutcome::AlreadyUndone, String::new()),
            Undo::Taken { email } => (pb::UndoOutcome::AddressTaken, email),
        };
        Ok(Response::new(pb::UndoEmailChangeResponse { outcome: outcome as i32, email }))
    }

    async fn list_revoked_sessions(
        &self,
        request: Request<pb::ListRevokedSessionsRequest>,
    ) -> GrpcResult<pb::ListRevokedSessionsResponse> {
        self.service_or_operator(&request, Grant::Revocations, "ListRevokedSessions")?;
        let request = request.into_inner();
        if request.limit > crate::sessions::MAX_FEED_PAGE {
            let most = crate::sessions::MAX_FEED_PAGE;
            return Err(UserError::invalid("limit", format!("at most {most}, got {}", request.limit)).into());
        }
        let page = self.accounts.revoked_after(request.after, request.limit).await?;
        Ok(Response::new(pb::ListRevokedSessionsResponse {
            revoked: page
                .revoked
                .into_iter()
                .map(|(session_id, user_id, expires)| pb::RevokedSession {
                    session_id,
                    user_id,
                    tokens_expire_at: rfc3339(expires),
                })
                .collect(),
            cursor: page.cursor,
            more: page.more,
        }))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> GrpcResult<pb::ListUsersResponse> {
        self.operator(&request)?;
        let request = request.into_inner();
        let filter = Filter {
            status: match request.status() {
                pb::UserStatus::Unspecified => None,
                pb::UserStatus::Unverified => Some(AccountStatus::Unverified),
                pb::UserStatus::Verified => Some(AccountStatus::Verified),
            },
            created_after: verimail_server::time_filter("created_after", &request.created_after)?,
            created_before: verimail_server::time_filter("created_before", &request.created_before)?,
        };
        if let (Some(after), Some(before)) = (filter.created_after, filter.created_before)
            && after >= before
        {
            return Err(UserError::invalid("created_before", "must be later than created_after").into());
        }
        let filters = [
            request.status.to_string(),
            filter.created_after.map(rfc3339).unwrap_or_default(),
            filter.created_before.map(rfc3339).unwrap_or_default(),
        ];
        let page =
            Page::parse(request.page_size, &request.page_token, 50, 1000, &filters.each_ref().map(String::as_str))?;
        if let Some(last) = &page.after
            && uuid::Uuid::parse_str(last).is_err()
        {
            return Err(UserError::invalid("page_token", "is not a page token from ListUsers").into());
        }
        let accounts = self.accounts.list(&filter, page.after.as_deref(), page.fetch()).await?;
        let (accounts, next_page_token) = page.finish(accounts, |account| &account.user.id);
        Ok(Response::new(pb::ListUsersResponse {
            users: accounts.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn resend_verification(
        &self,
        request: Request<pb::ResendVerificationRequest>,
    ) -> GrpcResult<pb::ResendVerificationResponse> {
        self.accounts.limits().resend_per_client.check(&self.fronts.client_of(&request)).await?;
        let request = request.into_inner();
        let email = parse_email("email", &request.email)?;
        let locale = parse_locale(&request.locale)?;
        self.accounts.resend_verification(&email, locale.as_deref()).await?;
        Ok(Response::new(pb::ResendVerificationResponse {}))
    }
}

impl UserGrpc {
    /// The holder of the access token the call presents (`authorization: Bearer
    /// v4.public.…`): `None` for no such token; UNAUTHENTICATED for one that does not verify
    /// or whose session has ended (checked here, where sessions are kept, not by a feed).
    async fn token_holder<T>(&self, request: &Request<T>) -> Result<Option<verimail_client::Claims>, tonic::Status> {
        let presented = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let token = presented
            .and_then(verimail_client::bearer_token)
            .filter(|token| token.starts_with(verimail_client::TOKEN_PREFIX));
        let Some(token) = token else {
            return Ok(None);
        };
        let claims = match self.access_tokens.verify(token).await {
            Ok(claims) => claims,
            Err(verimail_client::VerifyError::KeysUnavailable(reason)) => {
                return Err(tonic::Status::unavailable(format!("cannot check access tokens now: {reason}")));
            }
            Err(e) => return Err(tonic::Status::unauthenticated(format!("the access token {e}"))),
        };
        let session = self.accounts.live_session(&claims.session_id).await?;
        if session.user_id != claims.user_id {
            return Err(UserError::SessionEnded("the access token's session is not its holder's").into());
        }
        Ok(Some(claims))
    }

    /// Before an access token may take the account away: the password (`password`, checked
    /// as SignIn checks it), or a sign-in within REAUTH_WINDOW_SECONDS.
    async fn step_up(
        &self,
        holder: &verimail_client::Claims,
        password: &str,
        client: &str,
        act: &'static str,
    ) -> Result<(), tonic::Status> {
        if !password.is_empty() {
            let password = parse_password(password)?;
            self.accounts.check_password_of_user(&holder.user_id, password, client).await?;
            return Ok(());
        }
        if self.accounts.recently_authenticated(holder.auth_time) {
            return Ok(());
        }
        Err(UserError::ReauthenticationRequired(act).into())
    }

    /// A session as the API shows it; `current` names the caller's.
    fn session(&self, session: &crate::store::sessions::Model, current: Option<&str>) -> pb::Session {
        pb::Session {
            id: session.id.clone(),
            user_id: session.user_id.clone(),
            created_at: rfc3339(session.created_at),
            last_used_at: rfc3339(session.last_used_at),
            auth_time: rfc3339(session.auth_time),
            client_address: session.client.clone(),
            idle_expires_at: rfc3339(self.accounts.idle_expiry(session)),
            expires_at: rfc3339(session.expires_at),
            current: current == Some(session.id.as_str()),
        }
    }

    /// Who acts on an account: the holder of the access token the call presents, or `None`
    /// for an operator (the admin credential); UNAUTHENTICATED for neither.
    async fn account_holder<T>(&self, request: &Request<T>) -> Result<Option<verimail_client::Claims>, tonic::Status> {
        let holder = self.token_holder(request).await?;
        if holder.is_none() {
            self.operator(request)?;
        }
        Ok(holder)
    }

    /// An RPC for the team's services granted `grant` (`method`, as they are told), else for
    /// operators.
    fn service_or_operator<T>(&self, request: &Request<T>, grant: Grant, method: &str) -> Result<(), tonic::Status> {
        self.callers.allow_or_operator(request, grant, method, &self.admin)
    }

    /// The operators' check (the admin credential), for every RPC or case that needs it.
    fn operator<T>(&self, request: &Request<T>) -> Result<(), tonic::Status> {
        self.admin.require(request)
    }
}

fn parse_email(field: &'static str, raw: &str) -> Result<Email, UserError> {
    Email::parse(raw).map_err(|reason| UserError::invalid(field, reason))
}

fn parse_password(raw: &str) -> Result<Password, UserError> {
    parse_password_in("password", raw)
}

/// A password within the length rules; INVALID_ARGUMENT naming `field` otherwise.
fn parse_password_in(field: &'static str, raw: &str) -> Result<Password, UserError> {
    Password::parse(raw).map_err(|reason| UserError::invalid(field, reason))
}

/// A request's optional `locale` in canonical form; INVALID_ARGUMENT naming it otherwise.
fn parse_locale(raw: &str) -> Result<Option<String>, UserError> {
    verimail_server::locale::parse(raw).map_err(|reason| UserError::invalid("locale", reason))
}

/// A user id as its canonical text; INVALID_ARGUMENT naming `field` otherwise.
fn parse_user_id(field: &'static str, id: &str) -> Result<String, UserError> {
    uuid::Uuid::parse_str(id.trim()).map(|id| id.to_string()).map_err(|_| UserError::invalid(field, "must be a UUID"))
}

/// A pending change of address as the API shows it.
fn pending(email: String, requested_at: chrono::DateTime<chrono::Utc>) -> pb::PendingEmailChange {
    pb::PendingEmailChange { email, requested_at: rfc3339(requested_at) }
}

/// An account as the API shows it.
fn to_proto(account: Account) -> pb::User {
    let Account { user, pending_change, undeliverable } = account;
    pb::User {
        pending_email_change: pending_change.map(|change| pending(change.new_email, change.requested_at)),
        email_undeliverable: undeliverable.map(|row| pb::EmailUndeliverable {
            reason: row.reason,
            status: row.status.unwrap_or_default(),
            since: rfc3339(row.since),
        }),
        id: user.id,
        email: user.email,
        status: match user.status {
            AccountStatus::Unverified => pb::UserStatus::Unverified,
            AccountStatus::Verified => pb::UserStatus::Verified,
        } as i32,
        created_at: rfc3339(user.created_at),
        updated_at: rfc3339(user.updated_at),
        verified_at: user.verified_at.map(rfc3339).unwrap_or_default(),
        locale: user.locale.unwrap_or_default(),
    }
}

/// A count of sessions for the API.
fn count(sessions: usize) -> u32 {
    u32::try_from(sessions).unwrap_or(u32::MAX)
}
