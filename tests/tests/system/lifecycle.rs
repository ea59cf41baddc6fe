//! The end of an account, on real parts: accounts never verified in time expire (on SQLite and
//! with two user-service instances sweeping one PostgreSQL database), and DeleteUser erases
//! the address from every table of all three services, from the parked messages, and with
//! email-service down while it happens.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::auth::v1::VerifyEmailCodeRequest;
use verimail_proto::email::v1::ListDeliveriesRequest;
use verimail_proto::events::v1::{DeletionReason, UserDeleted};
use verimail_proto::user::v1::{ChangeEmailRequest, DeleteUserRequest, GetUserRequest, UserStatus, get_user_request};
use verimail_proto::{reasons, subjects};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::procs::{Part, ProcessStack};
use verimail_system_tests::{Stack, StackOptions, eventually};

const PASSWORD: &str = "correct horse battery";

/// Every users.deleted on the stream, in order.
async fn deleted_events(nats_url: &str) -> Vec<UserDeleted> {
    verimail_system_tests::events_on(nats_url, subjects::USERS_DELETED).await
}

async fn exists(stack: &Stack, user_id: &str) -> bool {
    let request = GetUserRequest { key: Some(get_user_request::Key::UserId(user_id.to_owned())) };
    match stack.users.clone().get_user(request).await {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("GetUser: {status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_never_verified_in_time_expires_and_its_address_registers_again() {
    let ttl = Duration::from_secs(6);
    let stack = Stack::start_with(StackOptions { unverified_ttl: Some(ttl), ..StackOptions::default() }).await;
    let kept = stack.register("kept@example.com", PASSWORD).await;
    let link = stack.smtp.wait_for_verification("kept@example.com", EMAIL_WAIT).await.verification_link();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&kept, UserStatus::Verified, STATUS_WAIT).await);

    let registered_at = Instant::now();
    let lapsed = stack.register("lapsed@example.com", PASSWORD).await;
    let mail = stack.smtp.wait_for_verification("lapsed@example.com", EMAIL_WAIT).await;
    eventually("the unverified account is deleted", ttl * 4, || async { !exists(&stack, &lapsed).await }).await;
    let lived = registered_at.elapsed();
    assert!(lived >= ttl, "deleted after {lived:?}, before its TTL of {ttl:?}");
    assert!(exists(&stack, &kept).await, "a verified account was deleted");
    println!("unverified account deleted {lived:?} after registering (TTL {ttl:?})");

    // Its link and its code say what happened, once auth-service has erased its part.
    let mut answer = stack.verify(&mail.verification_token()).await;
    let deadline = Instant::now() + STATUS_WAIT;
    while answer.as_ref().is_err_and(|s| reasons::of(s) != reasons::ACCOUNT_EXPIRED) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = stack.verify(&mail.verification_token()).await;
    }
    let refused = answer.expect_err("the link of a deleted account verified");
    assert_eq!((refused.code(), reasons::of(&refused).as_str()), (Code::FailedPrecondition, reasons::ACCOUNT_EXPIRED));
    let code = VerifyEmailCodeRequest { email: "lapsed@example.com".into(), code: mail.verification_code() };
    let refused = stack.auth.clone().verify_email_code(code).await.expect_err("the code of a deleted account");
    assert_eq!((refused.code(), reasons::of(&refused).as_str()), (Code::FailedPrecondition, reasons::ACCOUNT_EXPIRED));
    let page = Browser::new(&stack.gateway_url).click(&mail.verification_link()).await;
    assert_eq!((page.status, page.kind()), (410, "account-gone"), "{}", page.html);
    assert!(page.html.contains("register again"), "{}", page.html);

    // One users.deleted, reason EXPIRED, for it alone.
    let deleted = deleted_events(&stack.nats.url()).await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!((deleted[0].user_id.as_str(), deleted[0].reason()), (lapsed.as_str(), DeletionReason::Expired));

    // The address is free: a new account, a new email, verified.
    let again = stack.register("lapsed@example.com", PASSWORD).await;
    assert_ne!(again, lapsed);
    let link = stack.smtp.wait_for("lapsed@example.com", 2, EMAIL_WAIT).await[1].verification_link();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&again, UserStatus::Verified, STATUS_WAIT).await);
}

