//! The event consumer: each users.* event that asks for an email becomes one delivery, sent
//! once; users.deleted erases the user's addresses.

use super::{Attempt, Courier, EmailRequest};
use crate::config::Config;
use crate::store::deliveries::{self, DeliveryStatus};
use prost::Message as _;
use std::sync::Arc;
use verimail_events::bus::{ConsumerSpec, Delivery, HandlerError, USERS_STREAM};
use verimail_events::erasure;
use verimail_proto::events::v1::{
    EmailChangeNotice, EmailChangeRequested, PasswordChanged, PasswordResetRequested, SignUpAttempted, UserRegistered,
    VerificationRequested,
};
use verimail_proto::subjects;

/// email-service's durable consumer (and its parked subject).
pub const CONSUMER: &str = "email-service";

/// The subjects under `users.` that ask for an email (registered, verification requested,
/// sign-up attempted, the two of a change of address, a reset and a changed password); filtering on the wildcard keeps the consumer working on
/// nats-server 2.9, which has no multi-subject filters.
pub fn spec(config: &Config) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(USERS_STREAM, CONSUMER, verimail_proto::streams::USERS_SUBJECTS);
    spec.streams = config.backbone.streams;
    spec.max_deliver = config.max_attempts;
    spec.backoff = config.retry_backoff.clone();
    // An attempt makes two bounded calls (token, SMTP) and two database writes.
    spec.ack_wait = config.send_timeout * 3;
    spec
}

impl Courier {
    pub async fn handle(self: Arc<Self>, delivery: Delivery) -> Result<(), HandlerError> {
        if delivery.subject == subjects::USERS_DELETED {
            return self.erase(&delivery).await;
        }
        let Some(request) = decode(&delivery)? else {
            return Ok(()); // another users.* event: not ours to act on
        };
        let kind = delivery.subject.as_str();
        let Some(attempts) = self.start(&request, kind).await? else { return Ok(()) };
        // Registration and resend answered as for any address; only the email is not sent.
        if let Some(found) = self.suppressions.active(&request.email).await? {
            let why = format!("not sent: the address is on the suppression list ({})", found.reason);
            self.record(&request, kind, DeliveryStatus::Suppressed, Some(why), attempts).await?;
            // The user may not have heard (another account's bounce suppressed the address).
            self.suppressions.tell_user(&request.user_id, &request.email, &found).await?;
            return Ok(());
        }
        let (status, error, result) = match self.attempt(&request, kind).await? {
            Attempt::Sent => (DeliveryStatus::Sent, None, Ok(())),
            // Final: recorded and acknowledged, not retried and not parked.
            Attempt::Failed(reason) => (DeliveryStatus::Failed, Some(reason), Ok(())),
            Attempt::Transient(failure) => {
                let parked = delivery.is_last_attempt || matches!(failure, HandlerError::Permanent(_));
                let status = if parked { DeliveryStatus::Parked } else { DeliveryStatus::Retrying };
                (status, Some(failure.to_string()), Err(failure))
            }
        };
        self.record(&request, kind, status, error, attempts).await?;
        // Deleted while this email was on its way: its row must not keep the address.
        if !erasure::buried(&self.db, &[request.user_id.as_str()]).await?.is_empty() {
            self.erase_user(&request.user_id, "", erasure::Reason::Requested).await?;
        }
        result
    }

    /// Records one more attempt at `request`'s delivery (created on first sight): the attempts
    /// so far, or none when there is nothing to send (the account was deleted, or an attempt
    /// before this one finished it).
    async fn start(&self, request: &EmailRequest, kind: &str) -> Result<Option<i32>, sea_orm::DbErr> {
        let write = self.suppressions.relay.begin().await?;
        if !erasure::buried(&*write, &[request.user_id.as_str()]).await?.is_empty() {
            tracing::info!(event_id = %request.event_id, user_id = %request.user_id, "the account was deleted: not sending");
            return Ok(None);
        }
        let (event_id, user_id, to, locale) = (&request.event_id, &request.user_id, &request.email, &request.locale);
        let record = deliveries::start_attempt(&*write, event_id, user_id, to, kind, locale, &self.instance).await?;
        write.commit().await?;
        match record.status {
            DeliveryStatus::Sent
            | DeliveryStatus::Failed
            | DeliveryStatus::Bounced
            | DeliveryStatus::Complained
            | DeliveryStatus::Suppressed => {
                tracing::info!(event_id = %request.event_id, status = ?record.status, "already done; not sending again");
                return Ok(None);
            }
            DeliveryStatus::Sending => {
                // The attempt before died between handing the email to SMTP and recording
                // the answer: the server may have it. Sending again may duplicate it; the same
                // Message-ID lets mail clients that de-duplicate show it once.
                tracing::warn!(event_id = %request.event_id, attempt = record.attempts, "previous attempt ended in doubt; sending again");
            }
            _ => {}
        }
        Ok(Some(record.attempts))
    }
}

/// An email to `email` for `user_id`, asked for by `event_id`, of `belongs_to`.
fn plain(event_id: String, user_id: String, email: String, belongs_to: String, locale: String) -> EmailRequest {
    EmailRequest {
        event_id,
        user_id,
        email,
        belongs_to,
        new_email: String::new(),
        by_email_change: false,
        reset: false,
        locale,
    }
}

fn decode(delivery: &Delivery) -> Result<Option<EmailRequest>, HandlerError> {
    let undecodable = |e: prost::DecodeError| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
    let request = match delivery.subject.as_str() {
        subjects::USERS_REGISTERED => {
            let e = UserRegistered::decode(delivery.payload.clone()).map_err(undecodable)?;
            let belongs_to = e.event_id.clone();
            plain(e.event_id, e.user_id, e.email, belongs_to, e.locale)
        }
        subjects::USERS_VERIFICATION_REQUESTED => {
            let e = VerificationRequested::decode(delivery.payload.clone()).map_err(undecodable)?;
            plain(e.event_id, e.user_id, e.email, e.registration_event_id, e.locale)
        }
        subjects::USERS_SIGNUP_ATTEMPTED => {
            let e = SignUpAttempted::decode(delivery.payload.clone()).map_err(undecodable)?;
            EmailRequest {
                by_email_change: e.by_email_change,
                ..plain(e.event_id, e.user_id, e.email, String::new(), e.locale)
            }
        }
        subjects::USERS_EMAIL_CHANGE_REQUESTED => {
            let e = EmailChangeRequested::decode(delivery.payload.clone()).map_err(undecodable)?;
            plain(e.event_id, e.user_id, e.email, e.change_id, e.locale)
        }
        subjects::USERS_EMAIL_CHANGE_NOTICE => {
            let e = EmailChangeNotice::decode(delivery.payload.clone()).map_err(undecodable)?;
            EmailRequest { new_email: e.new_email, ..plain(e.event_id, e.user_id, e.email, e.change_id, e.locale) }
        }
        subjects::USERS_PASSWORD_RESET_REQUESTED => {
            let e = PasswordResetRequested::decode(delivery.payload.clone()).map_err(undecodable)?;
            let belongs_to = e.event_id.clone();
            plain(e.event_id, e.user_id, e.email, belongs_to, e.locale)
        }
        subjects::USERS_PASSWORD_CHANGED => {
            let e = PasswordChanged::decode(delivery.payload.clone()).map_err(undecodable)?;
            EmailRequest { reset: e.reset, ..plain(e.event_id, e.user_id, e.email, String::new(), e.locale) }
        }
        _ => return Ok(None),
    };
    if request.event_id.is_empty() {
        return Err(HandlerError::Permanent("event without event_id".into()));
    }
    Ok(Some(request))
}
