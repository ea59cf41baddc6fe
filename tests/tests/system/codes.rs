//! The 6-digit code: typed on the gateway's page instead of opening the link.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use tonic::Code;
use verimail_proto::auth::v1::{VerifyEmailCodeRequest, VerifyOutcome};
use verimail_proto::user::v1::{ResendVerificationRequest, UserStatus};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{Stack, StackOptions, for_browser};

async fn verify_code(stack: &Stack, email: &str, code: &str) -> Result<VerifyOutcome, tonic::Status> {
    let request = VerifyEmailCodeRequest { email: email.into(), code: code.into() };
    stack.auth.clone().verify_email_code(request).await.map(|r| r.into_inner().outcome())
}

/// A code that is not `code`: same shape, another number.
fn other_than(code: &str, n: u32) -> String {
    let value: u32 = code.parse().unwrap();
    format!("{:06}", (value + n) % 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_the_code_from_the_email_on_the_page_verifies() {
    let stack = Stack::start().await;
    let browser = Browser::new(&stack.gateway_url);
    let user_id = stack.register("carol@example.com", "correct horse battery").await;
    let mail = stack.smtp.wait_for("carol@example.com", 1, EMAIL_WAIT).await.remove(0);
    let code = mail.verification_code();
    assert!(mail.part("text/html").contains(&code), "the code is in the HTML part too");

    let page = browser.get(&format!("{}/verify-code?email=carol@example.com", stack.gateway_url)).await;
    assert_eq!((page.status, page.kind()), (200, "code"));
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified, "a GET verifies nothing");
    let (action, _) = page.form().expect("a form");
    let typed = format!("{} {}", &code[..3], &code[3..]);
    let fields = [("email".to_owned(), " Carol@Example.com ".to_owned()), ("code".to_owned(), typed)];
    let done = browser.submit(&action, &fields).await;
    assert_eq!((done.status, done.kind()), (200, "verified"), "{}", done.html);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);

    let again = browser.submit(&action, &fields).await;
    assert_eq!((again.status, again.kind()), (200, "already-verified"));
}

