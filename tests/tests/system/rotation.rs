//! Token keys rotate without breaking links and codes in flight; a removed key verifies nothing.

use std::time::Duration;
use verimail_auth::token::TokenKeys;
use verimail_proto::user::v1::ResendVerificationRequest;
use verimail_system_tests::batch::{self, verification_emails};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::procs::{Part, ProcessStack};

const LIMIT: Duration = Duration::from_secs(60);

async fn restart_auth_with_keys(stack: &mut ProcessStack, keys: &str) {
    let status = stack.terminate(Part::Auth);
    assert!(status.success(), "auth-service exits 0 on SIGTERM");
    stack.set_var(Part::Auth, "AUTH_TOKEN_KEYS", keys);
    stack.start_part(Part::Auth).await;
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
    let resend = ResendVerificationRequest { email: users[2].email.clone() };
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
