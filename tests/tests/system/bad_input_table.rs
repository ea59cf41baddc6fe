//! Every RPC and page, fed bad input from a table: each gets its precise status, and the
//! three databases are exactly as they were.

use crate::EMAIL_WAIT;
use std::time::Duration;
use tonic::Code;
use verimail_auth::links::TokenKeys;
use verimail_proto::auth::v1::{
    IssueVerificationTokenRequest, RevokeVerificationTokensRequest, UndoEmailChangeRequest, VerifyEmailCodeRequest,
    VerifyEmailRequest,
};
use verimail_proto::email::v1::{
    GetDeliveryRequest, ListDeliveriesRequest, ListSuppressionsRequest, RemoveSuppressionRequest, RetryDeliveryRequest,
};
use verimail_proto::ops::v1::{ListParkedRequest, ReplayParkedRequest};
use verimail_proto::user::v1::{
    BatchGetUsersRequest, ChangeEmailRequest, ChangePasswordRequest, DeleteUserRequest, GetUserRequest,
    ListRevokedSessionsRequest, ListSessionsRequest, ListUsersRequest, RefreshSessionRequest, RegisterUserRequest,
    RequestPasswordResetRequest, ResendVerificationRequest, ResetPasswordRequest, RevokeSessionsRequest, SignInRequest,
    SignOutRequest, UserStatus, get_user_request,
};
use verimail_system_tests::{Stack, with_bearer};

/// What must not move: rows per table, and the columns a request could change.
async fn fingerprint(stack: &Stack) -> Vec<(String, String)> {
    // SQL that SQLite and PostgreSQL both speak.
    let sent = "COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0)";
    let verified = "COALESCE(SUM(CASE WHEN status = 'verified' THEN 1 ELSE 0 END), 0)";
    let queries = [
        ("user", format!("SELECT COUNT(*) || '/' || {verified} FROM users")),
        ("user", "SELECT COUNT(*) || '/' || COUNT(published_at) FROM outbox".into()),
        ("auth", "SELECT COUNT(*) || '/' || COUNT(used_at) || '/' || COUNT(revoked_at) FROM verification_tokens".into()),
        (
            "auth",
            "SELECT COUNT(*) || '/' || COUNT(used_at) || '/' || COUNT(revoked_at) || '/' || COALESCE(SUM(wrong_tries), 0) \
             FROM verification_codes"
                .into(),
        ),
        ("auth", "SELECT COUNT(*) FROM outbox".into()),
        ("email", format!("SELECT COUNT(*) || '/' || COALESCE(SUM(attempts), 0) || '/' || {sent} FROM deliveries")),
        // Sessions forged for the table's tokens may start; none may end or rotate.
        ("user", "SELECT COUNT(ended_at) FROM sessions".into()),
        ("user", "SELECT COUNT(*) FROM retired_refresh_tokens".into()),
    ];
    let mut rows = Vec::new();
    for (service, sql) in queries {
        let value = stack.query_text(service, &sql).await;
        rows.push((sql, value));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_everywhere_gets_a_precise_answer_and_changes_nothing() {
    let stack = Stack::start().await;
    let user_id = stack.register("kim@example.com", "correct horse battery").await;
    stack.register("lee@example.com", "correct horse battery").await;
    stack.smtp.wait_for("lee@example.com", 1, EMAIL_WAIT).await;
    let mail = stack.smtp.wait_for("kim@example.com", 1, EMAIL_WAIT).await.remove(0);
    let token = mail.verification_token();
    let keys = TokenKeys::from_paserk(&[stack.token_key.as_str()]).unwrap();
    // Made with auth-service's own key, but with no row: what a link looks like once the
    // retention sweep has deleted it long after it expired, so it answers "expired".
    let unrecorded = keys.issue(Duration::from_secs(600)).token;
    let wrong_key = TokenKeys::generate().unwrap().issue(Duration::from_secs(600)).token;
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    // Let the registration's own writes (outbox marked, delivery sent) settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fingerprint(&stack).await;

    let forged = [tampered.as_str(), unrecorded.as_str(), wrong_key.as_str()];
    let tried = weird_emails(&stack, &user_id).await
        + weak_passwords(&stack).await
        + bad_tokens_and_codes(&stack, &user_id, forged).await
        + bad_locales(&stack).await
        + bad_ops_fields(&stack).await
        + bad_sign_ins_and_lookups(&stack, &user_id).await
        + bad_sessions(&stack, &user_id).await
        + bad_password_resets(&stack, &token, &tampered).await
        + bad_pages(&stack, &tampered).await;

    assert_eq!(fingerprint(&stack).await, before, "bad input changed a database");
    println!("bad inputs tried: {tried}, databases unchanged");
}

/// Each malformed address, to every RPC that takes one: INVALID_ARGUMENT naming `email`.
async fn weird_emails(stack: &Stack, user_id: &str) -> usize {
    let mut tried = 0;
    let (users, auth, emails) = (stack.users.clone(), stack.auth.clone(), stack.emails.clone());
    let weird_emails = [
        "",
        " ",
        "plainaddress",
        "@example.com",
        "kim@",
        "kim@@example.com",
        "kim@example..com",
        "kim@-example.com",
        "kim example@example.com",
        "kim@example.com\r\nBcc: all@example.com",
        "kim\u{0}@example.com",
        "kim@exam\u{202e}ple.com",
        "' OR '1'='1'; --@example.com",
        "<script>alert(1)</script>@example.com",
        "kim@[300.1.1.1]",
        "kim@localhost",
    ];
    for email in weird_emails {
        let register =
            RegisterUserRequest { email: email.into(), password: "correct horse battery".into(), ..Default::default() };
        let status = users.clone().register_user(register).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (Code::InvalidArgument, Some("email")),
            "RegisterUser {email:?}"
        );
        let resend = ResendVerificationRequest { email: email.into(), ..Default::default() };
        assert_eq!(
            users.clone().resend_verification(resend).await.unwrap_err().code(),
            Code::InvalidArgument,
            "Resend {email:?}"
        );
        let sign_in = SignInRequest { email: email.into(), password: "correct horse battery".into() };
        let status = users.clone().sign_in(sign_in).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("email"), "SignIn {email:?}");
        tried += 1;
        let lookup = GetUserRequest { key: Some(get_user_request::Key::Email(email.into())) };
        assert_eq!(
            users.clone().get_user(lookup).await.unwrap_err().code(),
            Code::InvalidArgument,
            "GetUser {email:?}"
        );
        // auth-service and email-service parse addresses as user-service does.
        let code = VerifyEmailCodeRequest { email: email.into(), code: "123456".into() };
        let status = auth.clone().verify_email_code(code).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("email"), "code {email:?}");
        let issue =
            IssueVerificationTokenRequest { user_id: user_id.into(), email: email.into(), ..Default::default() };
        let status = stack.issuer.clone().issue_verification_token(issue).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("email"), "Issue {email:?}");
        tried += 5;
        if !email.trim().is_empty() {
            // An empty filter means every address.
            let list = ListDeliveriesRequest { email: email.into(), ..Default::default() };
            let status = emails.clone().list_deliveries(list).await.unwrap_err();
            assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("email"), "{email:?}");
            tried += 1;
        }
    }
    tried
}

