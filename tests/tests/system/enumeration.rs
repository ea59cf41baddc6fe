//! Registration tells nobody whether an address has an account.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::user::v1::{GetUserRequest, RegisterUserRequest, UserStatus, get_user_request};
use verimail_system_tests::Stack;

async fn timed_register(stack: &Stack, email: &str) -> (Duration, Result<String, tonic::Status>) {
    let started = Instant::now();
    let request =
        RegisterUserRequest { email: email.into(), password: "another password".into(), ..Default::default() };
    let reply = stack.users.clone().register_user(request).await.map(|r| r.into_inner().user_id);
    (started.elapsed(), reply)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_taken_address_looks_like_a_new_registration_and_the_owner_is_told() {
    let stack = Stack::start().await;
    let owner = stack.register("hana@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("hana@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    verimail_system_tests::browser::Browser::new(&stack.gateway_url).click(&link).await;
    assert!(stack.wait_for_status(&owner, UserStatus::Verified, STATUS_WAIT).await);

    let (_, again) = timed_register(&stack, " Hana@Example.com ").await;
    let decoy = again.expect("answered like a new registration");
    assert!(uuid::Uuid::parse_str(&decoy).is_ok(), "the same shape: a user id");
    assert_ne!(decoy, owner, "but not the owner's");
    let lookup = GetUserRequest { key: Some(get_user_request::Key::UserId(decoy)) };
    assert_eq!(stack.users.clone().get_user(lookup).await.unwrap_err().code(), Code::NotFound, "it names no user");

    // The owner hears about it; the account is untouched and no second verification email went out.
    let mails = stack.smtp.wait_for("hana@example.com", 2, EMAIL_WAIT).await;
    let notice = &mails[1];
    assert_eq!(notice.header("Subject").as_deref(), Some("Someone tried to sign up with your address"));
    assert!(!notice.part("text/plain").contains("verify-email?token="), "a notice carries no link");
    assert_eq!(mails.iter().filter(|m| m.is_verification()).count(), 1);
    assert_eq!(stack.status_of(&owner).await, UserStatus::Verified);

    // Comparable timing: both paths hash the password and write one transaction.
    let mut new = Vec::new();
    let mut taken = Vec::new();
    for n in 0..7 {
        new.push(timed_register(&stack, &format!("new-{n}@example.com")).await.0);
        taken.push(timed_register(&stack, "hana@example.com").await.0);
    }
    let (new, taken) = (median(new), median(taken));
    println!("RegisterUser median: new address {new:?}, taken address {taken:?}");
    let ratio = taken.as_secs_f64() / new.as_secs_f64();
    assert!((0.33..3.0).contains(&ratio), "timing tells them apart: new {new:?}, taken {taken:?}");
}

/// The stored password hash of the user with this address, read from user-service's database.
async fn password_hash_of(stack: &Stack, email: &str) -> String {
    stack.query_text("user", &format!("SELECT password_hash FROM users WHERE email = '{email}'")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_registering_after_an_attacker_replaces_the_password_and_voids_the_attackers_email() {
    use verimail_proto::auth::v1::VerifyEmailCodeRequest;
    use verimail_system_tests::browser::Browser;
    let stack = Stack::start().await;
    // The attacker registers the CEO's address with a password of their own; the email with
    // its link and code lands in the CEO's inbox.
    let account = stack.register("ceo@corp.example", "attacker's own password").await;
    let attackers = stack.smtp.wait_for("ceo@corp.example", 1, EMAIL_WAIT).await.remove(0);
    // The CEO registers: answered like any new registration, and a fresh verification email.
    let (_, answer) = timed_register(&stack, "CEO@corp.example").await;
    let answer = answer.expect("answered like a new registration");
    assert!(uuid::Uuid::parse_str(&answer).is_ok() && answer != account, "a fresh id, as for a new address");
    let mails = stack.smtp.wait_for("ceo@corp.example", 2, EMAIL_WAIT).await;
    assert!(mails[1].is_verification(), "the newer registration gets a verification email, not a notice");
    assert!(verimail_user::password::password_matches(
        &password_hash_of(&stack, "ceo@corp.example").await,
        "another password"
    ));

    // The attacker's link and code, one click from the CEO, verify nothing now.
    let browser = Browser::new(&stack.gateway_url);
    let page = browser.click(&attackers.verification_link()).await;
    assert_eq!((page.status, page.kind()), (410, "expired"), "{}", page.html);
    let request = VerifyEmailCodeRequest { email: "ceo@corp.example".into(), code: attackers.verification_code() };
    let status = stack.auth.clone().verify_email_code(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(stack.status_of(&account).await, UserStatus::Unverified);

    // The CEO's own email verifies the account, which holds the CEO's password.
    let page = browser.click(&mails[1].verification_link()).await;
    assert_eq!(page.kind(), "verified", "{}", page.html);
    assert!(stack.wait_for_status(&account, UserStatus::Verified, STATUS_WAIT).await);
    assert!(!verimail_user::password::password_matches(
        &password_hash_of(&stack, "ceo@corp.example").await,
        "attacker's own password"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_registration_gets_no_new_link_and_its_verification_is_refused_whatever_the_order() {
    use prost::Message;
    use verimail_proto::auth::v1::IssueVerificationTokenRequest;
    let stack = Stack::start().await;
    let account = stack.register("early@example.com", "attacker's own password").await;
    let first = stack.smtp.wait_for("early@example.com", 1, EMAIL_WAIT).await[0].event_id();
    timed_register(&stack, "early@example.com").await.1.expect("registered again");
    let second = stack.smtp.wait_for("early@example.com", 2, EMAIL_WAIT).await[1].event_id();
    assert!(first < second, "registration ids order in time: {first} {second}");

    // An email of the first registration handled late (email-service's events arrive in any
    // order): auth-service issues nothing for it.
    let late = IssueVerificationTokenRequest {
        user_id: account.clone(),
        email: "early@example.com".into(),
        registration_event_id: first.clone(),
        ..Default::default()
    };
    let refused = stack.issuer.clone().issue_verification_token(late).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    use tonic_types::StatusExt;
    assert_eq!(refused.get_details_error_info().unwrap().reason, verimail_proto::reasons::REGISTRATION_SUPERSEDED);

    // A verification of the first registration that reached the bus anyway (a click in the
    // moment before the second registration's email was issued): user-service refuses it.
    let stale = verimail_proto::events::v1::EmailVerified {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: account.clone(),
        email: "early@example.com".into(),
        occurred_at: String::new(),
        registration_event_id: first,
    };
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let headers = verimail_events::bus::event_headers(&stale.event_id, "test");
    js.publish_with_headers(verimail_proto::subjects::AUTH_EMAIL_VERIFIED, headers, stale.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    loop {
        let request = verimail_proto::ops::v1::ListParkedRequest::default();
        let parked = stack.user_parking.clone().list_parked(request).await.unwrap().into_inner().messages;
        if let Some(message) = parked.first() {
            assert!(message.error.contains("later registration"), "{}", message.error);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stale verification was not parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stack.status_of(&account).await, UserStatus::Unverified);
}

/// ResendVerification answers an unverified, a verified and an unknown address alike, after the
/// same statements (one lookup, one write transaction, empty but for the unverified one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_answers_alike_for_an_unverified_a_verified_and_an_unknown_address() {
    let stack = Stack::start().await;
    stack.register("ivy@example.com", "correct horse battery").await;
    stack.verified("jon@example.com", "correct horse battery").await;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..15 {
        let unknown = format!("nobody-{round}@example.com");
        // Each kind takes each place in turn: the one after the unverified address's resend
        // shares the machine with the email it set off.
        for i in (0..3).map(|k| (k + round) % 3) {
            let email = ["ivy@example.com", "jon@example.com", unknown.as_str()][i];
            let request =
                verimail_proto::user::v1::ResendVerificationRequest { email: email.to_owned(), ..Default::default() };
            let started = Instant::now();
            let answer = stack.users.clone().resend_verification(request).await;
            times[i].push(started.elapsed());
            answer.unwrap_or_else(|e| panic!("{email}: {e:?}"));
        }
    }
    let [unverified, verified, unknown] = [0, 1, 2].map(|i| median(times[i].clone()));
    println!("ResendVerification medians: unverified {unverified:?}, verified {verified:?}, unknown {unknown:?}");
    for m in [unverified, verified] {
        let ratio = m.as_secs_f64() / unknown.as_secs_f64();
        assert!((0.33..3.0).contains(&ratio), "timing tells them apart: {unverified:?} {verified:?} {unknown:?}");
    }
    stack.smtp.wait_for("ivy@example.com", 16, EMAIL_WAIT).await;
    // Only the unverified address got emails (its first and fifteen more), after which the
    // pipeline has passed the others' turns too.
    assert_eq!(stack.smtp.to("jon@example.com").len(), 1, "a verified address gets nothing new");
    assert!(stack.smtp.to("nobody-0@example.com").is_empty());
}
