//! gRPC plumbing: the server every service runs (its own service plus health and reflection,
//! v1 and v1alpha), client channels to other services, and precise error statuses.

use crate::config::ConfigError;
use crate::shutdown::Shutdown;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Serves `routes` (the service's own gRPC services) with grpc.health.v1 and reflection on
/// `listener` until `shutdown` fires. `served` names the services health reports as SERVING.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    served: &[&str],
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in served {
        health.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
    }
    // Reflection lists only what this server answers, though it can describe every type.
    let reflection = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(verimail_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.BadRequest, so grpcurl can print the details of INVALID_ARGUMENT.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        served.iter().fold(builder, |builder, name| builder.with_service_name(*name))
    };
    let reflection_v1 = reflection().build_v1().expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the embedded descriptor sets are valid");
    let routes = routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move { shutdown.wait().await })
        .await
}

/// A channel to another service at `addr` (`host:port` or a URL). It connects lazily, so
/// services can start in any order; a call while the peer is down fails with UNAVAILABLE.
pub fn channel(variable: &'static str, addr: &str) -> Result<Channel, ConfigError> {
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(url).map_err(|e| ConfigError::new(variable, e.to_string()))?;
    Ok(endpoint.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(10)).connect_lazy())
}

/// INVALID_ARGUMENT naming the field, with google.rpc.BadRequest details for clients that read them.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// The field a status names in its BadRequest details, if any (for clients and tests).
pub fn bad_request_field(status: &Status) -> Option<String> {
    status.get_details_bad_request().and_then(|details| details.field_violations.first().map(|v| v.field.clone()))
}

/// Binds a listener, with the variable's name in the error.
pub async fn bind(variable: &'static str, addr: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).await.map_err(|e| ConfigError::new(variable, format!("cannot listen on {addr}: {e}")))
}

/// A background task that runs beside the gRPC server (an outbox relay, a consumer).
pub type Background = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a whole service: its gRPC server until `shutdown`, with its background tasks beside
/// it, which are stopped when the server has drained.
pub async fn run_service(
    listener: TcpListener,
    routes: Routes,
    served: &[&str],
    background: Vec<Background>,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let tasks: Vec<_> = background.into_iter().map(tokio::spawn).collect();
    let result = serve(listener, routes, served, shutdown).await;
    for task in tasks {
        task.abort();
    }
    result
}
