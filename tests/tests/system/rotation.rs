//! Token keys rotate without breaking links and codes in flight; a removed key verifies nothing.

use std::time::Duration;
use verimail_auth::links::TokenKeys;
use verimail_proto::user::v1::ResendVerificationRequest;
use verimail_system_tests::batch::{self, verification_emails};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::procs::{Part, ProcessStack};

const LIMIT: Duration = Duration::from_secs(60);

/// Restarts auth-service with `keys` in `variable` (`AUTH_TOKEN_KEYS`, `AUTH_SIGNING_KEYS`).
async fn restart_auth_with(stack: &mut ProcessStack, variable: &str, keys: &str) {
    let status = stack.terminate(Part::Auth);
    assert!(status.success(), "auth-service exits 0 on SIGTERM");
    stack.set_var(Part::Auth, variable, keys);
    stack.start_part(Part::Auth).await;
}

async fn restart_auth_with_keys(stack: &mut ProcessStack, keys: &str) {
    restart_auth_with(stack, "AUTH_TOKEN_KEYS", keys).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_breaking_links_and_codes_in_flight_and_a_removed_key_verifies_nothing() {
    let mut stack = ProcessStack::start().await;
    let old = stack.var(Part::Auth, "AUTH_TOKEN_KEYS");
    let new = TokenKeys::generate().unwrap().current_paserk();
    let users = batch::register(&stack.users, "rotate", 0..3, LIMIT).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), LIMIT).await;
    // The first email of each user, made with the old key.
    let first: Vec<_> = users.iter().map(|u| verification_emails(&stack.smtp, &u.email).remove(0)).collect();
    let browser = Browser::new(&stack.gateway_url);

    // The new key issues, the old one still verifies: links and codes already sent keep working.
    restart_auth_with_keys(&mut stack, &format!("{new},{old}")).await;
    let page = browser.click(&first[0].verification_link()).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "an old-key link after the rotation");
    let form = |n: usize, code: String| [("email".to_owned(), users[n].email.clone()), ("code".to_owned(), code)];
    let page = browser.submit("/verify-code", &form(1, first[1].verification_code())).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "an old-key code after the rotation");

    // A new email for the third user is made with the new key.
    let resend = ResendVerificationRequest { email: users[2].email.clone(), ..Default::default() };
    stack.users.clone().resend_verification(resend).await.expect("ResendVerification");
    stack.smtp.wait_for(&users[2].email, 2, LIMIT).await;
    let second = verification_emails(&stack.smtp, &users[2].email).remove(1);

    // Once the old key is removed, what it made verifies nothing; what the new one made does.
    restart_auth_with_keys(&mut stack, &new).await;
    let page = browser.click(&first[2].verification_link()).await;
    assert_eq!((page.status, page.kind()), (400, "invalid"), "an old-key link after its key is gone");
    let page = browser.submit("/verify-code", &form(2, first[2].verification_code())).await;
    assert_eq!((page.status, page.kind()), (400, "code"), "an old-key code after its key is gone");
    let page = browser.click(&second.verification_link()).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "a new-key link");
    for user in &users {
        assert!(batch::wait_until_verified(&stack.users, &user.user_id, LIMIT).await, "{}", user.email);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_rotate_without_breaking_tokens_in_flight_and_a_retired_key_verifies_nothing() {
    use verimail_auth::access::SigningKeys;
    use verimail_client::{Connection, TokenVerifier, VerifyError};
    use verimail_proto::user::v1::SignInRequest;
    let mut stack = ProcessStack::start().await;
    let old = stack.var(Part::Auth, "AUTH_SIGNING_KEYS");
    let new = SigningKeys::generate().unwrap().current_paserk();
    let users = batch::register(&stack.users, "signing", 0..1, LIMIT).await;
    batch::expect_one_email_each(&stack.smtp, &users, &Default::default(), LIMIT).await;
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &users, LIMIT).await;
    let sign_in = |stack: &ProcessStack| {
        let request = SignInRequest { email: users[0].email.clone(), password: batch::PASSWORD.into() };
        let mut client = stack.users.clone();
        async move { client.sign_in(request).await.expect("SignIn").into_inner().access_token }
    };
    // A service that has verified tokens for a while: its keys are at most a second old.
    let auth = Connection::new(&format!("http://{}", stack.grpc_addr(Part::Auth))).unwrap();
    let verifier = TokenVerifier::from_auth(auth.auth(), "verimail")
        .with_max_age(Duration::from_secs(1))
        .with_refetch_interval(Duration::ZERO);
    let by_old = sign_in(&stack).await;
    assert!(verifier.verify(&by_old).await.is_ok());

    // The new key signs, the old one is still published: tokens in flight keep working.
    restart_auth_with(&mut stack, "AUTH_SIGNING_KEYS", &format!("{new},{old}")).await;
    let by_new = sign_in(&stack).await;
    assert!(verifier.verify(&by_new).await.is_ok(), "a new key id is fetched");
    assert!(verifier.verify(&by_old).await.is_ok(), "an old-key token after the rotation");

    // Once the old key is retired, its tokens verify nothing (after the verifier's next fetch).
    restart_auth_with(&mut stack, "AUTH_SIGNING_KEYS", &new).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(verifier.verify(&by_old).await, Err(VerifyError::UnknownKey), "a retired key's token");
    assert!(verifier.verify(&by_new).await.is_ok(), "the new key's token");
    assert!(verifier.verify(&sign_in(&stack).await).await.is_ok());
}
