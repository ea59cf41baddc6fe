//! The courier: turns users.registered and users.verification_requested into one sent email
//! each, recording every attempt so a redelivered event sends nothing twice; on users.deleted
//! it erases the user's address from their deliveries.

use crate::config::Config;
use crate::error::EmailError;
use crate::mail::{Mailer, SendError, Templates, VerificationEmail, page_link};
use crate::store::{self, Status};
use crate::suppression;
use lettre::message::Mailbox;
use prost::Message as _;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use verimail_events::bus::{ConsumerSpec, Delivery, HandlerError, USERS_STREAM};
use verimail_events::db::{begin_write, writer};
use verimail_events::erasure;

/// email-service's durable consumer (and its parked subject).
pub const CONSUMER: &str = "email-service";
use verimail_proto::auth::v1::{
    IssueVerificationTokenRequest, IssueVerificationTokenResponse, TokenPurpose, auth_service_client::AuthServiceClient,
};
use verimail_proto::events::v1::{
    EmailChangeNotice, EmailChangeRequested, SignUpAttempted, UserRegistered, VerificationRequested,
};
use verimail_proto::subjects;
use verimail_server::telemetry::email;

/// The three subjects under `users.` that ask for an email (registered, verification
/// requested, sign-up attempted); filtering on the wildcard keeps the consumer working on
/// nats-server 2.9, which has no multi-subject filters.
pub fn consumer(config: &Config) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(USERS_STREAM, CONSUMER, verimail_proto::streams::USERS_SUBJECTS);
    spec.streams = config.backbone.streams;
    spec.max_deliver = config.max_attempts;
    spec.backoff = config.retry_backoff.clone();
    // An attempt makes two bounded calls (token, SMTP) and two database writes.
    spec.ack_wait = config.send_timeout * 3;
    spec
}

pub struct Courier {
    pub db: DatabaseConnection,
    pub auth: AuthServiceClient<verimail_server::internal::Internal>,
    pub mailer: Mailer,
    pub templates: std::sync::Arc<Templates>,
    pub from: Mailbox,
    pub public_base_url: String,
    pub send_timeout: Duration,
    pub instance: String,
    /// Keys the hash that replaces a deleted user's address.
    pub address_key: store::AddressKey,
    /// Where a deleted user's parked messages are removed.
    pub js: async_nats::jetstream::Context,
    /// Publishes email-service's own events (email.address_undeliverable, …).
    pub relay: verimail_events::outbox::OutboxRelay,
}

