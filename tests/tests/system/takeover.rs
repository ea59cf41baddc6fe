//! A stolen access token, replayed as a thief would use it, against the notice's way back: the
//! first notice's undo link gives the account back its address whatever happened since (later
//! changes cancelled or rolled back), ends every session (the orders example refuses the
//! thief's token within 2 s) and sends a reset email; a later notice, sent to the thief, can
//! never take it back; and when the address cannot be restored the page says so.

use crate::sign_in::{place_order, refused_within, start_orders, verifier};
use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::Duration;
use tonic::Code;
use verimail_proto::user::v1::{ChangeEmailRequest, RequestPasswordResetRequest, ResetPasswordRequest};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{ReceivedMail, Stack, eventually, with_bearer};

const PASSWORD: &str = "correct horse battery";
const VERIFY_NEW: &str = "Confirm your new email address";
const NOTICE: &str = "Your email address is being changed";
const RESET: &str = "Reset your password";

/// The `n`th email (from 1) to `to` with this subject, once it arrived.
async fn nth(stack: &Stack, to: &str, subject: &str, n: usize) -> ReceivedMail {
    let titled = || -> Vec<ReceivedMail> {
        stack.smtp.to(to).into_iter().filter(|m| m.header("Subject").as_deref() == Some(subject)).collect()
    };
    eventually(&format!("{subject:?} #{n} to {to}"), EMAIL_WAIT, || async { titled().len() >= n }).await;
    titled().swap_remove(n - 1)
}

async fn change(stack: &Stack, token: &str, new_email: &str) -> Result<(), tonic::Status> {
    let request = ChangeEmailRequest { new_email: new_email.into(), ..Default::default() };
    stack.plain_users().change_email(with_bearer(request, token)).await.map(|_| ())
}

async fn wait_for_address(stack: &Stack, user_id: &str, email: &str) {
    eventually(&format!("the account at {email}"), STATUS_WAIT, || async { stack.user(user_id).await.email == email })
        .await;
}

