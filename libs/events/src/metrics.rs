//! The event backbone's metric families: the outbox's backlog and the consumers' lag and
//! parking failures, registered in the process's registry on first use.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use verimail_server::metrics::register;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurableLabel {
    pub durable: String,
}

pub struct Metrics {
    pub outbox_backlog: Gauge,
    pub outbox_oldest_unsent_seconds: Gauge<f64, AtomicU64>,
    pub consumer_pending: Family<DurableLabel, Gauge>,
    /// Consumers: messages that could not be parked (left unacked to come back; alert on it).
    pub park_failures: Family<DurableLabel, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    outbox_backlog: register("outbox_backlog", "Events written and not yet published", Gauge::default()),
    outbox_oldest_unsent_seconds: register(
        "outbox_oldest_unsent_seconds",
        "Age of the oldest unpublished event (0 when none)",
        Gauge::default(),
    ),
    consumer_pending: register(
        "consumer_pending",
        "Messages JetStream holds for a durable consumer that it has not delivered (num_pending)",
        Family::default(),
    ),
    park_failures: register(
        "park_failures",
        "Messages a consumer gave up on that could not be parked: left unacked, they come back and parking is tried again",
        Family::default(),
    ),
});

/// Seconds since `oldest` (0 when there is none, or it is in the future): a backlog's age.
pub fn age_seconds(oldest: Option<chrono::DateTime<chrono::Utc>>) -> f64 {
    oldest.map_or(0.0, |at| Ord::max((chrono::Utc::now() - at).num_milliseconds(), 0) as f64 / 1000.0)
}

/// The backbone's families (registered at the first call).
pub fn metrics() -> &'static Metrics {
    &METRICS
}
