//! What sharing the rate limits across instances costs a call: ResendVerification for
//! addresses nobody has (three limit checks: the client's resends, the mailbox's emails per
//! minute and per day; then one lookup and an empty write transaction) at full speed from 16
//! clients, with user-service's limits in NATS (`RATE_LIMIT_STORE=nats`, the default) and then
//! in its memory, on one stack: the difference per call (CPU of every process, latency) is the
//! cost of three shared checks.

use crate::load::{drive, ms};
use crate::{Table, cpu_meter};
use verimail_proto::user::v1::ResendVerificationRequest;
use verimail_system_tests::procs::{Part, ProcessStack};

const CLIENTS: usize = 16;
/// Limit checks per call.
const CHECKS: f64 = 3.0;

pub async fn run(table: &mut Table, seconds: u64) -> anyhow::Result<serde_json::Value> {
    // One client (the bench) makes every call: its own allowance must not be what is measured.
    let generous = [("RATE_LIMIT_RESEND_PER_CLIENT", "100000000/60".to_owned())];
    let mut stack = ProcessStack::start_with_env(&generous).await;
    let mut measured = Vec::new();
    for store in ["nats", "memory"] {
        stack.kill(Part::User);
        stack.set_var(Part::User, "RATE_LIMIT_STORE", store);
        stack.start_part(Part::User).await;
        let client = stack.users.clone();
        let meter = cpu_meter(&stack);
        let sample = drive(CLIENTS, seconds, move |_, _| {
            let mut client = client.clone();
            let email = crate::address(&format!("limits-{store}"));
            async move {
                client.resend_verification(ResendVerificationRequest { email, ..Default::default() }).await?;
                Ok(true)
            }
        })
        .await?;
        let cpu = meter.per_operation(sample.latencies.len());
        let row = table.row(
            &format!("ResendVerification (3 limit checks), {CLIENTS} clients, limits in {store}"),
            &sample,
            false,
        );
        table.cpu(&cpu);
        let total = crate::load::CpuMeter::of_verimail(&cpu);
        measured.push((store, sample, total, row));
    }
    let [(_, shared, shared_cpu, shared_row), (_, memory, memory_cpu, memory_row)] =
        <[_; 2]>::try_from(measured).map_err(|_| anyhow::anyhow!("two runs"))?;
    let cpu_per_check = (shared_cpu - memory_cpu) / CHECKS;
    let p50_per_check = (ms(shared.percentile(0.5)) - ms(memory.percentile(0.5))) / CHECKS;
    println!(
        "| … a shared limit check costs {cpu_per_check:.0} µs of CPU (every process but the bench's) and {p50_per_check:.2} ms \
         at the median; the calls ran at {:.0}% of their rate with the limits in memory | | | | |",
        100.0 * shared.per_second() / memory.per_second()
    );
    Ok(serde_json::json!({
        "shared": shared_row,
        "memory": memory_row,
        "cpu_us_per_shared_check": cpu_per_check,
        "p50_ms_per_shared_check": p50_per_check,
        "rate_shared_of_memory": shared.per_second() / memory.per_second(),
    }))
}
