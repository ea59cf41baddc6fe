//! Another team's service consumes users.verified as docs/events.md tells it to (a durable
//! pull consumer, explicit acks, de-duplication by event id) while user-service and the
//! nats-server are killed mid-batch: every verified user has exactly one effect, and a replay
//! of every event has none.

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verimail_proto::events::v1::UserVerified;
use verimail_proto::{headers, streams, subjects};
use verimail_system_tests::batch;
use verimail_system_tests::browser::Browser;
use verimail_system_tests::procs::{Part, ProcessStack};

const BATCH: usize = 120;
const LIMIT: Duration = Duration::from_secs(120);

/// What the downstream service saw and did.
#[derive(Default)]
struct Seen {
    /// Messages delivered, per user (redeliveries and replays included).
    delivered: HashMap<String, usize>,
    /// Event ids acted on: the consumer's record of what it has done.
    handled: HashSet<String>,
    /// Effects (say, a welcome credit granted), per user: what must happen exactly once.
    effects: HashMap<String, usize>,
}

/// The consumer recipe of docs/events.md: bind (or create) a durable pull consumer on USERS
/// for users.verified, act on each event id once, ack after acting; reconnect on any error.
async fn consume(nats_url: String, seen: Arc<Mutex<Seen>>, stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        let attempt = async {
            let client = async_nats::connect(nats_url.as_str()).await?;
            let js = jetstream::new(client);
            let stream = js.get_stream(streams::USERS).await?;
            let consumer: jetstream::consumer::Consumer<pull::Config> = stream
                .get_or_create_consumer(
                    "orders-team",
                    pull::Config {
                        durable_name: Some("orders-team".into()),
                        filter_subject: subjects::USERS_VERIFIED.into(),
                        ack_wait: Duration::from_secs(5),
                        ..Default::default()
                    },
                )
                .await?;
            loop {
                if *stop.borrow() {
                    return Ok::<_, async_nats::Error>(());
                }
                let mut messages =
                    consumer.fetch().max_messages(50).expires(Duration::from_millis(500)).messages().await?;
                while let Some(message) = messages.next().await {
                    let message = message?;
                    let event = UserVerified::decode(message.payload.clone())?;
                    let event_id = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(headers::EVENT_ID))
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| event.event_id.clone());
                    {
                        let mut seen = seen.lock().expect("seen");
                        *seen.delivered.entry(event.user_id.clone()).or_default() += 1;
                        // The effect and the record of it go together (in a real service: one
                        // transaction); a redelivery finds the record and does nothing.
                        if seen.handled.insert(event_id) {
                            *seen.effects.entry(event.user_id.clone()).or_default() += 1;
                        }
                    }
                    message.ack().await?;
                }
            }
        };
        if attempt.await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `done` every 50 ms until it holds; fails the test after [`LIMIT`].
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "not done within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_verified_reaches_a_downstream_consumer_once_per_user_across_kills_and_a_replay_does_nothing() {
    let mut stack = ProcessStack::start().await;
    let started = Instant::now();
    let users = batch::register(&stack.users, "downstream", 0..BATCH, LIMIT).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), LIMIT).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let consumer = tokio::spawn(consume(stack.nats.url(), seen.clone(), stopped));

    // Users click their links while user-service is killed and the broker dies and returns.
    let links: Vec<String> =
        users.iter().map(|u| batch::verification_emails(&stack.smtp, &u.email)[0].verification_link()).collect();
    let browser = Browser::new(&stack.gateway_url);
    let clicked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Set once the broker is killed: the last clicks wait for it (at most a minute), so the
    // faults land while verifications flow however slowly the restarts go on a busy machine.
    let (broker_killed, mut killed) = tokio::sync::watch::channel(false);
    // One click every 30 ms or so: the faults land while verifications flow.
    let clicking = tokio::spawn({
        let clicked = clicked.clone();
        async move {
            for (n, link) in links.into_iter().enumerate() {
                if n == BATCH * 3 / 4 {
                    let waited = tokio::time::timeout(Duration::from_secs(60), killed.wait_for(|k| *k)).await;
                    assert!(waited.is_ok(), "the broker was not killed within a minute of the clicks");
                }
                let page = browser.click(&link).await;
                assert_eq!((page.status, page.kind()), (200, "verified"), "{}", page.html);
                clicked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    let effects = |seen: &Mutex<Seen>| seen.lock().expect("seen").effects.len();
    wait_until(|| effects(&seen) >= 15).await;
    stack.kill(Part::User);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.start_part(Part::User).await;
    wait_until(|| effects(&seen) >= 50).await;
    stack.nats.kill();
    let at_kill = clicked.load(std::sync::atomic::Ordering::SeqCst);
    broker_killed.send_replace(true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.nats.restart();
    clicking.await.expect("every click");
    assert!(at_kill < BATCH, "the broker died in the middle of the clicks ({at_kill} done)");

    for user in &users {
        assert!(batch::wait_until_verified(&stack.users, &user.user_id, LIMIT).await, "{}", user.email);
    }
    wait_until(|| effects(&seen) >= BATCH).await;
    {
        let seen = seen.lock().expect("seen");
        for user in &users {
            assert_eq!(seen.effects.get(&user.user_id), Some(&1), "one effect for {}", user.email);
        }
        assert_eq!(seen.handled.len(), BATCH, "one users.verified event per user, kills or not");
        let redelivered: usize = seen.delivered.values().map(|n| n - 1).sum();
        println!(
            "downstream: {BATCH} users verified across a user-service SIGKILL and a nats-server SIGKILL, \
             {} events, {redelivered} redeliveries, {} effects, {:.1} s",
            seen.handled.len(),
            seen.effects.values().sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
    }

    // A replay of every event (as an operator would after the duplicate window, under new
    // message ids): delivered again, acted on never.
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.expect("NATS"));
    let mut stream = js.get_stream(streams::USERS).await.expect("USERS");
    let info = stream.info().await.expect("USERS info");
    assert_eq!(info.config.max_age, Duration::from_secs(7 * 24 * 3600), "events are kept 7 days by default");
    let last = info.state.last_sequence;
    let delivered = |seen: &Mutex<Seen>| seen.lock().expect("seen").delivered.values().sum::<usize>();
    let before_replay = delivered(&seen);
    let mut replayed = 0;
    for sequence in 1..=last {
        let Ok(original) = stream.get_raw_message(sequence).await else { continue };
        if original.subject.as_str() != subjects::USERS_VERIFIED {
            continue;
        }
        let mut again = original.headers.clone();
        again.insert(headers::MSG_ID, format!("replay-{sequence}").as_str());
        js.publish_with_headers(original.subject.to_string(), again, original.payload.clone())
            .await
            .expect("publish")
            .await
            .expect("ack");
        replayed += 1;
    }
    assert_eq!(replayed, BATCH);
    wait_until(|| delivered(&seen) >= before_replay + BATCH).await;
    stop.send(true).expect("stop");
    consumer.await.expect("the consumer stops");
    let seen = seen.lock().expect("seen");
    assert!(seen.effects.values().all(|&n| n == 1), "a replay has no second effect");
    assert_eq!(seen.effects.len(), BATCH);
}