/// Passwords the rules refuse.
async fn weak_passwords(stack: &Stack) -> usize {
    let (mut tried, users) = (0, stack.users.clone());
    let weak_passwords = [
        "",
        "short",
        "password",
        "12345678",
        "new@example.com",
        &"x".repeat(129),
        "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}",
    ];
    for password in weak_passwords {
        let register =
            RegisterUserRequest { email: "new@example.com".into(), password: password.into(), ..Default::default() };
        let status = users.clone().register_user(register).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (Code::InvalidArgument, Some("password")),
            "password {password:?}"
        );
        tried += 1;
    }
    tried
}

/// Malformed language tags, to every RPC that takes one: INVALID_ARGUMENT naming `locale`.
async fn bad_locales(stack: &Stack) -> usize {
    let mut tried = 0;
    for locale in ["english", "x-klingon", "de_DE", "de-", "und", "de-u-co-phonebk", "<b>", &"de-".repeat(20)] {
        let register = RegisterUserRequest {
            email: "new@example.com".into(),
            password: "correct horse battery".into(),
            locale: locale.into(),
        };
        let resend = ResendVerificationRequest { email: "kim@example.com".into(), locale: locale.into() };
        let change = ChangeEmailRequest {
            new_email: "new@example.com".into(),
            email: "kim@example.com".into(),
            password: "correct horse battery".into(),
            locale: locale.into(),
        };
        let answers = [
            ("RegisterUser", stack.users.clone().register_user(register).await.map(drop)),
            ("ResendVerification", stack.users.clone().resend_verification(resend).await.map(drop)),
            ("ChangeEmail", stack.plain_users().change_email(change).await.map(drop)),
        ];
        for (rpc, answer) in answers {
            let status = answer.expect_err("a bad locale was taken");
            assert_eq!(
                (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
                (Code::InvalidArgument, Some("locale")),
                "{rpc} {locale:?}"
            );
            tried += 1;
        }
    }
    tried
}

/// Forged, foreign and malformed tokens, codes and token requests.
async fn bad_tokens_and_codes(stack: &Stack, user_id: &str, forged: [&str; 3]) -> usize {
    let (mut tried, auth) = (0, stack.auth.clone());
    let [tampered, unrecorded, wrong_key] = forged;
    let bad_tokens = [
        ("", Code::InvalidArgument),
        ("garbage", Code::InvalidArgument),
        (tampered, Code::InvalidArgument),
        (unrecorded, Code::FailedPrecondition),
        (wrong_key, Code::InvalidArgument),
        ("v4.local.", Code::InvalidArgument),
        (&tampered[..42], Code::InvalidArgument),
        ("0123456789012345678901234567890123456789012", Code::InvalidArgument),
        ("v4.public.eyJ", Code::InvalidArgument),
        ("v2.local.AAAA", Code::InvalidArgument),
    ];
    let huge = "v4.local.".to_owned() + &"A".repeat(10_000);
    for (bad, code) in bad_tokens.iter().copied().chain([(&huge[..], Code::InvalidArgument)]) {
        let status = auth.clone().verify_email(VerifyEmailRequest { token: bad.into() }).await.unwrap_err();
        assert_eq!(status.code(), code, "VerifyEmail {:?}", &bad[..bad.len().min(40)]);
        // The link of a change-of-address notice: the same answers (a verification token is
        // of another purpose there).
        let status = auth
            .clone()
            .undo_email_change(UndoEmailChangeRequest { token: bad.into(), check_only: false })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "UndoEmailChange {:?}", &bad[..bad.len().min(40)]);
        tried += 2;
    }
    let mail = stack.smtp.wait_for("kim@example.com", 1, crate::EMAIL_WAIT).await.remove(0);
    let status = auth
        .clone()
        .undo_email_change(UndoEmailChangeRequest { token: mail.verification_token(), check_only: false })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
        (Code::InvalidArgument, Some("token")),
        "UndoEmailChange with a verification link's token"
    );
    for (email, code, field) in [
        ("kim@example.com", "12345", "code"),
        ("kim@example.com", "1234567", "code"),
        ("kim@example.com", "１２３４５６", "code"),
        ("kim@example.com", "12345\u{0}", "code"),
        ("kim@example.com", "' OR 1=1", "code"),
        ("", "123456", "email"),
        ("no-at-sign", "123456", "email"),
        (&"a".repeat(300)[..], "123456", "email"),
    ] {
        let status = auth
            .clone()
            .verify_email_code(VerifyEmailCodeRequest { email: email.into(), code: code.into() })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (Code::InvalidArgument, Some(field)),
            "code {email:?} {code:?}"
        );
        tried += 1;
    }
    for (user, email, field) in
        [("not-a-uuid", "kim@example.com", "user_id"), (user_id, "", "email"), (user_id, "no-at-sign", "email")]
    {
        let request = IssueVerificationTokenRequest { user_id: user.into(), email: email.into(), ..Default::default() };
        let status = stack.issuer.clone().issue_verification_token(request).await.unwrap_err();
        assert_eq!(
            verimail_server::grpc::bad_request_field(&status).as_deref(),
            Some(field),
            "Issue {user:?} {email:?}"
        );
        tried += 1;
    }
    tried
}

