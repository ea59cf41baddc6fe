//! The ops RPCs an operator answers "did Alice get her email, and why not?" with: ListUsers,
//! ListDeliveries, GetDelivery, RetryDelivery and RevokeVerificationTokens.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use std::collections::HashSet;
use std::time::Duration;
use tonic::Code;
use verimail_proto::auth::v1::{RevokeVerificationTokensRequest, VerifyEmailCodeRequest};
use verimail_proto::email::v1::{
    Delivery, DeliveryStatus, GetDeliveryRequest, ListDeliveriesRequest, RemoveSuppressionRequest, RetryDeliveryRequest,
};
use verimail_proto::ops::v1::ReplayParkedRequest;
use verimail_proto::user::v1::{ListUsersRequest, ResendVerificationRequest, User, UserStatus};
use verimail_system_tests::{Stack, StackOptions};

/// Every page of a listing, following next_page_token: the users and the page sizes.
async fn all_pages(stack: &Stack, request: ListUsersRequest) -> (Vec<User>, Vec<usize>) {
    let (mut users, mut sizes) = (Vec::new(), Vec::new());
    let mut request = request;
    loop {
        let page = stack.users.clone().list_users(request.clone()).await.expect("ListUsers").into_inner();
        sizes.push(page.users.len());
        users.extend(page.users);
        if page.next_page_token.is_empty() {
            return (users, sizes);
        }
        assert!(sizes.len() < 20, "paging does not end");
        request.page_token = page.next_page_token;
    }
}

