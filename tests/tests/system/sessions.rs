//! Sessions on real parts: SignIn's refresh token rotates; a retired one presented again ends
//! the session (RFC 9700 §4.14); sign-out, sign-out everywhere, an operator and DeleteUser end
//! sessions; and another team's service (the orders example, verimail-client following the
//! revocation feed) refuses the ended sessions' access tokens within 2 s, each announced on
//! users.sessions_revoked.

use crate::sign_in::{REVOCATION_BOUND, place_order, refused_within, start_orders, verifier};
use std::time::{Duration, Instant};
use tonic::Code;
use verimail_proto::events::v1::{SessionEndReason, SessionsRevoked};
use verimail_proto::subjects;
use verimail_proto::user::v1::{
    DeleteUserRequest, ListRevokedSessionsRequest, ListSessionsRequest, RefreshSessionRequest, RevokeSessionsRequest,
    SignInResponse, SignOutRequest, user_service_client::UserServiceClient,
};
use verimail_system_tests::{Operator, Stack, with_bearer};

const PASSWORD: &str = "correct horse battery";

async fn refresh(
    stack: &Stack,
    token: &str,
) -> Result<verimail_proto::user::v1::RefreshSessionResponse, tonic::Status> {
    let request = RefreshSessionRequest { refresh_token: token.into() };
    stack.plain_users().refresh_session(request).await.map(|r| r.into_inner())
}

async fn sign_out(stack: &Stack, access_token: &str, everywhere: bool) -> u32 {
    let request = with_bearer(SignOutRequest { everywhere, ..Default::default() }, access_token);
    stack.plain_users().sign_out(request).await.expect("SignOut").into_inner().ended_sessions
}