/// The ops RPCs: each bad field named.
async fn bad_ops_fields(stack: &Stack) -> usize {
    let mut tried = 0;
    let (auth, emails) = (stack.auth.clone(), stack.emails.clone());
    // A real token from a listing of unverified users, sent with no status filter.
    let unverified = ListUsersRequest { page_size: 1, status: UserStatus::Unverified as i32, ..Default::default() };
    let page = stack.users.clone().list_users(unverified).await.expect("ListUsers").into_inner();
    assert_eq!(page.users.len(), 1);
    let other_filters = page.next_page_token;
    assert!(!other_filters.is_empty(), "two unverified users: a second page");
    let list_users = [
        (ListUsersRequest { page_size: -1, ..Default::default() }, "page_size"),
        (ListUsersRequest { page_token: "garbage!".into(), ..Default::default() }, "page_token"),
        (ListUsersRequest { page_token: other_filters, ..Default::default() }, "page_token"),
        (ListUsersRequest { created_after: "yesterday".into(), ..Default::default() }, "created_after"),
        (ListUsersRequest { created_before: "2026-13-01T00:00:00Z".into(), ..Default::default() }, "created_before"),
        (
            ListUsersRequest {
                created_after: "2026-11-24T10:00:00Z".into(),
                created_before: "2026-11-24T09:00:00Z".into(),
                ..Default::default()
            },
            "created_before",
        ),
    ];
    for (request, field) in list_users {
        let status = stack.users.clone().list_users(request.clone()).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some(field), "ListUsers {request:?}");
        tried += 1;
    }
    let list_deliveries = [
        (ListDeliveriesRequest { user_id: "not-a-uuid".into(), ..Default::default() }, "user_id"),
        (ListDeliveriesRequest { email: "no-at-sign".into(), ..Default::default() }, "email"),
        (ListDeliveriesRequest { page_size: -5, ..Default::default() }, "page_size"),
        (ListDeliveriesRequest { page_token: "AAAA".into(), ..Default::default() }, "page_token"),
    ];
    for (request, field) in list_deliveries {
        let status = emails.clone().list_deliveries(request.clone()).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some(field), "{request:?}");
        tried += 1;
    }
    for event_id in ["", "not-a-uuid", "'; DROP TABLE deliveries; --"] {
        let get = emails.clone().get_delivery(GetDeliveryRequest { event_id: event_id.into() }).await.unwrap_err();
        let retry =
            emails.clone().retry_delivery(RetryDeliveryRequest { event_id: event_id.into() }).await.unwrap_err();
        for status in [get, retry] {
            assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("event_id"), "{event_id:?}");
            tried += 1;
        }
        let revoke = RevokeVerificationTokensRequest { user_id: event_id.into() };
        let status = auth.clone().revoke_verification_tokens(revoke).await.unwrap_err();
        assert_eq!(verimail_server::grpc::bad_request_field(&status).as_deref(), Some("user_id"), "{event_id:?}");
        tried += 1;
    }
    // Well-formed but unknown: NOT_FOUND, nothing retried.
    let unknown = "01937b5e-0000-7000-8000-000000000000";
    let status = emails.clone().retry_delivery(RetryDeliveryRequest { event_id: unknown.into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    tried += 1;
    let status = stack.email_parking.clone().replay_parked(ReplayParkedRequest { sequence: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = stack
        .email_parking
        .clone()
        .list_parked(ListParkedRequest { after_sequence: 0, limit: 5000 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    tried += 2;

    // The suppression list: a malformed address, a missing reason, a negative page; and
    // removing what is not there.
    let cases = [
        (
            RemoveSuppressionRequest { email: "not an address".into(), reason: "why".into() },
            Code::InvalidArgument,
            Some("email"),
        ),
        (RemoveSuppressionRequest { email: String::new(), reason: "why".into() }, Code::InvalidArgument, Some("email")),
        (
            RemoveSuppressionRequest { email: "kim@example.com".into(), reason: " ".into() },
            Code::InvalidArgument,
            Some("reason"),
        ),
        (
            RemoveSuppressionRequest { email: "kim@example.com".into(), reason: "x".repeat(501) },
            Code::InvalidArgument,
            Some("reason"),
        ),
        (
            RemoveSuppressionRequest { email: "kim@example.com".into(), reason: "never suppressed".into() },
            Code::NotFound,
            None,
        ),
    ];
    for (request, code, field) in cases {
        let status = emails.clone().remove_suppression(request.clone()).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (code, field),
            "{request:?}"
        );
        tried += 1;
    }
    for request in [
        ListSuppressionsRequest { email: "@@".into(), ..Default::default() },
        ListSuppressionsRequest { page_size: -1, ..Default::default() },
        ListSuppressionsRequest { page_token: "not a token".into(), ..Default::default() },
    ] {
        let status = emails.clone().list_suppressions(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        tried += 1;
    }
    // Previews: no kind, a malformed language or user id, a user nothing was sent to.
    use verimail_proto::email::v1::{EmailKind, PreviewEmailRequest};
    let preview = |kind: EmailKind, locale: &str, user_id: &str| PreviewEmailRequest {
        kind: kind as i32,
        locale: locale.into(),
        user_id: user_id.into(),
    };
    let nobody = uuid::Uuid::now_v7().to_string();
    for (request, code, field) in [
        (preview(EmailKind::Unspecified, "", ""), Code::InvalidArgument, Some("kind")),
        (PreviewEmailRequest { kind: 99, ..Default::default() }, Code::InvalidArgument, Some("kind")),
        (preview(EmailKind::Verification, "english", ""), Code::InvalidArgument, Some("locale")),
        (preview(EmailKind::Verification, "", "not-a-uuid"), Code::InvalidArgument, Some("user_id")),
        (preview(EmailKind::Verification, "", &nobody), Code::NotFound, None),
    ] {
        let status = emails.clone().preview_email(request.clone()).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (code, field),
            "{request:?}"
        );
        tried += 1;
    }

    tried
}

/// SignIn's passwords and wrong answers, BatchGetUsers' ids, GetPublicKeys without anything.
async fn bad_sign_ins_and_lookups(stack: &Stack, user_id: &str) -> usize {
    let (mut tried, users) = (0, stack.users.clone());
    for password in ["", "short", &"x".repeat(129)] {
        let request = SignInRequest { email: "kim@example.com".into(), password: password.into() };
        let status = users.clone().sign_in(request).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (Code::InvalidArgument, Some("password")),
            "SignIn password {password:?}"
        );
        tried += 1;
    }
    for email in ["kim@example.com", "nobody@example.com"] {
        let request = SignInRequest { email: email.into(), password: "not the password".into() };
        let status = users.clone().sign_in(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "SignIn {email}");
        tried += 1;
    }
    let unknown = "01937b5e-0000-7000-8000-000000000000".to_owned();
    let batches = [
        (vec![], "user_ids"),
        (vec![user_id.to_owned(); 101], "user_ids"),
        (vec![user_id.to_owned(), "not-a-uuid".into()], "user_ids"),
        (vec!["'; DROP TABLE users; --".into()], "user_ids"),
    ];
    for (user_ids, field) in batches {
        let status =
            users.clone().batch_get_users(BatchGetUsersRequest { user_ids: user_ids.clone() }).await.unwrap_err();
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (Code::InvalidArgument, Some(field)),
            "BatchGetUsers {:?}",
            &user_ids[..user_ids.len().min(2)]
        );
        tried += 1;
    }
    let found = users
        .clone()
        .batch_get_users(BatchGetUsersRequest { user_ids: vec![unknown.clone(), user_id.into(), user_id.into()] })
        .await
        .expect("BatchGetUsers")
        .into_inner();
    assert_eq!(found.users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [user_id], "asked twice, answered once");
    assert_eq!(found.missing_user_ids, [unknown]);
    let keys = stack.auth.clone().get_public_keys(verimail_proto::auth::v1::GetPublicKeysRequest {}).await;
    assert_eq!(keys.expect("GetPublicKeys").into_inner().keys.len(), 1);
    tried + 2 + bad_deletions(stack, user_id).await + bad_changes(stack, user_id).await
}

/// ChangeEmail: a bad new address, bad credentials, an account not verified yet.
async fn bad_changes(stack: &Stack, user_id: &str) -> usize {
    // Signed in an hour ago: past REAUTH_WINDOW_SECONDS, the token alone does not move the account.
    let token = stack.forge_session(user_id, "kim@example.com", Duration::from_secs(3600)).await;
    let fresh = stack.forge_session(user_id, "kim@example.com", Duration::ZERO).await;
    let garbage = "v4.public.not-a-token".to_owned();
    let password = "correct horse battery";
    // (bearer token, new_email, email, password, code, field)
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, &'a str, Code, Option<&'a str>);
    let cases: [Case; 11] = [
        (Some(&token), "", "", "", Code::InvalidArgument, Some("new_email")),
        (Some(&token), "not-an-address", "", "", Code::InvalidArgument, Some("new_email")),
        (None, "new@example.com", "", password, Code::InvalidArgument, Some("email")),
        (None, "new@example.com", "kim@example.com", "", Code::InvalidArgument, Some("password")),
        (None, "new@example.com", "kim@example.com", "not the password", Code::Unauthenticated, None),
        (Some(&garbage), "new@example.com", "", "", Code::Unauthenticated, None),
        (Some(&token), "new@example.com", "", "", Code::PermissionDenied, None),
        (Some(&token), "new@example.com", "", "short", Code::InvalidArgument, Some("password")),
        (Some(&token), "new@example.com", "", "not the password", Code::Unauthenticated, None),
        // kim has not verified her address yet: there is nothing to move.
        (Some(&fresh), "new@example.com", "", "", Code::FailedPrecondition, None),
        (None, "new@example.com", "kim@example.com", password, Code::FailedPrecondition, None),
    ];
    for (bearer, new_email, email, password, code, field) in cases {
        let request = ChangeEmailRequest {
            new_email: new_email.into(),
            email: email.into(),
            password: password.into(),
            ..Default::default()
        };
        let answer = match bearer {
            None => stack.plain_users().change_email(request).await,
            Some(token) => stack.plain_users().change_email(verimail_system_tests::with_bearer(request, token)).await,
        };
        let status = answer.expect_err("a bad ChangeEmail changed something");
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (code, field),
            "ChangeEmail to {new_email:?} as {email:?}: {status:?}"
        );
    }
    cases.len()
}

