//! ChangeEmail on real parts: the new address verified by link or by code, the current one
//! signing in until then, a cancel and an undo from the notice, a taken address answered
//! alike, the latest of two changes kept, every email to the address its step promises, and a
//! change of address while the nats-server is killed.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use tonic::Code;
use verimail_proto::auth::v1::VerifyEmailCodeRequest;
use verimail_proto::events::v1::EmailChanged;
use verimail_proto::user::v1::ChangeEmailRequest;
use verimail_proto::{reasons, subjects};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{ReceivedMail, Stack, eventually, with_bearer};

const PASSWORD: &str = "correct horse battery";

/// A verified account of `email`, signed in: its id and access token.
async fn signed_in(stack: &Stack, email: &str) -> (String, String) {
    let user_id = stack.verified(email, PASSWORD).await;
    (user_id, stack.sign_in(email, PASSWORD).await.expect("SignIn").access_token)
}

async fn change(stack: &Stack, token: &str, new_email: &str) -> Result<String, tonic::Status> {
    let request = ChangeEmailRequest { new_email: new_email.into(), ..Default::default() };
    let reply = stack.plain_users().change_email(with_bearer(request, token)).await?.into_inner();
    Ok(reply.pending_email_change.expect("the pending change").email)
}

/// Polls GetUser until the account has `email` (and no pending change).
async fn wait_for_address(stack: &Stack, user_id: &str, email: &str) {
    eventually(&format!("the account moves to {email}"), STATUS_WAIT, || async {
        let now = stack.user(user_id).await;
        now.email == email && now.pending_email_change.is_none()
    })
    .await;
}

/// The emails to `address` with this subject.
fn titled(stack: &Stack, address: &str, subject: &str) -> Vec<ReceivedMail> {
    stack.smtp.to(address).into_iter().filter(|m| m.header("Subject").as_deref() == Some(subject)).collect()
}

async fn wait_titled(stack: &Stack, address: &str, subject: &str) -> ReceivedMail {
    eventually(&format!("{subject:?} to {address}"), EMAIL_WAIT, || async {
        !titled(stack, address, subject).is_empty()
    })
    .await;
    titled(stack, address, subject).pop().expect("the email")
}

const VERIFY_NEW: &str = "Confirm your new email address";
const NOTICE: &str = "Your email address is being changed";

/// The notice's undo link.
fn undo_link(notice: &ReceivedMail) -> String {
    notice.undo_link().expect("the undo link in the notice")
}

