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

/// CPU time (user and system, all threads) of the stack's processes and of the benchmark
/// itself, read from /proc: what one operation costs each of them.
pub struct CpuMeter {
    pids: Vec<(&'static str, u32)>,
    start: Vec<Option<u64>>,
}

/// Clock ticks of CPU a process has used (Linux: utime + stime in /proc/PID/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl CpuMeter {
    pub fn start(pids: Vec<(&'static str, u32)>) -> CpuMeter {
        let start = pids.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        CpuMeter { pids, start }
    }

    /// Microseconds of CPU per operation for each process since `start`, over `operations`.
    pub fn per_operation(&self, operations: usize) -> Vec<(&'static str, f64)> {
        // USER_HZ is 100 on Linux.
        let micros_per_tick = 10_000.0;
        self.pids
            .iter()
            .zip(&self.start)
            .filter_map(|((name, pid), start)| {
                let used = cpu_ticks(*pid)?.checked_sub((*start)?)?;
                Some((*name, used as f64 * micros_per_tick / operations.max(1) as f64))
            })
            .collect()
    }
}