/// DeleteUser: as an operator with bad ids, and as a user with a token that does not verify,
/// names another account, or comes without the right password. Nothing is deleted.
async fn bad_deletions(stack: &Stack, user_id: &str) -> usize {
    let unknown = "01937b5e-0000-7000-8000-000000000000";
    let token = stack.forge_session(user_id, "kim@example.com", Duration::from_secs(3600)).await;
    let garbage = "v4.public.not-a-token".to_owned();
    // (bearer token or operator, user_id, password, code, field)
    type Case<'a> = (Option<&'a str>, &'a str, &'a str, Code, Option<&'a str>);
    let cases: [Case; 9] = [
        (None, "", "", Code::InvalidArgument, Some("user_id")),
        (None, "not-a-uuid", "", Code::InvalidArgument, Some("user_id")),
        (None, unknown, "", Code::NotFound, None),
        (Some(&garbage), user_id, "correct horse battery", Code::Unauthenticated, None),
        (Some(&token), unknown, "correct horse battery", Code::PermissionDenied, None),
        // Signed in an hour ago: the token alone does not delete the account.
        (Some(&token), user_id, "", Code::PermissionDenied, None),
        (Some(&token), user_id, "short", Code::InvalidArgument, Some("password")),
        (Some(&token), user_id, "not the password", Code::Unauthenticated, None),
        (Some(&token), "not-a-uuid", "correct horse battery", Code::InvalidArgument, Some("user_id")),
    ];
    for (bearer, id, password, code, field) in cases {
        let request = DeleteUserRequest { user_id: id.into(), password: password.into() };
        let answer = match bearer {
            None => stack.users.clone().delete_user(request).await,
            Some(token) => stack.plain_users().delete_user(verimail_system_tests::with_bearer(request, token)).await,
        };
        let status = answer.expect_err("a bad DeleteUser deleted");
        assert_eq!(
            (status.code(), verimail_server::grpc::bad_request_field(&status).as_deref()),
            (code, field),
            "DeleteUser {id:?} {password:?} with {}: {status:?}",
            if bearer.is_some() { "a token" } else { "the admin credential" }
        );
    }
    cases.len()
}