fn ids(users: &[User]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

/// Verifies a user through the link in their (latest) email.
async fn click(stack: &Stack, email: &str, emails: usize) {
    let mail = stack.smtp.wait_for(email, emails, EMAIL_WAIT).await.pop().expect("an email");
    let token = mail.verification_token();
    stack.verify(&token).await.expect("VerifyEmail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_users_pages_newest_first_and_filters_by_status_and_creation_time() {
    let stack = Stack::start().await;
    let mut registered = Vec::new();
    let mut middle = String::new();
    for n in 0..7 {
        if n == 3 {
            // Three users before this instant, four after.
            tokio::time::sleep(Duration::from_millis(20)).await;
            middle = verimail_server::rfc3339(chrono::Utc::now());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        registered.push(stack.register(&format!("lister{n}@example.com"), "correct horse battery").await);
    }
    for n in [1, 5] {
        click(&stack, &format!("lister{n}@example.com"), 1).await;
        assert!(stack.wait_for_status(&registered[n], UserStatus::Verified, STATUS_WAIT).await);
    }
    let newest_first: Vec<String> = registered.iter().rev().cloned().collect();

    let (users, sizes) = all_pages(&stack, ListUsersRequest { page_size: 3, ..Default::default() }).await;
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(ids(&users), newest_first, "every user once, newest first");
    let (users, sizes) = all_pages(&stack, ListUsersRequest::default()).await;
    assert_eq!((ids(&users), sizes), (newest_first.clone(), vec![7]), "the default page holds them all");

    let only = |status: UserStatus| ListUsersRequest { page_size: 1, status: status as i32, ..Default::default() };
    let (verified, sizes) = all_pages(&stack, only(UserStatus::Verified)).await;
    assert_eq!(ids(&verified), [registered[5].clone(), registered[1].clone()]);
    assert_eq!(sizes, [1, 1]);
    assert!(verified.iter().all(|u| u.status() == UserStatus::Verified && !u.verified_at.is_empty()));
    let (unverified, _) = all_pages(&stack, only(UserStatus::Unverified)).await;
    assert_eq!(unverified.len(), 5);
    assert!(unverified.iter().all(|u| u.status() == UserStatus::Unverified && u.verified_at.is_empty()));

    let after = ListUsersRequest { page_size: 2, created_after: middle.clone(), ..Default::default() };
    assert_eq!(ids(&all_pages(&stack, after).await.0), newest_first[..4]);
    let before = ListUsersRequest { created_before: middle.clone(), ..Default::default() };
    assert_eq!(ids(&all_pages(&stack, before).await.0), newest_first[4..]);
    let verified_after =
        ListUsersRequest { status: UserStatus::Verified as i32, created_after: middle.clone(), ..Default::default() };
    assert_eq!(ids(&all_pages(&stack, verified_after).await.0), [registered[5].clone()]);

    // A user who registers between two pages shows on neither: keyset pages skip and repeat nothing.
    let first = stack.users.clone().list_users(ListUsersRequest { page_size: 4, ..Default::default() }).await;
    let first = first.unwrap().into_inner();
    let latecomer = stack.register("latecomer@example.com", "correct horse battery").await;
    let next = ListUsersRequest { page_size: 4, page_token: first.next_page_token, ..Default::default() };
    let second = stack.users.clone().list_users(next).await.unwrap().into_inner();
    let mut seen = ids(&first.users);
    seen.extend(ids(&second.users));
    assert_eq!(seen, newest_first, "the same seven, once each");
    assert!(!seen.contains(&latecomer));
    assert!(second.next_page_token.is_empty());
}

/// The delivery to `email` (looked up in another case: addresses are found case-blind) once
/// it has `status`.
async fn delivery_to(stack: &Stack, email: &str, status: DeliveryStatus) -> Delivery {
    let request = ListDeliveriesRequest { email: email.to_uppercase(), ..Default::default() };
    stack.delivery_where(request, |d| d.status() == status, EMAIL_WAIT).await
}

async fn retry(stack: &Stack, event_id: &str) -> Result<Delivery, tonic::Status> {
    let request = RetryDeliveryRequest { event_id: event_id.into() };
    stack.emails.clone().retry_delivery(request).await.map(|r| r.into_inner().delivery.expect("a delivery"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_found_by_address_and_status_and_a_failed_one_is_retried_once() {
    let stack = Stack::start().await;
    stack.smtp.reject("bounce@example.com");
    let bounced_user = stack.register("bounce@example.com", "correct horse battery").await;
    stack.register("fine@example.com", "correct horse battery").await;
    stack.register("other@example.com", "correct horse battery").await;
    let failed = delivery_to(&stack, "bounce@example.com", DeliveryStatus::Failed).await;
    let sent = delivery_to(&stack, "fine@example.com", DeliveryStatus::Sent).await;
    delivery_to(&stack, "other@example.com", DeliveryStatus::Sent).await;
    println!("failed delivery: {failed:?}");
    assert_eq!((failed.user_id.as_str(), failed.attempts), (bounced_user.as_str(), 1));
    assert!(failed.last_error.contains("550"), "{}", failed.last_error);
    // "550 Mailbox unavailable" to RCPT TO: the address is suppressed, and why is kept.
    let request =
        verimail_proto::email::v1::ListSuppressionsRequest { email: "bounce@example.com".into(), ..Default::default() };
    let listed = stack.emails.clone().list_suppressions(request).await.expect("ListSuppressions").into_inner();
    let refused = listed.suppressions.first().expect("suppressed at send time");
    assert_eq!((refused.reason.as_str(), refused.bounce_reason.as_str()), ("rejected", "userunknown"), "{refused:?}");

    // Filters: by status, by address (any case), together, and paged.
    let list = |request: ListDeliveriesRequest| {
        let mut emails = stack.emails.clone();
        async move { emails.list_deliveries(request).await.expect("ListDeliveries").into_inner() }
    };
    let by_status = list(ListDeliveriesRequest { status: DeliveryStatus::Failed as i32, ..Default::default() }).await;
    assert_eq!(by_status.deliveries, std::slice::from_ref(&failed));
    let sent_ones = list(ListDeliveriesRequest { status: DeliveryStatus::Sent as i32, ..Default::default() }).await;
    assert_eq!(sent_ones.deliveries.len(), 2);
    let fine_failed = ListDeliveriesRequest {
        email: " Fine@Example.com ".into(),
        status: DeliveryStatus::Failed as i32,
        ..Default::default()
    };
    assert!(list(fine_failed).await.deliveries.is_empty());
    let mut paged = HashSet::new();
    let mut request = ListDeliveriesRequest { page_size: 1, ..Default::default() };
    loop {
        let page = list(request.clone()).await;
        assert_eq!(page.deliveries.len(), 1);
        paged.insert(page.deliveries[0].event_id.clone());
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(paged.len(), 3, "three deliveries, one page each");

    let got = stack.emails.clone().get_delivery(GetDeliveryRequest { event_id: failed.event_id.clone() }).await;
    assert_eq!(got.unwrap().into_inner().delivery, Some(failed.clone()));

    // A sent email is not sent twice.
    let refused = retry(&stack, &sent.event_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{}", refused.message());
    // A 550 for the recipient put the address on the suppression list: no retry until an
    // operator lifts it.
    let suppressed = retry(&stack, &failed.event_id).await.unwrap_err();
    assert_eq!(suppressed.code(), Code::FailedPrecondition, "{}", suppressed.message());
    assert!(suppressed.message().contains("suppression"), "{}", suppressed.message());
    let lift = || {
        let mut emails = stack.emails.clone();
        let request =
            RemoveSuppressionRequest { email: "bounce@example.com".into(), reason: "user says it works".into() };
        async move { emails.remove_suppression(request).await.expect("RemoveSuppression") }
    };
    lift().await;
    // Still refused by the server: one more attempt, still failed, the error recorded.
    let again = retry(&stack, &failed.event_id).await.expect("RetryDelivery");
    assert_eq!((again.status(), again.attempts), (DeliveryStatus::Failed, 2));
    // The mailbox exists now: lifted again, the retry sends it, with a link that works.
    stack.smtp.accept("bounce@example.com");
    lift().await;
    let retried = retry(&stack, &failed.event_id).await.expect("RetryDelivery");
    println!("retried: {retried:?}");
    assert_eq!((retried.status(), retried.attempts), (DeliveryStatus::Sent, 3));
    assert!(retried.last_error.is_empty() && !retried.sent_at.is_empty());
    click(&stack, "bounce@example.com", 1).await;
    assert!(stack.wait_for_status(&bounced_user, UserStatus::Verified, STATUS_WAIT).await);
    let twice = retry(&stack, &failed.event_id).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.smtp.to("bounce@example.com").len(), 1, "one email, from the one retry that worked");
    assert_eq!(stack.smtp.to("fine@example.com").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_delivery_retried_by_hand_is_not_sent_again_by_a_replay() {
    let stack = Stack::start_with(StackOptions {
        email_attempts: 2,
        email_backoff: vec![Duration::from_millis(100)],
        ..StackOptions::default()
    })
    .await;
    stack.smtp.go_down();
    let user_id = stack.register("parked@example.com", "correct horse battery").await;
    let parked = delivery_to(&stack, "parked@example.com", DeliveryStatus::Parked).await;
    assert_eq!(parked.attempts, 2);
    // Down still: the retry fails and the delivery stays parked.
    let again = retry(&stack, &parked.event_id).await.expect("RetryDelivery");
    assert_eq!((again.status(), again.attempts), (DeliveryStatus::Parked, 3));
    assert!(!again.last_error.is_empty());
    stack.smtp.come_back();
    let sent = retry(&stack, &parked.event_id).await.expect("RetryDelivery");
    assert_eq!(sent.status(), DeliveryStatus::Sent);
    assert_eq!(stack.smtp.wait_for("parked@example.com", 1, EMAIL_WAIT).await.len(), 1);

    // The parked message is still there; replaying it now sends nothing.
    let listed = Stack::parked(&stack.email_parking).await;
    let message = listed.iter().find(|m| m.event_id == parked.event_id).expect("the parked message");
    let replay = ReplayParkedRequest { sequence: message.sequence };
    stack.email_parking.clone().replay_parked(replay).await.expect("ReplayParked");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stack.smtp.to("parked@example.com").len(), 1, "not sent twice");
    let after = stack.emails.clone().get_delivery(GetDeliveryRequest { event_id: parked.event_id.clone() }).await;
    assert_eq!(after.unwrap().into_inner().delivery.unwrap().status(), DeliveryStatus::Sent);
    click(&stack, "parked@example.com", 1).await;
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_links_and_codes_stop_working_and_a_new_email_works() {
    let stack = Stack::start().await;
    let user_id = stack.register("revoke@example.com", "correct horse battery").await;
    let mail = stack.smtp.wait_for("revoke@example.com", 1, EMAIL_WAIT).await.remove(0);
    let revoke = || {
        let mut auth = stack.auth.clone();
        let user_id = user_id.clone();
        async move {
            auth.revoke_verification_tokens(RevokeVerificationTokensRequest { user_id }).await.unwrap().into_inner()
        }
    };
    let revoked = revoke().await;
    assert_eq!((revoked.revoked_tokens, revoked.revoked_codes), (1, 1));

    let token = mail.verification_token();
    let link = stack.verify(&token).await.unwrap_err();
    assert_eq!(
        (link.code(), verimail_proto::reasons::of(&link).as_str()),
        (Code::FailedPrecondition, verimail_proto::reasons::TOKEN_REVOKED),
        "{link:?}"
    );
    let code = VerifyEmailCodeRequest { email: "revoke@example.com".into(), code: mail.verification_code() };
    let code = stack.auth.clone().verify_email_code(code).await.unwrap_err();
    assert_eq!(
        (code.code(), verimail_proto::reasons::of(&code).as_str()),
        (Code::FailedPrecondition, verimail_proto::reasons::CODE_REVOKED),
        "{code:?}"
    );
    // Through the page too: the user is told to ask for a new email.
    let page = reqwest::Client::new()
        .post(format!("{}/verify-email", stack.gateway_url))
        .form(&[("token", mail.verification_token().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 410);
    assert!(page.text().await.unwrap().contains("This link is no longer valid"));
    assert_eq!(stack.status_of(&user_id).await, UserStatus::Unverified);
    assert_eq!((revoke().await.revoked_tokens, revoke().await.revoked_codes), (0, 0), "nothing left to revoke");

    // A new email (a resend) carries a token that works.
    let resend = ResendVerificationRequest { email: "revoke@example.com".into(), ..Default::default() };
    stack.users.clone().resend_verification(resend).await.expect("ResendVerification");
    click(&stack, "revoke@example.com", 2).await;
    assert!(stack.wait_for_status(&user_id, UserStatus::Verified, STATUS_WAIT).await);
}

/// email-service tells an outage (UNAVAILABLE: retry later) from a failure of its own
/// (INTERNAL: a retry will not mend it), as the other services do: with its deliveries table
/// gone, the ops RPCs answer INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_email_database_answers_internal_not_unavailable() {
    use sea_orm::ConnectionTrait;
    let stack = Stack::start().await;
    stack.discard_database("email");
    let db = sea_orm::Database::connect(stack.database_url("email")).await.expect("the email database");
    db.execute_unprepared("DROP TABLE deliveries").await.expect("drop the table");
    let listed = stack.emails.clone().list_deliveries(ListDeliveriesRequest::default()).await.unwrap_err();
    assert_eq!(listed.code(), Code::Internal, "{listed:?}");
    let request = GetDeliveryRequest { event_id: uuid::Uuid::now_v7().to_string() };
    let got = stack.emails.clone().get_delivery(request).await.unwrap_err();
    assert_eq!(got.code(), Code::Internal, "{got:?}");
}
