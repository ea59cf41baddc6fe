//! The courier: everything that makes and sends an email, one job per module. Each email is
//! one delivery row, created before the first attempt and updated by each, so a redelivered
//! event or a second instance sends nothing twice.
//!
//! - [`consumer`]: the users.* events that ask for an email (registered, verification
//!   requested, sign-up attempted, change of address requested, its notice) and users.deleted;
//! - [`compose`]: what each email says, with the token and code auth-service issues for it;
//! - [`erasure`]: a deleted user's addresses out of their deliveries;
//! - [`retry`]: RetryDelivery, one more attempt at a failed or parked delivery;
//! - [`test_email`]: PreviewEmail and SendTestEmail, with sample content;
//! - [`ledger`]: what became of each email, as the ops RPCs show it.

mod compose;
pub mod consumer;
mod erasure;
pub mod ledger;
mod retry;
mod test_email;

use crate::store::deliveries::{self, DeliveryStatus};
use crate::suppression::Suppressions;
use lettre::message::Mailbox;
use sea_orm::DatabaseConnection;
use std::time::Duration;
use tracing::Instrument;
use verimail_events::bus::HandlerError;
use verimail_events::db::writer;
use verimail_mail::{Mailer, SendError, Templates};
use verimail_proto::auth::v1::auth_service_client::AuthServiceClient;
use verimail_server::telemetry::email;

pub use consumer::CONSUMER;
pub use test_email::TEST_KIND;

pub struct Courier {
    pub db: DatabaseConnection,
    pub auth: AuthServiceClient<verimail_server::internal::Internal>,
    pub mailer: Mailer,
    pub templates: std::sync::Arc<Templates>,
    pub from: Mailbox,
    pub public_base_url: String,
    pub send_timeout: Duration,
    pub instance: String,
    /// Where a deleted user's parked messages are removed.
    pub js: async_nats::jetstream::Context,
    /// The suppression list (no email goes to an address on it), with the outbox relay that
    /// publishes email-service's own events and the key of the addresses' hashes.
    pub suppressions: Suppressions,
}

/// What the events that ask for an email have in common.
struct EmailRequest {
    event_id: String,
    user_id: String,
    email: String,
    /// What the email belongs to, for auth-service to void the links of earlier emails of it
    /// (the proto's `registration_event_id`): a registration (users.registered's event id),
    /// or a change of address (its change id); empty where unknown.
    belongs_to: String,
    /// A change-of-address notice: the address the account is to move to.
    new_email: String,
    /// A sign-up notice for an attempt to move another account to this address.
    by_email_change: bool,
    /// A password-changed notice for a reset through the address (a change otherwise).
    reset: bool,
    /// The user's language (BCP 47); empty for the default.
    locale: String,
}

/// How one attempt at sending ended, once a refused recipient is on the suppression list.
enum Attempt {
    Sent,
    /// Not sent, for good: recorded as failed, not retried.
    Failed(String),
    /// Not sent for now: the consumer retries it.
    Transient(HandlerError),
}

impl Courier {
    /// One attempt at sending the email `kind` for `request`; an address its server refused
    /// goes on the suppression list.
    async fn attempt(&self, request: &EmailRequest, kind: &str) -> Result<Attempt, sea_orm::DbErr> {
        Ok(match self.send(request, kind, false).await {
            Ok(()) => Attempt::Sent,
            Err(Failure::Rejected(reason)) => Attempt::Failed(reason),
            Err(Failure::Undeliverable(reason)) => {
                self.suppressions.refused(&request.event_id, &reason).await?;
                Attempt::Failed(reason)
            }
            Err(Failure::Handler(failure)) => Attempt::Transient(failure),
        })
    }

    /// Records how an attempt ended: the delivery's status, the metric, the log line.
    async fn record(
        &self,
        request: &EmailRequest,
        kind: &str,
        status: DeliveryStatus,
        error: Option<String>,
        attempt: i32,
    ) -> Result<(), sea_orm::DbErr> {
        deliveries::finish(&writer(&self.db), &request.event_id, status, error.clone()).await?;
        let outcome = match status {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Parked => "parked",
            DeliveryStatus::Suppressed => "suppressed",
            _ => "retrying",
        };
        crate::metrics::email(kind, outcome);
        match status {
            DeliveryStatus::Sent => {
                tracing::info!(event_id = %request.event_id, user_id = %request.user_id, to = %email(&request.email), %kind, attempt, "email sent")
            }
            DeliveryStatus::Failed => {
                tracing::warn!(event_id = %request.event_id, user_id = %request.user_id, to = %email(&request.email), error = error.as_deref(), "recipient rejected; not retrying")
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends the email `kind` for `request` (with `preview`, its sample: a test email).
    async fn send(&self, request: &EmailRequest, kind: &str, preview: bool) -> Result<(), Failure> {
        let message = self
            .compose(request, kind, preview)
            .await?
            .message(&self.from, &request.email, &request.event_id)
            .map_err(HandlerError::Permanent)?;
        // Recorded before the SMTP exchange: a crash from here on leaves the delivery in doubt.
        let writer = writer(&self.db);
        let sending = deliveries::set_status(&writer, &request.event_id, DeliveryStatus::Sending);
        sending.await.map_err(HandlerError::from)?;
        let span = tracing::info_span!("smtp.send", otel.kind = "client", %kind);
        // Servers often quote the recipient in their reply; errors go to logs, so mask it.
        let masked = |e: SendError| e.to_string().replace(&request.email, &email(&request.email).to_string());
        self.mailer.send(message, &request.event_id).instrument(span).await.map_err(|e| match e {
            SendError::Rejected { recipient: true, .. } => Failure::Undeliverable(masked(e)),
            SendError::Rejected { .. } => Failure::Rejected(masked(e)),
            SendError::Transient(_) => Failure::Handler(HandlerError::Retry(masked(e))),
        })
    }
}

/// How an attempt ended short of sending.
enum Failure {
    /// Not sent, for good: the SMTP server refused the message, or there is nothing to send.
    Rejected(String),
    /// The recipient's server said the address does not take mail (no such user or domain).
    Undeliverable(String),
    Handler(HandlerError),
}

impl Failure {
    /// What went wrong, in words.
    fn reason(self) -> String {
        match self {
            Failure::Rejected(reason) | Failure::Undeliverable(reason) => reason,
            Failure::Handler(e) => e.to_string(),
        }
    }
}

impl From<HandlerError> for Failure {
    fn from(e: HandlerError) -> Self {
        Failure::Handler(e)
    }
}
