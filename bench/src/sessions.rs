//! Sessions: RefreshSession at full speed, SignOut at its maximum, and how soon a sign-out
//! reaches a verifier that follows the revocation feed (what `RequireVerified` checks with),
//! measured over sign-outs at half that maximum.

use crate::load::{Sample, drive};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verimail_client::{Connection, TokenVerifier, VerifyError};
use verimail_proto::user::v1::user_service_client::UserServiceClient;
use verimail_proto::user::v1::{RefreshSessionRequest, SignInRequest, SignOutRequest};
use verimail_system_tests::batch;
use verimail_system_tests::procs::{Part, ProcessStack};

/// `count` verified users of `prefix`: their addresses.
async fn verified_users(stack: &ProcessStack, prefix: &str, count: usize) -> Vec<String> {
    let limit = Duration::from_secs(120);
    let users = batch::register(&stack.users, &format!("{prefix}-{}", std::process::id()), 0..count, limit).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), limit).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, limit).await;
    users.into_iter().map(|user| user.email).collect()
}

/// `per_user` sessions of each of `emails`, 16 sign-ins at a time: (access, refresh) tokens.
async fn sessions(stack: &ProcessStack, emails: &[String], per_user: usize) -> anyhow::Result<Vec<(String, String)>> {
    let jobs = emails.iter().flat_map(|email| std::iter::repeat_n(email.clone(), per_user));
    let signed: Vec<anyhow::Result<(String, String)>> = futures::stream::iter(jobs)
        .map(|email| {
            let mut users = stack.users.clone();
            async move {
                let reply = users.sign_in(SignInRequest { email, password: batch::PASSWORD.into() }).await?;
                let reply = reply.into_inner();
                Ok((reply.access_token, reply.refresh_token))
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    signed.into_iter().collect()
}

/// RefreshSession from `clients` concurrent clients for `seconds`, each rotating its own
/// session's refresh token.
pub async fn refresh_at_full_speed(
    stack: &ProcessStack,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Sample, Vec<(&'static str, f64)>)> {
    let emails = verified_users(stack, "refresh", clients).await;
    let tokens = sessions(stack, &emails, 1).await?;
    let current: Arc<Vec<Mutex<String>>> =
        Arc::new(tokens.into_iter().map(|(_, refresh)| Mutex::new(refresh)).collect());
    let client = stack.users.clone();
    let meter = crate::cpu_meter(stack);
    let sample = drive(clients, seconds, move |n, _| {
        let (mut client, current) = (client.clone(), current.clone());
        async move {
            let presented = current[n].lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
            let reply = client.refresh_session(RefreshSessionRequest { refresh_token: presented }).await?;
            *current[n].lock().map_err(|_| anyhow::anyhow!("poisoned"))? = reply.into_inner().refresh_token;
            Ok(true)
        }
    })
    .await?;
    let cpu = meter.per_operation(sample.latencies.len());
    Ok((sample, cpu))
}

/// What [`revocation`] measured.
pub struct Revocation {
    /// SignOut at full speed (16 clients), over sessions made for it.
    pub sign_outs: Sample,
    /// From each sign-out's answer until the verifier refused its token, at half the maximum.
    pub latencies: Sample,
    pub rate: f64,
}

/// Sessions a user may have is bounded (50): enough users to make the sessions needed.
const USERS: usize = 40;
const PER_USER: usize = 25;
/// Sign-outs measured at half the maximum rate.
const PACED: usize = 200;

/// The maximum sign-out rate, then `PACED` sign-outs at half of it, each followed by a verifier
/// (a `TokenVerifier` following user-service's feed every second, as examples/orders does)
/// until it refuses the signed-out token.
pub async fn revocation(stack: &ProcessStack) -> anyhow::Result<Revocation> {
    let emails = verified_users(stack, "sign-out", USERS).await;
    let mut tokens = sessions(stack, &emails, PER_USER).await?;
    let auth = Connection::new(&format!("http://{}", stack.grpc_addr(Part::Auth)))?;
    let users = Connection::new(&format!("http://{}", stack.grpc_addr(Part::User)))?
        .with_service_token(verimail_system_tests::TEST_APP_TOKEN)?;
    let verifier =
        TokenVerifier::from_auth(auth.auth(), "verimail").with_revocations(users.users(), Duration::from_secs(1));
    for (access, _) in &tokens {
        verifier.verify(access).await?;
    }
    let paced: Vec<String> = tokens.split_off(tokens.len() - PACED).into_iter().map(|(access, _)| access).collect();
    let full: Arc<Vec<String>> = Arc::new(tokens.into_iter().map(|(access, _)| access).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // A user's own calls carry their token, not the test's credentials.
    let url = format!("http://{}", stack.grpc_addr(Part::User));
    let client = UserServiceClient::new(tonic::transport::Channel::from_shared(url)?.connect_lazy());
    let sign_outs = drive(16, 60, {
        let client = client.clone();
        move |_, _| {
            let (mut client, full, next) = (client.clone(), full.clone(), next.clone());
            async move {
                let Some(token) = full.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) else {
                    return Ok(false);
                };
                sign_out(&mut client, token).await?;
                Ok(true)
            }
        }
    })
    .await?;
    let rate = sign_outs.per_second() / 2.0;
    let started = Instant::now();
    let mut followed = tokio::task::JoinSet::new();
    for (n, token) in paced.into_iter().enumerate() {
        tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / rate)).into()).await;
        let (mut client, verifier) = (client.clone(), verifier.clone());
        followed.spawn(async move {
            sign_out(&mut client, &token).await?;
            let answered = Instant::now();
            loop {
                match verifier.verify(&token).await {
                    Err(VerifyError::Revoked) => return Ok::<_, anyhow::Error>(answered.elapsed()),
                    _ if answered.elapsed() > Duration::from_secs(30) => anyhow::bail!("never refused"),
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
    }
    let mut latencies = Vec::with_capacity(PACED);
    while let Some(done) = followed.join_next().await {
        latencies.push(done??);
    }
    Ok(Revocation { sign_outs, latencies: Sample { latencies, elapsed: started.elapsed() }, rate })
}

async fn sign_out(client: &mut UserServiceClient<tonic::transport::Channel>, token: &str) -> anyhow::Result<()> {
    let request = verimail_system_tests::with_bearer(SignOutRequest::default(), token);
    let ended = client.sign_out(request).await?.into_inner().ended_sessions;
    anyhow::ensure!(ended == 1, "SignOut ended {ended} sessions");
    Ok(())
}
