//! A rolling upgrade under load loses nothing (docs/operating.md#upgrades): a stack started
//! from the previous release's binaries (the commit in scripts/previous-release, built and
//! cached by scripts/previous.sh, which `just test` runs), registrations and clicks running
//! throughout, each part replaced by this build's one instance at a time in the documented
//! order (two instances of every part on PostgreSQL, one on SQLite, which serves one instance).
//! Then every registration got exactly one email and is verified, nothing is parked, and no
//! call failed but with what a client retries: UNAVAILABLE, or a connection refused, while an
//! instance goes away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::user::v1::RegisterUserRequest;
use verimail_system_tests::batch::{self, Registered};
use verimail_system_tests::browser::Page;
use verimail_system_tests::procs::{Part, ProcessStack, Scale};

/// The documented order.
const ORDER: [Part; 4] = [Part::User, Part::Auth, Part::Email, Part::Gateway];
/// Registrations per second while the upgrade runs.
const RATE: u64 = 10;
const LIMIT: Duration = Duration::from_secs(60);

/// What the load saw: each retry's cause, and any other failure.
#[derive(Default)]
struct Seen {
    retried: Vec<String>,
    unexpected: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_sends_each_email_once_and_verifies_everyone() {
    let previous = std::env::var("VERIMAIL_PREVIOUS_BIN").expect(
        "VERIMAIL_PREVIOUS_BIN: the previous release's binaries (just test builds them with scripts/previous.sh)",
    );
    let instances = if verimail_system_tests::on_postgres() { 2 } else { 1 };
    let mut stack =
        ProcessStack::start_scaled_from(Scale { nats_nodes: 1, instances }, &[], Some(previous.clone().into())).await;
    let from_previous = |stack: &ProcessStack| {
        let parts: Vec<_> = stack.processes().into_iter().filter(|(name, _)| *name != "nats-server").collect();
        assert_eq!(parts.len(), 4 * instances, "every part of every instance runs");
        parts.iter().filter(|(_, pid)| running_from(*pid).starts_with(&previous)).count()
    };
    assert_eq!(from_previous(&stack), 4 * instances, "every part started from the previous release's binaries");
    let started = Instant::now();
    let (users, gateways) = (stack.user_clients(), stack.gateway_urls());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let registered = Arc::new(Mutex::new(Vec::<Registered>::new()));

    // Registrations, RATE a second, each on the next instance (another, while it fails).
    let registering = {
        let (stop, seen, registered) = (stop.clone(), seen.clone(), registered.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let email = format!("upgrade-{n}@example.com");
                let request = RegisterUserRequest {
                    email: email.clone(),
                    password: batch::PASSWORD.into(),
                    ..Default::default()
                };
                for attempt in 0.. {
                    let mut client = users[(n + attempt) % users.len()].clone();
                    match client.register_user(request.clone()).await {
                        Ok(reply) => {
                            let user_id = reply.into_inner().user_id;
                            registered.lock().unwrap().push(Registered { email: email.clone(), user_id });
                            break;
                        }
                        Err(status) if status.code() == Code::Unavailable && attempt < 100 => {
                            seen.lock().unwrap().retried.push(format!("RegisterUser: {}", status.message()));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => {
                            seen.lock().unwrap().unexpected.push(format!("RegisterUser {email}: {status:?}"));
                            break;
                        }
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1000 / RATE)).await;
            }
        })
    };
    // Clicks: each email's link as it arrives, through the gateways in turn.
    let clicking = {
        let (stop, seen, registered) = (stop.clone(), seen.clone(), registered.clone());
        let smtp = stack.smtp.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut clicked = 0usize;
            loop {
                let batch: Vec<Registered> = registered.lock().unwrap().clone();
                let Some(user) = batch.get(clicked) else {
                    if stop.load(Ordering::Relaxed) {
                        return clicked;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Some(mail) = batch::verification_emails(&smtp, &user.email).into_iter().next() else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if let Err(error) = click(&http, &gateways, &mail.verification_link(), clicked, &seen).await {
                    seen.lock().unwrap().unexpected.push(format!("click {}: {error}", user.email));
                }
                clicked += 1;
            }
        })
    };

