//! The soak (`just soak MINUTES`): steady registrations and clicks for a long while on one
//! stack of release binaries with short retentions (a minute), sampling every minute each
//! swept table's row count and each process's resident memory. Tables bounded by their
//! retention level off; a leak shows as a count or a memory that keeps rising. The verdict
//! compares the last third of the samples with the middle third.
//!
//! The load: `RATE` registrations a second, every fourth left unclicked (its link expires, then
//! its account), the rest clicked through the gateway with the token of their email, as a
//! browser would; every second verified user then signs in and out (a session that ends, whose
//! access tokens live a minute). The SMTP sink hands each email over once and keeps nothing.

use crate::load::paced;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// One minute's sample: rows per table, resident KiB per process.
struct Sample {
    minute: u64,
    rows: BTreeMap<String, u64>,
    resident: BTreeMap<String, u64>,
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
        stack.start_part(part).await;
    }

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
                    let answer = http.post(format!("{gateway}/verify-email")).form(&[("token", token)]).send().await;
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
                    users.register_user(crate::register::request(crate::address(label))).await?;
                    *registered.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    Ok(())
                }
            })
            .await
        })
    };

    println!("\n| minute | registered | clicked | {} | resident MiB |", table_names().join(" | "));
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
        if let Ok(signed_in) = users.sign_in(request).await {
            let request = SignOutRequest { refresh_token: signed_in.into_inner().refresh_token, everywhere: false };
            let _ = users.sign_out(request).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn table_names() -> Vec<String> {
    TABLES.iter().flat_map(|(service, tables)| tables.iter().map(move |table| format!("{service}.{table}"))).collect()
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
    let resident = stack
        .processes()
        .into_iter()
        .filter_map(|(name, pid)| Some((name.to_owned(), crate::resident_kib(Some(pid))?)))
        .collect();
    Ok(Sample {
        minute,
        rows,
        resident,
        registered: *registered.lock().unwrap_or_else(|p| p.into_inner()),
        clicked: *clicked.lock().unwrap_or_else(|p| p.into_inner()),
    })
}

fn print_sample(sample: &Sample) {
    // In the header's order.
    let rows: Vec<String> =
        table_names().iter().map(|table| sample.rows.get(table).copied().unwrap_or_default().to_string()).collect();
    let resident: Vec<String> =
        sample.resident.iter().map(|(name, kib)| format!("{name} {:.0}", *kib as f64 / 1024.0)).collect();
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
    let processes: Vec<String> = samples[0].resident.keys().cloned().collect();
    for process in processes {
        let name = process.clone();
        judge(
            format!("resident KiB of {process}"),
            &move |s: &Sample| s.resident.get(&name).copied().unwrap_or_default(),
            8 * 1024,
        );
    }
    serde_json::json!({ "minutes": samples.len(), "judged": judged })
}
