//! The flow a user goes through: register, open the email, click the link, verified.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::auth::v1::{VerifyEmailRequest, VerifyOutcome};
use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest};
use verimail_proto::user::v1::UserStatus;
use verimail_system_tests::browser::Browser;
use verimail_system_tests::smtp::token_of;
use verimail_system_tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_open_the_email_click_the_link_and_become_verified() {
    let stack = Stack::start().await;
    let browser = Browser::new(&stack.gateway_url);
    let started = Instant::now();

    let user_id = stack.register("Alice@Example.com", "correct horse battery").await;
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified);

    let mails = stack.smtp.wait_for("alice@example.com", 1, EMAIL_WAIT).await;
    let email = &mails[0];
    assert_eq!(email.header("Subject").as_deref(), Some("Verify your email address"));
    let link = email.verification_link();
    // The token is 43 characters (an id and its MAC): the link stays short for every client.
    let token = token_of(&link);
    assert_eq!(link, format!("{}/verify-email?token={token}", stack.gateway_url));
    assert_eq!(token.len(), verimail_auth::links::TOKEN_LEN, "{link}");
    assert!(email.part("text/html").replace("&#x2f;", "/").contains(&link), "the HTML part carries the same link");

    let page = browser.click(&link).await;
    assert_eq!((page.status, page.kind()), (200, "verified"), "{}", page.html);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await, "GetUser says verified");
    let round_trip = started.elapsed();
    println!("register -> verified round trip: {} ms", round_trip.as_millis());

    // A second click (or a second tab) is fine, and says so.
    let again = browser.click(&link).await;
    assert_eq!((again.status, again.kind()), (200, "already-verified"), "{}", again.html);
    let reply = stack
        .auth
        .clone()
        .verify_email(VerifyEmailRequest { token: token_of(&link) })
        .await
        .expect("VerifyEmail on a used token")
        .into_inner();
    assert_eq!(reply.outcome(), VerifyOutcome::AlreadyVerified);
    assert_eq!(reply.user_id, user_id);

    // Exactly one email, recorded as sent once.
    let deliveries = stack.deliveries(ListDeliveriesRequest { user_id: user_id.clone(), ..Default::default() }).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status(), DeliveryStatus::Sent);
    assert_eq!(deliveries[0].attempts, 1);
    assert_eq!(stack.smtp.to("alice@example.com").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_link_without_submitting_verifies_nothing() {
    let stack = Stack::start().await;
    let browser = Browser::new(&stack.gateway_url);
    let user_id = stack.register("bob@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("bob@example.com", 1, EMAIL_WAIT).await[0].verification_link();

    for _ in 0..3 {
        let page = browser.get(&link).await;
        assert_eq!((page.status, page.kind()), (200, "confirm"));
        let (action, fields) = page.form().expect("a form to submit");
        assert_eq!(action, "/verify-email?lang=en", "the form keeps the page's language");
        assert_eq!(fields, vec![("token".to_owned(), token_of(&link))]);
        assert!(page.html.contains("<button type=\"submit\">"), "works without JavaScript");
    }
    // Nothing was decided: still unverified a while later, and the link still works.
    assert!(!stack.wait_for_status(&user_id, UserStatus::Verified, Duration::from_millis(500)).await);
    let page = browser.click(&link).await;
    assert_eq!(page.kind(), "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_token_gets_the_invalid_page_and_invalid_argument() {
    let stack = Stack::start().await;
    let browser = Browser::new(&stack.gateway_url);
    let user_id = stack.register("carol@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("carol@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    let token = token_of(&link);
    let split = 20;
    let flipped = if &token[split..=split] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &token[..split], &token[split + 1..]);

    let page = browser.submit("/verify-email", &[("token".into(), tampered.clone())]).await;
    assert_eq!((page.status, page.kind()), (400, "invalid"));
    assert!(page.form().is_some(), "the invalid page offers a new link");

    let status = stack.verify(&tampered).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("token"));

    for junk in ["", "not-a-token", "v4.public.abc"] {
        let page = browser.submit("/verify-email", &[("token".into(), junk.into())]).await;
        assert_eq!((page.status, page.kind()), (400, "invalid"), "{junk:?}");
    }
    let missing = browser.get(&format!("{}/verify-email", stack.gateway_url)).await;
    assert_eq!((missing.status, missing.kind()), (400, "invalid"));

    assert!(!stack.wait_for_status(&user_id, UserStatus::Verified, Duration::from_millis(300)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_offers_a_new_one_which_works() {
    let stack =
        Stack::start_with(StackOptions { token_lifetime: Duration::from_secs(2), ..StackOptions::default() }).await;
    let browser = Browser::new(&stack.gateway_url);
    let user_id = stack.register("erin@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("erin@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let page = browser.click(&link).await;
    assert_eq!((page.status, page.kind()), (410, "expired"), "{}", page.html);
    let status = stack.verify(&token_of(&link)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified);

    // The expired page's form asks for a new link.
    let (action, mut fields) = page.form().expect("a resend form");
    assert_eq!(action, "/resend?lang=en");
    fields.iter_mut().filter(|(name, _)| name == "email").for_each(|(_, v)| *v = "erin@example.com".into());
    let resent = browser.submit(&action, &fields).await;
    assert_eq!((resent.status, resent.kind()), (202, "resent"));

    let mails = stack.smtp.wait_for("erin@example.com", 2, EMAIL_WAIT).await;
    let fresh = mails[1].verification_link();
    assert_ne!(fresh, link);
    let page = browser.click(&fresh).await;
    assert_eq!(page.kind(), "verified", "{}", page.html);
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_auth_services_postgresql_database_is_unreachable_verifying_answers_unavailable() {
    let stack =
        Stack::start_with(StackOptions { postgres: true, auth_database_door: true, ..StackOptions::default() }).await;
    let user_id = stack.register("outage@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("outage@example.com", 1, EMAIL_WAIT).await[0].verification_link();
    let token = token_of(&link);
    let door = stack.auth_database_door.as_ref().unwrap();

    door.set_open(false);
    let status = stack.verify(&token).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let page = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!((page.status, page.kind()), (503, "unavailable"), "{}", page.html);
    println!("VerifyEmail with auth-service's database unreachable: {:?} {}", status.code(), status.message());

    // Safe to retry: once the database answers again, the same link verifies.
    door.set_open(true);
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    loop {
        match stack.verify(&token).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("after the outage: {status:?}"),
        }
    }
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}
