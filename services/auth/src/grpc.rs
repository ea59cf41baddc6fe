//! The tonic service: the only place tokens are issued and checked.

use crate::error::AuthError;
use crate::store::{self, token};
use crate::token::TokenKeys;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response};
use verimail_kit::bus::subjects;
use verimail_kit::outbox::{self, OutboxEvent, OutboxRelay};
use verimail_kit::rfc3339;
use verimail_proto::auth::v1::{self as pb, auth_service_server::AuthService};
use verimail_proto::events::v1 as events;

pub struct AuthGrpc {
    pub db: DatabaseConnection,
    pub keys: Arc<TokenKeys>,
    pub token_lifetime: Duration,
    pub relay: OutboxRelay,
}

type GrpcResult<T> = Result<Response<T>, tonic::Status>;

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_verification_token(
        &self,
        request: Request<pb::IssueVerificationTokenRequest>,
    ) -> GrpcResult<pb::IssueVerificationTokenResponse> {
        let request = request.into_inner();
        let user_id = uuid::Uuid::parse_str(request.user_id.trim())
            .map_err(|_| AuthError::invalid("user_id", "must be a UUID"))?
            .to_string();
        let email = request.email.trim();
        if email.is_empty() || !email.contains('@') {
            return Err(AuthError::invalid("email", "must be an email address").into());
        }
        let issued =
            self.keys.issue(&user_id, email, self.token_lifetime).map_err(|e| AuthError::Issue(e.to_string()))?;
        token::Entity::insert(token::ActiveModel {
            jti: Set(issued.jti.clone()),
            user_id: Set(user_id),
            email: Set(email.to_owned()),
            key_id: Set(issued.key_id.clone()),
            issued_at: Set(chrono::Utc::now()),
            expires_at: Set(issued.expires_at),
            used_at: Set(None),
        })
        .exec_without_returning(&self.db)
        .await
        .map_err(AuthError::from)?;
        Ok(Response::new(pb::IssueVerificationTokenResponse {
            token: issued.token,
            expires_at: rfc3339(issued.expires_at),
        }))
    }

    async fn verify_email(&self, request: Request<pb::VerifyEmailRequest>) -> GrpcResult<pb::VerifyEmailResponse> {
        let raw = request.into_inner().token;
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(AuthError::invalid("token", "is required").into());
        }
        let claims = self.keys.open(raw).map_err(AuthError::from)?;
        let outcome = self.use_token(&claims).await?;
        Ok(Response::new(pb::VerifyEmailResponse {
            outcome: outcome as i32,
            user_id: claims.user_id,
            email: claims.email,
        }))
    }
}

impl AuthGrpc {
    /// Single use: the first call for a jti verifies (and publishes auth.email_verified in the
    /// same transaction); every later one, or a fresh token of an already verified user,
    /// answers "already verified".
    async fn use_token(&self, claims: &crate::token::VerificationClaims) -> Result<pb::VerifyOutcome, AuthError> {
        let txn = verimail_kit::db::begin_write(&self.db).await?;
        let known = token::Entity::find_by_id(claims.jti.clone()).one(&txn).await?;
        let Some(known) = known else {
            // Authentic but never recorded: issued by a key holder that is not this service.
            return Err(AuthError::Token(crate::token::TokenError::Invalid));
        };
        if known.used_at.is_some() {
            return Ok(pb::VerifyOutcome::AlreadyVerified);
        }
        let already_verified = store::user_verified(&txn, &claims.user_id).await?;
        if !store::claim_token(&txn, &claims.jti).await? {
            return Ok(pb::VerifyOutcome::AlreadyVerified);
        }
        if already_verified {
            txn.commit().await?;
            return Ok(pb::VerifyOutcome::AlreadyVerified);
        }
        let event = events::EmailVerified {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: claims.user_id.clone(),
            email: claims.email.clone(),
            occurred_at: rfc3339(chrono::Utc::now()),
        };
        outbox::enqueue(
            &txn,
            OutboxEvent::new(event.event_id.clone(), &event.user_id, subjects::AUTH_EMAIL_VERIFIED, &event),
        )
        .await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(user_id = %claims.user_id, event_id = %event.event_id, "email verified");
        Ok(pb::VerifyOutcome::Verified)
    }
}
