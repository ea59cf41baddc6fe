//! Verification: the gateway's POST /verify-email and VerifyEmail over gRPC with fresh
//! tokens, at full speed and at a fixed rate, and the time from the click until GetUser says
//! verified.
//!
//! The users are prepared on the stack first (registered, with the cheap test hashing since
//! registration is not what is measured here, and each given a fresh token over
//! IssueVerificationToken, as email-service does before it mails the link). email-service is
//! stopped throughout: the emails of those registrations would otherwise be sent while
//! verification is measured.

use crate::load::{Sample, drive, paced};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verimail_proto::auth::v1::{IssueVerificationTokenRequest, VerifyEmailRequest, VerifyOutcome};
use verimail_proto::user::v1::{GetUserRequest, UserStatus, get_user_request};
use verimail_system_tests::procs::ProcessStack;

/// A registered, unverified user and a token no one has used.
pub struct Fresh {
    pub user_id: String,
    pub email: String,
    pub token: String,
}

/// Fresh tokens, taken one at a time by concurrent clients.
#[derive(Clone)]
pub struct Tokens(Arc<Mutex<Vec<Fresh>>>, Vec<(String, String)>);

impl Tokens {
    pub fn new(fresh: Vec<Fresh>) -> Tokens {
        let users = fresh.iter().map(|f| (f.user_id.clone(), f.email.clone())).collect();
        Tokens(Arc::new(Mutex::new(fresh)), users)
    }

    fn take(&self) -> Option<Fresh> {
        self.0.lock().expect("tokens lock").pop()
    }

    /// The users whose tokens these are (taken or not): their ids and addresses.
    pub fn users(&self) -> Vec<(String, String)> {
        self.1.clone()
    }
}

/// Fresh tokens to prepare per second of a full-speed measurement: above the most seen on
/// each database (about 4,300/s on SQLite, 1,100/s on PostgreSQL, whose commits wait for
/// fsync), as preparing them takes longer than using them.
pub fn enough(postgres: bool) -> usize {
    if postgres { 2500 } else { 6000 }
}

/// Registers `count` users and issues a fresh token for each, 32 at a time.
pub async fn prepare(stack: &ProcessStack, count: usize) -> anyhow::Result<Tokens> {
    use futures::{StreamExt, TryStreamExt};
    let fresh: Vec<Fresh> = futures::stream::iter(0..count)
        .map(|_| {
            let (mut users, mut auth) = (stack.users.clone(), stack.issuer.clone());
            async move {
                let email = crate::address("verify");
                let user_id = users.register_user(crate::register::request(email.clone())).await?.into_inner().user_id;
                let request = IssueVerificationTokenRequest {
                    user_id: user_id.clone(),
                    email: email.clone(),
                    ..Default::default()
                };
                let token = auth.issue_verification_token(request).await?.into_inner().token;
                Ok::<_, anyhow::Error>(Fresh { user_id, email, token })
            }
        })
        .buffer_unordered(32)
        .try_collect()
        .await?;
    Ok(Tokens::new(fresh))
}

/// One click: POST /verify-email with the token, as the confirm page's form does; the answer
/// must be the "verified" page.
async fn click(http: &reqwest::Client, gateway: &str, token: &str) -> anyhow::Result<()> {
    let response = http.post(format!("{gateway}/verify-email")).form(&[("token", token)]).send().await?;
    let status = response.status();
    let page = response.text().await?;
    anyhow::ensure!(
        status == 200 && page.contains("Email address verified"),
        "POST /verify-email answered {status}: {page}"
    );
    Ok(())
}

