//! The bounce listener: messages per second it takes from a relay (SMTP in, read by the
//! classifier, recorded against their delivery in one transaction, 250 out), over
//! [`CONNECTIONS`] connections, with the CPU each part spends per message; beside it, the
//! classifier alone on every core of the benchmark's process, the bound the reading sets.

use crate::load::{Sample, drive};
use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verimail_system_tests::batch;
use verimail_system_tests::procs::{Part, ProcessStack};

/// Connections from one relay: under the listener's per-peer bound (10).
const CONNECTIONS: usize = 8;
/// Deliveries whose bounce addresses the messages go to (each keeps its newest 20).
const DELIVERIES: usize = 100;

/// The messages sent, round and round: `tests/data/bounces`, the formats of Postfix, Gmail,
/// Exchange, Sendmail, Yahoo, qmail, Exim, feedback loops and auto-replies.
fn messages() -> anyhow::Result<Vec<Vec<u8>>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bounces");
    let mut messages = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "eml") {
            messages.push(std::fs::read(path)?);
        }
    }
    messages.sort();
    anyhow::ensure!(messages.len() >= 30, "{} messages in {}", messages.len(), dir.display());
    Ok(messages)
}

/// A port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Classifying alone: `cores` threads for `seconds`, each reading the messages in turn.
fn classify_alone(messages: &[Vec<u8>], cores: usize, seconds: u64) -> (usize, Duration) {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let count: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = 0;
                    while Instant::now() < until {
                        for raw in messages {
                            std::hint::black_box(verimail_mail::bounce::classify::classify(raw));
                        }
                        done += messages.len();
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    (count, started.elapsed())
}

pub async fn run(table: &mut crate::Table, seconds: u64) -> anyhow::Result<serde_json::Value> {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let corpus = Arc::new(messages()?);
    let messages = corpus.clone();
    let port = free_port()?;
    let mut stack = ProcessStack::start().await;
    stack.kill(Part::Email);
    let listener = format!("127.0.0.1:{port}");
    for (name, value) in [
        ("BOUNCE_DOMAIN", "bounces.example.com"),
        ("BOUNCE_SMTP_ADDR", listener.as_str()),
        ("DELIVERY_HASH_KEY", "a-bench-delivery-hash-key-0123456789abcdef"),
        // One relay sends them all, faster than any one real MTA would.
        ("BOUNCE_RATE_PER_PEER", "off"),
    ] {
        stack.set_var(Part::Email, name, value);
    }
    stack.start_part(Part::Email).await;

    let limit = Duration::from_secs(120);
    let users = batch::register(&stack.users, &format!("bounced-{}", std::process::id()), 0..DELIVERIES, limit).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), limit).await;
    let senders: Vec<lettre::Address> =
        stack.smtp.all().iter().filter(|m| m.from.starts_with("bounce+")).filter_map(|m| m.from.parse().ok()).collect();
    anyhow::ensure!(senders.len() >= DELIVERIES, "{} bounce addresses", senders.len());
    let senders = Arc::new(senders);

    let relay = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .pool_config(PoolConfig::new().max_size(CONNECTIONS as u32))
        .build();
    let meter = crate::cpu_meter(&stack);
    let sample: Sample = drive(CONNECTIONS, seconds, move |client, n| {
        let (relay, senders, messages) = (relay.clone(), senders.clone(), messages.clone());
        async move {
            let i = client * 7919 + n;
            let envelope = Envelope::new(None, vec![senders[i % senders.len()].clone()])?;
            let reply = relay.send_raw(&envelope, &messages[i % messages.len()]).await?;
            anyhow::ensure!(reply.is_positive(), "the listener answered {reply:?}");
            Ok(true)
        }
    })
    .await?;
    let cpu = meter.per_operation(sample.latencies.len());
    let taken = table.row(&format!("bounce listener: messages taken, {CONNECTIONS} connections"), &sample, false);
    table.cpu(&cpu);
    let (count, elapsed) = tokio::task::spawn_blocking(move || classify_alone(&corpus, cores, seconds)).await?;
    let alone =
        table.rate(&format!("… classifying alone, {cores} at a time (the benchmark's process)"), count, elapsed);
    let share = sample.per_second() / alone;
    println!("| … the listener at {:.1}% of the classifier alone | | | | |", 100.0 * share);
    Ok(serde_json::json!({
        "taken": taken,
        "cpu_us_per_message": cpu.iter().map(|(name, micros)| (name.to_string(), (*micros).into())).collect::<serde_json::Map<_, _>>(),
        "classify_alone_per_second": alone,
        "of_classify_alone": share,
    }))
}
