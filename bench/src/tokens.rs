//! Sign-in and access tokens: SignIn at full speed (against the hashing bound), offline
//! verification in the client library (against raw Ed25519 in the same run), and what
//! `RequireVerified` adds to a call (against the same service without it).

use crate::load::{Sample, drive};
use std::time::{Duration, Instant};
use verimail_client::{RequireVerified, StaticKeys, TokenVerifier};
use verimail_proto::user::v1::SignInRequest;
use verimail_system_tests::batch;
use verimail_system_tests::procs::ProcessStack;

/// Users each SignIn client takes turns with: each signs in a few times a run, as people do,
/// and none reaches the 50 open sessions past which a sign-in ends the oldest.
const USERS_PER_CLIENT: usize = 4;

/// SignIn from `clients` concurrent clients for `seconds`, each client signing in as verified
/// users of its own in turn (registered with the stack's hashing cost, so every check is one
/// hash; every sign-in starts a session).
pub async fn sign_in_at_full_speed(
    stack: &ProcessStack,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Sample, Vec<(&'static str, f64)>)> {
    let limit = Duration::from_secs(120);
    let count = clients * USERS_PER_CLIENT;
    let users = batch::register(&stack.users, &format!("sign-in-{}", std::process::id()), 0..count, limit).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), limit).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, limit).await;
    let emails: Vec<String> = users.iter().map(|user| user.email.clone()).collect();
    let client = stack.users.clone();
    let meter = crate::cpu_meter(stack);
    let sample = drive(clients, seconds, move |n, done| {
        let (mut client, email) = (client.clone(), emails[n * USERS_PER_CLIENT + done % USERS_PER_CLIENT].clone());
        async move {
            let request = SignInRequest { email, password: batch::PASSWORD.into() };
            anyhow::ensure!(!client.sign_in(request).await?.into_inner().access_token.is_empty(), "no token");
            Ok(true)
        }
    })
    .await?;
    let cpu = meter.per_operation(sample.latencies.len());
    Ok((sample, cpu))
}

/// Operations per second of `op` on this thread, for about `seconds`.
fn per_second(seconds: f64, mut op: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..100 {
            anyhow::ensure!(op(), "an operation failed");
        }
        count += 100;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// `count` signed access tokens (each its own `jti`), and a verifier that holds their key.
async fn tokens_and_verifier(count: usize) -> anyhow::Result<(Vec<String>, TokenVerifier)> {
    use verimail_auth::access::{Holder, SigningKeys};
    let keys = SigningKeys::generate().map_err(anyhow::Error::msg)?;
    let holder = Holder {
        user_id: "0193f1c2-0000-7000-8000-000000000001",
        email: "ann@example.com",
        email_verified: true,
        session_id: "0193f1c2-0000-7000-8000-0000000000aa",
        auth_time: chrono::Utc::now(),
    };
    let tokens = (0..count.max(1))
        .map(|_| keys.sign(&holder, "verimail", Duration::from_secs(3600)).map(|signed| signed.token))
        .collect::<Result<Vec<_>, _>>()?;
    let published = keys.published().into_iter().map(|key| (key.id, key.paserk)).collect();
    let verifier = TokenVerifier::new(StaticKeys(published), "verimail");
    verifier.verify(&tokens[0]).await?; // fetches the keys once
    Ok((tokens, verifier))
}

async fn token_and_verifier() -> anyhow::Result<(String, TokenVerifier)> {
    let (mut tokens, verifier) = tokens_and_verifier(1).await?;
    Ok((tokens.remove(0), verifier))
}

/// Offline verification per core: the client library's `verify_offline` of a real token, and
/// raw Ed25519 verification of a message as long as the one the token signs, alternating in
/// rounds so the machine's drift falls on both. Per second each, on one thread.
pub async fn offline_verification(seconds: u64) -> anyhow::Result<(f64, f64)> {
    let (token, verifier) = token_and_verifier().await?;
    let seed = ed25519_compact::Seed::new([7u8; 32]);
    let pair = ed25519_compact::KeyPair::from_seed(seed);
    // PAE of header, payload and footer: the bytes PASETO signs are about the token's length.
    let message = vec![0x5a_u8; token.len()];
    let signature = pair.sk.sign(&message, None);
    let rounds = 6;
    let share = seconds as f64 / rounds as f64;
    let (mut library, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        library.push(per_second(share, || verifier.verify_offline(&token).is_ok_and(|c| c.email_verified))?);
        raw.push(per_second(share, || pair.pk.verify(&message, &signature).is_ok())?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok((mean(&library), mean(&raw)))
}

/// What RequireVerified adds to a call: the layer around a service that answers at once,
/// against that service alone, called in this process with no network in between (whose
/// jitter on two shared cores is larger than what is measured). Three samples, in rounds
/// that alternate so the machine's drift falls on all: the caller's one token (as a client
/// calls through its session; remembered after its first check), a token never seen before
/// on every call (a full signature check each), and no layer.
pub struct Overhead {
    pub same_token: Sample,
    pub new_token: Sample,
    pub unchecked: Sample,
}

pub async fn require_verified_overhead(seconds: u64) -> anyhow::Result<Overhead> {
    use tower::{Layer, Service};
    let rounds = 6;
    let share = (seconds as f64 / rounds as f64 / 3.0).max(0.2);
    // A checked call takes some 50 µs: enough fresh tokens for every call of its rounds.
    let (tokens, verifier) = tokens_and_verifier((share * rounds as f64 * 25_000.0) as usize).await?;
    let answer = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::default()))
    });
    let mut layered = RequireVerified::new(verifier).layer(answer);
    let mut alone = answer;
    let mut fresh = tokens[1..].iter();
    let (mut same_token, mut new_token, mut unchecked) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..rounds {
        for mode in 0..3 {
            let until = Instant::now() + Duration::from_secs_f64(share);
            while Instant::now() < until {
                let token = match mode {
                    1 => fresh.next().ok_or_else(|| anyhow::anyhow!("out of fresh tokens"))?,
                    _ => &tokens[0],
                };
                let request = http::Request::builder().header("authorization", format!("Bearer {token}")).body(())?;
                let began = Instant::now();
                let response = match mode {
                    2 => alone.call(request).await?,
                    _ => layered.call(request).await?,
                };
                let took = began.elapsed();
                anyhow::ensure!(response.headers().get("grpc-status").is_none(), "refused: {:?}", response.headers());
                [&mut same_token, &mut new_token, &mut unchecked][mode].push(took);
            }
        }
    }
    let elapsed = started.elapsed() / 3;
    let sample = |latencies| Sample { latencies, elapsed };
    Ok(Overhead { same_token: sample(same_token), new_token: sample(new_token), unchecked: sample(unchecked) })
}
