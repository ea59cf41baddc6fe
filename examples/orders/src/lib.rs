//! An "orders" service that only users with a verified address may call: the whole of what a
//! team adds to its own service to act on Verimail's verification, offline, per call.

pub mod pb {
    tonic::include_proto!("example.orders.v1");
}

use pb::orders_server::{Orders, OrdersServer};
use tonic::{Request, Response, Status};
use verimail_client::{Claims, RequireVerified, RequireVerifiedService, TokenVerifier};

pub struct PlaceOrders;

#[tonic::async_trait]
impl Orders for PlaceOrders {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        // Put there by RequireVerified: the caller, with a verified address.
        let caller =
            request.extensions().get::<Claims>().cloned().ok_or_else(|| Status::unauthenticated("no caller"))?;
        if request.get_ref().item.trim().is_empty() {
            return Err(Status::invalid_argument("item: is required"));
        }
        Ok(Response::new(pb::PlaceOrderResponse {
            order_id: uuid::Uuid::now_v7().to_string(),
            user_id: caller.user_id,
            email: caller.email,
        }))
    }
}

/// The orders service behind `RequireVerified`, ready for `Server::builder().add_service`.
pub fn service(verifier: TokenVerifier) -> RequireVerifiedService<OrdersServer<PlaceOrders>> {
    use tower::Layer;
    RequireVerified::new(verifier).layer(OrdersServer::new(PlaceOrders))
}

/// Serves the orders service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    verifier: TokenVerifier,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service(verifier))
        // TCP_NODELAY, or small answers wait for the caller's delayed ACK.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
