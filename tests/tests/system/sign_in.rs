//! After "verified": sign in, get an access token, and call another team's service that
//! checks it offline (the orders example, with verimail-client's RequireVerified).

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use tonic::Code;
use verimail_client::{Connection, TokenVerifier, VerifyError};
use verimail_example_orders::pb::{PlaceOrderRequest, orders_client::OrdersClient};
use verimail_proto::reasons;
use verimail_proto::user::v1::UserStatus;
use verimail_system_tests::{Stack, StackOptions};

const PASSWORD: &str = "correct horse battery";

/// A verifier with the keys of the stack's auth-service and its revocation feed, as another
/// team's service holds one.
pub fn verifier(stack: &Stack) -> TokenVerifier {
    let auth = Connection::new(&format!("http://{}", stack.grpc_addrs[1])).expect("auth-service's URL");
    let users = Connection::new(&format!("http://{}", stack.grpc_addrs[0]))
        .and_then(|users| users.with_service_token(verimail_system_tests::TEST_APP_TOKEN))
        .expect("user-service's URL");
    TokenVerifier::from_auth(auth.auth(), "verimail")
        .with_leeway(Duration::ZERO)
        .with_revocations(users.users(), Duration::from_millis(250))
}

/// The orders example, served on a free port with `verifier`: its URL.
pub async fn start_orders(verifier: TokenVerifier) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(verimail_example_orders::serve(listener, verifier, std::future::pending()));
    url
}

