//! The ops view: what became of every email.

use crate::store::{Status, delivery};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tonic::{Request, Response, Status as GrpcStatus};
use verimail_kit::rfc3339;
use verimail_proto::email::v1::{self as pb, email_service_server::EmailService};

pub struct EmailGrpc {
    pub db: DatabaseConnection,
    pub credential: verimail_kit::internal::ServiceCredential,
}

#[tonic::async_trait]
impl EmailService for EmailGrpc {
    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, GrpcStatus> {
        self.credential.require(&request)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => 20,
            n @ 1..=100 => u64::from(n),
            _ => return Err(verimail_kit::grpc::invalid_argument("limit", "must be at most 100")),
        };
        let mut query = delivery::Entity::find();
        let user_id = request.user_id.trim();
        if !user_id.is_empty() {
            let user_id = uuid::Uuid::parse_str(user_id)
                .map_err(|_| verimail_kit::grpc::invalid_argument("user_id", "must be a UUID"))?;
            query = query.filter(delivery::Column::UserId.eq(user_id.to_string()));
        }
        let rows = query.order_by_desc(delivery::Column::CreatedAt).limit(limit).all(&self.db).await.map_err(|e| {
            tracing::error!(error = %e, "listing deliveries failed");
            GrpcStatus::unavailable("the email database is unavailable; retry later")
        })?;
        Ok(Response::new(pb::ListDeliveriesResponse { deliveries: rows.into_iter().map(to_proto).collect() }))
    }
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