    // The upgrade: every part, one instance at a time, while the load runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut steps = Vec::new();
    for part in ORDER {
        for index in 0..instances {
            let step = Instant::now();
            stack.upgrade(part, index).await;
            steps.push(format!("{} #{} {:.1} s", part.binary(), index + 1, step.elapsed().as_secs_f64()));
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    assert_eq!(from_previous(&stack), 0, "every part replaced by this build's");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    registering.await.expect("the registrations");
    let clicked = clicking.await.expect("the clicks");

    let batch = registered.lock().unwrap().clone();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.unexpected.is_empty(), "failures a client would not retry: {:#?}", seen.unexpected);
    assert_eq!(clicked, batch.len(), "every email clicked");
    batch::expect_one_email_each(&stack.smtp, &batch, &Default::default(), LIMIT).await;
    for user in &batch {
        assert!(batch::wait_until_verified(&stack.users, &user.user_id, LIMIT).await, "{} is not verified", user.email);
    }
    batch::expect_one_email_each(&stack.smtp, &batch, &Default::default(), LIMIT).await;
    assert_eq!(batch::parked_count(&stack.nats.url()).await, 0, "nothing parked");
    println!(
        "rolling upgrade from {} to this build, {instances} instance(s) of each part, under load: {} registered, \
         {} emails, all verified, 0 parked, {} retries of a call to an instance going away ({:?}), in {:.1} s; \
         steps: {}",
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/previous-release"))
            .unwrap_or_default()
            .trim(),
        batch.len(),
        batch.iter().map(|u| batch::verification_emails(&stack.smtp, &u.email).len()).sum::<usize>(),
        seen.retried.len(),
        seen.retried.iter().take(3).collect::<Vec<_>>(),
        started.elapsed().as_secs_f64(),
        steps.join(", ")
    );
    assert!(batch.len() >= 10 * instances, "the load ran: {} registrations", batch.len());
}

/// Opens `link` and submits its form as a browser would, through the gateways in turn from
/// `first`, moving on to the next while one refuses connections (it is being replaced).
async fn click(
    http: &reqwest::Client,
    gateways: &[String],
    link: &str,
    first: usize,
    seen: &Mutex<Seen>,
) -> Result<(), String> {
    let path = without_origin(link);
    for attempt in 0..100 {
        let base = &gateways[(first + attempt) % gateways.len()];
        match open_and_submit(http, base, &path).await {
            Ok(page) if page.status == 200 && page.kind() == "verified" => return Ok(()),
            // The gateway's service of its own instance is being replaced: "try again".
            Ok(page) if page.status == 503 => {
                seen.lock().unwrap().retried.push("click: 503".into());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(page) => return Err(format!("{} {}: {}", page.status, page.kind(), page.html)),
            Err(error) => {
                seen.lock().unwrap().retried.push(format!("click: {error}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Err("no gateway answered".into())
}

/// GET `path` at `base`, then POST its form: the page, or the connection error.
async fn open_and_submit(http: &reqwest::Client, base: &str, path: &str) -> Result<Page, String> {
    let response = http.get(format!("{base}{path}")).send().await.map_err(|e| e.to_string())?;
    let page = Page { status: response.status().as_u16(), html: response.text().await.map_err(|e| e.to_string())? };
    let (action, fields) = page.form().ok_or_else(|| format!("no form: {} {}", page.status, page.html))?;
    let action = format!("{base}{}", without_origin(&action));
    let response = http.post(action).form(&fields).send().await.map_err(|e| e.to_string())?;
    Ok(Page { status: response.status().as_u16(), html: response.text().await.map_err(|e| e.to_string())? })
}

/// A URL's path and query: `http://host:port/a?b` is `/a?b`; a path stays as it is.
fn without_origin(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or_else(|| "/".to_owned(), |at| rest[at..].to_owned()),
        None => url.to_owned(),
    }
}

/// The binary a process runs (Linux).
fn running_from(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|path| path.display().to_string()).unwrap_or_default()
}
