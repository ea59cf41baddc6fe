//! Getting back in: a password reset through the address (its link or its code), on real
//! parts; a change of password; and an enumeration-safe request. Each replaces the password,
//! ends sessions (the orders example refuses their tokens within 2 s) and tells the address.

use crate::sign_in::{place_order, refused_within, start_orders, verifier};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::events::v1::{PasswordChanged, SessionEndReason, SessionsRevoked, UserVerified};
use verimail_proto::user::v1::{ChangePasswordRequest, RequestPasswordResetRequest, ResetPasswordRequest, UserStatus};
use verimail_proto::{reasons, subjects};
use verimail_system_tests::smtp::{ReceivedMail, token_of};
use verimail_system_tests::{Stack, with_bearer};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "purple elephant umbrella";
const RESET: &str = "Reset your password";
const CHANGED: &str = "Your password was changed";

async fn request_reset(stack: &Stack, email: &str) -> Result<(), tonic::Status> {
    let request = RequestPasswordResetRequest { email: email.into(), ..Default::default() };
    stack.users.clone().request_password_reset(request).await.map(|_| ())
}

async fn reset(stack: &Stack, request: ResetPasswordRequest) -> Result<String, tonic::Status> {
    stack.plain_users().reset_password(request).await.map(|reply| reply.into_inner().email)
}

fn with_token(token: &str, password: &str) -> ResetPasswordRequest {
    ResetPasswordRequest { token: token.into(), new_password: password.into(), ..Default::default() }
}

/// The emails to `address` with this subject, once there are `count`.
async fn titled(stack: &Stack, address: &str, subject: &str, count: usize) -> Vec<ReceivedMail> {
    let titled = |m: &ReceivedMail| m.header("Subject").as_deref() == Some(subject);
    verimail_system_tests::eventually(&format!("{count} × {subject:?} to {address}"), crate::EMAIL_WAIT, || async {
        stack.smtp.to(address).iter().filter(|m| titled(m)).count() >= count
    })
    .await;
    stack.smtp.to(address).into_iter().filter(titled).collect()
}

