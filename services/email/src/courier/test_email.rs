//! PreviewEmail and SendTestEmail: an email of any kind with sample content, shown or sent to
//! an operator's address.

use super::{Courier, EmailRequest};
use crate::courier::ledger::Delivery;
use crate::error::EmailError;
use crate::store::deliveries::{self, DeliveryStatus};
use verimail_events::db::writer;
use verimail_mail::Rendered;
use verimail_server::telemetry::email;

impl Courier {
    /// The email `kind` (an event type; `by_email_change` for the notice of an attempt to move
    /// an account to a taken address) as a send to `to` would render it in `locale`, with a
    /// sample link and code: nothing is issued, recorded or sent.
    pub async fn preview(
        &self,
        kind: &str,
        by_email_change: bool,
        to: &str,
        locale: &str,
    ) -> Result<Rendered, EmailError> {
        let request = sample_request(String::new(), by_email_change, to, locale);
        self.compose(&request, kind, true).await.map_err(|failure| EmailError::Unavailable(failure.reason()))
    }

    /// Sends the preview of `kind` (see [`Courier::preview`]) to `to`, recorded as a delivery
    /// of kind `test.<kind>` for no user; the delivery as the attempt left it. An address on
    /// the suppression list is refused.
    pub async fn send_test(
        &self,
        kind: &str,
        by_email_change: bool,
        to: &str,
        locale: &str,
    ) -> Result<Delivery, EmailError> {
        if self.suppressions.active(to).await?.is_some() {
            return Err(EmailError::Suppressed);
        }
        let event_id = uuid::Uuid::now_v7().to_string();
        let request = sample_request(event_id.clone(), by_email_change, to, locale);
        let recorded = format!("{TEST_KIND}{kind}");
        let write = self.suppressions.relay.begin().await?;
        deliveries::start_attempt(&*write, &event_id, &request.user_id, to, &recorded, locale, &self.instance).await?;
        write.commit().await?;
        let (status, error) = match self.send(&request, kind, true).await {
            Ok(()) => (DeliveryStatus::Sent, None),
            Err(failure) => (DeliveryStatus::Failed, Some(failure.reason())),
        };
        deliveries::finish(&writer(&self.db), &event_id, status, error).await?;
        tracing::info!(%event_id, to = %email(to), %kind, ?status, "test email");
        self.delivery(&event_id).await?.ok_or(EmailError::NotFound(event_id))
    }
}

/// How the kind of a test delivery begins (`test.users.registered`).
pub const TEST_KIND: &str = "test.";

/// An email of sample content to `to` for no user (a preview, or a test email `event_id`).
fn sample_request(event_id: String, by_email_change: bool, to: &str, locale: &str) -> EmailRequest {
    EmailRequest {
        event_id,
        user_id: uuid::Uuid::nil().to_string(),
        email: to.to_owned(),
        belongs_to: String::new(),
        new_email: "new-address@example.com".into(),
        by_email_change,
        reset: false,
        locale: locale.to_owned(),
    }
}
