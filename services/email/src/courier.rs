//! The courier: turns users.registered and users.verification_requested into one sent email
//! each, recording every attempt so a redelivered event sends nothing twice.

use crate::mail::{Mailer, Templates, VerificationEmail};
use crate::store::{self, Status};
use lettre::message::Mailbox;
use prost::Message as _;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use verimail_kit::bus::{ConsumerSpec, Delivery, HandlerError, USERS_STREAM, subjects};
use verimail_proto::auth::v1::{IssueVerificationTokenRequest, auth_service_client::AuthServiceClient};
use verimail_proto::events::v1::{UserRegistered, VerificationRequested};

/// Both subjects under `users.` that ask for an email (filtering on the wildcard keeps the
/// consumer working on nats-server 2.9, which has no multi-subject filters).
pub fn consumer(max_deliver: i64, backoff: Vec<std::time::Duration>) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(USERS_STREAM, "email-service", "users.>");
    spec.max_deliver = max_deliver;
    spec.backoff = backoff;
    spec
}

pub struct Courier {
    pub db: DatabaseConnection,
    pub auth: AuthServiceClient<tonic::transport::Channel>,
    pub mailer: Mailer,
    pub templates: Templates,
    pub from: Mailbox,
    pub public_base_url: String,
}

/// What the two events have in common.
struct EmailRequest {
    event_id: String,
    user_id: String,
    email: String,
}

impl Courier {
    pub async fn handle(self: Arc<Self>, delivery: Delivery) -> Result<(), HandlerError> {
        let Some(request) = decode(&delivery)? else {
            return Ok(()); // another users.* event: not ours to act on
        };
        let kind = delivery.subject.as_str();
        let record = store::start_attempt(&self.db, &request.event_id, &request.user_id, &request.email, kind)
            .await
            .map_err(|e| HandlerError::Retry(format!("database: {e}")))?;
        if record.status == Status::Sent {
            tracing::info!(event_id = %request.event_id, "already sent; not sending again");
            return Ok(());
        }
        match self.send(&request, kind).await {
            Ok(()) => {
                store::finish(&self.db, &request.event_id, Status::Sent, None)
                    .await
                    .map_err(|e| HandlerError::Retry(format!("database: {e}")))?;
                tracing::info!(event_id = %request.event_id, user_id = %request.user_id, attempt = record.attempts, "verification email sent");
                Ok(())
            }
            Err(failure) => {
                let parked = delivery.is_last_attempt || matches!(failure, HandlerError::Permanent(_));
                let status = if parked { Status::Parked } else { Status::Failed };
                store::finish(&self.db, &request.event_id, status, Some(failure.to_string()))
                    .await
                    .map_err(|e| HandlerError::Retry(format!("database: {e}")))?;
                Err(failure)
            }
        }
    }

    async fn send(&self, request: &EmailRequest, kind: &str) -> Result<(), HandlerError> {
        let issued = self
            .auth
            .clone()
            .issue_verification_token(IssueVerificationTokenRequest {
                user_id: request.user_id.clone(),
                email: request.email.clone(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => {
                    HandlerError::Permanent(format!("auth-service refused: {}", status.message()))
                }
                _ => HandlerError::Retry(format!("auth-service: {}", status.message())),
            })?
            .into_inner();
        let content = VerificationEmail {
            email: &request.email,
            link: Templates::link(&self.public_base_url, &issued.token),
            expires_at: &issued.expires_at,
            kind,
        };
        let message = self
            .templates
            .render(&self.from, &request.email, &request.event_id, &content)
            .map_err(HandlerError::Permanent)?;
        self.mailer.send(message).await.map_err(|e| HandlerError::Retry(format!("SMTP: {e}")))
    }
}

fn decode(delivery: &Delivery) -> Result<Option<EmailRequest>, HandlerError> {
    let undecodable = |e: prost::DecodeError| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
    let request = match delivery.subject.as_str() {
        subjects::USERS_REGISTERED => {
            let e = UserRegistered::decode(delivery.payload.clone()).map_err(undecodable)?;
            EmailRequest { event_id: e.event_id, user_id: e.user_id, email: e.email }
        }
        subjects::USERS_VERIFICATION_REQUESTED => {
            let e = VerificationRequested::decode(delivery.payload.clone()).map_err(undecodable)?;
            EmailRequest { event_id: e.event_id, user_id: e.user_id, email: e.email }
        }
        _ => return Ok(None),
    };
    if request.event_id.is_empty() {
        return Err(HandlerError::Permanent("event without event_id".into()));
    }
    Ok(Some(request))
}
