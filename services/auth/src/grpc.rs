//! The tonic adapter of AuthService: each method checks who is calling, parses its request,
//! calls the [`Authority`] (or the link claimer) and maps the answer. Nothing else happens here.

use crate::authority::Authority;
use crate::claim::{Claimer, TokenUse};
use crate::code::Code;
use crate::error::AuthError;
use crate::issue::{Issued, Purpose};
use tonic::{Request, Response};
use verimail_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use verimail_server::address::Email;
use verimail_server::admin::AdminCredential;
use verimail_server::internal::ServiceCredential;
use verimail_server::limits::Limiter;
use verimail_server::rfc3339;

pub struct AuthGrpc {
    pub authority: Authority,
    pub verify_per_client: Limiter,
    /// Code checks per mailbox and client.
    pub code_per_email: Limiter,
    /// Uses tokens, many clicks to a transaction under load.
    pub claimer: Claimer,
    /// The gateway's credential: who may name the browser it calls for.
    pub fronts: ServiceCredential,
    /// email-service's credential: who may have tokens issued.
    pub issuer: ServiceCredential,
    /// user-service's credential: who may have access tokens signed.
    pub signs_for: ServiceCredential,
    /// What RevokeVerificationTokens requires.
    pub admin: AdminCredential,
}

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_verification_token(
        &self,
        request: Request<pb::IssueVerificationTokenRequest>,
    ) -> GrpcResult<pb::IssueVerificationTokenResponse> {
        // Internal: only email-service may have tokens made; not the internet-facing gateway.
        self.issuer.require(&request, &[(&self.fronts, "the gateway"), (&self.signs_for, "user-service")])?;
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let email = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        let purpose = match request.purpose() {
            pb::TokenPurpose::UndoEmailChange => Purpose::UndoEmailChange,
            pb::TokenPurpose::VerifyEmailChange => Purpose::EmailChange,
            pb::TokenPurpose::PasswordReset => Purpose::PasswordReset,
            _ => Purpose::Registration,
        };
        if request.preview {
            return Ok(Response::new(issued(self.authority.preview(purpose))));
        }
        let registration = parse_registration("registration_event_id", &request.registration_event_id)?;
        let issued_now = self.authority.issue(&user_id, email.as_str(), purpose, registration).await?;
        Ok(Response::new(issued(issued_now)))
    }

    async fn verify_email(&self, request: Request<pb::VerifyEmailRequest>) -> GrpcResult<pb::VerifyEmailResponse> {
        self.verify_per_client.check(&self.fronts.client_of(&request)).await?;
        let raw = required_token(request.into_inner().token)?;
        let verified = async {
            let jti = self.authority.keys().open(&raw)?;
            let token_use = TokenUse { jti, trace: verimail_server::telemetry::current_traceparent() };
            let used = self.claimer.use_token(token_use).await?;
            Ok::<_, AuthError>((used.outcome, used))
        }
        .await;
        let (outcome, used) = counted("link", verified)?;
        // This click's trace links to the registration's, where the link was made.
        if let Some(traceparent) = &used.issued_in {
            verimail_server::telemetry::link_to(&tracing::Span::current(), traceparent);
        }
        if outcome == pb::VerifyOutcome::Verified {
            let email = verimail_server::telemetry::email(&used.email);
            tracing::info!(user_id = %used.user_id, %email, "email verified");
        }
        Ok(Response::new(pb::VerifyEmailResponse { outcome: outcome as i32, user_id: used.user_id, email: used.email }))
    }

    async fn verify_email_code(
        &self,
        request: Request<pb::VerifyEmailCodeRequest>,
    ) -> GrpcResult<pb::VerifyEmailResponse> {
        let client = self.fronts.client_of(&request);
        self.verify_per_client.check(&client).await?;
        let request = request.into_inner();
        let address = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        // Parsed first: a typo that is not a code spends nothing. Then each client has its own
        // allowance per mailbox, so a stranger's guesses do not use up the owner's.
        let code = Code::parse(&request.code).map_err(|reason| AuthError::invalid("code", reason))?;
        self.code_per_email.check(&format!("{} {client}", address.mailbox())).await?;
        let (outcome, user_id) = counted("code", self.authority.use_code(address.as_str(), &code).await)?;
        Ok(Response::new(pb::VerifyEmailResponse {
            outcome: outcome as i32,
            user_id,
            email: address.as_str().to_owned(),
        }))
    }

    async fn revoke_verification_tokens(
        &self,
        request: Request<pb::RevokeVerificationTokensRequest>,
    ) -> GrpcResult<pb::RevokeVerificationTokensResponse> {
        self.admin.require(&request)?;
        let user_id = user_id(&request.into_inner().user_id)?;
        let (tokens, codes) = self.authority.revoke_all(&user_id).await?;
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::RevokeVerificationTokensResponse {
            revoked_tokens: count(tokens),
            revoked_codes: count(codes),
        }))
    }

    async fn issue_access_token(
        &self,
        request: Request<pb::IssueAccessTokenRequest>,
    ) -> GrpcResult<pb::IssueAccessTokenResponse> {
        // Only user-service, which has just checked the password, may have one signed.
        self.signs_for.require(&request, &[(&self.fronts, "the gateway"), (&self.issuer, "email-service")])?;
        let request = request.into_inner();
        let user_id = user_id(&request.user_id)?;
        let email = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
        let session_id = uuid::Uuid::parse_str(request.session_id.trim())
            .map_err(|_| AuthError::invalid("session_id", "must be a UUID"))?
            .to_string();
        let auth_time = chrono::DateTime::parse_from_rfc3339(request.auth_time.trim())
            .map_err(|_| AuthError::invalid("auth_time", "must be an RFC 3339 time"))?
            .with_timezone(&chrono::Utc);
        let holder = crate::access::Holder {
            user_id: &user_id,
            email: email.as_str(),
            email_verified: request.email_verified,
            session_id: &session_id,
            auth_time,
        };
        let signed = self.authority.sign_access_token(&holder)?;
        Ok(Response::new(pb::IssueAccessTokenResponse {
            access_token: signed.token,
            expires_at: rfc3339(signed.expires_at),
        }))
    }

    async fn redeem_password_reset(
        &self,
        request: Request<pb::RedeemPasswordResetRequest>,
    ) -> GrpcResult<pb::RedeemPasswordResetResponse> {
        // Only user-service, which replaces the password in the same breath.
        self.signs_for.require(&request, &[(&self.fronts, "the gateway"), (&self.issuer, "email-service")])?;
        let request = request.into_inner();
        let redeemed = if request.token.trim().is_empty() {
            let address = Email::parse(&request.email).map_err(|reason| AuthError::invalid("email", reason))?;
            let code = Code::parse(&request.code).map_err(|reason| AuthError::invalid("code", reason))?;
            self.authority.redeem_reset_code(address.as_str(), &code, request.check_only).await?
        } else {
            self.authority.redeem_reset_token(request.token.trim(), request.check_only).await?
        };
        Ok(Response::new(pb::RedeemPasswordResetResponse { user_id: redeemed.user_id, email: redeemed.email }))
    }

    async fn undo_email_change(
        &self,
        request: Request<pb::UndoEmailChangeRequest>,
    ) -> GrpcResult<pb::UndoEmailChangeResponse> {
        // user-service limits its own callers (it names no browser here).
        if !self.signs_for.presented_by(&request) {
            self.verify_per_client.check(&self.fronts.client_of(&request)).await?;
        }
        let request = request.into_inner();
        let raw = required_token(request.token)?;
        let undone = self.authority.undo_email_change(&raw, request.check_only).await?;
        Ok(Response::new(pb::UndoEmailChangeResponse {
            user_id: undone.user_id,
            email: undone.email,
            change_id: undone.change_id,
        }))
    }

    /// Public keys are public: no credential, the same answer for everyone.
    async fn get_public_keys(&self, _: Request<pb::GetPublicKeysRequest>) -> GrpcResult<pb::GetPublicKeysResponse> {
        let (published, audience) = self.authority.public_keys();
        Ok(Response::new(pb::GetPublicKeysResponse {
            keys: published
                .into_iter()
                .map(|key| pb::PublicKey { id: key.id, paserk: key.paserk, current: key.current })
                .collect(),
            audience: audience.to_owned(),
            issuer: crate::access::ISSUER.to_owned(),
        }))
    }
}

