//! The JetStream bus: streams, publishing with headers, and the durable consume loop with
//! bounded redelivery, backoff and parking.
//!
//! Every event is published with `Nats-Msg-Id` (its event id, so JetStream drops a duplicate
//! publish inside the stream's duplicate window) and `Verimail-Event-Type`.

use crate::backoff::Backoff;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use std::time::Duration;
use tracing::Instrument;
use verimail_proto::{headers, streams};
use verimail_server::config::{ConfigError, Vars};
pub use verimail_server::nats::{NatsAuth, NatsConfig, connect, nats_url, servers};
use verimail_server::shutdown::Shutdown;

/// A stream and the subjects it holds. Whoever publishes to or consumes from a stream
/// declares it at start; declaring is idempotent.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    /// Whether it holds events, which carry addresses: those are kept for the event retention
    /// ([`StreamSettings::event_retention`]). Parked messages stay until an operator acts.
    pub events: bool,
}

/// Events owned by user-service.
pub const USERS_STREAM: StreamSpec =
    StreamSpec { name: streams::USERS, subjects: &[streams::USERS_SUBJECTS], events: true };
/// Events owned by auth-service.
pub const AUTH_STREAM: StreamSpec =
    StreamSpec { name: streams::AUTH, subjects: &[streams::AUTH_SUBJECTS], events: true };
/// Events owned by email-service.
pub const EMAIL_STREAM: StreamSpec =
    StreamSpec { name: streams::EMAIL, subjects: &[streams::EMAIL_SUBJECTS], events: true };
/// Messages every attempt failed on, one subject per consumer: `parked.<durable>`.
pub const PARKED_STREAM: StreamSpec =
    StreamSpec { name: streams::PARKED, subjects: &[streams::PARKED_SUBJECTS], events: false };

/// JetStream drops a second publish of an event id within this window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How the streams a service declares are kept. Every service that declares a stream must be
/// given the same settings, or each start would change the stream back to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `NATS_STREAM_REPLICAS` (1 to 5, default 1): servers that keep each stream (3 on a
    /// three-node cluster, so that losing one loses nothing); consumers follow their stream.
    pub replicas: usize,
    /// `NATS_EVENT_RETENTION_SECONDS` (default 604800, 7 days; `off` for no age limit): how
    /// long the event streams keep a message. Events carry addresses, so they do not stay
    /// forever; a consumer that is down for longer than this misses what expired meanwhile.
    pub event_retention: Option<Duration>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings { replicas: 1, event_retention: Some(DEFAULT_EVENT_RETENTION) }
    }
}

