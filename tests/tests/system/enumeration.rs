//! Registration tells nobody whether an address has an account.

use crate::{EMAIL_WAIT, STATUS_WAIT, register};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::user::v1::{GetUserRequest, RegisterUserRequest, UserStatus, get_user_request};
use verimail_system_tests::Stack;

async fn timed_register(stack: &Stack, email: &str) -> (Duration, Result<String, tonic::Status>) {
    let started = Instant::now();
    let request = RegisterUserRequest { email: email.into(), password: "another password".into() };
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
    let owner = register(&stack, "hana@example.com", "correct horse battery").await;
    stack.smtp.wait_for("hana@example.com", 1, EMAIL_WAIT).await;

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
    assert_eq!(stack.status_of(&owner).await, UserStatus::Unverified);
    assert!(stack.wait_for_status(&owner, UserStatus::Unverified, STATUS_WAIT).await);

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