fn session_id(signed_in: &SignInResponse) -> String {
    signed_in.session.as_ref().expect("the session").id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotates_and_a_retired_one_presented_again_ends_the_session_everywhere() {
    let stack = Stack::start().await;
    let user_id = stack.verified("ann@example.com", PASSWORD).await;
    let orders = start_orders(verifier(&stack)).await;
    let signed_in = stack.sign_in("ann@example.com", PASSWORD).await.expect("SignIn");
    assert!(signed_in.refresh_token.starts_with("vmr_"), "{}", signed_in.refresh_token);
    let sid = session_id(&signed_in);
    let claims = verifier(&stack).verify(&signed_in.access_token).await.expect("the token verifies");
    assert_eq!(claims.session_id, sid);
    assert!(chrono::Utc::now() - claims.auth_time < chrono::Duration::seconds(10), "auth_time is the sign-in");
    assert!(!stack.find_everywhere(&signed_in.refresh_token).await.iter().any(|_| true), "stored only as a hash");

    // Rotation: a new pair; the old refresh token is retired.
    let first = refresh(&stack, &signed_in.refresh_token).await.expect("RefreshSession");
    assert_ne!(first.refresh_token, signed_in.refresh_token);
    assert_eq!(first.session.as_ref().expect("the session").id, sid, "the same session");
    let rotated = verifier(&stack).verify(&first.access_token).await.expect("the new access token verifies");
    assert_eq!((rotated.session_id.as_str(), rotated.auth_time), (sid.as_str(), claims.auth_time));
    place_order(&orders, Some(&first.access_token)).await.expect("the new token opens the orders service");

    // The old refresh token again: someone else holds a copy. The session ends, and with it
    // the newest access token and refresh token.
    let reused = refresh(&stack, &signed_in.refresh_token).await.unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated, "{reused:?}");
    assert!(reused.message().contains("already used"), "{}", reused.message());
    let (took, status) = refused_within(&orders, &first.access_token).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
    println!("reuse detection: the orders service refused the session's token {took:?} after the reuse");
    let newest = refresh(&stack, &first.refresh_token).await.unwrap_err();
    assert_eq!(newest.code(), Code::Unauthenticated, "the whole session ended: {newest:?}");
    let events: Vec<SessionsRevoked> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_SESSIONS_REVOKED).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].user_id.as_str(), events[0].session_ids.as_slice()), (user_id.as_str(), &[sid][..]));
    assert_eq!(events[0].reason(), SessionEndReason::RefreshTokenReused);

    // Garbage is told apart from a token that is not valid.
    let malformed = refresh(&stack, "not a token").await.unwrap_err();
    assert_eq!(
        (malformed.code(), verimail_server::grpc::bad_request_field(&malformed).as_deref()),
        (Code::InvalidArgument, Some("refresh_token"))
    );
    let unknown = refresh(&stack, &format!("vmr_{}", "A".repeat(43))).await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_an_operator_and_deletion_end_sessions_and_the_orders_service_refuses_their_tokens_within_2_s() {
    let stack = Stack::start().await;
    let user_id = stack.verified("bo@example.com", PASSWORD).await;
    let orders = start_orders(verifier(&stack)).await;
    let phone = stack.sign_in("bo@example.com", PASSWORD).await.expect("SignIn");
    let laptop = stack.sign_in("bo@example.com", PASSWORD).await.expect("SignIn");
    let tablet = stack.sign_in("bo@example.com", PASSWORD).await.expect("SignIn");
    for token in [&phone, &laptop, &tablet] {
        place_order(&orders, Some(&token.access_token)).await.expect("each session's token opens the service");
    }
    let listed = stack
        .plain_users()
        .list_sessions(with_bearer(ListSessionsRequest::default(), &laptop.access_token))
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed.iter().filter(|s| s.current).map(|s| s.id.clone()).collect::<Vec<_>>(), [session_id(&laptop)]);
    assert!(listed.iter().all(|s| !s.client_address.is_empty() && !s.last_used_at.is_empty()));

    // Sign-out ends the caller's session alone.
    assert_eq!(sign_out(&stack, &phone.access_token, false).await, 1);
    let (took, _) = refused_within(&orders, &phone.access_token).await;
    println!("sign-out: refused {took:?} after the answer");
    place_order(&orders, Some(&laptop.access_token)).await.expect("the other sessions go on");
    let again = stack.plain_users().sign_out(with_bearer(SignOutRequest::default(), &phone.access_token)).await;
    assert_eq!(again.unwrap_err().code(), Code::Unauthenticated, "an ended session's token acts no more");
    assert_eq!(refresh(&stack, &phone.refresh_token).await.unwrap_err().code(), Code::Unauthenticated);

    // An operator ends one session by id.
    let request = RevokeSessionsRequest { user_id: user_id.clone(), session_id: session_id(&tablet) };
    assert_eq!(
        stack.users.clone().revoke_sessions(request).await.expect("RevokeSessions").into_inner().ended_sessions,
        1
    );
    refused_within(&orders, &tablet.access_token).await;

    // DeleteUser (with the password) ends the rest.
    let delete = DeleteUserRequest { user_id: user_id.clone(), password: PASSWORD.into() };
    stack.plain_users().delete_user(with_bearer(delete, &laptop.access_token)).await.expect("DeleteUser");
    let (took, _) = refused_within(&orders, &laptop.access_token).await;
    println!("deletion: refused {took:?} after the answer");

    let events: Vec<SessionsRevoked> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_SESSIONS_REVOKED).await;
    let reasons: Vec<SessionEndReason> = events.iter().map(|e| e.reason()).collect();
    assert_eq!(
        reasons,
        [SessionEndReason::SignedOut, SessionEndReason::Operator, SessionEndReason::AccountDeleted],
        "{events:?}"
    );

    // The feed lists the three, in order, for the system's services only.
    let url = format!("http://{}", stack.grpc_addrs[0]);
    let channel = tonic::transport::Channel::from_shared(url).expect("a URL").connect_lazy();
    let page = UserServiceClient::new(Operator::app_service().channel(channel))
        .list_revoked_sessions(ListRevokedSessionsRequest::default())
        .await
        .expect("ListRevokedSessions")
        .into_inner();
    let ids: Vec<&str> = page.revoked.iter().map(|r| r.session_id.as_str()).collect();
    assert_eq!(ids, [session_id(&phone), session_id(&tablet), session_id(&laptop)]);
    assert!(!page.more && page.cursor >= 3, "{page:?}");
    let stranger = stack.plain_users().list_revoked_sessions(ListRevokedSessionsRequest::default()).await;
    assert_eq!(stranger.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_everywhere_with_a_refresh_token_ends_every_session_of_the_user() {
    let stack = Stack::start().await;
    stack.verified("cy@example.com", PASSWORD).await;
    let orders = start_orders(verifier(&stack)).await;
    let one = stack.sign_in("cy@example.com", PASSWORD).await.expect("SignIn");
    let two = stack.sign_in("cy@example.com", PASSWORD).await.expect("SignIn");
    let request = SignOutRequest { refresh_token: two.refresh_token.clone(), everywhere: true };
    let ended = stack.plain_users().sign_out(request).await.expect("SignOut").into_inner().ended_sessions;
    assert_eq!(ended, 2);
    for token in [&one.access_token, &two.access_token] {
        refused_within(&orders, token).await;
    }
    let none = stack.plain_users().sign_out(SignOutRequest::default()).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_at_most_50_open_sessions_and_the_51st_sign_in_ends_the_oldest() {
    let stack = Stack::start().await;
    let user_id = stack.verified("di@example.com", PASSWORD).await;
    let mut signed = Vec::new();
    for _ in 0..52 {
        signed.push(stack.sign_in("di@example.com", PASSWORD).await.expect("SignIn"));
    }
    let open = |token: String| {
        let mut users = stack.plain_users();
        async move {
            let request = with_bearer(ListSessionsRequest::default(), &token);
            users.list_sessions(request).await.expect("ListSessions").into_inner().sessions
        }
    };
    let listed = open(signed[51].access_token.clone()).await;
    assert_eq!(listed.len(), 50, "the cap");
    let ids: Vec<String> = signed.iter().map(session_id).collect();
    assert!(listed.iter().all(|s| ids[2..].contains(&s.id)), "the two oldest ended: {listed:?}");
    for oldest in &signed[..2] {
        let refused = refresh(&stack, &oldest.refresh_token).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    refresh(&stack, &signed[2].refresh_token).await.expect("the oldest kept session refreshes");
    let events: Vec<SessionsRevoked> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_SESSIONS_REVOKED).await;
    let ended: Vec<&String> = events.iter().flat_map(|e| &e.session_ids).collect();
    assert_eq!(ended, [&ids[0], &ids[1]], "announced: {events:?}");
    assert!(events.iter().all(|e| e.user_id == user_id && e.reason() == SessionEndReason::Expired));

    // Sixteen at once: sign-ins that race may each miss the others' new rows and leave a few
    // over the cap for a moment; the next sign-in sees them all and brings it back to 50.
    let burst = futures::future::join_all((0..16).map(|_| stack.sign_in("di@example.com", PASSWORD))).await;
    assert!(burst.iter().all(Result::is_ok), "{burst:?}");
    let next = stack.sign_in("di@example.com", PASSWORD).await.expect("SignIn");
    assert_eq!(open(next.access_token).await.len(), 50, "the cap, after the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_registering_again_ends_a_squatters_session_and_a_completed_change_of_address_ends_the_owners() {
    let options = verimail_system_tests::StackOptions {
        sign_in_requires_verified: false,
        ..verimail_system_tests::StackOptions::default()
    };
    let stack = Stack::start_with(options).await;
    // A squatter registers the owner's address and signs in, unverified.
    let user_id = stack.register("dee@example.com", "squatters own password").await;
    let squatter = stack.sign_in("dee@example.com", "squatters own password").await.expect("SignIn unverified");
    let watcher = verifier(&stack);
    assert!(watcher.verify(&squatter.access_token).await.is_ok());

    // The owner registers the address again: the squatter's password and session are gone.
    assert_eq!(stack.register("dee@example.com", PASSWORD).await.len(), 36);
    let ended = stack.plain_users().sign_out(with_bearer(SignOutRequest::default(), &squatter.access_token)).await;
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated, "the squatter's token acts no more");
    let started = Instant::now();
    while watcher.verify(&squatter.access_token).await.is_ok() {
        assert!(started.elapsed() < REVOCATION_BOUND, "the verifier still accepts the squatter's token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(watcher.verify(&squatter.access_token).await, Err(verimail_client::VerifyError::Revoked));
    let events: Vec<SessionsRevoked> =
        verimail_system_tests::events_on(&stack.nats.url(), subjects::USERS_SESSIONS_REVOKED).await;
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [SessionEndReason::Reregistered]);
    assert_eq!(events[0].user_id, user_id);

    // The owner verifies, signs in and moves the account: the completed change ends the session.
    let mails = stack.smtp.wait_for("dee@example.com", 2, crate::EMAIL_WAIT).await;
    stack.verify(&mails[1].verification_token()).await.expect("the owner's link verifies");
    assert!(stack.wait_for_status(&user_id, verimail_proto::user::v1::UserStatus::Verified, crate::STATUS_WAIT).await);
    let owner = stack.sign_in("dee@example.com", PASSWORD).await.expect("SignIn");
    let change =
        verimail_proto::user::v1::ChangeEmailRequest { new_email: "dee2@example.com".into(), ..Default::default() };
    stack
        .plain_users()
        .change_email(with_bearer(change, &owner.access_token))
        .await
        .expect("ChangeEmail, just signed in");
    let new_mail = stack.smtp.wait_for("dee2@example.com", 1, crate::EMAIL_WAIT).await;
    stack.verify(&new_mail[0].verification_token()).await.expect("the new address verifies");
    let started = Instant::now();
    while watcher.verify(&owner.access_token).await.is_ok() {
        assert!(started.elapsed() < crate::STATUS_WAIT, "the token naming the old address still verifies");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = stack.sign_in("dee2@example.com", PASSWORD).await.expect("SignIn at the new address");
    assert!(watcher.verify(&again.access_token).await.is_ok());
}