/// Seven days.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl StreamSettings {
    pub fn from_vars(vars: &Vars) -> Result<StreamSettings, ConfigError> {
        const RETENTION: &str = "NATS_EVENT_RETENTION_SECONDS";
        let event_retention = vars.seconds_or_off(RETENTION, DEFAULT_EVENT_RETENTION)?;
        if event_retention.is_some_and(|kept| kept < DUPLICATE_WINDOW) {
            return Err(ConfigError::new(
                RETENTION,
                format!("must be at least {} (the de-duplication window), or off", DUPLICATE_WINDOW.as_secs()),
            ));
        }
        Ok(StreamSettings { replicas: verimail_server::nats::replicas(vars)?, event_retention })
    }

    /// How long `spec` keeps a message (zero: no age limit, as JetStream reads it).
    pub fn max_age(&self, spec: &StreamSpec) -> Duration {
        match (spec.events, self.event_retention) {
            (true, Some(kept)) => kept,
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot declare stream {stream}: {source}")]
    Stream {
        stream: &'static str,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot declare consumer {durable}: {source}")]
    Consumer {
        durable: String,
        #[source]
        source: async_nats::Error,
    },
}

/// Creates the streams, or updates them to this configuration: kept on `settings.replicas`
/// servers (1 on a single server, 3 on a three-node cluster), event streams for the event
/// retention. While
/// JetStream cannot answer yet (a cluster still electing its leader, a node restarting) it
/// waits and tries again, as [`connect`] does; an answer refusing the configuration is final.
pub async fn declare_streams(
    js: &jetstream::Context,
    specs: &[StreamSpec],
    settings: StreamSettings,
) -> Result<(), BusError> {
    use jetstream::context::CreateStreamErrorKind as Kind;
    for spec in specs {
        let config = stream::Config {
            name: spec.name.to_owned(),
            subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: settings.max_age(spec),
            num_replicas: settings.replicas,
            ..Default::default()
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match js.create_or_update_stream(config.clone()).await {
                Ok(_) => break,
                Err(e) if matches!(e.kind(), Kind::TimedOut | Kind::JetStreamUnavailable | Kind::Response) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(stream = spec.name, error = %e, retry_in = ?delay, "JetStream is not ready yet");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => return Err(BusError::Stream { stream: spec.name, source }),
            }
        }
    }
    Ok(())
}

/// The first message `stream` stores on `subject` at sequence `from` or later; `None` past
/// the last one. Read without a consumer, so walking a subject changes nothing on the stream.
pub async fn next_on_subject(
    stream: &stream::Stream,
    subject: &str,
    from: u64,
) -> Result<Option<jetstream::message::StreamMessage>, stream::RawMessageError> {
    match stream.raw_message_builder().sequence(from).next_by_subject(subject.to_owned()).send().await {
        Ok(message) => Ok(Some(message)),
        Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The headers every event carries.
pub fn event_headers(event_id: &str, event_type: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(headers::MSG_ID, event_id);
    headers.insert(headers::EVENT_ID, event_id);
    headers.insert(headers::EVENT_TYPE, event_type);
    headers
}

/// The event id a message carries: `Verimail-Event-Id`, or `Nats-Msg-Id` for a message
/// published without it.
pub fn event_id_of(headers: &HeaderMap) -> Option<String> {
    headers.get(headers::EVENT_ID).or_else(|| headers.get(headers::MSG_ID)).map(|v| v.as_str().to_owned())
}

/// How a durable consumer is set up and how often a failing message is retried.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: StreamSpec,
    pub durable: &'static str,
    pub filter_subject: &'static str,
    /// Deliveries before the message is parked.
    pub max_deliver: i64,
    /// Delay before redelivery number n+1 after a failed attempt n (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long one attempt may run before JetStream redelivers it.
    pub ack_wait: Duration,
    /// Messages handled at once by this instance (batches, with [`consume_batches`]).
    pub concurrency: usize,
    /// With [`consume_batches`]: at most this many messages per call of the handler. A batch
    /// holds the messages that are already here, never waits for more: one message when the
    /// stream is quiet, many under load.
    pub batch: usize,
    /// How the streams it reads and parks to are kept; the consumer follows its stream.
    pub streams: StreamSettings,
}

impl ConsumerSpec {
    pub fn new(stream: StreamSpec, durable: &'static str, filter_subject: &'static str) -> Self {
        ConsumerSpec {
            stream,
            durable,
            filter_subject,
            max_deliver: 6,
            backoff: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            ack_wait: Duration::from_secs(30),
            concurrency: 8,
            batch: 1,
            streams: StreamSettings::default(),
        }
    }

    fn delay_after(&self, attempt: i64) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(0);
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// One delivery of one message, as the handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    pub payload: bytes::Bytes,
    pub event_id: Option<String>,
    /// 1 for the first delivery.
    pub attempt: i64,
    /// No redelivery follows if this attempt fails: the message is parked.
    pub is_last_attempt: bool,
    /// The consume span of this message, in the trace its publisher carried: a batch
    /// handler logs what it did about this message inside it.
    pub span: tracing::Span,
}

/// Why a handler did not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try later (a dependency is down, a timeout).
    #[error("{0}")]
    Retry(String),
    /// Will fail the same way every time (an undecodable payload): parked at once.
    #[error("{0}")]
    Permanent(String),
}

/// A database error is worth another try: the database may be back by then.
impl From<sea_orm::DbErr> for HandlerError {
    fn from(e: sea_orm::DbErr) -> Self {
        HandlerError::Retry(format!("database: {e}"))
    }
}

/// Runs the durable consumer until `shutdown`: each message goes to `handler`; a success is
/// acked, a retryable failure is redelivered after the spec's backoff, and a permanent
/// failure or the last attempt's failure is copied to `parked.<durable>` and terminated.
/// While NATS is unreachable it waits and tries again. On shutdown it stops pulling,
/// finishes (and acks) the messages it is handling, and returns.
pub async fn consume<H, F>(js: jetstream::Context, spec: ConsumerSpec, handler: H, shutdown: Shutdown)
where
    H: Fn(Delivery) -> F + Send + Sync,
    F: Future<Output = Result<(), HandlerError>> + Send,
{
    let one_at_a_time = move |mut deliveries: Vec<Delivery>| {
        let handled = deliveries.pop().map(&handler);
        async move {
            match handled {
                Some(handled) => vec![handled.await],
                None => Vec::new(),
            }
        }
    };
    consume_batches(js, ConsumerSpec { batch: 1, ..spec }, one_at_a_time, shutdown).await
}

/// As [`consume`], with a handler that takes the messages already here (up to the spec's
/// `batch`) in one call and answers for each, in order: one transaction for many events
/// instead of one each.
pub async fn consume_batches<H, F>(js: jetstream::Context, spec: ConsumerSpec, handler: H, shutdown: Shutdown)
where
    H: Fn(Vec<Delivery>) -> F + Send + Sync,
    F: Future<Output = Vec<Result<(), HandlerError>>> + Send,
{
    let consumer = loop {
        match open_consumer(&js, &spec).await {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(durable = spec.durable, error = %e, "cannot open consumer; retrying");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tokio::spawn(report_lag(consumer.clone(), spec.durable, shutdown.clone()));
    while !shutdown.is_triggered() {
        // Short pull requests with idle heartbeats: after the server restarts or the connection
        // drops, a lost pull is noticed within seconds instead of when it would have expired.
        let pull = consumer
            .stream()
            .max_messages_per_batch(spec.concurrency * spec.batch.max(4))
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(1))
            .messages();
        match pull.await {
            Ok(messages) => {
                let stop = shutdown.clone();
                messages
                    .take_until(async move { stop.wait().await })
                    .filter_map(|message| async {
                        message.map_err(|e| tracing::warn!(durable = spec.durable, error = %e, "pull failed")).ok()
                    })
                    .ready_chunks(spec.batch.max(1))
                    .for_each_concurrent(spec.concurrency, |messages| handle_batch(&js, &spec, &handler, messages))
                    .await;
            }
            Err(e) => tracing::warn!(durable = spec.durable, error = %e, "cannot pull; retrying"),
        }
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // The last acks may still be in the client's buffer: flushed (a PING answered), so the
    // server has them before the consumer says it is done.
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), js.client().flush()).await.unwrap_or(Ok(())) {
        tracing::warn!(durable = spec.durable, error = %e, "cannot flush the last acks; they will be redelivered");
    }
    tracing::info!(durable = spec.durable, "consumer drained");
}

/// Keeps `verimail_consumer_pending` at the consumer's num_pending, once a second.
async fn report_lag(mut consumer: consumer::PullConsumer, durable: &'static str, shutdown: Shutdown) {
    let metrics = crate::metrics::metrics();
    let label = crate::metrics::DurableLabel { durable: durable.to_owned() };
    let gauge = metrics.consumer_pending.get_or_create(&label).clone();
    // At 0 until the first: a rule's increase() then sees that one.
    let _ = metrics.park_failures.get_or_create(&label);
    while !shutdown.is_triggered() {
        if let Ok(info) = consumer.info().await {
            gauge.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        }
        tokio::select! {
            _ = shutdown.wait() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Declares the stream, the parking stream and the durable consumer (all idempotent).
pub async fn open_consumer(js: &jetstream::Context, spec: &ConsumerSpec) -> Result<consumer::PullConsumer, BusError> {
    declare_streams(js, &[spec.stream, PARKED_STREAM], spec.streams).await?;
    let consumer_error = |source: async_nats::Error| BusError::Consumer { durable: spec.durable.to_owned(), source };
    let stream = js.get_stream(spec.stream.name).await.map_err(|e| consumer_error(e.into()))?;
    // Create or update: a changed spec (attempts, ack wait) takes effect at the next start.
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(spec.durable.to_owned()),
            filter_subject: spec.filter_subject.to_owned(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            // Unbounded on JetStream's side: the consume loop counts attempts and parks at
            // `spec.max_deliver`; a message it could not park must still come back, never be
            // dropped by JetStream's own count.
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| consumer_error(e.into()))
}

/// Hands the messages to `handler` as one batch, then settles each by its outcome: ack,
/// redelivery after the backoff, or parking.
async fn handle_batch<H, F>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: &H,
    messages: Vec<jetstream::Message>,
) where
    H: Fn(Vec<Delivery>) -> F,
    F: Future<Output = Vec<Result<(), HandlerError>>>,
{
    let deliveries: Vec<Delivery> = messages.iter().map(|message| delivery(spec, message)).collect();
    let spans: Vec<tracing::Span> = deliveries.iter().map(|d| d.span.clone()).collect();
    // Bounded well inside the ack wait, so JetStream never hands a message to a second
    // attempt while this one still runs.
    let limit = spec.ack_wait.mul_f64(0.8);
    // A single message's handler runs inside its span; a batch's inside the first one's, and
    // the handler logs about each message in that message's own span.
    let handled = handler(deliveries).instrument(spans.first().cloned().unwrap_or_else(tracing::Span::none));
    let outcomes = tokio::time::timeout(limit, handled).await.unwrap_or_default();
    let mut outcomes = outcomes.into_iter();
    for (message, span) in messages.iter().zip(spans) {
        let outcome = outcomes
            .next()
            .unwrap_or_else(|| Err(HandlerError::Retry(format!("no answer from the handler within {limit:?}"))));
        settle(js, spec, message, outcome).instrument(span).await;
    }
}

/// What the handler sees of one delivery of `message`, with its consume span continuing the
/// trace its publisher carried in the headers.
fn delivery(spec: &ConsumerSpec, message: &jetstream::Message) -> Delivery {
    let attempt = message.info().map(|info| info.delivered).unwrap_or(1);
    let span = tracing::info_span!(
        "consume",
        otel.name = %format_args!("{} process", message.subject),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.consumer.group.name = spec.durable,
        attempt,
        trace_id = tracing::field::Empty,
    );
    let headers = message.headers.as_ref();
    verimail_server::telemetry::continue_trace(&span, |field| headers?.get(field).map(|v| v.as_str().to_owned()));
    Delivery {
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        event_id: headers.and_then(event_id_of),
        attempt,
        is_last_attempt: attempt >= spec.max_deliver,
        span,
    }
}

/// Acks a handled message, has a retryable failure redelivered after the backoff, and parks
/// (then terminates) a permanent failure or the last attempt's.
async fn settle(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    outcome: Result<(), HandlerError>,
) {
    let attempt = message.info().map(|info| info.delivered).unwrap_or(1);
    let ack = match outcome {
        Ok(()) => AckKind::Ack,
        Err(HandlerError::Retry(reason)) if attempt < spec.max_deliver => {
            let delay = spec.delay_after(attempt);
            tracing::warn!(durable = spec.durable, subject = %message.subject, attempt, %reason, retry_in = ?delay, "handler failed; will retry");
            AckKind::Nak(Some(delay))
        }
        Err(e) => {
            tracing::error!(durable = spec.durable, subject = %message.subject, attempt, reason = %e, "parking message");
            match park(js, spec, message, attempt, &e.to_string()).await {
                Ok(()) => AckKind::Term,
                // Not parked, so not terminated either: it comes back (the consumer's delivery
                // budget has no end, see open_consumer) and parking is tried again.
                Err(park_error) => {
                    crate::metrics::metrics()
                        .park_failures
                        .get_or_create(&crate::metrics::DurableLabel { durable: spec.durable.to_owned() })
                        .inc();
                    let retry_in = spec.delay_after(attempt).min(PARK_RETRY_LIMIT);
                    tracing::error!(durable = spec.durable, subject = %message.subject, attempt, error = %park_error, ?retry_in, "cannot park message; it stays unacked and comes back");
                    AckKind::Nak(Some(retry_in))
                }
            }
        }
    };
    if let Err(e) = message.ack_with(ack).await {
        tracing::warn!(durable = spec.durable, error = %e, "cannot acknowledge; it will be redelivered");
    }
}

/// The longest a message that could not be parked waits before it comes back.
const PARK_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Copies `message` to `parked.<durable>` with why and after how many attempts; tried three
/// times within a second before giving up for this delivery.
async fn park(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    message: &jetstream::Message,
    attempts: i64,
    reason: &str,
) -> Result<(), async_nats::Error> {
    let mut headers = message.headers.clone().unwrap_or_default();
    // A parked copy is a message of its own, named after the stored message it copies: a
    // second park of the same delivery is deduplicated, a park of its replay is not.
    let parked_id = match message.info() {
        Ok(info) => format!("{}:{}:{}", streams::parked_subject(spec.durable), info.stream, info.stream_sequence),
        Err(_) => uuid::Uuid::now_v7().to_string(),
    };
    if let Some(event_id) = event_id_of(&headers) {
        headers.insert(headers::EVENT_ID, event_id.as_str());
    }
    headers.insert(headers::MSG_ID, parked_id.as_str());
    headers.insert(headers::PARKED_SUBJECT, message.subject.as_str());
    headers.insert(headers::PARKED_ERROR, reason.replace(['\r', '\n'], " ").as_str());
    headers.insert(headers::PARKED_ATTEMPTS, attempts.to_string().as_str());
    let publish = || async {
        js.publish_with_headers(streams::parked_subject(spec.durable), headers.clone(), message.payload.clone())
            .await?
            .await?;
        Ok::<(), async_nats::Error>(())
    };
    let mut result = publish().await;
    for pause in [100, 400].map(Duration::from_millis) {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(pause).await;
        result = publish().await;
    }
    result
}