/// A status code, and the field it names.
type Answer = (Code, Option<String>);

/// The answer's code and the field it names, for a table's row.
fn answered<T: std::fmt::Debug>(answer: Result<tonic::Response<T>, tonic::Status>) -> Answer {
    let status = answer.expect_err("bad input was accepted");
    (status.code(), verimail_server::grpc::bad_request_field(&status))
}

/// RefreshSession, SignOut, ListSessions, RevokeSessions, ListRevokedSessions and
/// ChangePassword: malformed, unknown or missing credentials and fields.
async fn bad_sessions(stack: &Stack, user_id: &str) -> usize {
    let token = stack.forge_session(user_id, "kim@example.com", Duration::ZERO).await;
    let (plain, ops) = (stack.plain_users(), stack.users.clone());
    let unknown_refresh = format!("vmr_{}", "A".repeat(43));
    let unknown = "01937b5e-0000-7000-8000-000000000000".to_owned();
    let field = |f: &str| Some(f.to_owned());
    let refresh = |t: &str| RefreshSessionRequest { refresh_token: t.into() };
    let sign_out = |t: &str| SignOutRequest { refresh_token: t.into(), everywhere: true };
    let revoke = |u: &str, s: &str| RevokeSessionsRequest { user_id: u.into(), session_id: s.into() };
    let change = |c: &str, n: &str| ChangePasswordRequest { current_password: c.into(), new_password: n.into() };
    let rows: Vec<(Answer, Answer)> = vec![
        (answered(plain.clone().refresh_session(refresh("")).await), (Code::InvalidArgument, field("refresh_token"))),
        (
            answered(plain.clone().refresh_session(refresh("garbage")).await),
            (Code::InvalidArgument, field("refresh_token")),
        ),
        (answered(plain.clone().refresh_session(refresh(&unknown_refresh)).await), (Code::Unauthenticated, None)),
        (answered(plain.clone().sign_out(sign_out("")).await), (Code::Unauthenticated, None)),
        (answered(plain.clone().sign_out(sign_out("garbage")).await), (Code::InvalidArgument, field("refresh_token"))),
        (answered(plain.clone().sign_out(sign_out(&unknown_refresh)).await), (Code::Unauthenticated, None)),
        (answered(plain.clone().list_sessions(ListSessionsRequest::default()).await), (Code::Unauthenticated, None)),
        (
            answered(
                plain
                    .clone()
                    .list_sessions(with_bearer(ListSessionsRequest { user_id: unknown.clone() }, &token))
                    .await,
            ),
            (Code::PermissionDenied, None),
        ),
        (
            answered(ops.clone().list_sessions(ListSessionsRequest::default()).await),
            (Code::InvalidArgument, field("user_id")),
        ),
        (answered(plain.clone().revoke_sessions(revoke(user_id, "")).await), (Code::Unauthenticated, None)),
        (answered(ops.clone().revoke_sessions(revoke("nobody", "")).await), (Code::InvalidArgument, field("user_id"))),
        (
            answered(ops.clone().revoke_sessions(revoke(user_id, "nothing")).await),
            (Code::InvalidArgument, field("session_id")),
        ),
        (answered(ops.clone().revoke_sessions(revoke(user_id, &unknown)).await), (Code::NotFound, None)),
        (
            answered(plain.clone().list_revoked_sessions(ListRevokedSessionsRequest::default()).await),
            (Code::Unauthenticated, None),
        ),
        (
            answered(ops.clone().list_revoked_sessions(ListRevokedSessionsRequest { after: 0, limit: 5000 }).await),
            (Code::InvalidArgument, field("limit")),
        ),
        (
            answered(plain.clone().change_password(change("correct horse battery", "a fresh purple teapot")).await),
            (Code::Unauthenticated, None),
        ),
        (
            answered(plain.clone().change_password(with_bearer(change("", "a fresh purple teapot"), &token)).await),
            (Code::InvalidArgument, field("current_password")),
        ),
        (
            answered(
                plain.clone().change_password(with_bearer(change("correct horse battery", "short"), &token)).await,
            ),
            (Code::InvalidArgument, field("new_password")),
        ),
        (
            answered(
                plain
                    .clone()
                    .change_password(with_bearer(change("not the password", "a fresh purple teapot"), &token))
                    .await,
            ),
            (Code::Unauthenticated, None),
        ),
    ];
    for (n, (got, want)) in rows.iter().enumerate() {
        assert_eq!(got, want, "sessions row {n}");
    }
    rows.len()
}

