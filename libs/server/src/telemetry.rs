//! Logs and traces, shared by every binary.
//!
//! Logs: `RUST_LOG` picks what is shown; `LOG_FORMAT=json` writes one JSON object per line
//! (human-readable text otherwise). Every line inside a request or event handler names the
//! spans it is in, and the outermost carries `trace_id`.
//!
//! Email addresses appear in logs masked (`k***@example.com`); `LOG_EMAIL_ADDRESSES=full`
//! shows them whole, for debugging a delivery. Tokens, codes and passwords are never logged.
//!
//! Traces: OpenTelemetry through `tracing-opentelemetry`. Trace context (W3C `traceparent`)
//! always flows, through gRPC metadata, NATS message headers and outbox rows, so trace ids in
//! logs join up across services; spans are exported over OTLP/gRPC only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. The other
//! standard `OTEL_*` variables (service name, sampler, batch delay) apply as the SDK reads them.

use crate::config::Vars;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::sync::OnceLock;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// `LOG_EMAIL_ADDRESSES=full`: log email addresses whole.
static FULL_EMAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An email address as a log line shows it: see [`email`].
pub struct LoggedEmail<'a>(&'a str);

/// `address` for a log field: the first character of the local part and the domain
/// (`k***@example.com`), enough to tell deliveries to one provider apart without naming
/// anyone; whole when `LOG_EMAIL_ADDRESSES=full`.
pub fn email(address: &str) -> LoggedEmail<'_> {
    LoggedEmail(address)
}

impl std::fmt::Display for LoggedEmail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if FULL_EMAILS.load(std::sync::atomic::Ordering::Relaxed) {
            return f.write_str(self.0);
        }
        match self.0.rsplit_once('@') {
            Some((local, domain)) => {
                if let Some(first) = local.chars().next().filter(|c| c.is_alphanumeric()) {
                    write!(f, "{first}")?;
                }
                write!(f, "***@{domain}")
            }
            None => f.write_str("***"),
        }
    }
}

/// Installs logging and tracing for `service` once per process; later calls (tests start
/// several apps in one process) do nothing. Call it inside the Tokio runtime: the OTLP
/// exporter's gRPC client needs it.
pub fn init(service: &'static str, vars: &Vars) {
    PROVIDER.get_or_init(|| {
        let provider = tracer_provider(service, vars);
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn,h2=warn,tower=warn"));
        let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
        let json = vars.var("LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
        let registry = tracing_subscriber::registry().with(filter).with(traces);
        let _ = match json {
            true => registry.with(tracing_subscriber::fmt::layer().json().with_span_list(true)).try_init(),
            false => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        };
        match vars.var("LOG_EMAIL_ADDRESSES").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("masked") => {}
            Some("full") => {
                FULL_EMAILS.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("LOG_EMAIL_ADDRESSES=full: email addresses are logged whole; for debugging only");
            }
            Some(other) => tracing::warn!(value = other, "LOG_EMAIL_ADDRESSES is `masked` or `full`; masking"),
        }
        provider
    });
}

fn tracer_provider(service: &'static str, vars: &Vars) -> SdkTracerProvider {
    let mut resource = opentelemetry_sdk::Resource::builder();
    if vars.var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    let endpoint = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .into_iter()
        .find_map(|name| vars.var(name));
    if let Some(endpoint) = endpoint {
        // The exporter reads the endpoint (and timeout, headers) from the same variables.
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: cannot export traces: {e}"),
        }
    }
    builder.build()
}

/// Exports the spans still buffered; call before the process exits.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// The W3C trace-context fields: what crosses a process boundary.
const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// `span`'s trace context as header fields (`traceparent`, and `tracestate` when set).
pub fn carrier(span: &Span) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    fields
}

/// The current span's `traceparent`, for storing beside work done later (an outbox row).
pub fn current_traceparent() -> Option<String> {
    carrier(&Span::current()).remove("traceparent")
}

/// Makes `span` a child of the trace context that `get` reads from a carrier (gRPC metadata,
/// HTTP or NATS headers, a stored `traceparent`), and records its `trace_id` field so log
/// lines carry it. Without a valid context the span starts a new trace.
pub fn continue_trace(span: &Span, get: impl Fn(&str) -> Option<String>) {
    let parent = extract(get);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
}

/// [`continue_trace`] from HTTP headers (an HTTP request, or a gRPC call's metadata).
pub fn continue_trace_from_headers(span: &Span, headers: &http::HeaderMap) {
    continue_trace(span, |field| headers.get(field).and_then(|v| v.to_str().ok()).map(str::to_owned));
}

/// The trace context `get` reads from a carrier; invalid when it holds none.
fn extract(get: impl Fn(&str) -> Option<String>) -> opentelemetry::Context {
    let carried: HashMap<String, String> =
        FIELDS.iter().filter_map(|field| get(field).map(|value| (field.to_string(), value))).collect();
    TraceContextPropagator::new().extract(&carried)
}

/// Links `span` to another trace (the registration a click finishes), from its `traceparent`.
pub fn link_to(span: &Span, traceparent: &str) {
    let linked = extract(|field| (field == "traceparent").then(|| traceparent.to_owned()));
    let context = linked.span().span_context().clone();
    if context.is_valid() {
        span.add_link(context);
    }
}

/// The server span of one gRPC call, a child of the caller's trace: tonic's `trace_fn`.
pub fn grpc_server_span(request: &http::Request<()>) -> Span {
    let method = request.uri().path().trim_start_matches('/').to_owned();
    let span = tracing::info_span!(
        "grpc",
        otel.name = %method,
        otel.kind = "server",
        rpc.system = "grpc",
        trace_id = tracing::field::Empty,
        // The named service that called, once its credential is checked (crate::callers).
        caller = tracing::field::Empty,
    );
    continue_trace_from_headers(&span, request.headers());
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked_down_to_a_letter_and_the_domain() {
        assert_eq!(email("kim@example.com").to_string(), "k***@example.com");
        assert_eq!(email("a@example.com").to_string(), "a***@example.com");
        assert_eq!(email("\"x y\"@example.com").to_string(), "***@example.com");
        assert_eq!(email("no-at-sign").to_string(), "***");
    }

    #[test]
    fn a_trace_continues_from_its_traceparent_and_a_fresh_one_starts_without() {
        init("kit-tests", &Vars::env());
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = tracing::info_span!("child", trace_id = tracing::field::Empty);
        continue_trace(&span, |field| (field == "traceparent").then(|| parent.to_owned()));
        let carried = carrier(&span)["traceparent"].clone();
        assert!(carried.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{carried}");
        assert!(!carried.contains("00f067aa0ba902b7"), "the child has its own span id: {carried}");

        let root = tracing::info_span!("root", trace_id = tracing::field::Empty);
        continue_trace(&root, |_| Some("garbage".to_owned()));
        let fresh = carrier(&root)["traceparent"].clone();
        assert!(!fresh.contains("4bf92f3577b34da6a3ce929d0e0e4736") && fresh.len() == 55, "{fresh}");
    }
}