/// POST /verify-email from `clients` concurrent clients, each click with a fresh token,
/// client n clicking through gateway n mod the stack's instances.
pub async fn gateway_at_full_speed(
    stack: &ProcessStack,
    tokens: &Tokens,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Sample> {
    let (http, gateways, tokens) = (reqwest::Client::new(), stack.gateway_urls(), tokens.clone());
    drive(clients, seconds, move |client, _| {
        let (http, gateway, fresh) = (http.clone(), gateways[client % gateways.len()].clone(), tokens.take());
        async move {
            let Some(fresh) = fresh else { return Ok(false) };
            click(&http, &gateway, &fresh.token).await?;
            Ok(true)
        }
    })
    .await
}

/// VerifyEmail over gRPC from `clients` concurrent clients, each call with a fresh token.
pub async fn grpc_at_full_speed(
    stack: &ProcessStack,
    tokens: &Tokens,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Sample> {
    let (auth, tokens) = (stack.auth.clone(), tokens.clone());
    drive(clients, seconds, move |_, _| {
        let (mut auth, fresh) = (auth.clone(), tokens.take());
        async move {
            let Some(fresh) = fresh else { return Ok(false) };
            let reply = auth.verify_email(VerifyEmailRequest { token: fresh.token }).await?.into_inner();
            anyhow::ensure!(reply.outcome() == VerifyOutcome::Verified, "VerifyEmail answered {:?}", reply.outcome());
            Ok(true)
        }
    })
    .await
}

/// VerifyEmail over gRPC at `rate` per second (open loop), each call with a fresh token: the
/// calls' latencies.
pub async fn grpc_at_rate(stack: &ProcessStack, tokens: &Tokens, rate: f64, seconds: u64) -> anyhow::Result<Sample> {
    let (auth, tokens) = (stack.auth.clone(), tokens.clone());
    paced(rate, seconds, move |_| {
        let (mut auth, fresh) = (auth.clone(), tokens.take());
        async move {
            let fresh = fresh.ok_or_else(|| anyhow::anyhow!("too few fresh tokens prepared"))?;
            let reply = auth.verify_email(VerifyEmailRequest { token: fresh.token }).await?.into_inner();
            anyhow::ensure!(reply.outcome() == VerifyOutcome::Verified, "VerifyEmail answered {:?}", reply.outcome());
            Ok(())
        }
    })
    .await
}

/// POST /verify-email at `rate` per second (open loop), while `probes` clients each click and
/// then ask GetUser every millisecond until it says verified: the clicks' latencies, and the
/// probes' times from the click until verified.
pub async fn gateway_at_rate(
    stack: &ProcessStack,
    tokens: &Tokens,
    probe_tokens: &Tokens,
    rate: f64,
    probes: usize,
    seconds: u64,
) -> anyhow::Result<(Sample, Sample)> {
    let (http, gateway) = (reqwest::Client::new(), stack.gateway_url.clone());
    let probing = drive(probes, seconds, {
        let (http, gateway, users, tokens) = (http.clone(), gateway.clone(), stack.users.clone(), probe_tokens.clone());
        move |_, _| {
            let (http, gateway, mut users, fresh) = (http.clone(), gateway.clone(), users.clone(), tokens.take());
            async move {
                let Some(fresh) = fresh else { return Ok(false) };
                click(&http, &gateway, &fresh.token).await?;
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let key = Some(get_user_request::Key::UserId(fresh.user_id.clone()));
                    let user = users.get_user(GetUserRequest { key }).await?.into_inner().user;
                    if user.is_some_and(|user| user.status() == UserStatus::Verified) {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "user {} not verified 10 s after the click",
                        fresh.user_id
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(true)
            }
        }
    });
    let tokens = tokens.clone();
    let clicking = paced(rate, seconds, move |_| {
        let (http, gateway, fresh) = (http.clone(), gateway.clone(), tokens.take());
        async move {
            let fresh = fresh.ok_or_else(|| anyhow::anyhow!("ran out of fresh tokens"))?;
            click(&http, &gateway, &fresh.token).await
        }
    });
    let (clicks, verified) = tokio::join!(clicking, probing);
    Ok((clicks?, verified?))
}