/// Every users.email_changed of the user, in order.
async fn changed_events(stack: &Stack, user_id: &str) -> Vec<EmailChanged> {
    let all: Vec<EmailChanged> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_EMAIL_CHANGED).await;
    all.into_iter().filter(|event| event.user_id == user_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_address_verified_by_its_link_replaces_the_old_which_signs_in_until_then() {
    let stack = Stack::start().await;
    let (user_id, token) = signed_in(&stack, "old@example.com").await;
    assert_eq!(change(&stack, &token, "New@Example.com").await.expect("ChangeEmail"), "new@example.com");
    let pending = stack.user(&user_id).await;
    assert_eq!(pending.email, "old@example.com");
    assert_eq!(pending.pending_email_change.as_ref().map(|p| p.email.as_str()), Some("new@example.com"));

    let verification = wait_titled(&stack, "new@example.com", VERIFY_NEW).await;
    let notice = wait_titled(&stack, "old@example.com", NOTICE).await;
    assert!(notice.part("text/plain").contains("new@example.com"), "the notice names the new address");
    // Until the new address is verified, the old one is the account's.
    stack.sign_in("old@example.com", PASSWORD).await.expect("the old address signs in");
    let refused = stack.sign_in("new@example.com", PASSWORD).await.expect_err("the new one does not yet");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let page = Browser::new(&stack.gateway_url).click(&verification.verification_link()).await;
    assert_eq!(page.kind(), "verified", "{}", page.html);
    wait_for_address(&stack, &user_id, "new@example.com").await;
    stack.sign_in("new@example.com", PASSWORD).await.expect("the new address signs in");
    let refused = stack.sign_in("old@example.com", PASSWORD).await.expect_err("the old one no longer");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let changed = changed_events(&stack, &user_id).await;
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!((changed[0].old_email.as_str(), changed[0].new_email.as_str()), ("old@example.com", "new@example.com"));
    // Every email went where its step said: the registration's and the notice to the old
    // address, the verification to the new one, nothing anywhere else.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut recipients: Vec<String> = stack.smtp.all().iter().flat_map(|m| m.to.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, ["new@example.com", "old@example.com", "old@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_password_instead_of_a_token_the_new_address_is_verified_by_its_code() {
    let stack = Stack::start().await;
    let (user_id, _) = signed_in(&stack, "ann@example.com").await;
    let request = ChangeEmailRequest {
        new_email: "ann@example.org".into(),
        email: "ann@example.com".into(),
        password: "not the password".into(),
        ..Default::default()
    };
    let refused = stack.plain_users().change_email(request.clone()).await.expect_err("a wrong password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let request = ChangeEmailRequest { password: PASSWORD.into(), ..request };
    stack.plain_users().change_email(request).await.expect("ChangeEmail with the password");
    let code = wait_titled(&stack, "ann@example.org", VERIFY_NEW).await.verification_code();
    let verify = VerifyEmailCodeRequest { email: "ann@example.org".into(), code };
    let answer = stack.auth.clone().verify_email_code(verify).await.expect("the code verifies").into_inner();
    assert_eq!(answer.user_id, user_id);
    wait_for_address(&stack, &user_id, "ann@example.org").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notice_cancels_a_pending_change_and_moves_a_completed_one_back() {
    let stack = Stack::start().await;
    let (user_id, token) = signed_in(&stack, "keep@example.com").await;

    // Cancelled before completion: the change's link dies with it.
    change(&stack, &token, "first@example.com").await.expect("ChangeEmail");
    let verification = wait_titled(&stack, "first@example.com", VERIFY_NEW).await;
    let notice = wait_titled(&stack, "keep@example.com", NOTICE).await;
    // The notice's link is for undoing alone: it verifies nothing.
    let undo_token = verimail_system_tests::smtp::token_of(&undo_link(&notice));
    let refused = stack.verify(&undo_token).await.expect_err("an undo link in VerifyEmail");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("not an email verification token"), "{}", refused.message());
    let page = Browser::new(&stack.gateway_url).submit("/verify-email", &[("token".into(), undo_token)]).await;
    assert_eq!((page.status, page.kind()), (400, "invalid"));
    let page = Browser::new(&stack.gateway_url).click(&undo_link(&notice)).await;
    assert_eq!(page.kind(), "undone", "{}", page.html);
    assert!(page.html.contains("keep@example.com"), "{}", page.html);
    eventually("the change is cancelled", STATUS_WAIT, || async {
        stack.user(&user_id).await.pending_email_change.is_none()
    })
    .await;
    let refused = stack.verify(&verification.verification_token()).await.expect_err("a cancelled change's link");
    assert_eq!(reasons::of(&refused), reasons::TOKEN_REVOKED, "{refused:?}");
    assert_eq!(stack.user(&user_id).await.email, "keep@example.com");
    let again = Browser::new(&stack.gateway_url).click(&undo_link(&notice)).await;
    assert!(again.html.contains("used before"), "{}", again.html);

    // Saying "not me" ended the account's sessions: the token changes nothing more.
    let refused = change(&stack, &token, "second@example.com").await.expect_err("the ended session's token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Completed, then moved back from its notice.
    let token = stack.sign_in("keep@example.com", PASSWORD).await.expect("SignIn").access_token;
    change(&stack, &token, "second@example.com").await.expect("ChangeEmail");
    let verification = wait_titled(&stack, "second@example.com", VERIFY_NEW).await;
    eventually("a second notice", EMAIL_WAIT, || async { titled(&stack, "keep@example.com", NOTICE).len() == 2 }).await;
    let notices = titled(&stack, "keep@example.com", NOTICE);
    let notice = notices.into_iter().find(|m| m.part("text/plain").contains("second@example.com")).expect("its notice");
    Browser::new(&stack.gateway_url).click(&verification.verification_link()).await;
    wait_for_address(&stack, &user_id, "second@example.com").await;
    let page = Browser::new(&stack.gateway_url).click(&undo_link(&notice)).await;
    assert_eq!(page.kind(), "undone", "{}", page.html);
    wait_for_address(&stack, &user_id, "keep@example.com").await;
    stack.sign_in("keep@example.com", PASSWORD).await.expect("back to the old address");
    let changed = changed_events(&stack, &user_id).await;
    let moves: Vec<(&str, &str, bool)> =
        changed.iter().map(|e| (e.old_email.as_str(), e.new_email.as_str(), e.undone)).collect();
    assert_eq!(
        moves,
        [("keep@example.com", "second@example.com", false), ("second@example.com", "keep@example.com", true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_answers_as_a_free_one_and_its_owner_is_told() {
    let stack = Stack::start().await;
    let (user_id, token) = signed_in(&stack, "mover@example.com").await;
    let (owner, _) = signed_in(&stack, "owner@example.com").await;
    let taken = change(&stack, &token, "owner@example.com").await.expect("ChangeEmail to a taken address");
    assert_eq!(taken, "owner@example.com", "the same answer as for a free address");
    assert_eq!(stack.user(&user_id).await.pending_email_change.map(|p| p.email).as_deref(), Some("owner@example.com"));
    wait_titled(&stack, "owner@example.com", "Someone tried to move an account to your address").await;
    wait_titled(&stack, "mover@example.com", NOTICE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(titled(&stack, "owner@example.com", VERIFY_NEW).is_empty(), "a verification went to the owner");
    assert_eq!(stack.user(&owner).await.email, "owner@example.com");
    assert_eq!(stack.user(&user_id).await.email, "mover@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_changes_in_a_row_only_the_latest_stays_pending() {
    let stack = Stack::start().await;
    let (user_id, token) = signed_in(&stack, "twice@example.com").await;
    change(&stack, &token, "one@example.com").await.expect("ChangeEmail");
    change(&stack, &token, "two@example.com").await.expect("ChangeEmail again");
    assert_eq!(stack.user(&user_id).await.pending_email_change.map(|p| p.email).as_deref(), Some("two@example.com"));
    let latest = wait_titled(&stack, "two@example.com", VERIFY_NEW).await;
    // The first change's email may not have gone out at all (its change was replaced before
    // email-service got to it); if it did, its link no longer works.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(first) = titled(&stack, "one@example.com", VERIFY_NEW).pop() {
        let refused = stack.verify(&first.verification_token()).await.expect_err("the replaced change's link");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    Browser::new(&stack.gateway_url).click(&latest.verification_link()).await;
    wait_for_address(&stack, &user_id, "two@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_address_while_the_nats_server_is_killed_send_one_notice_and_one_verification_each() {
    const USERS: usize = 12;
    let mut stack = Stack::start().await;
    let mut accounts = Vec::new();
    for n in 0..USERS {
        accounts.push(signed_in(&stack, &format!("before-{n}@example.com")).await);
    }
    for (n, (_, token)) in accounts.iter().enumerate() {
        if n == USERS / 3 {
            stack.nats.kill();
        }
        change(&stack, token, &format!("after-{n}@example.com")).await.expect("ChangeEmail without NATS");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.nats.restart();
    for (n, (user_id, _)) in accounts.iter().enumerate() {
        let verification = wait_titled(&stack, &format!("after-{n}@example.com"), VERIFY_NEW).await;
        wait_titled(&stack, &format!("before-{n}@example.com"), NOTICE).await;
        Browser::new(&stack.gateway_url).click(&verification.verification_link()).await;
        wait_for_address(&stack, user_id, &format!("after-{n}@example.com")).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 0..USERS {
        assert_eq!(
            titled(&stack, &format!("after-{n}@example.com"), VERIFY_NEW).len(),
            1,
            "verifications to after-{n}"
        );
        assert_eq!(titled(&stack, &format!("before-{n}@example.com"), NOTICE).len(), 1, "notices to before-{n}");
    }
    for (user_id, _) in &accounts {
        assert_eq!(changed_events(&stack, user_id).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_likely_typo_of_a_major_provider_gets_a_suggestion_and_goes_ahead_as_typed() {
    let stack = Stack::start().await;
    let request = verimail_proto::user::v1::RegisterUserRequest {
        email: "Typo@GMIAL.com".into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let reply = stack.users.clone().register_user(request).await.expect("RegisterUser").into_inner();
    assert_eq!(reply.did_you_mean, "typo@gmail.com");
    // A hint, not a correction: the address as typed got the email.
    stack.smtp.wait_for_verification("typo@gmial.com", EMAIL_WAIT).await;
    let request = verimail_proto::user::v1::RegisterUserRequest {
        email: "right@gmail.com".into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let reply = stack.users.clone().register_user(request).await.expect("RegisterUser").into_inner();
    assert_eq!(reply.did_you_mean, "", "a right address gets no suggestion");

    let (_, token) = signed_in(&stack, "mover@example.com").await;
    let request = ChangeEmailRequest { new_email: "mover@hotmial.com".into(), ..Default::default() };
    let reply = stack.plain_users().change_email(with_bearer(request, &token)).await.expect("ChangeEmail");
    assert_eq!(reply.into_inner().did_you_mean, "mover@hotmail.com");
}