/// RequestPasswordReset and ResetPassword: malformed addresses, languages, tokens and codes;
/// a verification link is no reset link.
async fn bad_password_resets(stack: &Stack, verification: &str, tampered: &str) -> usize {
    let users = stack.users.clone();
    let field = |f: &str| Some(f.to_owned());
    let ask = |email: &str, locale: &str| RequestPasswordResetRequest { email: email.into(), locale: locale.into() };
    let strong = "a fresh purple teapot";
    let reset = |token: &str, email: &str, code: &str, password: &str| ResetPasswordRequest {
        token: token.into(),
        email: email.into(),
        code: code.into(),
        new_password: password.into(),
    };
    let rows: Vec<(Answer, Answer)> = vec![
        (
            answered(users.clone().request_password_reset(ask("not an address", "")).await),
            (Code::InvalidArgument, field("email")),
        ),
        (
            answered(users.clone().request_password_reset(ask("kim@example.com", "english")).await),
            (Code::InvalidArgument, field("locale")),
        ),
        (
            answered(users.clone().reset_password(reset("x", "", "", "")).await),
            (Code::InvalidArgument, field("new_password")),
        ),
        (
            answered(users.clone().reset_password(reset("", "", "", strong)).await),
            (Code::InvalidArgument, field("email")),
        ),
        (
            answered(users.clone().reset_password(reset("", "kim@example.com", "", strong)).await),
            (Code::InvalidArgument, field("code")),
        ),
        (
            answered(users.clone().reset_password(reset("", "kim@example.com", "12ab56", strong)).await),
            (Code::InvalidArgument, field("code")),
        ),
        (
            answered(users.clone().reset_password(reset("", "kim@example.com", "123456", strong)).await),
            (Code::InvalidArgument, field("code")),
        ),
        (
            answered(users.clone().reset_password(reset("garbage", "", "", strong)).await),
            (Code::InvalidArgument, field("token")),
        ),
        (
            answered(users.clone().reset_password(reset(tampered, "", "", strong)).await),
            (Code::InvalidArgument, field("token")),
        ),
        (
            answered(users.clone().reset_password(reset(verification, "", "", strong)).await),
            (Code::InvalidArgument, field("token")),
        ),
    ];
    for (n, (got, want)) in rows.iter().enumerate() {
        assert_eq!(got, want, "password reset row {n}");
    }
    rows.len()
}