/// How long a revoked token may still open another team's service.
pub const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// Polls the orders service with `token` until it is refused (at most [`REVOCATION_BOUND`]):
/// how long that took, and the refusal.
pub async fn refused_within(orders: &str, token: &str) -> (Duration, tonic::Status) {
    let started = std::time::Instant::now();
    loop {
        match place_order(orders, Some(token)).await {
            Err(status) => return (started.elapsed(), status),
            Ok(_) if started.elapsed() > REVOCATION_BOUND => {
                panic!("the token still opens the orders service after {REVOCATION_BOUND:?}")
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// PlaceOrder with `token` as the bearer token (none: no authorization header).
pub async fn place_order(
    orders: &str,
    token: Option<&str>,
) -> Result<verimail_example_orders::pb::PlaceOrderResponse, tonic::Status> {
    let mut client = OrdersClient::connect(orders.to_owned()).await.expect("the orders service answers");
    let mut request = tonic::Request::new(PlaceOrderRequest { item: "a teapot".into() });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    }
    client.place_order(request).await.map(|reply| reply.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_waits_for_verification_then_a_token_opens_another_teams_service() {
    let stack = Stack::start().await;
    let user_id = stack.register("ann@example.com", PASSWORD).await;
    stack.smtp.wait_for("ann@example.com", 1, EMAIL_WAIT).await;

    // Not verified yet: refused with the reason, and a new verification email goes out.
    let refused = stack.sign_in("ann@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reasons::of(&refused), reasons::EMAIL_NOT_VERIFIED);
    let mails = stack.smtp.wait_for("ann@example.com", 2, EMAIL_WAIT).await;
    assert_eq!(mails.len(), 2, "one new email, no more");

    // The newest link verifies; then sign-in answers a token for the user.
    stack.verify(&mails[1].verification_token()).await.expect("the new link verifies");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    let signed_in = stack.sign_in("Ann@Example.com", PASSWORD).await.expect("SignIn after verification");
    let user = signed_in.user.expect("the user");
    assert_eq!((user.id.as_str(), user.status()), (user_id.as_str(), UserStatus::Verified));
    assert!(signed_in.access_token.starts_with("v4.public."), "{}", signed_in.access_token);
    let expires_at = chrono::DateTime::parse_from_rfc3339(&signed_in.expires_at).expect("RFC 3339");
    let lifetime = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(lifetime > chrono::Duration::seconds(880) && lifetime <= chrono::Duration::seconds(900), "{lifetime}");
    assert_eq!(stack.smtp.to("ann@example.com").len(), 2, "signing in sent nothing");

    // Checked offline with the keys fetched from the running auth-service.
    let verifier = verifier(&stack);
    let claims = verifier.verify(&signed_in.access_token).await.expect("the token verifies");
    assert_eq!(
        (claims.user_id.as_str(), claims.email.as_str(), claims.email_verified),
        (user_id.as_str(), "ann@example.com", true)
    );

    // Another team's service lets the verified user in, and nobody without a valid token.
    let orders = start_orders(verifier).await;
    let order = place_order(&orders, Some(&signed_in.access_token)).await.expect("a verified user's order");
    assert_eq!((order.user_id.as_str(), order.email.as_str()), (user_id.as_str(), "ann@example.com"));
    let none = place_order(&orders, None).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
    let mut tampered = signed_in.access_token.clone().into_bytes();
    let at = "v4.public.".len() + 30;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = place_order(&orders, Some(&String::from_utf8(tampered).unwrap())).await.unwrap_err();
    assert_eq!(tampered.code(), Code::Unauthenticated, "{tampered:?}");
    assert!(tampered.message().contains("invalid signature"), "{}", tampered.message());

    // A key auth-service does not publish (a retired one, or anybody's) verifies nothing.
    let stranger = verimail_auth::access::SigningKeys::generate().unwrap();
    let session_id = signed_in.session.as_ref().expect("the session").id.clone();
    let holder = verimail_auth::access::Holder {
        user_id: &user_id,
        email: "ann@example.com",
        email_verified: true,
        session_id: &session_id,
        auth_time: chrono::Utc::now(),
    };
    let forged = stranger.sign(&holder, "verimail", Duration::from_secs(60)).unwrap().token;
    let refused = place_order(&orders, Some(&forged)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("does not publish"), "{}", refused.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_users_token_is_refused_by_the_service_and_an_expired_one_too() {
    let options = StackOptions {
        sign_in_requires_verified: false,
        access_token_lifetime: Duration::from_secs(2),
        ..Default::default()
    };
    let stack = Stack::start_with(options).await;
    let user_id = stack.register("bob@example.com", PASSWORD).await;
    let mail = stack.smtp.wait_for_verification("bob@example.com", EMAIL_WAIT).await;
    let orders = start_orders(verifier(&stack)).await;

    // SIGN_IN_REQUIRES_VERIFIED=false: a token that says so, which the service refuses.
    let unverified = stack.sign_in("bob@example.com", PASSWORD).await.expect("SignIn unverified");
    assert_eq!(unverified.user.expect("the user").status(), UserStatus::Unverified);
    let claims = verifier(&stack).verify(&unverified.access_token).await.expect("a valid token");
    assert!(!claims.email_verified);
    let denied = place_order(&orders, Some(&unverified.access_token)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(reasons::of(&denied), reasons::EMAIL_NOT_VERIFIED);
    assert_eq!(stack.smtp.to("bob@example.com").len(), 1, "no new email when sign-in does not require verification");

    stack.verify(&mail.verification_token()).await.expect("the link verifies");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    let verified = stack.sign_in("bob@example.com", PASSWORD).await.expect("SignIn verified");
    place_order(&orders, Some(&verified.access_token)).await.expect("a verified user's order");

    // ACCESS_TOKEN_TTL_SECONDS=2: past it, the same token opens nothing.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = place_order(&orders, Some(&verified.access_token)).await.unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated, "{expired:?}");
    assert!(expired.message().contains("expired"), "{}", expired.message());
    assert_eq!(verifier(&stack).verify(&verified.access_token).await, Err(VerifyError::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_address_answer_alike_and_only_the_guesser_is_refused() {
    let window = Duration::from_secs(3);
    let options =
        StackOptions { sign_in_failures: Some(verimail_server::limits::Rate::new(3, window)), ..Default::default() };
    let stack = Stack::start_with(options).await;
    let user_id = stack.register("cat@example.com", PASSWORD).await;
    let mail = stack.smtp.wait_for_verification("cat@example.com", EMAIL_WAIT).await;
    stack.verify(&mail.verification_token()).await.expect("verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);

    // The same status and message, in about the same time (an unknown address hashes a dummy).
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for n in 0..5 {
        let client = format!("10.1.0.{n}");
        let started = std::time::Instant::now();
        let a = stack.sign_in_from(&client, "cat@example.com", "not the password").await.unwrap_err();
        wrong.push(started.elapsed());
        let started = std::time::Instant::now();
        let b = stack.sign_in_from(&client, "nobody@example.com", "not the password").await.unwrap_err();
        unknown.push(started.elapsed());
        assert_eq!((a.code(), a.message()), (b.code(), b.message()));
        assert_eq!(a.code(), Code::Unauthenticated);
    }
    wrong.sort();
    unknown.sort();
    let (wrong, unknown) = (wrong[2], unknown[2]);
    println!("median SignIn: wrong password {wrong:?}, unknown address {unknown:?}");
    assert!(wrong.abs_diff(unknown) < Duration::from_millis(30), "{wrong:?} against {unknown:?}");

    // A guesser spends its own allowance on the address: then it is refused, even with the
    // right password, and so it is on an address that has no account.
    for _ in 0..3 {
        let status = stack.sign_in_from("10.9.9.9", "cat@example.com", "guess guess guess").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = stack.sign_in_from("10.9.9.9", "ghost@example.com", "guess guess guess").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    for email in ["cat@example.com", "ghost@example.com"] {
        let refused = stack.sign_in_from("10.9.9.9", email, PASSWORD).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{email}: {refused:?}");
        let wait = verimail_server::limits::retry_after(&refused).expect("RetryInfo");
        assert!(wait > Duration::ZERO && wait <= window, "{wait:?}");
    }
    // The owner, from their own address, is not locked out.
    stack.sign_in_from("10.1.1.1", "cat@example.com", PASSWORD).await.expect("the owner signs in");

    // After the window the guesser's allowance is back; a success forgets its failures.
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    for _ in 0..2 {
        stack.sign_in_from("10.9.9.9", "cat@example.com", "guess guess guess").await.unwrap_err();
    }
    stack.sign_in_from("10.9.9.9", "cat@example.com", PASSWORD).await.expect("back after the window");
    for _ in 0..3 {
        let status = stack.sign_in_from("10.9.9.9", "cat@example.com", "guess guess guess").await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "three fresh failures after the success");
    }
    let refused = stack.sign_in_from("10.9.9.9", "cat@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
}

/// A flood of wrong passwords from many clients fills the failure map: it forgets the oldest
/// failures and never refuses someone it holds none of (the owner, from a new client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_failures_from_many_clients_locks_no_one_else_out() {
    let options = StackOptions {
        sign_in_failures: Some(verimail_server::limits::Rate::new(3, Duration::from_secs(600))),
        user_vars: vec![("SIGN_IN_FAILURES_MAX_KEYS", "40".into())],
        ..Default::default()
    };
    let stack = Stack::start_with(options).await;
    stack.verified("eve@example.com", PASSWORD).await;
    for n in 0..120 {
        let (client, email) = (format!("10.2.{}.{}", n / 200, n % 200), format!("victim{n}@example.com"));
        for _ in 0..3 {
            let status = stack.sign_in_from(&client, &email, "not the password").await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    }
    // The newest pairs are refused still; the owner, from a client new to the map, is not.
    let refused = stack.sign_in_from("10.2.0.119", "victim119@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    stack.sign_in_from("10.3.0.1", "eve@example.com", PASSWORD).await.expect("the owner signs in");
    let unknown = stack.sign_in_from("10.3.0.2", "nobody@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "a wrong password, not a refusal: {unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_made_with_older_parameters_is_upgraded_by_a_sign_in() {
    use verimail_user::password::{HashCost, Password, PasswordHasher};
    let stack = Stack::start().await;
    let user_id = stack.register("dan@example.com", PASSWORD).await;
    // As an earlier deployment with a lower memory cost left it.
    let older = PasswordHasher::new(HashCost { memory_kib: 512, iterations: 1, parallelism: 1 }, 1).unwrap();
    let old_hash = older.hash(Password::parse(PASSWORD).unwrap()).await.unwrap();
    assert!(old_hash.starts_with("$argon2id$v=19$m=512,t=1,p=1$"));
    let set = format!("UPDATE users SET password_hash = '{old_hash}' WHERE id = '{user_id}'");
    assert_eq!(stack.execute("user", &set).await, 1);
    let select = format!("SELECT password_hash FROM users WHERE id = '{user_id}'");
    let stored = || stack.query_text("user", &select);

    // A wrong password changes nothing; the right one (even before verification) upgrades it.
    stack.sign_in_from("10.2.0.1", "dan@example.com", "not the password").await.unwrap_err();
    assert_eq!(stored().await, old_hash);
    let refused = stack.sign_in_from("10.2.0.1", "dan@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(reasons::of(&refused), reasons::EMAIL_NOT_VERIFIED);
    let upgraded = stored().await;
    assert!(upgraded.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "the stack's cost now: {upgraded}");
    assert!(verimail_user::password::password_matches(&upgraded, PASSWORD));
    let mail = stack.smtp.wait_for("dan@example.com", 2, EMAIL_WAIT).await.remove(1);
    stack.verify(&mail.verification_token()).await.expect("verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    stack.sign_in_from("10.2.0.1", "dan@example.com", PASSWORD).await.expect("signs in with the upgraded hash");
    assert_eq!(stored().await, upgraded, "upgraded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_publishes_the_keys_as_json_and_the_verified_page_continues_to_the_app() {
    let options =
        StackOptions { app_url: Some("https://app.example.com/welcome?from=verimail".into()), ..Default::default() };
    let stack = Stack::start_with(options).await;

    // The keys at a URL, for verifiers in any language: the same as GetPublicKeys, cacheable.
    let response = reqwest::get(format!("{}/.well-known/verimail-keys", stack.gateway_url)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("cache-control"), "public, max-age=5");
    let document: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).expect("JSON");
    let published = stack
        .auth
        .clone()
        .get_public_keys(verimail_proto::auth::v1::GetPublicKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((document["issuer"].as_str(), document["audience"].as_str()), (Some("verimail"), Some("verimail")));
    let keys = document["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), published.keys.len());
    assert_eq!(keys[0]["kid"].as_str(), Some(published.keys[0].id.as_str()));
    assert_eq!(keys[0]["paserk"].as_str(), Some(published.keys[0].paserk.as_str()));
    assert_eq!(keys[0]["current"].as_bool(), Some(true));

    // A verifier given only that document checks a real token.
    let user_id = stack.register("eve@example.com", PASSWORD).await;
    let mail = stack.smtp.wait_for_verification("eve@example.com", EMAIL_WAIT).await;
    let browser = verimail_system_tests::browser::Browser::new(&stack.gateway_url);
    let page = browser.click(&mail.verification_link()).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "{}", page.html);
    let html = page.html.replace("&#x2f;", "/");
    assert!(
        html.contains(r#"<a href="https://app.example.com/welcome?from=verimail">Continue to app.example.com</a>"#),
        "{html}"
    );
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    let token = stack.sign_in("eve@example.com", PASSWORD).await.expect("SignIn").access_token;
    let from_json: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            (k["kid"].as_str().unwrap_or_default().to_owned(), k["paserk"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let verifier = TokenVerifier::new(verimail_client::StaticKeys(from_json), "verimail");
    assert_eq!(verifier.verify(&token).await.expect("verifies").user_id, user_id);
}
