//! The ops view: what became of every email, and one more attempt where it failed. Every
//! RPC here is for operators (the admin credential).

use crate::courier::Courier;
use crate::courier::ledger::{Bounce, Delivery, DeliveryFilter, DeliveryStatus};
use crate::error::EmailError;
use crate::suppression::Suppression;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use verimail_proto::email::v1::{self as pb, email_service_server::EmailService};
use verimail_proto::subjects;
use verimail_server::address::Email;
use verimail_server::paging::Page;
use verimail_server::rfc3339;

/// Every RPC is for operators: `app` puts the admin credential's guard in front of the
/// service, once for all of them.
pub struct EmailGrpc {
    pub courier: Arc<Courier>,
}

type GrpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl EmailService for EmailGrpc {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> GrpcResult<pb::ListDeliveriesResponse> {
        let request = request.into_inner();
        let user_id = request.user_id.trim();
        let user_id = (!user_id.is_empty())
            .then(|| uuid::Uuid::parse_str(user_id).map(|id| id.to_string()))
            .transpose()
            .map_err(|_| EmailError::invalid("user_id", "must be a UUID"))?;
        // A filter: empty means every address.
        let email = email_filter(&request.email)?;
        let status = match request.status() {
            pb::DeliveryStatus::Unspecified => None,
            pb::DeliveryStatus::Pending => Some(DeliveryStatus::Pending),
            pb::DeliveryStatus::Sent => Some(DeliveryStatus::Sent),
            pb::DeliveryStatus::Failed => Some(DeliveryStatus::Failed),
            pb::DeliveryStatus::Parked => Some(DeliveryStatus::Parked),
            pb::DeliveryStatus::Retrying => Some(DeliveryStatus::Retrying),
            pb::DeliveryStatus::Sending => Some(DeliveryStatus::Sending),
            pb::DeliveryStatus::Bounced => Some(DeliveryStatus::Bounced),
            pb::DeliveryStatus::Complained => Some(DeliveryStatus::Complained),
            pb::DeliveryStatus::Suppressed => Some(DeliveryStatus::Suppressed),
        };
        let filters = [user_id.as_deref().unwrap_or_default(), &email, &request.status.to_string()];
        let page = Page::parse(request.page_size, &request.page_token, 20, 100, &filters)?;
        let filter = DeliveryFilter { user_id, email: (!email.is_empty()).then_some(email), status };
        let rows =
            self.courier.deliveries(filter, page.after.as_deref(), page.fetch()).await.map_err(EmailError::from)?;
        let (rows, next_page_token) = page.finish(rows, |delivery| &delivery.row.event_id);
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery(&self, request: Request<pb::GetDeliveryRequest>) -> GrpcResult<pb::GetDeliveryResponse> {
        let event_id = event_id(&request.into_inner().event_id)?;
        let found = self.courier.delivery(&event_id).await.map_err(EmailError::from)?;
        let delivery = found.ok_or(EmailError::NotFound(event_id))?;
        Ok(Response::new(pb::GetDeliveryResponse { delivery: Some(to_proto(delivery)) }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> GrpcResult<pb::RetryDeliveryResponse> {
        let event_id = event_id(&request.into_inner().event_id)?;
        let delivery = self.courier.retry(&event_id).await?;
        Ok(Response::new(pb::RetryDeliveryResponse { delivery: Some(to_proto(delivery)) }))
    }

    async fn preview_email(&self, request: Request<pb::PreviewEmailRequest>) -> GrpcResult<pb::PreviewEmailResponse> {
        let request = request.into_inner();
        let (kind, by_email_change) = email_kind(request.kind())?;
        let asked = locale(&request.locale)?;
        let (to, locale) = match request.user_id.trim() {
            "" => ("ada@example.com".to_owned(), asked.unwrap_or_default()),
            id => {
                let id = uuid::Uuid::parse_str(id).map_err(|_| EmailError::invalid("user_id", "must be a UUID"))?;
                let latest = self.courier.latest_for_user(&id.to_string()).await.map_err(EmailError::from)?;
                let (to, locale) = latest.ok_or_else(|| EmailError::NoMailForUser(id.to_string()))?;
                (to, asked.or(locale).unwrap_or_default())
            }
        };
        let rendered = self.courier.preview(kind, by_email_change, &to, &locale).await?;
        Ok(Response::new(pb::PreviewEmailResponse {
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            locale: rendered.locale,
            to,
        }))
    }

    async fn send_test_email(
        &self,
        request: Request<pb::SendTestEmailRequest>,
    ) -> GrpcResult<pb::SendTestEmailResponse> {
        let request = request.into_inner();
        let (kind, by_email_change) = email_kind(request.kind())?;
        let locale = locale(&request.locale)?.unwrap_or_default();
        let to = Email::parse(&request.to).map_err(|reason| EmailError::invalid("to", reason))?;
        let delivery = self.courier.send_test(kind, by_email_change, to.as_str(), &locale).await?;
        Ok(Response::new(pb::SendTestEmailResponse { delivery: Some(to_proto(delivery)) }))
    }

    async fn list_suppressions(
        &self,
        request: Request<pb::ListSuppressionsRequest>,
    ) -> GrpcResult<pb::ListSuppressionsResponse> {
        let request = request.into_inner();
        let email = email_filter(&request.email)?;
        let filters = [email.as_str(), if request.include_removed { "all" } else { "active" }];
        let page = Page::parse(request.page_size, &request.page_token, 20, 100, &filters)?;
        let address = (!email.is_empty()).then_some(email.as_str());
        let active_only = !request.include_removed;
        let rows = self.courier.suppressions.list(address, active_only, page.after.as_deref(), page.fetch()).await;
        let rows = rows.map_err(EmailError::from)?;
        let (rows, next_page_token) = page.finish(rows, |row| &row.id);
        Ok(Response::new(pb::ListSuppressionsResponse {
            suppressions: rows.into_iter().map(suppression_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn remove_suppression(
        &self,
        request: Request<pb::RemoveSuppressionRequest>,
    ) -> GrpcResult<pb::RemoveSuppressionResponse> {
        let request = request.into_inner();
        let email = email_filter(&request.email)?;
        if email.is_empty() {
            return Err(EmailError::invalid("email", "is required").into());
        }
        let reason = request.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(EmailError::invalid("reason", "is required (at most 500 characters): say why").into());
        }
        let removed = self.courier.suppressions.lift(&email, reason).await?;
        Ok(Response::new(pb::RemoveSuppressionResponse { suppression: Some(suppression_to_proto(removed)) }))
    }
}

/// An address filter: empty means every address; otherwise a valid address, trimmed and
/// lower-cased.
fn email_filter(raw: &str) -> Result<String, EmailError> {
    match raw.trim() {
        "" => Ok(String::new()),
        raw => Ok(Email::parse(raw).map_err(|reason| EmailError::invalid("email", reason))?.as_str().to_owned()),
    }
}

fn bounce_to_proto(row: Bounce) -> pb::Bounce {
    pb::Bounce {
        class: row.class,
        status: row.status.unwrap_or_default(),
        diagnostic: row.diagnostic.unwrap_or_default(),
        received_at: rfc3339(row.received_at),
        text: row.text.unwrap_or_default(),
        reason: row.reason.unwrap_or_default(),
    }
}

fn suppression_to_proto(row: Suppression) -> pb::Suppression {
    pb::Suppression {
        email: row.address.unwrap_or(row.address_hash),
        reason: row.reason,
        delivery_id: row.delivery_id.unwrap_or_default(),
        user_id: row.user_id,
        detail: row.detail.unwrap_or_default(),
        created_at: rfc3339(row.created_at),
        removed_at: row.removed_at.map(rfc3339).unwrap_or_default(),
        removed_reason: row.removed_reason.unwrap_or_default(),
        bounce_reason: row.bounce_reason.unwrap_or_default(),
    }
}

/// An event id as the RPCs take it: a UUID.
fn event_id(raw: &str) -> Result<String, EmailError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| EmailError::invalid("event_id", "must be a UUID"))
}

fn to_proto(Delivery { row, bounces }: Delivery) -> pb::Delivery {
    pb::Delivery {
        event_id: row.event_id,
        user_id: row.user_id,
        recipient: row.recipient,
        kind: row.kind,
        status: match row.status {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Sent => pb::DeliveryStatus::Sent,
            DeliveryStatus::Sending => pb::DeliveryStatus::Sending,
            DeliveryStatus::Retrying => pb::DeliveryStatus::Retrying,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
            DeliveryStatus::Parked => pb::DeliveryStatus::Parked,
            DeliveryStatus::Bounced => pb::DeliveryStatus::Bounced,
            DeliveryStatus::Complained => pb::DeliveryStatus::Complained,
            DeliveryStatus::Suppressed => pb::DeliveryStatus::Suppressed,
        } as i32,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        last_error: row.last_error.unwrap_or_default(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        sent_at: row.sent_at.map(rfc3339).unwrap_or_default(),
        handled_by: row.handled_by.unwrap_or_default(),
        bounces: bounces.into_iter().map(bounce_to_proto).collect(),
    }
}

/// The event type that asks for an email of `kind`, and whether it is the notice of an attempt
/// to move another account (a sign-up notice otherwise).
fn email_kind(kind: pb::EmailKind) -> Result<(&'static str, bool), EmailError> {
    Ok(match kind {
        pb::EmailKind::Unspecified => return Err(EmailError::invalid("kind", "name an email kind")),
        pb::EmailKind::Verification => (subjects::USERS_REGISTERED, false),
        pb::EmailKind::VerificationResent => (subjects::USERS_VERIFICATION_REQUESTED, false),
        pb::EmailKind::EmailChangeVerification => (subjects::USERS_EMAIL_CHANGE_REQUESTED, false),
        pb::EmailKind::EmailChangeNotice => (subjects::USERS_EMAIL_CHANGE_NOTICE, false),
        pb::EmailKind::SignupAttempted => (subjects::USERS_SIGNUP_ATTEMPTED, false),
        pb::EmailKind::ChangeAttempted => (subjects::USERS_SIGNUP_ATTEMPTED, true),
        pb::EmailKind::PasswordReset => (subjects::USERS_PASSWORD_RESET_REQUESTED, false),
        pb::EmailKind::PasswordChanged => (subjects::USERS_PASSWORD_CHANGED, false),
    })
}

/// A request's optional language tag, canonical; INVALID_ARGUMENT naming `locale` otherwise.
fn locale(raw: &str) -> Result<Option<String>, EmailError> {
    verimail_server::locale::parse(raw).map_err(|e| EmailError::invalid("locale", e))
}

/// Webhook endpoints and their deliveries: for operators too (the same guard).
pub struct WebhookGrpc {
    pub webhooks: crate::webhooks::Webhooks,
}

#[tonic::async_trait]
impl pb::webhook_service_server::WebhookService for WebhookGrpc {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> GrpcResult<pb::CreateWebhookEndpointResponse> {
        let request = request.into_inner();
        let (endpoint, secret) = self.webhooks.create(&request.url, &request.event_types, &request.description).await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse { endpoint: Some(endpoint_to_proto(endpoint)), secret }))
    }

    async fn list_webhook_endpoints(
        &self,
        _request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> GrpcResult<pb::ListWebhookEndpointsResponse> {
        let endpoints = self.webhooks.endpoints().await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: endpoints.into_iter().map(endpoint_to_proto).collect(),
        }))
    }

    async fn set_webhook_endpoint_enabled(
        &self,
        request: Request<pb::SetWebhookEndpointEnabledRequest>,
    ) -> GrpcResult<pb::SetWebhookEndpointEnabledResponse> {
        let request = request.into_inner();
        let endpoint = self.webhooks.set_enabled(&endpoint_id(&request.id)?, request.enabled).await?;
        Ok(Response::new(pb::SetWebhookEndpointEnabledResponse { endpoint: Some(endpoint_to_proto(endpoint)) }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> GrpcResult<pb::DeleteWebhookEndpointResponse> {
        self.webhooks.delete(&endpoint_id(&request.into_inner().id)?).await?;
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> GrpcResult<pb::ListWebhookDeliveriesResponse> {
        use crate::store::webhook_deliveries::Status as Stored;
        let request = request.into_inner();
        let endpoint = endpoint_id(&request.endpoint_id)?;
        let status = match request.status() {
            pb::WebhookDeliveryStatus::Unspecified => None,
            pb::WebhookDeliveryStatus::Pending => Some(Stored::Pending),
            pb::WebhookDeliveryStatus::Delivered => Some(Stored::Delivered),
            pb::WebhookDeliveryStatus::Parked => Some(Stored::Parked),
        };
        let filters = [endpoint.as_str(), request.status().as_str_name()];
        let page = Page::parse(request.page_size, &request.page_token, 20, 100, &filters)?;
        let rows = self.webhooks.deliveries(&endpoint, status, page.after.as_deref(), page.fetch()).await?;
        let (rows, next_page_token) = page.finish(rows, |(row, _)| &row.id);
        let deliveries = rows
            .into_iter()
            .map(|(row, attempts)| pb::WebhookDelivery {
                status: match row.status {
                    Stored::Pending => pb::WebhookDeliveryStatus::Pending,
                    Stored::Delivered => pb::WebhookDeliveryStatus::Delivered,
                    Stored::Parked => pb::WebhookDeliveryStatus::Parked,
                } as i32,
                id: row.id,
                endpoint_id: row.endpoint_id,
                event_type: row.event_type,
                user_id: row.user_id,
                created_at: rfc3339(row.created_at),
                next_attempt_at: rfc3339(row.next_attempt_at),
                attempts: attempts
                    .into_iter()
                    .map(|a| pb::WebhookAttempt {
                        at: rfc3339(a.at),
                        http_status: a.http_status,
                        answer: a.answer,
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListWebhookDeliveriesResponse { deliveries, next_page_token }))
    }

    async fn replay_webhook_deliveries(
        &self,
        request: Request<pb::ReplayWebhookDeliveriesRequest>,
    ) -> GrpcResult<pb::ReplayWebhookDeliveriesResponse> {
        let request = request.into_inner();
        let endpoint = endpoint_id(&request.endpoint_id)?;
        let time = |field: &'static str, raw: &str| {
            chrono::DateTime::parse_from_rfc3339(raw.trim())
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| EmailError::invalid(field, "must be an RFC 3339 time, e.g. 2026-12-05T10:00:00Z"))
        };
        let (id, range) = match (request.delivery_id.trim(), request.since.trim(), request.until.trim()) {
            (id, "", "") if !id.is_empty() => (Some(id.to_owned()), None),
            ("", since, until) if !since.is_empty() && !until.is_empty() => {
                let (since, until) = (time("since", since)?, time("until", until)?);
                if since > until {
                    return Err(EmailError::invalid("until", "is before since").into());
                }
                (None, Some((since, until)))
            }
            _ => return Err(EmailError::invalid("delivery_id", "give one delivery_id, or since and until").into()),
        };
        let replayed = self.webhooks.replay(&endpoint, id.as_deref(), range).await?;
        Ok(Response::new(pb::ReplayWebhookDeliveriesResponse { replayed: i64::try_from(replayed).unwrap_or(i64::MAX) }))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> GrpcResult<pb::RotateWebhookSecretResponse> {
        const DAY: u64 = 24 * 3600;
        let request = request.into_inner();
        let keep = match request.previous_valid_seconds {
            ..0 => return Err(EmailError::invalid("previous_valid_seconds", "must not be negative").into()),
            0 => DAY,
            seconds => u64::try_from(seconds).unwrap_or(u64::MAX),
        };
        if keep > 30 * DAY {
            return Err(EmailError::invalid("previous_valid_seconds", "at most 30 days (2592000)").into());
        }
        let (endpoint, secret) =
            self.webhooks.rotate(&endpoint_id(&request.id)?, std::time::Duration::from_secs(keep)).await?;
        let previous_valid_until = endpoint.previous_until.map(rfc3339).unwrap_or_default();
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            endpoint: Some(endpoint_to_proto(endpoint)),
            secret,
            previous_valid_until,
        }))
    }
}

fn endpoint_to_proto(row: crate::store::webhook_endpoints::Model) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        id: row.id,
        url: row.url,
        event_types: row.event_types.split(' ').map(str::to_owned).collect(),
        description: row.description,
        enabled: row.enabled,
        created_at: rfc3339(row.created_at),
    }
}

/// An endpoint id as the RPCs take it: a UUID.
fn endpoint_id(raw: &str) -> Result<String, EmailError> {
    uuid::Uuid::parse_str(raw.trim()).map(|id| id.to_string()).map_err(|_| EmailError::invalid("id", "must be a UUID"))
}
