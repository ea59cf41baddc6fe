//! Metrics in the Prometheus (OpenMetrics) text format at `/metrics` on each process's
//! `METRICS_ADDR`, with prometheus-client. One registry per process, in which each crate
//! registers the families it fills ([`register`]): here the RPCs and HTTP requests every server
//! answers; the event backbone's outbox and consumers in `verimail-events`; each service's own
//! (registrations, verifications, emails) in that service.

use crate::shutdown::Shutdown;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use std::pin::Pin;
use std::sync::{LazyLock, Mutex};
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

pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency histograms from 0.5 ms to about 16 s, doubling.
pub fn latency_histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)))
}

/// This process's registry: every family registered here is rendered at `/metrics`.
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::with_prefix("verimail")));

/// Registers `metric` as `verimail_<name>` and returns it (a family is a handle: clones share
/// their values). Each crate registers its own families once, from a `LazyLock`.
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    let mut registry = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    registry.register(name, help, metric.clone());
    metric
}

/// The text exposition of every family registered so far.
pub fn render() -> String {
    LazyLock::force(&METRICS);
    let registry = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(%error, "metrics could not be rendered");
    }
    text
}

/// The families every server has: its RPCs (services) or HTTP requests (the gateway).
pub struct Metrics {
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_duration: Histograms<MethodLabel>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<MethodLabel>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    rpc_requests: register("rpc_requests", "gRPC calls answered, by method and status code", Family::default()),
    rpc_duration: register("rpc_duration_seconds", "Time to answer a gRPC call, by method", latency_histograms()),
    http_requests: register("http_requests", "HTTP requests answered, by method, route and status", Family::default()),
    http_duration: register(
        "http_duration_seconds",
        "Time to answer an HTTP request, by method and route",
        latency_histograms(),
    ),
});

/// This process's server metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Binds `METRICS_ADDR` (`off` serves no metrics).
pub async fn bind(addr: &str) -> Result<Option<TcpListener>, crate::config::ConfigError> {
    if addr.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    crate::config::bind("METRICS_ADDR", addr).await.map(Some)
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], render())
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
