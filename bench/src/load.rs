//! Load generators and what they measure: closed loops of concurrent clients ([`drive`]) and
//! an open loop at a fixed rate ([`paced`]).

use std::future::Future;
use std::time::{Duration, Instant};

/// Latencies of one measurement, and how long it ran.
pub struct Sample {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Sample {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).copied().unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.latencies.len(),
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.per_second(),
            "p50_ms": ms(self.percentile(0.50)),
            "p99_ms": ms(self.percentile(0.99)),
        })
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `clients` loops of `call(client, n)` for `seconds`, each call timed. A call answering
/// `false` had nothing left to do (its work ran out): that client stops, untimed.
pub async fn drive<F, Fut>(clients: usize, seconds: u64, call: F) -> anyhow::Result<Sample>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send,
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
                    if !call(client, latencies.len()).await? {
                        break;
                    }
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

/// An open loop: starts call number n at `n / rate` seconds, for `seconds`, whether or not
/// earlier calls have answered, and times each from when it was due. A stalled system shows
/// in the latencies instead of slowing the load down (no coordinated omission).
pub async fn paced<F, Fut>(rate: f64, seconds: u64, call: F) -> anyhow::Result<Sample>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let count = (rate * seconds as f64).round() as usize;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..count {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let call = call(n);
        calls.spawn(async move { call.await.map(|()| due.elapsed()) });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = calls.join_next().await {
        latencies.push(done??);
    }
    Ok(Sample { latencies, elapsed: started.elapsed() })
}

/// CPU time (user and system, all threads) of the stack's processes, of the benchmark itself
/// and, on PostgreSQL, of the database server, read from /proc: what one operation costs each.
pub struct CpuMeter {
    sources: Vec<(&'static str, Source)>,
    start: Vec<Option<u64>>,
}

/// Whose CPU a row of the meter counts.
#[derive(Clone, Copy)]
pub enum Source {
    Process(u32),
    /// Every process named `postgres` (the server and its backends), with what its exited
    /// backends used (the postmaster's reaped children): the whole server's CPU, which only
    /// the benchmark uses while it runs.
    Postgres,
}

/// Clock ticks of CPU a process has used (Linux: utime + stime in /proc/PID/stat; with
/// `reaped`, also cutime + cstime, its waited-for children's).
fn cpu_ticks(pid: &str, reaped: bool) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let command = head.split_once('(')?.1.to_owned();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<u64> = tail.split_whitespace().skip(11).take(4).filter_map(|f| f.parse().ok()).collect();
    let ticks = match (reaped, fields.as_slice()) {
        (false, [utime, stime, ..]) => utime + stime,
        (true, [utime, stime, cutime, cstime]) => utime + stime + cutime + cstime,
        _ => return None,
    };
    Some((command, ticks))
}

impl Source {
    fn ticks(self) -> Option<u64> {
        match self {
            Source::Process(pid) => Some(cpu_ticks(&pid.to_string(), false)?.1),
            Source::Postgres => {
                let processes = std::fs::read_dir("/proc").ok()?.filter_map(Result::ok);
                let ticks = processes
                    .filter_map(|entry| cpu_ticks(entry.file_name().to_str()?, true))
                    .filter(|(command, _)| command == "postgres")
                    .map(|(_, ticks)| ticks)
                    .sum();
                Some(ticks)
            }
        }
    }
}

impl CpuMeter {
    pub fn start(sources: Vec<(&'static str, Source)>) -> CpuMeter {
        let start = sources.iter().map(|(_, source)| source.ticks()).collect();
        CpuMeter { sources, start }
    }

    /// Microseconds of CPU per operation for each source since `start`, over `operations`.
    pub fn per_operation(&self, operations: usize) -> Vec<(&'static str, f64)> {
        // USER_HZ is 100 on Linux.
        let micros_per_tick = 10_000.0;
        // Processes of one name (instances, nats-server nodes) are summed.
        let mut costs: Vec<(&'static str, f64)> = Vec::new();
        for ((name, source), start) in self.sources.iter().zip(&self.start) {
            let Some(used) = source.ticks().zip(*start).and_then(|(now, start)| now.checked_sub(start)) else {
                continue;
            };
            let micros = used as f64 * micros_per_tick / operations.max(1) as f64;
            match costs.iter_mut().find(|(each, _)| each == name) {
                Some((_, sum)) => *sum += micros,
                None => costs.push((name, micros)),
            }
        }
        costs
    }

    /// What Verimail's processes cost of [`CpuMeter::per_operation`]'s `costs`: all but the
    /// benchmark's own (its clients).
    pub fn of_verimail(costs: &[(&str, f64)]) -> f64 {
        costs.iter().filter(|(name, _)| *name != "bench").map(|(_, micros)| micros).sum()
    }
}
