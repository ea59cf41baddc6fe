//! Metrics in the Prometheus (OpenMetrics) text format at `/metrics` on each process's
//! `METRICS_ADDR`, with prometheus-client. One registry per process: each service fills the
//! families that concern it (user-service: registrations, hashes; auth-service:
//! verifications; email-service: emails; every service: RPCs; publishers: the outbox;
//! consumers: their lag).

use crate::shutdown::Shutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmailLabels {
    pub kind: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    pub method: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurableLabel {
    pub durable: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency histograms from 0.5 ms to about 16 s, doubling.
fn latency_histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)))
}

pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Histograms<MethodLabel>,
    /// The gateway: requests by method, route and HTTP status, and their durations.
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<MethodLabel>,
    /// user-service: `outcome` new or existing (an enumeration-safe answer to a taken address).
    pub registrations: Family<OutcomeLabel, Counter>,
    /// email-service: `outcome` sent, failed (rejected for good), retrying or parked.
    pub emails: Family<EmailLabels, Counter>,
    /// auth-service: `method` link or code; `outcome` verified, already_verified, expired,
    /// invalid or locked.
    pub verifications: Family<VerificationLabels, Counter>,
    pub outbox_backlog: Gauge,
    pub outbox_oldest_unsent_seconds: Gauge<f64, AtomicU64>,
    pub consumer_pending: Family<DurableLabel, Gauge>,
    /// Consumers: messages that could not be parked (left unacked to come back; alert on it).
    pub park_failures: Family<DurableLabel, Counter>,
    pub password_hashes_in_flight: Gauge,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("verimail");
        let rpc_requests = Family::default();
        registry.register("rpc_requests", "gRPC calls answered, by method and status code", rpc_requests.clone());
        let rpc_duration = latency_histograms();
        registry.register("rpc_duration_seconds", "Time to answer a gRPC call, by method", rpc_duration.clone());
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_duration = latency_histograms();
        registry.register(
            "http_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            http_duration.clone(),
        );
        let registrations = Family::default();
        registry.register("registrations", "RegisterUser calls that succeeded, by outcome", registrations.clone());
        let emails = Family::default();
        registry.register("emails", "Email delivery attempts, by kind and outcome", emails.clone());
        let verifications = Family::default();
        registry.register("verifications", "Verification attempts, by method and outcome", verifications.clone());
        let outbox_backlog = Gauge::default();
        registry.register("outbox_backlog", "Events written and not yet published", outbox_backlog.clone());
        let outbox_oldest_unsent_seconds = Gauge::default();
        registry.register(
            "outbox_oldest_unsent_seconds",
            "Age of the oldest unpublished event (0 when none)",
            outbox_oldest_unsent_seconds.clone(),
        );
        let consumer_pending = Family::default();
        registry.register(
            "consumer_pending",
            "Messages JetStream holds for a durable consumer that it has not delivered (num_pending)",
            consumer_pending.clone(),
        );
        let park_failures = Family::default();
        registry.register(
            "park_failures",
            "Messages a consumer gave up on that could not be parked: left unacked, they come back and parking is tried again",
            park_failures.clone(),
        );
        let password_hashes_in_flight = Gauge::default();
        registry.register(
            "password_hashes_in_flight",
            "argon2id hashes being computed now",
            password_hashes_in_flight.clone(),
        );
        Metrics {
            rpc_requests,
            rpc_duration,
            http_requests,
            http_duration,
            registrations,
            emails,
            verifications,
            outbox_backlog,
            outbox_oldest_unsent_seconds,
            consumer_pending,
            park_failures,
            password_hashes_in_flight,
            registry,
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    pub fn verification(&self, method: &'static str, outcome: &'static str) {
        self.verifications.get_or_create(&VerificationLabels { method, outcome }).inc();
    }
}

/// Binds `METRICS_ADDR` (`off` serves no metrics).
pub async fn bind(addr: &str) -> Result<Option<TcpListener>, crate::config::ConfigError> {
    if addr.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    crate::grpc::bind("METRICS_ADDR", addr).await.map(Some)
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                metrics().render(),
            )
        }),
    );
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.wait().await }).await {
        tracing::warn!(error = %e, "metrics server stopped");
    }
}

/// The `method` label of calls to paths no service here serves.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Counts and times every gRPC call a server answers: a tower layer for tonic's server. The
/// status is read from the response headers, where tonic puts it for every error; a response
/// without it carries its status in the trailers, after a message, which for a unary call
/// means OK. A path the server does not serve (answered UNIMPLEMENTED, which no method of
/// ours answers) is labelled `unknown`: whoever calls cannot grow the label set.
#[derive(Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics(inner)
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S>(S);

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let answer = self.0.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Unknown,
            };
            let method = if code == tonic::Code::Unimplemented { UNKNOWN_METHOD.to_owned() } else { method };
            let m = metrics();
            m.rpc_duration
                .get_or_create(&MethodLabel { method: method.clone() })
                .observe(started.elapsed().as_secs_f64());
            m.rpc_requests.get_or_create(&RpcLabels { method, code: format!("{code:?}") }).inc();
            result
        })
    }
}