async fn change(
    stack: &Stack,
    current: &str,
    new: &str,
    token: Option<&str>,
) -> Result<verimail_proto::user::v1::ChangePasswordResponse, tonic::Status> {
    let request = ChangePasswordRequest { current_password: current.into(), new_password: new.into() };
    let request = match token {
        Some(token) => with_bearer(request, token),
        None => tonic::Request::new(request),
    };
    stack.plain_users().change_password(request).await.map(|reply| reply.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_through_the_link_once_and_every_session_ends() {
    let stack = Stack::start().await;
    let user_id = stack.verified("ann@example.com", PASSWORD).await;
    let orders = start_orders(verifier(&stack)).await;
    let session = stack.sign_in("ann@example.com", PASSWORD).await.expect("SignIn");
    place_order(&orders, Some(&session.access_token)).await.expect("a verified user's order");

    request_reset(&stack, "Ann@Example.com").await.expect("RequestPasswordReset");
    let email = titled(&stack, "ann@example.com", RESET, 1).await.remove(0);
    let link = email.reset_link();
    assert!(email.verification_code().len() == 6, "a code beside the link");
    // A weak password is refused before the link is spent.
    let weak = reset(&stack, with_token(&token_of(&link), "password")).await.unwrap_err();
    assert_eq!(verimail_server::grpc::bad_request_field(&weak).as_deref(), Some("new_password"), "{weak:?}");
    // A verification link is not a reset link.
    let verification = stack.smtp.to("ann@example.com").into_iter().find(|m| m.is_verification()).expect("it");
    let wrong = reset(&stack, with_token(&verification.verification_token(), NEW_PASSWORD)).await.unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");

    assert_eq!(
        reset(&stack, with_token(&token_of(&link), NEW_PASSWORD)).await.expect("ResetPassword"),
        "ann@example.com"
    );
    let old = stack.sign_in("ann@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated, "the old password no longer signs in");
    stack.sign_in("ann@example.com", NEW_PASSWORD).await.expect("the new password signs in");
    let (took, _) = refused_within(&orders, &session.access_token).await;
    println!("password reset: the orders service refused the old session's token {took:?} after the answer");
    let again = reset(&stack, with_token(&token_of(&link), "another fine passphrase")).await.unwrap_err();
    assert_eq!((again.code(), reasons::of(&again)), (Code::FailedPrecondition, reasons::TOKEN_USED.to_owned()));

    let notice = titled(&stack, "ann@example.com", CHANGED, 1).await.remove(0);
    assert!(notice.part("text/plain").contains("reset through this address"), "{}", notice.part("text/plain"));
    let revoked: Vec<SessionsRevoked> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_SESSIONS_REVOKED).await;
    assert_eq!(revoked.iter().map(|e| e.reason()).collect::<Vec<_>>(), [SessionEndReason::PasswordChanged]);
    let changed: Vec<PasswordChanged> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_PASSWORD_CHANGED).await;
    assert_eq!(changed.iter().map(|e| (e.user_id.as_str(), e.reset)).collect::<Vec<_>>(), [(user_id.as_str(), true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_resets_an_unverified_accounts_password_and_verifies_it_and_the_newest_email_voids_the_earlier() {
    let stack = Stack::start().await;
    let user_id = stack.register("bea@example.com", PASSWORD).await;
    request_reset(&stack, "bea@example.com").await.expect("RequestPasswordReset");
    let first = titled(&stack, "bea@example.com", RESET, 1).await.remove(0);
    request_reset(&stack, "bea@example.com").await.expect("RequestPasswordReset again");
    let mails = titled(&stack, "bea@example.com", RESET, 2).await;
    let second = mails.into_iter().find(|m| m.reset_link() != first.reset_link()).expect("the second email");

    // The first email's link and code died with the second.
    let revoked = reset(&stack, with_token(&token_of(&first.reset_link()), NEW_PASSWORD)).await.unwrap_err();
    assert_eq!(reasons::of(&revoked), reasons::TOKEN_REVOKED, "{revoked:?}");
    // A reset code is not a verification code.
    let code = second.verification_code();
    let as_verification =
        verimail_proto::auth::v1::VerifyEmailCodeRequest { email: "bea@example.com".into(), code: code.clone() };
    let refused = stack.auth.clone().verify_email_code(as_verification).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let wrong = ResetPasswordRequest {
        email: "bea@example.com".into(),
        code: if code == "000000" { "000001".into() } else { "000000".into() },
        new_password: NEW_PASSWORD.into(),
        ..Default::default()
    };
    let wrong = reset(&stack, wrong).await.unwrap_err();
    assert_eq!(verimail_server::grpc::bad_request_field(&wrong).as_deref(), Some("code"), "{wrong:?}");

    let by_code = ResetPasswordRequest {
        email: "bea@example.com".into(),
        code,
        new_password: NEW_PASSWORD.into(),
        ..Default::default()
    };
    reset(&stack, by_code).await.expect("ResetPassword with the code");
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Verified, "the email proved the address");
    let verified: Vec<UserVerified> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_VERIFIED).await;
    assert_eq!(verified.iter().map(|e| e.user_id.as_str()).collect::<Vec<_>>(), [user_id.as_str()]);
    stack.sign_in("bea@example.com", NEW_PASSWORD).await.expect("the new password signs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_every_other_session_and_tells_the_address() {
    let stack = Stack::start().await;
    stack.verified("cal@example.com", PASSWORD).await;
    let orders = start_orders(verifier(&stack)).await;
    let here = stack.sign_in("cal@example.com", PASSWORD).await.expect("SignIn");
    let there = stack.sign_in("cal@example.com", PASSWORD).await.expect("SignIn");
    let wrong = change(&stack, "not the password", NEW_PASSWORD, Some(&here.access_token)).await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let none = change(&stack, PASSWORD, NEW_PASSWORD, None).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "an access token is needed");
    let weak = change(&stack, PASSWORD, "password", Some(&here.access_token)).await.unwrap_err();
    assert_eq!(verimail_server::grpc::bad_request_field(&weak).as_deref(), Some("new_password"), "{weak:?}");

    let changed = change(&stack, PASSWORD, NEW_PASSWORD, Some(&here.access_token)).await.expect("ChangePassword");
    assert_eq!(changed.ended_sessions, 1);
    refused_within(&orders, &there.access_token).await;
    place_order(&orders, Some(&here.access_token)).await.expect("the caller's session goes on");
    stack.sign_in("cal@example.com", NEW_PASSWORD).await.expect("the new password signs in");
    let notice = titled(&stack, "cal@example.com", CHANGED, 1).await.remove(0);
    assert!(notice.part("text/plain").contains("every other device"), "{}", notice.part("text/plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_request_answers_alike_for_a_verified_an_unverified_and_an_unknown_address() {
    let stack = Stack::start().await;
    stack.verified("dan@example.com", PASSWORD).await;
    stack.register("eve@example.com", PASSWORD).await;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    for round in 0..5 {
        for (i, email) in
            ["dan@example.com", "eve@example.com", &format!("nobody-{round}@example.com")].iter().enumerate()
        {
            let started = Instant::now();
            let request = RequestPasswordResetRequest { email: (*email).to_owned(), ..Default::default() };
            // Each as its own client (the service credential names the browser): a backend
            // asking for many people.
            let answer = stack
                .users
                .clone()
                .request_password_reset(verimail_system_tests::for_browser(request, &format!("198.51.100.{round}")))
                .await;
            times[i].push(started.elapsed());
            let answer = answer.unwrap_or_else(|e| panic!("{email}: {e:?}")).into_inner();
            assert_eq!(answer, verimail_proto::user::v1::RequestPasswordResetResponse {});
        }
    }
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    println!(
        "RequestPasswordReset medians: verified {:?}, unverified {:?}, unknown {:?}",
        medians[0], medians[1], medians[2]
    );
    for m in &medians[..2] {
        let ratio = m.as_secs_f64() / medians[2].as_secs_f64();
        assert!((0.33..3.0).contains(&ratio), "timing tells them apart: {medians:?}");
    }
    // Only the addresses with an account got the emails.
    titled(&stack, "dan@example.com", RESET, 5).await;
    titled(&stack, "eve@example.com", RESET, 5).await;
    assert!(stack.smtp.to("nobody-0@example.com").is_empty());
}
