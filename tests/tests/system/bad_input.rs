//! Bad input gets a precise status and writes nothing.

use crate::EMAIL_WAIT;
use std::time::Duration;
use tonic::Code;
use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest};
use verimail_proto::user::v1::{GetUserRequest, RegisterUserRequest, ResendVerificationRequest, get_user_request};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{Stack, StackOptions};

async fn user_by_email(stack: &Stack, email: &str) -> Result<String, Code> {
    stack
        .users
        .clone()
        .get_user(GetUserRequest { key: Some(get_user_request::Key::Email(email.into())) })
        .await
        .map(|r| r.into_inner().user.expect("user").id)
        .map_err(|s| s.code())
}

async fn delivery_count(stack: &Stack) -> usize {
    stack.deliveries(ListDeliveriesRequest { page_size: 100, ..Default::default() }).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_enumeration_safety_off_a_verified_email_gets_already_exists_and_writes_nothing() {
    let stack = Stack::start_with(StackOptions { enumeration_safe: false, ..StackOptions::default() }).await;
    let first = stack.register("frank@example.com", "correct horse battery").await;
    // Unverified, the newer registration wins (and is told the account's id).
    let again = stack.register("Frank@example.com", "another password").await;
    assert_eq!(again, first);
    // Two deliveries are recorded. The later registration's email is sent; the earlier one's
    // too, unless email-service took it up after the later registration had replaced it (then
    // it is not sent). The latest email is the one that verifies.
    let deliveries = ListDeliveriesRequest { user_id: first.clone(), ..Default::default() };
    let deadline = tokio::time::Instant::now() + EMAIL_WAIT;
    while stack
        .deliveries(deliveries.clone())
        .await
        .iter()
        .filter(|d| matches!(d.status(), DeliveryStatus::Sent | DeliveryStatus::Failed))
        .count()
        < 2
    {
        assert!(tokio::time::Instant::now() < deadline, "two deliveries for frank within {EMAIL_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails = stack.smtp.wait_for("frank@example.com", 1, EMAIL_WAIT).await;
    let link = mails.iter().max_by_key(|mail| mail.event_id()).unwrap().verification_link();
    Browser::new(&stack.gateway_url).click(&link).await;
    assert!(stack.wait_for_status(&first, verimail_proto::user::v1::UserStatus::Verified, crate::STATUS_WAIT).await);

    for same_mailbox in ["frank@example.com", "  FRANK@Example.COM "] {
        let status = stack
            .users
            .clone()
            .register_user(RegisterUserRequest {
                email: same_mailbox.into(),
                password: "another password".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{same_mailbox:?}");
    }
    assert_eq!(user_by_email(&stack, "frank@example.com").await, Ok(first));
    // No further users.registered went out: no third email, no third delivery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.smtp.to("frank@example.com").len(), mails.len());
    assert_eq!(delivery_count(&stack).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_registrations_get_invalid_argument_naming_the_field() {
    let stack = Stack::start().await;
    let long_local = format!("{}@example.com", "a".repeat(65));
    let too_long = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
    let cases: Vec<(String, String, &str)> = vec![
        ("".into(), "correct horse".into(), "email"),
        ("not-an-email".into(), "correct horse".into(), "email"),
        ("with space@example.com".into(), "correct horse".into(), "email"),
        ("user@localhost".into(), "correct horse".into(), "email"),
        ("user@[999.1.1.1]".into(), "correct horse".into(), "email"),
        (long_local, "correct horse".into(), "email"),
        (too_long, "correct horse".into(), "email"),
        ("Name <user@example.com>".into(), "correct horse".into(), "email"),
        ("ok@example.com".into(), "short".into(), "password"),
        ("ok@example.com".into(), "x".repeat(129), "password"),
        // Long enough but guessed first: common, a keyboard walk, the address itself.
        ("ok@example.com".into(), "password123".into(), "password"),
        ("ok@example.com".into(), "qwertyuiop".into(), "password"),
        ("ok@example.com".into(), "ok@example.com".into(), "password"),
    ];
    for (email, password, field) in cases {
        let status = stack
            .users
            .clone()
            .register_user(RegisterUserRequest { email: email.clone(), password, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?}");
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some(field), "{email:?}");
        assert!(status.message().starts_with(&format!("{field}: ")), "{}", status.message());
    }
    assert_eq!(user_by_email(&stack, "ok@example.com").await, Err(Code::NotFound));

    // A valid IP literal and a 128-character password are accepted.
    let long_password: String = (0..128u32).map(|i| char::from(b'a' + ((i * 7 + i / 26) % 26) as u8)).collect();
    stack.register("user@[192.0.2.7]", &long_password).await;
    stack.smtp.wait_for("user@[192.0.2.7]", 1, EMAIL_WAIT).await;
    assert_eq!(delivery_count(&stack).await, 1, "only the valid registration sent an email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lookups_and_resends_are_refused_precisely() {
    let stack = Stack::start().await;
    let users = stack.users.clone();
    let not_uuid = users
        .clone()
        .get_user(GetUserRequest { key: Some(get_user_request::Key::UserId("42".into())) })
        .await
        .unwrap_err();
    assert_eq!(not_uuid.code(), Code::InvalidArgument);
    assert_eq!(verimail_server::grpc::bad_request_field(&not_uuid).as_deref(), Some("user_id"));
    let no_key = users.clone().get_user(GetUserRequest { key: None }).await.unwrap_err();
    assert_eq!(no_key.code(), Code::InvalidArgument);
    let unknown = users
        .clone()
        .get_user(GetUserRequest {
            key: Some(get_user_request::Key::UserId("01937b5e-0000-7000-8000-000000000000".into())),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let bad_resend = users
        .clone()
        .resend_verification(ResendVerificationRequest { email: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(bad_resend.code(), Code::InvalidArgument);
    // An unknown address is answered exactly like a known one, and sends nothing.
    users
        .clone()
        .resend_verification(ResendVerificationRequest { email: "nobody@example.com".into(), ..Default::default() })
        .await
        .expect("same answer for unknown addresses");

    let browser = Browser::new(&stack.gateway_url);
    let page = browser.submit("/resend", &[("email".into(), "not an email".into())]).await;
    assert_eq!((page.status, page.kind()), (400, "resend"));
    let page = browser.submit("/resend", &[("email".into(), "nobody@example.com".into())]).await;
    assert_eq!((page.status, page.kind()), (202, "resent"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stack.smtp.all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_any_handler_and_unknown_paths_share_one_metric_label() {
    let stack = Stack::start().await;
    // 64 KiB of password: refused while decoding, far below tonic's 4 MiB default.
    let huge =
        RegisterUserRequest { email: "big@example.com".into(), password: "x".repeat(64 * 1024), ..Default::default() };
    let status = stack.users.clone().register_user(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    println!("RegisterUser with a 64 KiB password: {:?} {}", status.code(), status.message());
    assert!(user_by_email(&stack, "big@example.com").await.is_err(), "nothing registered");

    // Paths this server does not serve: AuthService's methods asked of user-service.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.grpc_addrs[0])).unwrap();
    let mut wrong_server =
        verimail_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.connect_lazy());
    for token in ["a", "b", "c"] {
        let request = verimail_proto::auth::v1::VerifyEmailRequest { token: token.into() };
        assert_eq!(wrong_server.verify_email(request).await.unwrap_err().code(), Code::Unimplemented);
    }
    let text = verimail_server::metrics::render();
    let unimplemented: Vec<&str> =
        text.lines().filter(|l| l.starts_with("verimail_rpc_requests_total") && l.contains("Unimplemented")).collect();
    assert!(!unimplemented.is_empty(), "{text}");
    assert!(unimplemented.iter().all(|l| l.contains("method=\"unknown\"")), "{unimplemented:?}");
}