/// A link's token, trimmed; INVALID_ARGUMENT when there is none.
fn required_token(raw: String) -> Result<String, AuthError> {
    match raw.trim() {
        "" => Err(AuthError::invalid("token", "is required")),
        token => Ok(token.to_owned()),
    }
}

fn issued(issued: Issued) -> pb::IssueVerificationTokenResponse {
    let (code, code_expires_at) = issued.code.map(|(code, at)| (code, rfc3339(at))).unwrap_or_default();
    pb::IssueVerificationTokenResponse {
        token: issued.token,
        expires_at: rfc3339(issued.expires_at),
        code,
        code_expires_at,
    }
}

/// An optional event id (a registration or a change) as its canonical text.
fn parse_registration(field: &'static str, raw: &str) -> Result<Option<String>, AuthError> {
    match raw.trim() {
        "" => Ok(None),
        id => uuid::Uuid::parse_str(id)
            .map(|id| Some(id.to_string()))
            .map_err(|_| AuthError::invalid(field, "must be a UUID (an event id)")),
    }
}

/// A user id as its canonical text; INVALID_ARGUMENT naming `user_id` otherwise.
fn user_id(raw: &str) -> Result<String, AuthError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| AuthError::invalid("user_id", "must be a UUID"))
}

/// Counts a verification by method and outcome (`verimail_verifications`), passing it on.
fn counted<T>(
    method: &'static str,
    result: Result<(pb::VerifyOutcome, T), AuthError>,
) -> Result<(pb::VerifyOutcome, T), AuthError> {
    let outcome = match &result {
        Ok((pb::VerifyOutcome::AlreadyVerified, _)) => "already_verified",
        Ok(_) => "verified",
        Err(AuthError::Token(crate::links::TokenError::Expired) | AuthError::CodeExpired) => "expired",
        Err(AuthError::CodeLocked) => "locked",
        Err(AuthError::TokenRevoked | AuthError::CodeRevoked) => "revoked",
        Err(AuthError::TokenUsed | AuthError::CodeUsed) => "already_verified",
        Err(AuthError::Token(_) | AuthError::InvalidArgument { .. }) => "invalid",
        Err(AuthError::AccountGone(_)) => "account_deleted",
        Err(AuthError::Db(_) | AuthError::Issue(_) | AuthError::RegistrationSuperseded) => "error",
    };
    crate::metrics::verification(method, outcome);
    result
}