/// The pages: precise HTTP statuses, nothing reflected unescaped.
async fn bad_pages(stack: &Stack, tampered: &str) -> usize {
    let mut tried = 0;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", stack.gateway_url);
    let pages: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.get(url("/verify-email")), 400),
        (http.post(url("/verify-email")).form(&[("token", "garbage")]), 400),
        (http.post(url("/verify-email")).form(&[("token", tampered)]), 400),
        (http.post(url("/verify-email")).form(&[("token", "<script>alert(1)</script>")]), 400),
        (http.post(url("/verify-code")).form(&[("email", "kim@example.com"), ("code", "12ab56")]), 400),
        (http.post(url("/verify-code")).form(&[("email", ""), ("code", "123456")]), 400),
        (http.post(url("/resend")).form(&[("email", "not an address")]), 400),
        (http.get(url("/email-change/undo")), 400),
        (http.post(url("/email-change/undo")).form(&[("token", "garbage")]), 400),
        (http.post(url("/email-change/undo")).form(&[("token", tampered)]), 400),
        (http.post(url("/resend")).form(&[("email", "x".repeat(5000).as_str())]), 413),
        (http.post(url("/verify-email")).header("content-type", "application/json").body("{}"), 415),
        (http.get(url(&format!("/verify-email?token={}", "a".repeat(3000)))), 414),
        (http.get(url("/resend")).header("x-padding", "p".repeat(9000)), 431),
        (http.get(url("/resend")).header("x-padding", "p".repeat(7000)), 200),
        (http.get(url("/nowhere")), 404),
        (http.delete(url("/verify-email")), 405),
        (http.post(url("/.well-known/verimail-keys")).form(&[("kid", "x")]), 405),
        (http.get(url("/.well-known/verimail-keys?kid=<script>alert(1)</script>")), 200),
        (http.get(url("/.well-known/verimail-key")), 404),
        (http.get(url("/forgot-password")), 200),
        (http.post(url("/forgot-password")).form(&[("email", "not an address")]), 400),
        (http.get(url("/reset-password")), 200),
        (http.get(url("/reset-password?token=<script>alert(1)</script>")), 200),
        (
            http.post(url("/reset-password")).form(&[("token", "garbage"), ("new_password", "a fresh purple teapot")]),
            400,
        ),
        (
            http.post(url("/reset-password")).form(&[("token", tampered), ("new_password", "a fresh purple teapot")]),
            400,
        ),
        (http.post(url("/reset-password")).form(&[("token", tampered), ("new_password", "")]), 400),
        (
            http.post(url("/reset-password")).form(&[
                ("email", "kim@example.com"),
                ("code", "12ab56"),
                ("new_password", "a fresh purple teapot"),
            ]),
            400,
        ),
    ];
    for (request, want) in pages {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(got, want, "{body}");
        assert!(!body.contains("<script>alert"), "nothing is reflected unescaped");
        tried += 1;
    }
    tried
}
