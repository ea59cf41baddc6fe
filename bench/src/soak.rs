//! The soak (`just soak MINUTES`): steady registrations and clicks for a long while on one
//! stack of release binaries with short retentions (a minute), sampling every minute each
//! swept table's row count and each process's resident memory (its own, and the files it
//! maps apart). Tables bounded by their retention level off; a leak shows as a count or an own
//! memory that keeps rising. The verdict compares the last third of the samples with the
//! middle third.
//!
//! The load: `RATE` registrations a second, every fourth left unclicked (its link expires, then
//! its account), the rest clicked through the gateway with the token of their email, as a
//! browser would; every second verified user then signs in and out (a session that ends, whose
//! access tokens live a minute). The SMTP sink hands each email over once and keeps nothing.

use crate::load::paced;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verimail_system_tests::for_browser;
use verimail_system_tests::procs::{Part, ProcessStack};

/// Registrations a second.
const RATE: f64 = 20.0;
/// How long the retentions and the links last: short, so an hour holds many of them.
const SHORT: &str = "60";

/// The tables the soak counts, by service: those that grow with traffic (users grow with
/// accounts, by design, and are not among them).
const TABLES: [(&str, &[&str]); 3] = [
    ("user", &["outbox", "deleted_users", "sessions", "retired_refresh_tokens", "email_changes"]),
    ("auth", &["verification_tokens", "verification_codes", "outbox", "deleted_users"]),
    ("email", &["deliveries", "bounces", "outbox", "deleted_users", "webhook_deliveries"]),
];

/// One minute's sample: rows per table, resident KiB per process: its own memory (anonymous:
/// heap and stacks, where a leak shows) and the pages of files it maps (its binary and, on
/// SQLite, the database it reads through a memory map, which grows with the users table).
struct Sample {
    minute: u64,
    rows: BTreeMap<String, u64>,
    own: BTreeMap<String, u64>,
    mapped: BTreeMap<String, u64>,
    registered: usize,
    clicked: usize,
}

