//! Sign-in and access tokens: SignIn at full speed (against the hashing bound), offline
//! verification in the client library (against raw Ed25519 in the same run), and what
//! `RequireVerified` adds to a call of the orders example (against the same service without it).

use crate::load::{Sample, drive};
use std::time::{Duration, Instant};
use verimail_client::{Claims, StaticKeys, TokenVerifier};
use verimail_proto::user::v1::SignInRequest;
use verimail_system_tests::batch;
use verimail_system_tests::procs::ProcessStack;

/// SignIn from `clients` concurrent clients for `seconds`, each client signing in as a verified
/// user of its own (registered with the stack's hashing cost, so every check is one hash).
pub async fn sign_in_at_full_speed(stack: &ProcessStack, clients: usize, seconds: u64) -> anyhow::Result<Sample> {
    let limit = Duration::from_secs(120);
    let users = batch::register(&stack.users, &crate::address("sign-in"), 0..clients, limit).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), limit).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, limit).await;
    let emails: Vec<String> = users.iter().map(|user| user.email.clone()).collect();
    let client = stack.users.clone();
    drive(clients, seconds, move |n, _| {
        let (mut client, email) = (client.clone(), emails[n].clone());
        async move {
            let request = SignInRequest { email, password: batch::PASSWORD.into() };
            anyhow::ensure!(!client.sign_in(request).await?.into_inner().access_token.is_empty(), "no token");
            Ok(true)
        }
    })
    .await
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

/// A signed access token, and a verifier that holds its key.
async fn token_and_verifier() -> anyhow::Result<(String, TokenVerifier)> {
    use verimail_auth::access::{Holder, SigningKeys};
    let keys = SigningKeys::generate().map_err(anyhow::Error::msg)?;
    let holder =
        Holder { user_id: "0193f1c2-0000-7000-8000-000000000001", email: "ann@example.com", email_verified: true };
    let token = keys.sign(&holder, "verimail", Duration::from_secs(3600))?.token;
    let published = keys.published().into_iter().map(|key| (key.id, key.paserk)).collect();
    let verifier = TokenVerifier::new(StaticKeys(published), "verimail");
    verifier.verify(&token).await?; // fetches the keys once
    Ok((token, verifier))
}

/// Offline verification per core: the client library's `verify_cached` of a real token, and
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
        library.push(per_second(share, || verifier.verify_cached(&token).is_ok_and(|c| c.email_verified))?);
        raw.push(per_second(share, || pair.pk.verify(&message, &signature).is_ok())?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok((mean(&library), mean(&raw)))
}

/// Hands the orders service the claims without checking anything: the baseline.
#[derive(Clone)]
struct GivenClaims<S>(S, Claims);

impl<S, B> tower::Service<http::Request<B>> for GivenClaims<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.1.clone());
        self.0.call(request)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GivenClaims<S> {
    const NAME: &'static str = S::NAME;
}

/// PlaceOrder on the orders example behind `RequireVerified`, and on the same service given
/// the claims for free, one call at a time, alternating in rounds: the two samples.
pub async fn require_verified_overhead(seconds: u64) -> anyhow::Result<(Sample, Sample)> {
    use verimail_example_orders::pb::{PlaceOrderRequest, orders_client::OrdersClient, orders_server::OrdersServer};
    let (token, verifier) = token_and_verifier().await?;
    let claims = verifier.verify_cached(&token)?;
    let serve = |listener: tokio::net::TcpListener, checked: bool| {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut router = tonic::transport::Server::builder();
        let served = if checked {
            tokio::spawn(
                router.add_service(verimail_example_orders::service(verifier.clone())).serve_with_incoming(incoming),
            )
        } else {
            let given = GivenClaims(OrdersServer::new(verimail_example_orders::PlaceOrders), claims.clone());
            tokio::spawn(router.add_service(given).serve_with_incoming(incoming))
        };
        drop(served);
    };
    let mut urls = Vec::new();
    for checked in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!("http://{}", listener.local_addr()?));
        serve(listener, checked);
    }
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let rounds = 6;
    let share = (seconds as f64 / rounds as f64 / 2.0).max(0.2);
    let started = Instant::now();
    for _ in 0..rounds {
        for (url, latencies) in [(&urls[0], &mut with), (&urls[1], &mut without)] {
            let mut client = OrdersClient::connect(url.clone()).await?;
            let until = Instant::now() + Duration::from_secs_f64(share);
            while Instant::now() < until {
                let mut request = tonic::Request::new(PlaceOrderRequest { item: "a teapot".into() });
                request.metadata_mut().insert("authorization", bearer.clone());
                let began = Instant::now();
                client.place_order(request).await?;
                latencies.push(began.elapsed());
            }
        }
    }
    let elapsed = started.elapsed() / 2;
    Ok((Sample { latencies: with, elapsed }, Sample { latencies: without, elapsed }))
}
