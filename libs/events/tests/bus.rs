//! The outbox relay and the consume loop against a real nats-server and a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use async_nats::jetstream;
use prost::Message;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, TransactionTrait};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use verimail_events::bus::{self, ConsumerSpec, HandlerError, USERS_STREAM};
use verimail_events::outbox::{self, OutboxEvent, OutboxRelay, entity};
use verimail_proto::events::v1::UserRegistered;
use verimail_server::shutdown::Shutdown;
use verimail_testkit::NatsServer;

struct OutboxOnly;

impl MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        outbox::migration::migrations()
    }
}

async fn database(dir: &tempfile::TempDir) -> DatabaseConnection {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kit.db").display());
    verimail_events::db::connect::<OutboxOnly>(&url).await.unwrap()
}

/// One event, in a transaction of its own on the database's writer.
async fn enqueue_committed(db: &DatabaseConnection, event: OutboxEvent) {
    let txn = verimail_events::db::begin_write(db).await.unwrap();
    outbox::enqueue(&txn, event).await.unwrap();
    txn.commit().await.unwrap();
}

async fn jetstream(nats: &NatsServer) -> jetstream::Context {
    let js = jetstream::new(bus::connect(&bus::NatsConfig::url(nats.url())).await);
    bus::declare_streams(&js, &[USERS_STREAM], Default::default()).await.unwrap();
    js
}

fn registered(n: u32) -> OutboxEvent {
    let event = UserRegistered {
        event_id: format!("event-{n}"),
        user_id: format!("user-{n}"),
        email: format!("u{n}@example.com"),
        occurred_at: String::new(),
        locale: String::new(),
    };
    OutboxEvent::new(event.event_id.clone(), &event.user_id, verimail_proto::subjects::USERS_REGISTERED, &event)
}

/// Publishes a test message on users.registered and waits for JetStream's ack.
async fn publish(js: &jetstream::Context, id: &str, body: &'static str) {
    js.publish_with_headers(verimail_proto::subjects::USERS_REGISTERED, bus::event_headers(id, "test"), body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn stream_messages(js: &jetstream::Context) -> u64 {
    js.get_stream(verimail_proto::streams::USERS).await.unwrap().info().await.unwrap().state.messages
}

#[tokio::test]
async fn relay_publishes_each_committed_event_once_with_its_headers() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let js = jetstream(&nats).await;

    let txn = db.begin().await.unwrap();
    for n in 1..=3 {
        outbox::enqueue(&txn, registered(n)).await.unwrap();
    }
    txn.commit().await.unwrap();
    // A rolled-back transaction leaves nothing to publish.
    let txn = db.begin().await.unwrap();
    outbox::enqueue(&txn, registered(99)).await.unwrap();
    txn.rollback().await.unwrap();

    let relay = OutboxRelay::new(db.clone(), js.clone());
    assert_eq!(relay.publish_pending().await.unwrap(), 3);
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "published rows are marked");
    assert_eq!(stream_messages(&js).await, 3);

    let rows = entity::Entity::find().all(&db).await.unwrap();
    assert!(rows.iter().all(|r| r.published_at.is_some() && r.attempts == 1));

    let message = js.get_stream(verimail_proto::streams::USERS).await.unwrap().get_raw_message(1).await.unwrap();
    assert_eq!(message.headers.get(verimail_proto::headers::MSG_ID).unwrap().as_str(), "event-1");
    assert_eq!(
        message.headers.get(verimail_proto::headers::EVENT_TYPE).unwrap().as_str(),
        "verimail.events.v1.UserRegistered"
    );
}

#[tokio::test]
async fn a_crash_before_marking_published_does_not_duplicate_the_event() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let js = jetstream(&nats).await;
    enqueue_committed(&db, registered(1)).await;
    let relay = OutboxRelay::new(db.clone(), js.clone());
    assert_eq!(relay.publish_pending().await.unwrap(), 1);

    // As if the process died after the publish ack but before the row was marked.
    entity::Entity::update(entity::ActiveModel {
        id: Set("event-1".into()),
        published_at: Set(None),
        ..Default::default()
    })
    .exec(&db)
    .await
    .unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 1, "the row is published again");
    assert_eq!(stream_messages(&js).await, 1, "JetStream dropped the duplicate by Nats-Msg-Id");
}