/// Resets the password of `email` with the code of its `n`th reset email.
async fn reset_with_code(stack: &Stack, email: &str, n: usize, password: &str) {
    let code = nth(stack, email, RESET, n).await.verification_code();
    let request =
        ResetPasswordRequest { email: email.into(), code, new_password: password.into(), ..Default::default() };
    stack.plain_users().reset_password(request).await.expect("ResetPassword");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_notices_undo_gives_back_an_account_moved_twice_by_a_thief_and_ends_the_thiefs_sessions() {
    let stack = Stack::start().await;
    let orders = start_orders(verifier(&stack)).await;
    let (owner, thief_b, thief_c) = ("ann@example.com", "thief@example.net", "thief2@example.net");
    let user_id = stack.verified(owner, PASSWORD).await;
    // The owner's access token, stolen within minutes of signing in.
    let stolen = stack.sign_in(owner, PASSWORD).await.expect("SignIn").access_token;

    // A→B, verified by the thief: the account moves, and every session ends with the move.
    change(&stack, &stolen, thief_b).await.expect("ChangeEmail with the stolen token");
    let first_notice = nth(&stack, owner, NOTICE, 1).await;
    let verify_b = nth(&stack, thief_b, VERIFY_NEW, 1).await;
    Browser::new(&stack.gateway_url).click(&verify_b.verification_link()).await;
    wait_for_address(&stack, &user_id, thief_b).await;
    let refused = change(&stack, &stolen, thief_c).await.expect_err("the stolen token after the move");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // B→C: the thief resets the password through B, signs in, moves on and verifies C.
    let request = RequestPasswordResetRequest { email: thief_b.into(), ..Default::default() };
    stack.users.clone().request_password_reset(request).await.expect("RequestPasswordReset");
    reset_with_code(&stack, thief_b, 1, "the thiefs own passphrase").await;
    let thiefs = stack.sign_in(thief_b, "the thiefs own passphrase").await.expect("SignIn").access_token;
    change(&stack, &thiefs, thief_c).await.expect("ChangeEmail B→C");
    let second_notice = nth(&stack, thief_b, NOTICE, 1).await;
    let verify_c = nth(&stack, thief_c, VERIFY_NEW, 1).await;
    Browser::new(&stack.gateway_url).click(&verify_c.verification_link()).await;
    wait_for_address(&stack, &user_id, thief_c).await;
    let thiefs = stack.sign_in(thief_c, "the thiefs own passphrase").await.expect("SignIn").access_token;
    place_order(&orders, Some(&thiefs)).await.expect("the thief is in");

    // The owner uses the first notice's link: the account is back at A, the thief is out.
    let page = Browser::new(&stack.gateway_url).click(&first_notice.undo_link().expect("the undo link")).await;
    assert_eq!(page.kind(), "undone", "{}", page.html);
    assert!(page.html.contains(owner), "{}", page.html);
    assert_eq!(stack.user(&user_id).await.email, owner, "answered only once done");
    let (took, _) = refused_within(&orders, &thiefs).await;
    println!("undo: the thief's token was refused {took:?} after the page answered");
    let gone = stack.sign_in(thief_c, "the thiefs own passphrase").await.unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated, "the thief's address signs in no more");

    // The thief's own notice (sent to B) cannot take it back.
    let page = Browser::new(&stack.gateway_url).click(&second_notice.undo_link().expect("its undo link")).await;
    assert_eq!(page.kind(), "undone", "{}", page.html);
    assert!(!page.html.contains(thief_b), "{}", page.html);
    assert_eq!(stack.user(&user_id).await.email, owner);

    // The thief changed the password; the reset email the undo sent lets the owner in.
    reset_with_code(&stack, owner, 1, "the owners new passphrase").await;
    let back = stack.sign_in(owner, "the owners new passphrase").await.expect("the owner signs in");
    place_order(&orders, Some(&back.access_token)).await.expect("the owner's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_pending_changes_the_first_notices_undo_cancels_both_and_the_owner_signs_in_with_their_password() {
    let stack = Stack::start().await;
    let orders = start_orders(verifier(&stack)).await;
    let owner = "bo@example.com";
    let user_id = stack.verified(owner, PASSWORD).await;
    let stolen = stack.sign_in(owner, PASSWORD).await.expect("SignIn").access_token;
    change(&stack, &stolen, "b1@example.net").await.expect("A→B1");
    let first_notice = nth(&stack, owner, NOTICE, 1).await;
    change(&stack, &stolen, "b2@example.net").await.expect("A→B2");
    let verify_b2 = nth(&stack, "b2@example.net", VERIFY_NEW, 1).await;
    nth(&stack, owner, NOTICE, 2).await;

    let page = Browser::new(&stack.gateway_url).click(&first_notice.undo_link().expect("the undo link")).await;
    assert_eq!(page.kind(), "undone", "{}", page.html);
    assert!(stack.user(&user_id).await.pending_email_change.is_none(), "B2 is cancelled too");
    refused_within(&orders, &stolen).await;
    // B2's link comes too late: the account stays at A.
    Browser::new(&stack.gateway_url).click(&verify_b2.verification_link()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.user(&user_id).await.email, owner);
    let back = stack.sign_in(owner, PASSWORD).await.expect("the owner signs in with their password");
    place_order(&orders, Some(&back.access_token)).await.expect("the owner's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_another_account_has_taken_the_address_the_undo_page_says_so_and_moves_nothing() {
    let stack = Stack::start().await;
    let owner = "cy@example.com";
    let user_id = stack.verified(owner, PASSWORD).await;
    let stolen = stack.sign_in(owner, PASSWORD).await.expect("SignIn").access_token;
    change(&stack, &stolen, "moved@example.net").await.expect("A→B");
    let notice = nth(&stack, owner, NOTICE, 1).await;
    let verify = nth(&stack, "moved@example.net", VERIFY_NEW, 1).await;
    Browser::new(&stack.gateway_url).click(&verify.verification_link()).await;
    wait_for_address(&stack, &user_id, "moved@example.net").await;
    // A is free: someone registers and verifies it.
    let someone = stack.register(owner, "someone elses passphrase").await;
    let mails = stack.smtp.wait_for(owner, 3, EMAIL_WAIT).await;
    let latest = mails.iter().rev().find(|m| m.is_verification()).expect("the new registration's email");
    Browser::new(&stack.gateway_url).click(&latest.verification_link()).await;
    assert!(stack.wait_for_status(&someone, verimail_proto::user::v1::UserStatus::Verified, STATUS_WAIT).await);

    let link = notice.undo_link().expect("the undo link");
    let page = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!((page.status, page.kind()), (409, "undo-taken"), "{}", page.html);
    assert_eq!(stack.user(&user_id).await.email, "moved@example.net", "nothing moved");
    let refused = change(&stack, &stolen, "else@example.net").await.expect_err("sessions ended");
    assert_eq!(refused.code(), Code::Unauthenticated);
    // The link was not spent: it still says the same.
    let again = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!(again.kind(), "undo-taken", "{}", again.html);
}