/// What the events that ask for an email have in common.
struct EmailRequest {
    event_id: String,
    user_id: String,
    email: String,
    /// The registration a verification email belongs to (users.registered's event id), or
    /// the change of address; empty where unknown.
    registration_event_id: String,
    /// A change-of-address notice: the address the account is to move to.
    new_email: String,
    /// A sign-up notice for an attempt to move another account to this address.
    by_email_change: bool,
    /// The user's language (BCP 47); empty for the default.
    locale: String,
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
        let txn = begin_write(&self.db).await?;
        if !erasure::buried(&txn, &[request.user_id.as_str()]).await?.is_empty() {
            tracing::info!(event_id = %request.event_id, user_id = %request.user_id, "the account was deleted: not sending");
            return Ok(());
        }
        let record = store::start_attempt(
            &txn,
            &request.event_id,
            &request.user_id,
            &request.email,
            kind,
            &request.locale,
            &self.instance,
        )
        .await?;
        txn.commit().await?;
        match record.status {
            Status::Sent | Status::Failed | Status::Bounced | Status::Complained | Status::Suppressed => {
                tracing::info!(event_id = %request.event_id, status = ?record.status, "already done; not sending again");
                return Ok(());
            }
            Status::Sending => {
                // The attempt before died between handing the email to SMTP and recording
                // the answer: the server may have it. Sending again may duplicate it; the same
                // Message-ID lets mail clients that de-duplicate show it once.
                tracing::warn!(event_id = %request.event_id, attempt = record.attempts, "previous attempt ended in doubt; sending again");
            }
            _ => {}
        }
        // Registration and resend answered as for any address; only the email is not sent.
        if let Some(found) = suppression::active(&self.db, &self.address_key, &request.email).await? {
            let why = format!("not sent: the address is on the suppression list ({})", found.reason);
            self.record(&request, kind, Status::Suppressed, Some(why), record.attempts).await?;
            // The user may not have heard (another account's bounce suppressed the address).
            if let Some(reason) = suppression::Reason::parse(&found.reason) {
                let txn = begin_write(&self.db).await?;
                let event = suppression::undeliverable_event(
                    &request.user_id,
                    &request.email,
                    reason,
                    None,
                    found.delivery_id.as_deref().unwrap_or_default(),
                );
                verimail_events::outbox::enqueue(&txn, event).await?;
                txn.commit().await?;
                self.relay.wake();
            }
            return Ok(());
        }
        let (status, error, result) = match self.send(&request, kind, false).await {
            Ok(()) => (Status::Sent, None, Ok(())),
            // Final: recorded and acknowledged, not retried and not parked.
            Err(Failure::Rejected(reason)) => (Status::Failed, Some(reason), Ok(())),
            Err(Failure::Undeliverable(reason)) => {
                self.suppress_refused(&request.event_id, &reason).await?;
                (Status::Failed, Some(reason), Ok(()))
            }
            Err(Failure::Handler(failure)) => {
                let parked = delivery.is_last_attempt || matches!(failure, HandlerError::Permanent(_));
                (if parked { Status::Parked } else { Status::Retrying }, Some(failure.to_string()), Err(failure))
            }
        };
        self.record(&request, kind, status, error, record.attempts).await?;
        // Deleted while this email was on its way: its row must not keep the address.
        if !erasure::buried(&self.db, &[request.user_id.as_str()]).await?.is_empty() {
            self.erase_user(&request.user_id, erasure::Reason::Requested).await?;
        }
        result
    }

    /// users.deleted: the user's deliveries keep a keyed hash instead of the address, a
    /// tombstone keeps any later event of theirs from sending, and their parked messages go.
    async fn erase(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let event = erasure::decode(delivery)?;
        let erased = self.erase_user(&event.user_id, erasure::reason_of(&event)).await?;
        tracing::info!(user_id = %event.user_id, deliveries = erased, "deleted user's addresses erased from deliveries");
        erasure::forget_parked(&self.js, &[CONSUMER], &event.user_id).await
    }

    async fn erase_user(&self, user_id: &str, reason: erasure::Reason) -> Result<u64, sea_orm::DbErr> {
        let txn = begin_write(&self.db).await?;
        erasure::bury(&txn, &[user_id], reason).await?;
        let erased = store::erase_user(&txn, user_id, &self.address_key).await?;
        suppression::erase_user(&txn, user_id).await?;
        // Its own events about the user (email.address_*) name the address too.
        erasure::forget_events(&txn, &[user_id]).await?;
        txn.commit().await?;
        Ok(erased)
    }

    /// RetryDelivery: one more attempt, now, at a delivery that failed or was parked. An
    /// attempt that fails again leaves it as it was, with the new error.
    pub async fn retry(&self, event_id: &str) -> Result<store::delivery::Model, EmailError> {
        if let Some(row) = store::get(&self.db, event_id).await? {
            if row.recipient.starts_with(store::ERASED) {
                return Err(EmailError::Erased);
            }
            // A change's id is not recorded here, and a test email is for no user: each is
            // asked for again instead. Refused before the claim, which would leave it pending.
            let change = [subjects::USERS_EMAIL_CHANGE_REQUESTED, subjects::USERS_EMAIL_CHANGE_NOTICE];
            if change.contains(&row.kind.as_str()) || row.kind.starts_with(TEST_KIND) {
                return Err(EmailError::NotRetryableKind(row.kind));
            }
            if suppression::active(&self.db, &self.address_key, &row.recipient).await?.is_some() {
                return Err(EmailError::Suppressed);
            }
        }
        let txn = begin_write(&self.db).await?;
        let claim = store::claim_retry(&txn, event_id, &self.instance).await?;
        txn.commit().await?;
        let before = match claim {
            store::Claim::NotFound => return Err(EmailError::NotFound(event_id.to_owned())),
            store::Claim::NotRetryable(status) => return Err(EmailError::NotRetryable(status)),
            store::Claim::Claimed(before) => *before,
        };
        // A registration's own email belongs to it; a resend's registration is not recorded.
        let registration_event_id =
            if before.kind == subjects::USERS_REGISTERED { before.event_id.clone() } else { String::new() };
        let request = EmailRequest {
            event_id: before.event_id,
            user_id: before.user_id,
            email: before.recipient,
            registration_event_id,
            new_email: String::new(),
            by_email_change: false,
            locale: before.locale.unwrap_or_default(),
        };
        let (status, error) = match self.send(&request, &before.kind, false).await {
            Ok(()) => (Status::Sent, None),
            Err(Failure::Rejected(reason)) => (Status::Failed, Some(reason)),
            Err(Failure::Undeliverable(reason)) => {
                self.suppress_refused(&request.event_id, &reason).await?;
                (Status::Failed, Some(reason))
            }
            Err(Failure::Handler(failure)) => (before.status, Some(failure.to_string())),
        };
        self.record(&request, &before.kind, status, error, before.attempts + 1).await?;
        store::get(&self.db, event_id).await?.ok_or_else(|| EmailError::NotFound(event_id.to_owned()))
    }

    /// A recipient refused at send time (SMTP 550, 551, 553 or 5.1.x): the address goes on the
    /// suppression list, as for a hard bounce.
    async fn suppress_refused(&self, event_id: &str, reason: &str) -> Result<(), sea_orm::DbErr> {
        let txn = begin_write(&self.db).await?;
        let Some(row) = store::get(&txn, event_id).await? else { return Ok(()) };
        let status = crate::bounce::classify::enhanced_status(reason);
        let rejected = suppression::Reason::Rejected;
        let detail = Some(reason.to_owned());
        let new = suppression::suppress(&txn, &self.address_key, &row, rejected, status.as_deref(), detail).await?;
        txn.commit().await?;
        if new {
            self.relay.wake();
            tracing::warn!(event_id, user_id = %row.user_id, to = %email(&row.recipient), "address suppressed: refused at send time");
            crate::metrics::refresh_suppressed(&self.db).await;
        }
        Ok(())
    }

    /// RemoveSuppression: lifts the suppression of `address`, recording `why`.
    pub async fn lift_suppression(&self, address: &str, why: &str) -> Result<suppression::listed::Model, EmailError> {
        let hash = suppression::address_hash(&self.address_key, address);
        let txn = begin_write(&self.db).await?;
        let Some(row) = suppression::remove(&txn, &hash, why).await? else {
            return Err(EmailError::NotSuppressed(address.to_owned()));
        };
        verimail_events::outbox::enqueue(&txn, suppression::deliverable_event(&row.user_id, address)).await?;
        txn.commit().await?;
        self.relay.wake();
        tracing::info!(user_id = %row.user_id, to = %email(address), reason = why, "suppression lifted by an operator");
        crate::metrics::refresh_suppressed(&self.db).await;
        Ok(row)
    }

    /// Records how an attempt ended: the delivery's status, the metric, the log line.
    async fn record(
        &self,
        request: &EmailRequest,
        kind: &str,
        status: Status,
        error: Option<String>,
        attempt: i32,
    ) -> Result<(), sea_orm::DbErr> {
        store::finish(&writer(&self.db), &request.event_id, status, error.clone()).await?;
        let outcome = match status {
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Parked => "parked",
            Status::Suppressed => "suppressed",
            _ => "retrying",
        };
        crate::metrics::email(kind, outcome);
        match status {
            Status::Sent => {
                tracing::info!(event_id = %request.event_id, user_id = %request.user_id, to = %email(&request.email), %kind, attempt, "email sent")
            }
            Status::Failed => {
                tracing::warn!(event_id = %request.event_id, user_id = %request.user_id, to = %email(&request.email), error = error.as_deref(), "recipient rejected; not retrying")
            }
            _ => {}
        }
        Ok(())
    }

    /// The email `kind` (the event type that asks for it) for `request`: what is sent, or with
    /// `preview` what would be (auth-service answers a sample token and issues nothing).
    async fn compose(
        &self,
        request: &EmailRequest,
        kind: &str,
        preview: bool,
    ) -> Result<crate::mail::Rendered, Failure> {
        match kind {
            // The owner of an address someone tried to register, or to move an account to: a
            // notice, no token.
            subjects::USERS_SIGNUP_ATTEMPTED => {
                let template = if request.by_email_change { "change_attempted" } else { "signup_attempted" };
                let context = minijinja::context! { email => &request.email };
                Ok(self.render(request, template, &context)?)
            }
            subjects::USERS_EMAIL_CHANGE_NOTICE => self.change_notice(request, preview).await,
            _ => self.verification_email(request, kind, preview).await,
        }
    }

    /// Sends the email `kind` for `request` (with `preview`, its sample: a test email).
    async fn send(&self, request: &EmailRequest, kind: &str, preview: bool) -> Result<(), Failure> {
        let message = self
            .compose(request, kind, preview)
            .await?
            .message(&self.from, &request.email, &request.event_id)
            .map_err(HandlerError::Permanent)?;
        // Recorded before the SMTP exchange: a crash from here on leaves the delivery in doubt.
        store::set_status(&writer(&self.db), &request.event_id, Status::Sending).await.map_err(HandlerError::from)?;
        let span = tracing::info_span!("smtp.send", otel.kind = "client", %kind);
        // Servers often quote the recipient in their reply; errors go to logs, so mask it.
        let masked = |e: SendError| e.to_string().replace(&request.email, &email(&request.email).to_string());
        self.mailer.send(message, &request.event_id).instrument(span).await.map_err(|e| match e {
            SendError::Rejected { recipient: true, .. } => Failure::Undeliverable(masked(e)),
            SendError::Rejected { .. } => Failure::Rejected(masked(e)),
            SendError::Transient(_) => Failure::Handler(HandlerError::Retry(masked(e))),
        })
    }

    /// A token (and for verification a code) from auth-service, for `request`'s email (with
    /// `preview`, a sample: nothing is issued).
    async fn issue(
        &self,
        request: &EmailRequest,
        purpose: TokenPurpose,
        preview: bool,
    ) -> Result<IssueVerificationTokenResponse, Failure> {
        let mut auth = self.auth.clone();
        let issue = auth.issue_verification_token(IssueVerificationTokenRequest {
            user_id: request.user_id.clone(),
            email: request.email.clone(),
            // A registration (first, or again while unverified) voids the links and codes of
            // earlier ones; an email of an earlier one is not sent.
            registration_event_id: request.registration_event_id.clone(),
            purpose: purpose as i32,
            preview,
        });
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = "verimail.auth.v1.AuthService/IssueVerificationToken",
            otel.kind = "client",
            rpc.system = "grpc",
        );
        Ok(tokio::time::timeout(self.send_timeout, issue.instrument(span))
            .await
            .map_err(|_| HandlerError::Retry(format!("auth-service: no answer within {:?}", self.send_timeout)))?
            .map_err(|status| match status.code() {
                tonic::Code::InvalidArgument => {
                    HandlerError::Permanent(format!("auth-service refused: {}", status.message())).into()
                }
                tonic::Code::FailedPrecondition if superseded(&status) => {
                    Failure::Rejected("not sent: a later registration of the address has its own email".into())
                }
                tonic::Code::FailedPrecondition if account_gone(&status) => {
                    Failure::Rejected("not sent: the account was deleted".into())
                }
                _ => HandlerError::Retry(format!("auth-service: {}", status.message())).into(),
            })?
            .into_inner())
    }

    /// The notice to the current address of a change, with the link that cancels or undoes it.
    async fn change_notice(&self, request: &EmailRequest, preview: bool) -> Result<crate::mail::Rendered, Failure> {
        let issued = self.issue(request, TokenPurpose::UndoEmailChange, preview).await?;
        let link = page_link(&self.public_base_url, "/email-change/undo", Some(&issued.token), &request.locale);
        let context = minijinja::context! {
            email => &request.email,
            new_email => &request.new_email,
            link => link,
            expires_at => &issued.expires_at,
        };
        Ok(self.render(request, "email_change_notice", &context)?)
    }

    /// The email `template` for `request`, in the user's language.
    fn render(
        &self,
        request: &EmailRequest,
        template: &str,
        content: &impl serde::Serialize,
    ) -> Result<crate::mail::Rendered, HandlerError> {
        self.templates.render(template, &request.locale, content).map_err(HandlerError::Permanent)
    }

    /// The email `kind` (an event type; `by_email_change` for the notice of an attempt to move
    /// an account to a taken address) as a send to `to` would render it in `locale`, with a
    /// sample link and code: nothing is issued, recorded or sent.
    pub async fn preview(
        &self,
        kind: &str,
        by_email_change: bool,
        to: &str,
        locale: &str,
    ) -> Result<crate::mail::Rendered, EmailError> {
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
    ) -> Result<store::delivery::Model, EmailError> {
        if suppression::active(&self.db, &self.address_key, to).await?.is_some() {
            return Err(EmailError::Suppressed);
        }
        let event_id = uuid::Uuid::now_v7().to_string();
        let request = sample_request(event_id.clone(), by_email_change, to, locale);
        let recorded = format!("{TEST_KIND}{kind}");
        let txn = begin_write(&self.db).await?;
        store::start_attempt(&txn, &event_id, &request.user_id, to, &recorded, locale, &self.instance).await?;
        txn.commit().await?;
        let (status, error) = match self.send(&request, kind, true).await {
            Ok(()) => (Status::Sent, None),
            Err(failure) => (Status::Failed, Some(failure.reason())),
        };
        store::finish(&writer(&self.db), &event_id, status, error).await?;
        tracing::info!(%event_id, to = %email(to), %kind, ?status, "test email");
        store::get(&self.db, &event_id).await?.ok_or(EmailError::NotFound(event_id))
    }

    /// A token and a code from auth-service, in the verification email.
    async fn verification_email(
        &self,
        request: &EmailRequest,
        kind: &str,
        preview: bool,
    ) -> Result<crate::mail::Rendered, Failure> {
        let purpose = match kind {
            subjects::USERS_EMAIL_CHANGE_REQUESTED => TokenPurpose::VerifyEmailChange,
            _ => TokenPurpose::VerifyEmail,
        };
        let issued = self.issue(request, purpose, preview).await?;
        let content = VerificationEmail {
            email: &request.email,
            link: page_link(&self.public_base_url, "/verify-email", Some(&issued.token), &request.locale),
            expires_at: &issued.expires_at,
            code: &issued.code,
            code_expires_at: &issued.code_expires_at,
            code_page: page_link(&self.public_base_url, "/verify-code", None, &request.locale),
            kind,
        };
        Ok(self.render(request, "verification", &content)?)
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
        registration_event_id: String::new(),
        new_email: "new-address@example.com".into(),
        by_email_change,
        locale: locale.to_owned(),
    }
}