#[tokio::test]
async fn relay_waits_for_nats_and_publishes_once_it_is_back() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let js = jetstream(&nats).await;
    // The stream does not take users.* subjects here, so publishing fails (no responders).
    js.delete_stream(verimail_proto::streams::USERS).await.unwrap();
    enqueue_committed(&db, registered(1)).await;
    let relay = OutboxRelay::new(db.clone(), js.clone());
    assert!(relay.publish_pending().await.is_err());
    let row = entity::Entity::find_by_id("event-1".to_owned()).one(&db).await.unwrap().unwrap();
    assert!(row.published_at.is_none());
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.is_some());

    bus::declare_streams(&js, &[USERS_STREAM], Default::default()).await.unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(stream_messages(&js).await, 1);
}

#[tokio::test]
async fn consumer_retries_then_parks_after_the_last_attempt() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    publish(&js, "event-7", "payload").await;

    let attempts = Arc::new(AtomicUsize::new(0));
    let mut spec = ConsumerSpec::new(USERS_STREAM, "test-consumer", verimail_proto::streams::USERS_SUBJECTS);
    spec.max_deliver = 3;
    spec.backoff = vec![Duration::from_millis(50)];
    let seen = attempts.clone();
    let handler = move |delivery: bus::Delivery| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            assert_eq!(delivery.event_id.as_deref(), Some("event-7"));
            Err::<(), _>(HandlerError::Retry(format!("attempt {} failed", delivery.attempt)))
        }
    };
    let consumer = tokio::spawn(bus::consume(js.clone(), spec, handler, Shutdown::default()));

    eventually(Duration::from_secs(10), "a parked message", async || {
        match js.get_stream(verimail_proto::streams::PARKED).await {
            Ok(mut stream) => stream.info().await.unwrap().state.messages == 1,
            Err(_) => false,
        }
    })
    .await;
    let message = parked_message(&js).await;
    assert_eq!(message.0, "parked.test-consumer");
    assert_eq!(message.1, verimail_proto::subjects::USERS_REGISTERED);
    assert_eq!(message.2, "attempt 3 failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "no delivery after the last attempt");
    consumer.abort();
}

/// Waits (at most `limit`) until `done` holds.
async fn eventually(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_message_that_cannot_be_parked_on_its_last_attempt_comes_back_and_is_parked_later() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    publish(&js, "event-8", "payload").await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut spec = ConsumerSpec::new(USERS_STREAM, "test-unparkable", verimail_proto::streams::USERS_SUBJECTS);
    spec.max_deliver = 2;
    // Time to take the parking stream away before the last attempt.
    spec.backoff = vec![Duration::from_secs(1), Duration::from_millis(50)];
    let seen = attempts.clone();
    let handler = move |delivery: bus::Delivery| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(HandlerError::Retry(format!("attempt {} failed", delivery.attempt)))
        }
    };
    let consumer = tokio::spawn(bus::consume(js.clone(), spec, handler, Shutdown::default()));
    eventually(Duration::from_secs(10), "a first attempt", async || attempts.load(Ordering::SeqCst) >= 1).await;
    js.delete_stream(verimail_proto::streams::PARKED).await.unwrap();

    let failures = || {
        let text = verimail_server::metrics::render();
        text.lines()
            .find(|line| line.starts_with("verimail_park_failures_total{durable=\"test-unparkable\"}"))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    eventually(Duration::from_secs(15), "a failed park, counted", async || failures() >= 2.0).await;
    let tried = attempts.load(Ordering::SeqCst);
    assert!(tried >= 3, "the message came back after a failed park: {tried} attempts");

    // Once the parking stream is back, the message is parked: nothing was lost.
    bus::declare_streams(&js, &[bus::PARKED_STREAM], Default::default()).await.unwrap();
    eventually(Duration::from_secs(15), "the message parked", async || {
        js.get_stream(verimail_proto::streams::PARKED).await.unwrap().info().await.unwrap().state.messages == 1
    })
    .await;
    assert_eq!(parked_message(&js).await.1, verimail_proto::subjects::USERS_REGISTERED);
    println!(
        "parking failed {} times over {} attempts; parked once the stream was back",
        failures(),
        attempts.load(Ordering::SeqCst)
    );
    consumer.abort();
}

