//! `just bench`: where the time goes, on a fresh stack of release binaries (its own
//! nats-server, SQLite or with `--db postgres` PostgreSQL, and an SMTP server inside the
//! benchmark that accepts and counts mail), driven by tonic clients. Prints a table and writes
//! a JSON report to `<target>/bench/report.json`.
//!
//! Measured so far:
//! 1. argon2id alone, with the production parameters, on all cores: the bound on
//!    registrations per second;
//! 2. RegisterUser throughput and latency at 1, 4, 16 and 64 concurrent clients, also as a
//!    fraction of that bound;
//! 6. each part's start-up to SERVING (migrations already applied) and resident memory, idle
//!    and at its peak under the RegisterUser load.
//!
//! Flags: `--db sqlite|postgres` (default sqlite), `--seconds N` per measurement (default 5).

use std::time::{Duration, Instant};
use verimail_proto::user::v1::RegisterUserRequest;
use verimail_system_tests::procs::{Part, ProcessStack};
use verimail_user::domain::{HashCost, Password, PasswordHasher};

struct Options {
    postgres: bool,
    seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options { postgres: false, seconds: 5 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--db", Some(db)) if db == "postgres" || db == "sqlite" => options.postgres = db == "postgres",
            ("--seconds", Some(n)) => options.seconds = n.parse()?,
            (other, _) => anyhow::bail!("unknown argument {other:?}: use --db sqlite|postgres, --seconds N"),
        }
    }
    Ok(options)
}

/// Latencies of one measurement, and how long it ran.
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Sample {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.latencies.len(),
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.per_second(),
            "p50_ms": self.percentile(0.50).as_secs_f64() * 1000.0,
            "p99_ms": self.percentile(0.99).as_secs_f64() * 1000.0,
        })
    }
}

/// Runs `clients` loops of `call` for `seconds`, each call timed.
async fn drive<F, Fut>(clients: usize, seconds: u64, call: F) -> anyhow::Result<Sample>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let began = Instant::now();
                    call(client, latencies.len()).await?;
                    latencies.push(began.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    Ok(Sample { latencies, elapsed: started.elapsed() })
}

/// argon2id with the production parameters, `cores` hashes at a time, as user-service runs it.
async fn argon2_bound(cores: usize, seconds: u64) -> anyhow::Result<Sample> {
    let hasher = std::sync::Arc::new(PasswordHasher::new(HashCost::default(), cores).map_err(anyhow::Error::msg)?);
    let password = || Password::parse("correct horse battery staple").expect("a valid password");
    hasher.hash(password()).await.map_err(anyhow::Error::msg)?; // warm up
    drive(cores, seconds, move |_, _| {
        let hasher = hasher.clone();
        async move { hasher.hash(password()).await.map(drop).map_err(anyhow::Error::msg) }
    })
    .await
}

/// VmRSS of a process, in KiB (Linux).
fn resident_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let release = std::env::current_exe()?.parent().map(std::path::Path::to_owned).expect("target/release");
    // Before any thread starts: the harness reads these.
    // SAFETY: single-threaded here; the runtime is built below.
    unsafe {
        std::env::set_var("VERIMAIL_BIN_DIR", &release);
        std::env::set_var("TEST_DATABASE", if options.postgres { "postgres" } else { "sqlite" });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run(&options))?;
    let target = release.parent().expect("target").join("bench");
    std::fs::create_dir_all(&target)?;
    let path = target.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport: {}", path.display());
    Ok(())
}

