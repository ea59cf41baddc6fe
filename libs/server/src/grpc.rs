//! gRPC plumbing: the server every service runs (its own service plus health and reflection,
//! v1 and v1alpha), client channels to other services, and precise error statuses.

use crate::shutdown::Shutdown;
use crate::tls::GrpcTls;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The largest request message a server decodes: our contracts' requests are an address, a
/// password of at most 128 characters, a token of a few hundred bytes, a page token. Bigger
/// is refused (OUT_OF_RANGE) before any handler runs.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Streams (calls) one HTTP/2 connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// The longest a call may run before the server answers CANCELLED: far above any of ours.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `routes` (the service's own gRPC services) with grpc.health.v1 and reflection on
/// `listener` until `shutdown` fires, then finishes the calls in flight. `served` names the
/// services health and reflection report.
async fn serve(
    listener: TcpListener,
    routes: Routes,
    served: &[&'static str],
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tls: &GrpcTls,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
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
    let reflection_v1 = reflection().build_v1()?.max_decoding_message_size(MAX_MESSAGE_BYTES);
    let reflection_v1alpha = reflection().build_v1alpha()?.max_decoding_message_size(MAX_MESSAGE_BYTES);
    let health_service = health_service.max_decoding_message_size(MAX_MESSAGE_BYTES);
    let routes = routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);
    let mut server = tonic::transport::Server::builder()
        .trace_fn(crate::telemetry::grpc_server_span)
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .timeout(REQUEST_TIMEOUT);
    if let Some(tls) = tls.server() {
        server = server.tls_config(tls)?;
    }
    server
        .layer(crate::metrics::RpcMetricsLayer)
        .add_routes(routes)
        // TCP_NODELAY: an answer written in several small segments otherwise waits for the
        // caller's delayed ACK (40 ms on Linux) before its last one leaves.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.wait().await
        })
        .await?;
    Ok(())
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

/// A status with a machine-readable reason (google.rpc.ErrorInfo of `domain`) beside the
/// message: clients tell cases apart by the reason, never by the message.
pub fn with_reason(code: Code, domain: &str, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, domain, std::collections::HashMap::<String, String>::new()),
    )
}

/// The field a status names in its BadRequest details, if any (for clients and tests).
pub fn bad_request_field(status: &Status) -> Option<String> {
    status.get_details_bad_request().and_then(|details| details.field_violations.first().map(|v| v.field.clone()))
}

/// A background task that runs beside the gRPC server (an outbox relay, a consumer). It
/// watches the same [`Shutdown`] and returns once it has finished its work in flight.
pub type Background = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long background tasks may take to drain after a shutdown signal before they are cut.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// Everything a service runs.
pub struct Service {
    pub listener: TcpListener,
    /// The service's own gRPC services.
    pub routes: Routes,
    /// Their names, for health and reflection.
    pub served: Vec<&'static str>,
    pub background: Vec<Background>,
    /// What it cannot work without (its database, NATS, an SMTP server): health says
    /// NOT_SERVING while any of them fails. Each check's probe runs among `background`.
    pub checks: Vec<Check>,
    /// Mutual TLS when certificates are configured.
    pub tls: GrpcTls,
    /// Where `/metrics` is served (`METRICS_ADDR`), unless turned off.
    pub metrics: Option<TcpListener>,
}

/// A dependency checked in the background, whose last result health reads: the RPC never
/// waits on it, and the dependency sees one probe per interval however often health is asked.
#[derive(Clone)]
pub struct Check {
    pub name: &'static str,
    up: tokio::sync::watch::Receiver<bool>,
}

impl Check {
    /// Probes every `every` (the first at once) until `shutdown`; up until a probe fails.
    pub fn every<F, Fut>(name: &'static str, every: Duration, shutdown: Shutdown, probe: F) -> (Check, Background)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let (report, up) = tokio::sync::watch::channel(true);
        let task = async move {
            loop {
                let result = probe().await;
                let was_up = report.send_replace(result.is_ok());
                match result {
                    Err(error) if was_up => tracing::warn!(dependency = name, %error, "health check failed"),
                    Ok(()) if !was_up => tracing::info!(dependency = name, "health check passes again"),
                    _ => {}
                }
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        };
        (Check { name, up }, Box::pin(task))
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}

/// Runs a whole service until `shutdown`: the gRPC server with health (following the
/// service's checks) and reflection, and the background tasks beside it. On
/// shutdown, health turns NOT_SERVING, the server finishes its calls in flight, and the
/// background tasks drain (stop pulling, finish what they hold, flush the outbox) for at
/// most [`DRAIN_LIMIT`].
pub async fn run_service(service: Service, shutdown: Shutdown) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // Built only once NATS and the database answered, so it starts serving.
    for name in service.served.iter().copied() {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let tasks: Vec<_> = service.background.into_iter().map(tokio::spawn).collect();
    if let Some(listener) = service.metrics {
        tokio::spawn(crate::metrics::serve(listener, shutdown.clone()));
    }
    let monitor = tokio::spawn(watch_health(health, service.served.clone(), service.checks, shutdown.clone()));
    let result = serve(service.listener, service.routes, &service.served, health_service, &service.tls, shutdown).await;
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(limit = ?DRAIN_LIMIT, "background work did not drain in time; stopping anyway");
    }
    let _ = monitor.await;
    result
}

/// SERVING while every check passes, NOT_SERVING otherwise and from the shutdown signal on.
/// Reads the checks' last results once a second.
async fn watch_health(
    health: tonic_health::server::HealthReporter,
    served: Vec<&'static str>,
    checks: Vec<Check>,
    shutdown: Shutdown,
) {
    use tonic_health::ServingStatus;
    // run_service set SERVING before the first check.
    let mut last = ServingStatus::Serving;
    loop {
        let down: Vec<&str> = checks.iter().filter(|check| !check.is_up()).map(|check| check.name).collect();
        let status = if down.is_empty() { ServingStatus::Serving } else { ServingStatus::NotServing };
        if status != last {
            tracing::warn!(?down, ?status, "health changed");
            for name in served.iter().copied().chain([""]) {
                health.set_service_status(name, status).await;
            }
            last = status;
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    for name in served.iter().copied().chain([""]) {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
}
