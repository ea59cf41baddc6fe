//! Registration: RegisterUser at a number of concurrent clients, and the time from a
//! registration until the SMTP sink has accepted its verification email.

use crate::load::{Sample, drive, paced};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use verimail_proto::user::v1::RegisterUserRequest;
use verimail_system_tests::procs::ProcessStack;

/// The password of every user the benchmark registers.
pub const PASSWORD: &str = "correct horse battery staple";

/// RegisterUser for `email`, with [`PASSWORD`].
pub fn request(email: String) -> RegisterUserRequest {
    RegisterUserRequest { email, password: PASSWORD.into(), ..Default::default() }
}

/// RegisterUser from `clients` concurrent clients for `seconds`, client n calling instance
/// n mod the stack's instances.
pub async fn at_full_speed(stack: &ProcessStack, clients: usize, seconds: u64) -> anyhow::Result<Sample> {
    let instances = stack.user_clients();
    drive(clients, seconds, move |client, _| {
        let mut users = instances[client % instances.len()].clone();
        async move {
            users.register_user(request(crate::address("register"))).await?;
            Ok(true)
        }
    })
    .await
}

/// RegisterUser at `rate` per second (open loop) for `seconds`: the calls' own latencies, and
/// each registration timed from when it was due until the SMTP sink accepted its email
/// (waiting at most a minute for the last).
pub async fn to_email_at(stack: &ProcessStack, rate: f64, seconds: u64) -> anyhow::Result<(Sample, Sample)> {
    let base = SystemTime::now();
    let started = Instant::now();
    let emails: Vec<String> =
        (0..(rate * seconds as f64).round() as usize).map(|_| crate::address("to-email")).collect();
    let due: HashMap<&str, SystemTime> = emails
        .iter()
        .enumerate()
        .map(|(n, email)| (email.as_str(), base + Duration::from_secs_f64(n as f64 / rate)))
        .collect();
    let users = stack.users.clone();
    let registered = paced(rate, seconds, |n| {
        let (mut users, email) = (users.clone(), emails[n].clone());
        async move {
            users.register_user(request(email)).await?;
            Ok(())
        }
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let accepted: Vec<Duration> = stack
            .smtp
            .all()
            .iter()
            .filter_map(|mail| {
                let at = due.get(mail.to.first()?.as_str())?;
                Some(mail.accepted_at.duration_since(*at).unwrap_or_default())
            })
            .collect();
        if accepted.len() >= due.len() {
            return Ok((registered, Sample { latencies: accepted, elapsed: started.elapsed() }));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} emails arrived within a minute",
            accepted.len(),
            due.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