/// How an attempt ended short of sending.
enum Failure {
    /// Not sent, for good: the SMTP server refused the message, or there is nothing to send.
    Rejected(String),
    /// The recipient's server said the address does not take mail (550, 551, 553, 5.1.x).
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

/// Whether auth-service refused because the account was deleted.
fn account_gone(status: &tonic::Status) -> bool {
    use verimail_proto::reasons;
    matches!(reasons::of(status).as_str(), reasons::ACCOUNT_EXPIRED | reasons::ACCOUNT_DELETED)
}

/// Whether auth-service refused because a later registration of the user had its email.
fn superseded(status: &tonic::Status) -> bool {
    verimail_proto::reasons::of(status) == verimail_proto::reasons::REGISTRATION_SUPERSEDED
}

/// An email to `email` for `user_id`, asked for by `event_id`, of `registration_event_id`.
fn plain(
    event_id: String,
    user_id: String,
    email: String,
    registration_event_id: String,
    locale: String,
) -> EmailRequest {
    EmailRequest {
        event_id,
        user_id,
        email,
        registration_event_id,
        new_email: String::new(),
        by_email_change: false,
        locale,
    }
}

fn decode(delivery: &Delivery) -> Result<Option<EmailRequest>, HandlerError> {
    let undecodable = |e: prost::DecodeError| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
    let request = match delivery.subject.as_str() {
        subjects::USERS_REGISTERED => {
            let e = UserRegistered::decode(delivery.payload.clone()).map_err(undecodable)?;
            let registration_event_id = e.event_id.clone();
            plain(e.event_id, e.user_id, e.email, registration_event_id, e.locale)
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
        _ => return Ok(None),
    };
    if request.event_id.is_empty() {
        return Err(HandlerError::Permanent("event without event_id".into()));
    }
    Ok(Some(request))
}