async fn parked_message(js: &jetstream::Context) -> (String, String, String) {
    let stream = js.get_stream(verimail_proto::streams::PARKED).await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    let header = |name| message.headers.get(name).unwrap().as_str().to_owned();
    (
        message.subject.to_string(),
        header(verimail_proto::headers::PARKED_SUBJECT),
        header(verimail_proto::headers::PARKED_ERROR),
    )
}

#[tokio::test]
async fn consumer_acks_what_succeeds_and_a_permanent_failure_is_parked_at_once() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    for (id, body) in [("ok-1", "good"), ("bad-1", "bad")] {
        publish(&js, id, body).await;
    }
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let consumer = tokio::spawn(bus::consume(
        js.clone(),
        ConsumerSpec::new(USERS_STREAM, "test-permanent", verimail_proto::streams::USERS_SUBJECTS),
        move |delivery| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if &delivery.payload[..] == b"bad" {
                    return Err(HandlerError::Permanent("cannot decode".into()));
                }
                Ok(())
            }
        },
        Shutdown::default(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let consumer_info = js.get_stream(verimail_proto::streams::USERS).await.unwrap();
        let info = consumer_info.consumer_info("test-permanent").await;
        if let Ok(info) = info
            && info.num_ack_pending == 0
            && info.num_pending == 0
            && info.delivered.stream_sequence == 2
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "messages not settled within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let parked = parked_message(&js).await;
    assert_eq!(parked.2, "cannot decode");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "each message handled once");
    consumer.abort();
}

#[tokio::test]
async fn on_shutdown_the_consumer_finishes_what_it_holds_acks_it_and_returns() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    publish(&js, "slow-1", "slow").await;
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let (on_start, on_finish) = (started.clone(), finished.clone());
    let shutdown = Shutdown::default();
    let consumer = tokio::spawn(bus::consume(
        js.clone(),
        ConsumerSpec::new(USERS_STREAM, "test-drain", verimail_proto::streams::USERS_SUBJECTS),
        move |_| {
            let (on_start, on_finish) = (on_start.clone(), on_finish.clone());
            async move {
                on_start.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                on_finish.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        },
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("the handler started");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), consumer).await.expect("the consumer returned").unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1, "the message in flight was finished");
    let info = js.get_stream(verimail_proto::streams::USERS).await.unwrap().consumer_info("test-drain").await.unwrap();
    assert_eq!((info.ack_floor.stream_sequence, info.num_ack_pending), (1, 0), "and acked");
}

#[tokio::test]
async fn events_of_one_aggregate_go_out_in_order_and_published_rows_are_pruned_after_retention() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let js = jetstream(&nats).await;
    let about = |n: u32, user: &str| {
        let event = UserRegistered {
            event_id: format!("event-{n}"),
            user_id: user.into(),
            email: "x@example.com".into(),
            occurred_at: String::new(),
            locale: String::new(),
        };
        OutboxEvent::new(event.event_id.clone(), user, verimail_proto::subjects::USERS_REGISTERED, &event)
    };
    for (n, user) in [(1, "ada"), (2, "ada"), (3, "bob"), (4, "ada")] {
        enqueue_committed(&db, about(n, user)).await;
    }
    let relay = OutboxRelay::new(db.clone(), js.clone());
    // One event per aggregate per pass: ada's second waits until her first is acknowledged.
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    let stream = js.get_stream(verimail_proto::streams::USERS).await.unwrap();
    let mut ada = Vec::new();
    for sequence in 1..=4 {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let event = UserRegistered::decode(message.payload).unwrap();
        if event.user_id == "ada" {
            ada.push(event.event_id);
        }
    }
    assert_eq!(ada, ["event-1", "event-2", "event-4"], "ada's events in the order they were written");

    enqueue_committed(&db, about(5, "cy")).await;
    let prune = |keep: Duration| {
        let db = db.clone();
        async move {
            let tables: Vec<Box<dyn verimail_events::retention::Retained>> =
                vec![Box::new(verimail_events::retention::outbox(keep))];
            verimail_events::retention::sweep(&db, &tables).await.unwrap()[0].1
        }
    };
    assert_eq!(prune(Duration::from_secs(3600)).await, 0, "kept within retention");
    // Published just now: past a retention of a millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(prune(Duration::from_millis(1)).await, 4, "published rows past retention go");
    let left = entity::Entity::find().all(&db).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].published_at.is_none(), "an unpublished row is never pruned");
}