async fn run(options: &Options) -> anyhow::Result<serde_json::Value> {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let cost = HashCost::default();
    println!(
        "verimail bench: {cores} cores, {} database, argon2id m={} KiB t={} p={}, {} s per measurement",
        if options.postgres { "PostgreSQL" } else { "SQLite" },
        cost.memory_kib,
        cost.iterations,
        cost.parallelism,
        options.seconds
    );

    let argon2 = argon2_bound(cores, options.seconds).await?;
    let bound = argon2.per_second();
    let per_hash = argon2.percentile(0.5);
    println!("\n| measurement | per second | p50 ms | p99 ms | of the bound |");
    println!("|---|---|---|---|---|");
    println!(
        "| argon2id alone, {cores} at a time (the bound) | {bound:.1} | {} | {} | 100% |",
        ms(per_hash),
        ms(argon2.percentile(0.99))
    );

    // The stack, hashing with the production parameters.
    let mut stack = ProcessStack::start().await;
    stack.kill(Part::User);
    stack.set_var(Part::User, "PASSWORD_HASH_MEMORY_KIB", &cost.memory_kib.to_string());
    stack.set_var(Part::User, "PASSWORD_HASH_ITERATIONS", &cost.iterations.to_string());
    stack.set_var(Part::User, "PASSWORD_HASH_PARALLELISM", &cost.parallelism.to_string());
    stack.start_part(Part::User).await;

    // Start-up to SERVING (migrations already applied) and resident memory when idle.
    let mut parts = serde_json::Map::new();
    for part in Part::ALL {
        stack.kill(part);
        let began = Instant::now();
        stack.start_part(part).await;
        let startup = began.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = resident_kib(stack.pid(part));
        parts.insert(
            part.binary().into(),
            serde_json::json!({ "startup_ms": startup.as_secs_f64() * 1000.0, "idle_rss_kib": idle }),
        );
    }

    let mut register = Vec::new();
    let peak = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<&str, u64>::new()));
    let sampler = {
        let pids: Vec<_> = Part::ALL.iter().map(|&part| (part.binary(), stack.pid(part))).collect();
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                for (name, pid) in &pids {
                    let now = resident_kib(*pid).unwrap_or(0);
                    let mut peak = peak.lock().expect("peak lock");
                    let entry = peak.entry(name).or_default();
                    *entry = (*entry).max(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let users = stack.users.clone();
    let register_at = |clients: usize| {
        let users = users.clone();
        drive(clients, options.seconds, move |client, n| {
            let mut users = users.clone();
            async move {
                let request = RegisterUserRequest {
                    email: format!("bench-{clients}-{client}-{n}-{}@example.com", std::process::id()),
                    password: "correct horse battery staple".into(),
                };
                users.register_user(request).await?;
                Ok(())
            }
        })
    };
    let row = |label: String, sample: &Sample| {
        println!(
            "| {label} | {:.1} | {} | {} | {:.0}% |",
            sample.per_second(),
            ms(sample.percentile(0.5)),
            ms(sample.percentile(0.99)),
            100.0 * sample.per_second() / bound
        );
    };
    for clients in [1, 4, 16, 64] {
        let sample = register_at(clients).await?;
        let plural = if clients == 1 { "" } else { "s" };
        row(format!("RegisterUser, {clients} client{plural}"), &sample);
        let mut json = sample.json();
        json["clients"] = clients.into();
        json["of_bound"] = (sample.per_second() / bound).into();
        register.push(json);
    }
    sampler.abort();
    // What the email each registration causes costs: the same load with email-service stopped
    // (its events wait in JetStream), so the two cores hash and store only.
    stack.kill(Part::Email);
    let alone = register_at(16).await?;
    row("RegisterUser, 16 clients, email-service stopped".into(), &alone);
    let mut alone_json = alone.json();
    alone_json["of_bound"] = (alone.per_second() / bound).into();
    stack.start_part(Part::Email).await;
    println!("\n| part | start-up to SERVING ms | idle RSS MiB | peak RSS under load MiB |");
    println!("|---|---|---|---|");
    let peak = peak.lock().expect("peak lock").clone();
    for part in Part::ALL {
        let name = part.binary();
        let entry = parts.get_mut(name).expect("measured");
        entry["peak_rss_kib"] = peak.get(name).copied().into();
        let mib =
            |v: &serde_json::Value| v.as_u64().map(|kib| format!("{:.1}", kib as f64 / 1024.0)).unwrap_or("?".into());
        println!(
            "| {name} | {:.0} | {} | {} |",
            entry["startup_ms"].as_f64().unwrap_or_default(),
            mib(&entry["idle_rss_kib"]),
            mib(&entry["peak_rss_kib"])
        );
    }

    Ok(serde_json::json!({
        "parts": parts,
        "machine": { "cores": cores },
        "database": if options.postgres { "postgres" } else { "sqlite" },
        "argon2": { "memory_kib": cost.memory_kib, "iterations": cost.iterations, "parallelism": cost.parallelism },
        "seconds_per_measurement": options.seconds,
        "argon2_bound": argon2.json(),
        "register_user": register,
        "register_user_16_without_email_service": alone_json,
    }))
}
