//! The ops view: what became of every email, and one more attempt where it failed. Every
//! RPC here is for operators (the admin credential).

use crate::courier::Courier;
use crate::error::EmailError;
use crate::store::{self, Status, delivery};
use std::sync::Arc;
use tonic::{Request, Response, Status as GrpcStatus};
use verimail_proto::email::v1::{self as pb, email_service_server::EmailService};
use verimail_server::address::Email;
use verimail_server::admin::AdminCredential;
use verimail_server::paging::Page;
use verimail_server::rfc3339;

pub struct EmailGrpc {
    pub courier: Arc<Courier>,
    pub admin: AdminCredential,
}

type GrpcResult<T> = Result<Response<T>, GrpcStatus>;

#[tonic::async_trait]
impl EmailService for EmailGrpc {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> GrpcResult<pb::ListDeliveriesResponse> {
        self.admin.require(&request)?;
        let request = request.into_inner();
        let user_id = request.user_id.trim();
        let user_id = (!user_id.is_empty())
            .then(|| uuid::Uuid::parse_str(user_id).map(|id| id.to_string()))
            .transpose()
            .map_err(|_| EmailError::invalid("user_id", "must be a UUID"))?;
        // A filter: empty means every address.
        let email = match request.email.trim() {
            "" => String::new(),
            raw => Email::parse(raw).map_err(|reason| EmailError::invalid("email", reason))?.as_str().to_owned(),
        };
        let status = match request.status() {
            pb::DeliveryStatus::Unspecified => None,
            pb::DeliveryStatus::Pending => Some(Status::Pending),
            pb::DeliveryStatus::Sent => Some(Status::Sent),
            pb::DeliveryStatus::Failed => Some(Status::Failed),
            pb::DeliveryStatus::Parked => Some(Status::Parked),
            pb::DeliveryStatus::Retrying => Some(Status::Retrying),
            pb::DeliveryStatus::Sending => Some(Status::Sending),
        };
        let filters = [user_id.as_deref().unwrap_or_default(), &email, &request.status.to_string()];
        let page = Page::parse(request.page_size, &request.page_token, 20, 100, &filters)?;
        // A deleted user's deliveries keep only the address's keyed hash: found by it too.
        let recipient = (!email.is_empty()).then(|| vec![self.courier.address_key.erased(&email), email]);
        let filters = store::Filters { user_id, recipient, status };
        let rows = store::list(&self.courier.db, &filters, page.after.as_deref(), page.fetch())
            .await
            .map_err(EmailError::from)?;
        let (rows, next_page_token) = page.finish(rows, |row| &row.event_id);
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_delivery(&self, request: Request<pb::GetDeliveryRequest>) -> GrpcResult<pb::GetDeliveryResponse> {
        self.admin.require(&request)?;
        let event_id = event_id(&request.into_inner().event_id)?;
        let row = store::get(&self.courier.db, &event_id).await.map_err(EmailError::from)?;
        let row = row.ok_or(EmailError::NotFound(event_id))?;
        Ok(Response::new(pb::GetDeliveryResponse { delivery: Some(to_proto(row)) }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> GrpcResult<pb::RetryDeliveryResponse> {
        self.admin.require(&request)?;
        let event_id = event_id(&request.into_inner().event_id)?;
        let row = self.courier.retry(&event_id).await?;
        Ok(Response::new(pb::RetryDeliveryResponse { delivery: Some(to_proto(row)) }))
    }
}

/// An event id as the RPCs take it: a UUID.
fn event_id(raw: &str) -> Result<String, EmailError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|id| id.to_string())
        .map_err(|_| EmailError::invalid("event_id", "must be a UUID"))
}

fn to_proto(row: delivery::Model) -> pb::Delivery {
    pb::Delivery {
        event_id: row.event_id,
        user_id: row.user_id,
        recipient: row.recipient,
        kind: row.kind,
        status: match row.status {
            Status::Pending => pb::DeliveryStatus::Pending,
            Status::Sent => pb::DeliveryStatus::Sent,
            Status::Sending => pb::DeliveryStatus::Sending,
            Status::Retrying => pb::DeliveryStatus::Retrying,
            Status::Failed => pb::DeliveryStatus::Failed,
            Status::Parked => pb::DeliveryStatus::Parked,
        } as i32,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        last_error: row.last_error.unwrap_or_default(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        sent_at: row.sent_at.map(rfc3339).unwrap_or_default(),
        handled_by: row.handled_by.unwrap_or_default(),
    }
}