/// VerifyEmailCode as a backend serving the browser at `client` calls it: with the gateway's
/// credential, naming the browser.
async fn verify_code_from(
    stack: &Stack,
    client: &str,
    email: &str,
    code: &str,
) -> Result<VerifyOutcome, tonic::Status> {
    let request = for_browser(VerifyEmailCodeRequest { email: email.into(), code: code.into() }, client);
    stack.auth.clone().verify_email_code(request).await.map(|r| r.into_inner().outcome())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_guessing_codes_spends_only_their_own_allowance_and_the_owner_still_verifies() {
    let code_limit = Some(verimail_server::limits::Rate::new(5, Duration::from_secs(3600)));
    let stack = Stack::start_with(StackOptions { code_limit, ..StackOptions::default() }).await;
    let user_id = stack.register("gus@example.com", "correct horse battery").await;
    let code = stack.smtp.wait_for("gus@example.com", 1, EMAIL_WAIT).await[0].verification_code();
    let stranger = "203.0.113.7";
    // Not codes at all: refused before anything is counted.
    for typo in ["12345", "abcdef", "1234567"] {
        let status = verify_code_from(&stack, stranger, "gus@example.com", typo).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{typo}");
    }
    for n in 1..=5 {
        let wrong = verify_code_from(&stack, stranger, "gus@example.com", &other_than(&code, n)).await.unwrap_err();
        assert_eq!(wrong.code(), Code::InvalidArgument, "wrong try {n}");
    }
    let limited = verify_code_from(&stack, stranger, "Gus+x@Example.com", &other_than(&code, 6)).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "the stranger's allowance is spent, whatever the spelling");
    assert!(limited.message().contains("code attempts for this address from this client"), "{}", limited.message());
    println!("the stranger's 6th code: {:?} {}", limited.code(), limited.message());
    let owner = "198.51.100.20";
    assert_eq!(verify_code_from(&stack, owner, "gus@example.com", &code).await.unwrap(), VerifyOutcome::Verified);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_from_many_clients_kill_the_codes_at_the_cap_and_a_new_email_brings_a_live_one() {
    let stack = Stack::start_with(StackOptions { code_max_wrong_tries: 5, ..StackOptions::default() }).await;
    let user_id = stack.register("dave@example.com", "correct horse battery").await;
    let code = stack.smtp.wait_for("dave@example.com", 1, EMAIL_WAIT).await[0].verification_code();
    for n in 1..=5 {
        let client = format!("203.0.113.{n}");
        let wrong = verify_code_from(&stack, &client, "dave@example.com", &other_than(&code, n)).await.unwrap_err();
        assert_eq!(wrong.code(), Code::InvalidArgument, "wrong try {n}");
        assert_eq!(verimail_server::grpc::bad_request_field(&wrong).as_deref(), Some("code"));
    }
    // Locked, but only the right code may say so: a wrong one answers as for an unknown address.
    let unknown = verify_code(&stack, "nobody@example.com", &code).await.unwrap_err();
    let wrong = verify_code(&stack, "dave@example.com", &other_than(&code, 9)).await.unwrap_err();
    assert_eq!((wrong.code(), wrong.message()), (unknown.code(), unknown.message()), "a wrong code after the lock");
    let locked = verify_code(&stack, "dave@example.com", &code).await.unwrap_err();
    assert_eq!(
        (locked.code(), verimail_proto::reasons::of(&locked).as_str()),
        (Code::FailedPrecondition, verimail_proto::reasons::CODE_LOCKED)
    );
    let page = Browser::new(&stack.gateway_url)
        .submit("/verify-code", &[("email".into(), "dave@example.com".into()), ("code".into(), code.clone())])
        .await;
    assert_eq!((page.status, page.kind()), (410, "code-locked"));
    let page = Browser::new(&stack.gateway_url)
        .submit("/verify-code", &[("email".into(), "dave@example.com".into()), ("code".into(), other_than(&code, 9))])
        .await;
    assert_eq!((page.status, page.kind()), (400, "code"), "a wrong code on a locked address is just wrong");
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified, "a dead code verifies nothing");

    // The link of the same email still works: only the codes took the guesses. A new email
    // brings a new, live code.
    stack
        .users
        .clone()
        .resend_verification(ResendVerificationRequest { email: "dave@example.com".into(), ..Default::default() })
        .await
        .unwrap();
    let fresh = stack.smtp.wait_for("dave@example.com", 2, EMAIL_WAIT).await[1].verification_code();
    assert_eq!(verify_code(&stack, "dave@example.com", &fresh).await.unwrap(), VerifyOutcome::Verified);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

/// On PostgreSQL under READ COMMITTED, concurrent misses each read the count before the others
/// wrote it: the cap must hold in the update itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_wrong_codes_count_at_most_the_cap_on_postgresql() {
    let stack =
        Stack::start_with(StackOptions { postgres: true, code_max_wrong_tries: 5, ..StackOptions::default() }).await;
    stack.register("hal@example.com", "correct horse battery").await;
    let code = stack.smtp.wait_for("hal@example.com", 1, EMAIL_WAIT).await[0].verification_code();
    let guesses = (1..=20).map(|n| {
        let (stack, code) = (&stack, &code);
        async move { verify_code_from(stack, &format!("203.0.113.{n}"), "hal@example.com", &other_than(code, n)).await }
    });
    let answers = futures::future::join_all(guesses).await;
    assert!(answers.iter().all(|a| a.as_ref().is_err_and(|s| s.code() == Code::InvalidArgument)), "{answers:?}");
    let sql = "SELECT wrong_tries FROM verification_codes WHERE email = 'hal@example.com'";
    let counted: i32 = stack.query_text("auth", sql).await.parse().unwrap();
    println!("20 concurrent wrong codes counted as {counted} tries (cap 5)");
    assert_eq!(counted, 5);
    let locked = verify_code(&stack, "hal@example.com", &code).await.unwrap_err();
    assert_eq!(verimail_proto::reasons::of(&locked), verimail_proto::reasons::CODE_LOCKED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_emails_in_flight_both_codes_work_and_verify_once() {
    let stack = Stack::start().await;
    let user_id = stack.register("erin@example.com", "correct horse battery").await;
    stack.smtp.wait_for("erin@example.com", 1, EMAIL_WAIT).await;
    stack
        .users
        .clone()
        .resend_verification(ResendVerificationRequest { email: "erin@example.com".into(), ..Default::default() })
        .await
        .unwrap();
    let mails = stack.smtp.wait_for("erin@example.com", 2, EMAIL_WAIT).await;
    let (first, second) = (mails[0].verification_code(), mails[1].verification_code());
    assert_eq!(verify_code(&stack, "erin@example.com", &second).await.unwrap(), VerifyOutcome::Verified);
    assert_eq!(verify_code(&stack, "erin@example.com", &first).await.unwrap(), VerifyOutcome::AlreadyVerified);
    assert_eq!(verify_code(&stack, "erin@example.com", &second).await.unwrap(), VerifyOutcome::AlreadyVerified);
    let page = Browser::new(&stack.gateway_url).click(&mails[0].verification_link()).await;
    assert_eq!(page.kind(), "already-verified", "the first email's link is spent too");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_malformed_and_unknown_codes_get_their_own_answers_and_change_nothing() {
    let stack =
        Stack::start_with(StackOptions { code_lifetime: Duration::from_secs(1), ..StackOptions::default() }).await;
    let user_id = stack.register("faye@example.com", "correct horse battery").await;
    let code = stack.smtp.wait_for("faye@example.com", 1, EMAIL_WAIT).await[0].verification_code();

    for (email, typed, field) in [
        ("faye@example.com", "12345", "code"),
        ("faye@example.com", "abcdef", "code"),
        ("faye@example.com", "' OR 1=1 --", "code"),
        ("faye@example.com", "１２３４５６", "code"),
        ("", &code[..], "email"),
        ("not an address", &code[..], "email"),
    ] {
        let status = verify_code(&stack, email, typed).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?} {typed:?}");
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some(field), "{email:?} {typed:?}");
    }
    // An address with no code answers like a wrong code: it tells nothing about accounts.
    let unknown = verify_code(&stack, "nobody@example.com", &code).await.unwrap_err();
    let wrong = verify_code(&stack, "faye@example.com", &other_than(&code, 1)).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Expired, but only the right code may say so: a wrong one answers as for no account.
    let wrong = verify_code(&stack, "faye@example.com", &other_than(&code, 2)).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (wrong.code(), wrong.message()), "a wrong code after expiry");
    let page = Browser::new(&stack.gateway_url)
        .submit("/verify-code", &[("email".into(), "faye@example.com".into()), ("code".into(), other_than(&code, 3))])
        .await;
    assert_eq!((page.status, page.kind()), (400, "code"), "the page too: no 410 for a wrong code");
    let expired = verify_code(&stack, "faye@example.com", &code).await.unwrap_err();
    assert_eq!(
        (expired.code(), verimail_proto::reasons::of(&expired).as_str()),
        (Code::FailedPrecondition, verimail_proto::reasons::CODE_EXPIRED)
    );
    let page = Browser::new(&stack.gateway_url)
        .submit("/verify-code", &[("email".into(), "faye@example.com".into()), ("code".into(), code)])
        .await;
    assert_eq!((page.status, page.kind()), (410, "expired"));
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified);
}