#[tokio::test]
async fn opening_a_consumer_again_with_a_changed_spec_updates_it() {
    let nats = NatsServer::start();
    let js = jetstream(&nats).await;
    let mut spec = ConsumerSpec::new(USERS_STREAM, "test-update", verimail_proto::streams::USERS_SUBJECTS);
    bus::open_consumer(&js, &spec).await.unwrap();
    bus::open_consumer(&js, &spec).await.expect("the same spec again is fine");
    spec.max_deliver = 5;
    spec.ack_wait = Duration::from_secs(12);
    bus::open_consumer(&js, &spec).await.expect("a changed spec updates the consumer");
    let info = js.get_stream(verimail_proto::streams::USERS).await.unwrap().consumer_info("test-update").await.unwrap();
    // The consume loop counts attempts itself; JetStream never stops redelivering.
    assert_eq!((info.config.max_deliver, info.config.ack_wait), (-1, Duration::from_secs(12)));
    let stream = js.get_stream(verimail_proto::streams::USERS).await.unwrap().get_info().await.unwrap();
    assert_eq!(stream.config.storage, jetstream::stream::StorageType::File);
    assert!(stream.config.duplicate_window >= Duration::from_secs(60), "longer than the relay's longest retry gap");
}

#[tokio::test]
async fn event_streams_keep_messages_for_the_retention_and_the_parking_stream_until_handled() {
    use verimail_server::config::Vars;
    let nats = NatsServer::start();
    let js = jetstream::new(bus::connect(&bus::NatsConfig::url(nats.url())).await);
    let max_age = |name: &'static str| {
        let js = js.clone();
        async move { js.get_stream(name).await.unwrap().info().await.unwrap().config.max_age }
    };
    let settings = |pairs: &[(&'static str, &str)]| {
        bus::StreamSettings::from_vars(&Vars::from_pairs(pairs.iter().map(|(k, v)| (*k, *v))))
    };
    assert_eq!(settings(&[]).unwrap().event_retention, Some(Duration::from_secs(7 * 24 * 3600)), "7 days by default");
    let refused = settings(&[("NATS_EVENT_RETENTION_SECONDS", "60")]).unwrap_err();
    assert_eq!(refused.name, "NATS_EVENT_RETENTION_SECONDS", "shorter than the de-duplication window");

    let five_minutes = settings(&[("NATS_EVENT_RETENTION_SECONDS", "300")]).unwrap();
    bus::declare_streams(&js, &[USERS_STREAM, bus::PARKED_STREAM], five_minutes).await.unwrap();
    assert_eq!(max_age("USERS").await, Duration::from_secs(300));
    assert_eq!(max_age("PARKED").await, Duration::ZERO, "parked messages wait for an operator");
    // Declared again with other settings (a redeployment), the stream follows.
    let forever = settings(&[("NATS_EVENT_RETENTION_SECONDS", "off")]).unwrap();
    bus::declare_streams(&js, &[USERS_STREAM], forever).await.unwrap();
    assert_eq!(max_age("USERS").await, Duration::ZERO);
}