/// Expiry counts from the latest registration: nothing a caller without the password can do
/// (a resend, in another language) postpones it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_in_another_language_does_not_postpone_expiry() {
    let ttl = Duration::from_secs(6);
    let stack = Stack::start_with(StackOptions { unverified_ttl: Some(ttl), ..StackOptions::default() }).await;
    let registered_at = Instant::now();
    let untouched = stack.register("untouched@example.com", PASSWORD).await;
    let resent = stack.register("resent@example.com", PASSWORD).await;
    tokio::time::sleep(ttl * 2 / 3).await;
    let request =
        verimail_proto::user::v1::ResendVerificationRequest { email: "resent@example.com".into(), locale: "de".into() };
    stack.users.clone().resend_verification(request).await.expect("ResendVerification");
    stack.smtp.wait_for("resent@example.com", 2, EMAIL_WAIT).await;
    // The sweep runs every quarter of the TTL: both are gone within the TTL and two sweeps;
    // the resend would have kept one to 2/3 TTL + TTL.
    let bound = ttl + ttl / 2;
    for user_id in [&untouched, &resent] {
        let left = bound.saturating_sub(registered_at.elapsed());
        eventually("the unverified account is deleted", left, || async { !exists(&stack, user_id).await }).await;
    }
    println!("both deleted {:?} after registering (TTL {ttl:?})", registered_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_user_service_instances_on_one_postgresql_database_delete_each_expired_account_once() {
    const ACCOUNTS: usize = 150;
    let ttl = Duration::from_secs(2);
    let stack = Stack::start_with(StackOptions {
        postgres: true,
        instances: 2,
        unverified_ttl: Some(ttl),
        ..StackOptions::default()
    })
    .await;
    // Half through each instance; both sweep the one database.
    let mut ids = Vec::new();
    for n in 0..ACCOUNTS {
        let instance = &stack.instances[n % 2];
        let request = verimail_proto::user::v1::RegisterUserRequest {
            email: format!("lapse-{n}@example.com"),
            password: PASSWORD.into(),
            ..Default::default()
        };
        ids.push(instance.users.clone().register_user(request).await.expect("RegisterUser").into_inner().user_id);
    }
    eventually("every account deleted", Duration::from_secs(60), || async {
        stack.query_text("user", "SELECT COUNT(*) FROM users").await == "0"
    })
    .await;
    eventually("a users.deleted for each", Duration::from_secs(30), || async {
        deleted_events(&stack.nats.url()).await.len() >= ACCOUNTS
    })
    .await;
    let announced = deleted_events(&stack.nats.url()).await;
    let buried = stack.query_text("user", "SELECT COUNT(*) FROM deleted_users WHERE reason = 'expired'").await;
    assert_eq!(buried, ACCOUNTS.to_string());
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for event in &announced {
        *per_user.entry(event.user_id.as_str()).or_default() += 1;
        assert_eq!(event.reason(), DeletionReason::Expired);
    }
    assert_eq!(announced.len(), ACCOUNTS, "events: {}", announced.len());
    assert!(per_user.values().all(|&n| n == 1), "an account was deleted twice");
    let mut registered: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut deleted: Vec<&str> = per_user.into_keys().collect();
    registered.sort_unstable();
    deleted.sort_unstable();
    assert_eq!(deleted, registered, "the deleted accounts are the registered ones");
    println!("{ACCOUNTS} accounts registered through two instances, each deleted once ({} ids)", ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_erases_its_address_from_every_service_and_the_parked_messages() {
    let stack = Stack::start_with(StackOptions { email_attempts: 1, ..StackOptions::default() }).await;
    let address = "erase-me@example.com";
    let user_id = stack.register(address, PASSWORD).await;
    let other = stack.register("stays@example.com", PASSWORD).await;
    let mail = stack.smtp.wait_for_verification(address, EMAIL_WAIT).await;
    assert_eq!(Browser::new(&stack.gateway_url).click(&mail.verification_link()).await.kind(), "verified");
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
    let others_link = stack.smtp.wait_for_verification("stays@example.com", EMAIL_WAIT).await.verification_link();
    // A second email (the notice of a registration again), and a third that SMTP refuses
    // while it is down: parked by email-service.
    stack.register(address, PASSWORD).await;
    stack.smtp.wait_for(address, 2, EMAIL_WAIT).await;
    stack.smtp.go_down();
    stack.register(address, PASSWORD).await;
    eventually("the third email parked", EMAIL_WAIT, || async {
        !Stack::parked(&stack.email_parking).await.is_empty()
    })
    .await;
    stack.smtp.come_back();
    assert!(!stack.find_everywhere(address).await.is_empty(), "the search finds the address before");

    let token = stack.sign_in(address, PASSWORD).await.expect("SignIn").access_token;
    let others_token = {
        assert_eq!(Browser::new(&stack.gateway_url).click(&others_link).await.kind(), "verified");
        assert!(stack.wait_for_status(&other, UserStatus::Verified, STATUS_WAIT).await);
        stack.sign_in("stays@example.com", PASSWORD).await.expect("SignIn").access_token
    };
    let delete = |token: &str, user_id: &str, password: &str| {
        let request = DeleteUserRequest { user_id: user_id.to_owned(), password: password.to_owned() };
        let mut users = stack.plain_users();
        let request = verimail_system_tests::with_bearer(request, token);
        async move { users.delete_user(request).await }
    };
    // A change of address pending: its new address is the user's too.
    let change = ChangeEmailRequest { new_email: "erase-me-too@example.com".into(), ..Default::default() };
    stack.plain_users().change_email(verimail_system_tests::with_bearer(change, &token)).await.expect("ChangeEmail");
    stack.smtp.wait_for("erase-me-too@example.com", 1, EMAIL_WAIT).await;
    assert!(!stack.find_everywhere("erase-me-too@example.com").await.is_empty());
    // Someone else's token, and the wrong password: refused, nothing deleted.
    let refused = delete(&others_token, &user_id, PASSWORD).await.expect_err("another user's token");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = delete(&token, &user_id, "not the password at all").await.expect_err("a wrong password");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(exists(&stack, &user_id).await);

    delete(&token, &user_id, PASSWORD).await.expect("DeleteUser with the token and the password");
    assert!(!exists(&stack, &user_id).await, "GetUser still finds the user");
    // The deletion ended the token's session: the token acts no more.
    let gone = delete(&token, &user_id, PASSWORD).await.expect_err("a second DeleteUser");
    assert_eq!(gone.code(), Code::Unauthenticated, "{gone:?}");
    let again = DeleteUserRequest { user_id: user_id.clone(), ..Default::default() };
    let gone = stack.users.clone().delete_user(again).await.expect_err("a second DeleteUser");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    // Each service erases its part; the parked email goes.
    eventually("the address erased everywhere", STATUS_WAIT, || async {
        stack.find_everywhere(address).await.is_empty()
            && stack.find_everywhere("erase-me-too@example.com").await.is_empty()
            && Stack::parked(&stack.email_parking).await.is_empty()
            && stack.query_text("auth", "SELECT COUNT(*) FROM deleted_users").await == "1"
    })
    .await;
    let kept = stack.deliveries(ListDeliveriesRequest { user_id: user_id.clone(), ..Default::default() }).await;
    assert_eq!(kept.len(), 5, "the deliveries stay, as counts (3 + the change's 2): {kept:?}");
    assert!(kept.iter().all(|d| d.recipient.starts_with("erased:")), "{kept:?}");
    // Operators still find them by the address they are asked about.
    let by_address = stack.deliveries(ListDeliveriesRequest { email: address.into(), ..Default::default() }).await;
    assert_eq!(by_address.len(), 4, "ListDeliveries by the erased address (3 + the change notice)");
    assert!(exists(&stack, &other).await, "another account was touched");
    assert!(!stack.find_everywhere("stays@example.com").await.is_empty(), "another user's address was erased");

    // The old link now says the account was deleted.
    let refused = stack.verify(&mail.verification_token()).await.expect_err("a deleted account's link");
    assert_eq!(reasons::of(&refused), reasons::ACCOUNT_DELETED, "{refused:?}");
    let page = Browser::new(&stack.gateway_url).click(&mail.verification_link()).await;
    assert_eq!((page.status, page.kind()), (410, "account-gone"), "{}", page.html);
    assert!(page.html.contains("This account was deleted"), "{}", page.html);
    let deleted = deleted_events(&stack.nats.url()).await;
    assert_eq!(deleted.len(), 1);
    assert_eq!((deleted[0].user_id.as_str(), deleted[0].reason()), (user_id.as_str(), DeletionReason::Requested));

    // The address registers again, as new.
    let again = stack.register(address, PASSWORD).await;
    // Received before: the first verification, a sign-up notice and the change's notice.
    let mails = stack.smtp.wait_for(address, 4, EMAIL_WAIT).await;
    let link = mails.iter().rev().find(|m| m.is_verification()).expect("a new verification email").verification_link();
    assert_eq!(Browser::new(&stack.gateway_url).click(&link).await.kind(), "verified");
    assert!(stack.wait_for_status(&again, UserStatus::Verified, STATUS_WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deletes_an_account_while_email_service_is_down_and_the_erasure_completes() {
    let mut stack = ProcessStack::start().await;
    let address = "while-down@example.com";
    let request = verimail_proto::user::v1::RegisterUserRequest {
        email: address.into(),
        password: PASSWORD.into(),
        ..Default::default()
    };
    let user_id = stack.users.clone().register_user(request).await.expect("RegisterUser").into_inner().user_id;
    stack.smtp.wait_for(address, 1, EMAIL_WAIT).await;
    let email_db = stack.database_url("email");
    let stored = verimail_system_tests::find_in_database(&email_db, "email", address).await;
    assert!(!stored.is_empty(), "email-service holds the address before");

    stack.kill(Part::Email);
    // The operator's call: the admin credential, no password.
    let request = DeleteUserRequest { user_id: user_id.clone(), password: String::new() };
    stack.users.clone().delete_user(request).await.expect("DeleteUser as an operator");
    stack.start_part(Part::Email).await;

    eventually("email-service erases the address after its restart", STATUS_WAIT, || async {
        verimail_system_tests::find_in_database(&email_db, "email", address).await.is_empty()
    })
    .await;
    for service in ["user", "auth"] {
        let url = stack.database_url(service);
        eventually(&format!("{service}-service erases the address"), STATUS_WAIT, || async {
            verimail_system_tests::find_in_database(&url, service, address).await.is_empty()
        })
        .await;
    }
    let deleted = deleted_events(&stack.nats.url()).await;
    assert_eq!(deleted.iter().filter(|e| e.user_id == user_id).count(), 1);
}

/// An address is its owner's data wherever it is stored: account X asked to move to v@ (never
/// confirmed), v@ then registered as account Y, and Y's deletion erases v@ from X's rows too
/// (X's pending change, the email and link sent for it, its event), in every service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_erases_its_address_from_another_accounts_pending_change() {
    let stack = Stack::start().await;
    let x = stack.verified("xavier@example.com", PASSWORD).await;
    let token = stack.sign_in("xavier@example.com", PASSWORD).await.expect("SignIn").access_token;
    let change = ChangeEmailRequest { new_email: "v@example.com".into(), ..Default::default() };
    stack.plain_users().change_email(verimail_system_tests::with_bearer(change, &token)).await.expect("ChangeEmail");
    stack.smtp.wait_for("v@example.com", 1, EMAIL_WAIT).await;
    let y = stack.register("v@example.com", PASSWORD).await;
    stack.smtp.wait_for("v@example.com", 2, EMAIL_WAIT).await;
    assert!(!stack.find_everywhere("v@example.com").await.is_empty(), "the search finds the address before");

    let delete = DeleteUserRequest { user_id: y.clone(), ..Default::default() };
    stack.users.clone().delete_user(delete).await.expect("DeleteUser");
    let deadline = Instant::now() + STATUS_WAIT;
    let mut left = stack.find_everywhere("v@example.com").await;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = stack.find_everywhere("v@example.com").await;
    }
    assert!(left.is_empty(), "v@ is still in {left:?}");
    // X keeps its account and its address; its change to v@ is no longer pending.
    assert!(exists(&stack, &x).await);
    let request = GetUserRequest { key: Some(get_user_request::Key::UserId(x.clone())) };
    let user = stack.users.clone().get_user(request).await.expect("GetUser").into_inner().user.expect("X");
    assert_eq!(user.email, "xavier@example.com");
    assert!(user.pending_email_change.is_none(), "{user:?}");
    assert!(!stack.find_everywhere("xavier@example.com").await.is_empty(), "X's own address stays");
    let deleted = deleted_events(&stack.nats.url()).await;
    assert_eq!((deleted.len(), deleted[0].email.as_str()), (1, "v@example.com"));
}