pub async fn run(minutes: u64) -> anyhow::Result<serde_json::Value> {
    let mut stack = ProcessStack::start().await;
    let short = |part: Part, names: &[&str]| names.iter().map(move |name| (part, name.to_string())).collect::<Vec<_>>();
    let settings = [
        short(Part::User, &["OUTBOX_RETENTION_SECONDS", "TOMBSTONE_RETENTION_SECONDS", "SESSION_RETENTION_SECONDS"]),
        short(Part::User, &["EMAIL_CHANGE_RETENTION_SECONDS"]),
        short(
            Part::Auth,
            &["OUTBOX_RETENTION_SECONDS", "TOMBSTONE_RETENTION_SECONDS", "VERIFICATION_RETENTION_SECONDS"],
        ),
        short(Part::Auth, &["VERIFICATION_TOKEN_TTL_SECONDS", "VERIFICATION_CODE_TTL_SECONDS"]),
        short(Part::Auth, &["ACCESS_TOKEN_TTL_SECONDS"]),
        short(Part::Email, &["OUTBOX_RETENTION_SECONDS", "TOMBSTONE_RETENTION_SECONDS", "DELIVERY_RETENTION_SECONDS"]),
        short(Part::Email, &["WEBHOOK_DELIVERY_RETENTION_SECONDS"]),
    ];
    for part in [Part::User, Part::Auth, Part::Email] {
        stack.kill(part);
        for (_, name) in settings.iter().flatten().filter(|(p, _)| *p == part) {
            stack.set_var(part, name, SHORT);
        }
        if part == Part::User {
            // Unclicked accounts expire two minutes after they registered.
            stack.set_var(part, "UNVERIFIED_ACCOUNT_TTL_SECONDS", "120");
        }
        // The streams keep an event five minutes (at least the de-duplication window).
        stack.set_var(part, "NATS_EVENT_RETENTION_SECONDS", "300");
        // The rate limits at their defaults, shared in NATS, as in production: each call
        // names its browser, as a backend does (and the clicks come through a proxy).
        for (name, default) in
            DEFAULT_LIMITS.iter().filter(|(p, ..)| *p == part).map(|(_, name, default)| (name, default))
        {
            stack.set_var(part, name, default);
        }
        stack.start_part(part).await;
    }
    stack.kill(Part::Gateway);
    stack.set_var(Part::Gateway, "RATE_LIMIT_GATEWAY_PER_CLIENT", "30/60");
    stack.set_var(Part::Gateway, "TRUSTED_PROXIES", "127.0.0.1/32");
    stack.start_part(Part::Gateway).await;

    let registered = Arc::new(Mutex::new(0usize));
    let clicked = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Clicks: every email's link, but each fourth address's, from the sink as they arrive.
    let clicking = {
        let (smtp_mails, gateway, clicked, stop) =
            (stack.smtp.clone(), stack.gateway_url.clone(), clicked.clone(), stop.clone());
        let users = stack.users.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for mail in smtp_mails.take_all() {
                    let address = mail.to.first().cloned().unwrap_or_default();
                    if !mail.is_verification() || address.starts_with("unclicked") {
                        continue;
                    }
                    let token = mail.verification_token();
                    let answer = http
                        .post(format!("{gateway}/verify-email"))
                        .header("x-forwarded-for", browser(&address))
                        .form(&[("token", token)])
                        .send()
                        .await;
                    let page = match answer {
                        Ok(answer) if answer.status() == 200 => answer.text().await.unwrap_or_default(),
                        _ => continue,
                    };
                    // Only the first click verifies (a second email, sent when a sign-in came
                    // before the verification reached user-service, says "already verified").
                    if !page.contains("Email address verified") {
                        continue;
                    }
                    let count = {
                        let mut clicked = clicked.lock().unwrap_or_else(|p| p.into_inner());
                        *clicked += 1;
                        *clicked
                    };
                    if count % 2 == 0 {
                        tokio::spawn(sign_in_and_out(users.clone(), address));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let loading = {
        let (users, registered) = (stack.users.clone(), registered.clone());
        tokio::spawn(async move {
            paced(RATE, minutes * 60, move |n| {
                let (mut users, registered) = (users.clone(), registered.clone());
                async move {
                    let label = if n % 4 == 3 { "unclicked" } else { "soak" };
                    let address = crate::address(label);
                    let client = browser(&address);
                    users.register_user(for_browser(crate::register::request(address), &client)).await?;
                    *registered.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    Ok(())
                }
            })
            .await
        })
    };

    println!("\n| minute | registered | clicked | {} | resident MiB: own + mapped files |", table_names().join(" | "));
    println!("|---|---|---|{}---|", "---|".repeat(table_names().len()));
    let started = Instant::now();
    let mut samples = Vec::new();
    for minute in 1..=minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let sample = sample(&stack, minute, &registered, &clicked).await?;
        print_sample(&sample);
        samples.push(sample);
    }
    loading.await??;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    clicking.await?;
    Ok(verdict(&samples))
}

/// A session that begins and ends (the verification may take a moment to reach user-service:
/// a few tries).
async fn sign_in_and_out(
    mut users: verimail_proto::user::v1::user_service_client::UserServiceClient<verimail_system_tests::Ops>,
    email: String,
) {
    use verimail_proto::user::v1::{SignInRequest, SignOutRequest};
    // The click's verification reaches user-service over NATS within milliseconds; a sign-in
    // before it would be refused (and send the address another verification email).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..20 {
        let request = SignInRequest { email: email.clone(), password: crate::register::PASSWORD.into() };
        if let Ok(signed_in) = users.sign_in(for_browser(request, &browser(&email))).await {
            let request = SignOutRequest { refresh_token: signed_in.into_inner().refresh_token, everywhere: false };
            let _ = users.sign_out(request).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The rate limits set to their defaults (the test stacks turn them off).
const DEFAULT_LIMITS: [(Part, &str, &str); 9] = [
    (Part::User, "RATE_LIMIT_REGISTER_PER_CLIENT", "20/60"),
    (Part::User, "RATE_LIMIT_REGISTER_PER_EMAIL", "5/3600"),
    (Part::User, "RATE_LIMIT_RESEND_PER_CLIENT", "10/60"),
    (Part::User, "RATE_LIMIT_RESEND_PER_EMAIL", "1/60"),
    (Part::User, "RATE_LIMIT_RESEND_PER_EMAIL_DAILY", "5/86400"),
    (Part::User, "RATE_LIMIT_SIGN_IN_PER_CLIENT", "30/60"),
    (Part::User, "SIGN_IN_MAX_FAILURES", "5/900"),
    (Part::Auth, "RATE_LIMIT_VERIFY_PER_CLIENT", "30/60"),
    (Part::Auth, "RATE_LIMIT_CODE_PER_EMAIL", "5/3600"),
];

/// The browser an address's person uses: one of 4,096 client addresses, each registering
/// about once every three minutes.
fn browser(address: &str) -> String {
    let n = address.bytes().fold(0u32, |hash, byte| hash.wrapping_mul(31).wrapping_add(u32::from(byte))) % 4096;
    format!("10.77.{}.{}", n / 256, n % 256)
}

/// Beside the tables: the keys the rate limits hold in NATS (every `KV_limits_*` bucket).
const LIMIT_KEYS: &str = "nats.limit_keys";

fn table_names() -> Vec<String> {
    TABLES
        .iter()
        .flat_map(|(service, tables)| tables.iter().map(move |table| format!("{service}.{table}")))
        .chain(std::iter::once(LIMIT_KEYS.to_owned()))
        .collect()
}

/// The keys every limit bucket holds now.
async fn limit_keys(nats_url: &str) -> anyhow::Result<u64> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    let mut keys = 0;
    for name in names.iter().filter(|name| name.starts_with("KV_limits_")) {
        keys += js.get_stream(name).await?.info().await?.state.messages;
    }
    Ok(keys)
}

async fn sample(
    stack: &ProcessStack,
    minute: u64,
    registered: &Mutex<usize>,
    clicked: &Mutex<usize>,
) -> anyhow::Result<Sample> {
    use sea_orm::{ConnectionTrait, Statement};
    let mut rows = BTreeMap::new();
    for (service, tables) in TABLES {
        let db = sea_orm::Database::connect(stack.database_url(service)).await?;
        for table in tables {
            let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
            let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await?;
            let count: i64 = row.map(|row| row.try_get_by_index(0)).transpose()?.unwrap_or_default();
            rows.insert(format!("{service}.{table}"), count as u64);
        }
        db.close().await?;
    }
    rows.insert(LIMIT_KEYS.to_owned(), limit_keys(&stack.nats.url()).await?);
    let status = |field: &'static str| -> BTreeMap<String, u64> {
        let processes = stack.processes().into_iter();
        processes.filter_map(|(name, pid)| Some((name.to_owned(), crate::status_kib(Some(pid), field)?))).collect()
    };
    Ok(Sample {
        minute,
        rows,
        own: status("RssAnon:"),
        mapped: status("RssFile:"),
        registered: *registered.lock().unwrap_or_else(|p| p.into_inner()),
        clicked: *clicked.lock().unwrap_or_else(|p| p.into_inner()),
    })
}

fn print_sample(sample: &Sample) {
    // In the header's order.
    let rows: Vec<String> =
        table_names().iter().map(|table| sample.rows.get(table).copied().unwrap_or_default().to_string()).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let resident: Vec<String> = (sample.own.iter())
        .map(|(name, kib)| {
            format!("{name} {:.0}+{:.0}", mib(*kib), mib(sample.mapped.get(name).copied().unwrap_or_default()))
        })
        .collect();
    println!(
        "| {} | {} | {} | {} | {} |",
        sample.minute,
        sample.registered,
        sample.clicked,
        rows.join(" | "),
        resident.join(", ")
    );
}

/// Levelled off: the largest of the last third within 10% (and 50 rows) of the largest of the
/// middle third; memory within 10% (and 8 MiB).
fn verdict(samples: &[Sample]) -> serde_json::Value {
    let third = samples.len() / 3;
    if third == 0 {
        println!("\n(too short for a verdict: three minutes at least)");
        return serde_json::json!({ "minutes": samples.len() });
    }
    let (middle, last) = (&samples[third..2 * third], &samples[2 * third..]);
    let peak = |part: &[Sample], value: &dyn Fn(&Sample) -> u64| part.iter().map(value).max().unwrap_or_default();
    let mut judged = Vec::new();
    println!("\n| what | middle third, peak | last third, peak | levelled off |");
    println!("|---|---|---|---|");
    let mut judge = |what: String, value: &dyn Fn(&Sample) -> u64, slack: u64| {
        let (before, after) = (peak(middle, value), peak(last, value));
        let flat = after <= before + (before / 10).max(slack);
        println!("| {what} | {before} | {after} | {} |", if flat { "yes" } else { "NO" });
        judged.push(serde_json::json!({ "what": what, "middle_peak": before, "last_peak": after, "flat": flat }));
    };
    for table in table_names() {
        let name = table.clone();
        judge(format!("rows of {table}"), &move |s: &Sample| s.rows.get(&name).copied().unwrap_or_default(), 50);
    }
    let processes: Vec<String> = samples[0].own.keys().cloned().collect();
    for process in processes {
        let name = process.clone();
        judge(
            format!("own resident KiB of {process}"),
            &move |s: &Sample| s.own.get(&name).copied().unwrap_or_default(),
            8 * 1024,
        );
    }
    serde_json::json!({ "minutes": samples.len(), "judged": judged })
}
