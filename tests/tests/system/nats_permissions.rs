//! NATS with a user per service (deploy/kubernetes/base/nats-permissions.conf): the whole flow works with
//! each service connecting as itself, and nobody else can publish what a service acts on.

use crate::{EMAIL_WAIT, STATUS_WAIT};
use async_nats::jetstream;
use prost::Message;
use std::time::Duration;
use verimail_events::bus::{self, NatsAuth, NatsConfig};
use verimail_proto::events::v1::{EmailVerified, UserRegistered};
use verimail_proto::ops::v1::{ListParkedRequest, ReplayParkedRequest};
use verimail_proto::subjects;
use verimail_proto::user::v1::{DeleteUserRequest, UserStatus};
use verimail_system_tests::browser::Browser;
use verimail_system_tests::{Stack, StackOptions, nats_password};

/// Connects as `user` (with its password from the stack) or anonymously, at most 5 s.
async fn connect_as(stack: &Stack, user: Option<&str>) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    if let Some(user) = user {
        options = options.user_and_password(user.to_owned(), nats_password(user).1);
    }
    let connecting = options.connect(stack.nats.url());
    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no connection within 5 s".into()),
    }
}

/// A JetStream context that gives up on an answer after 2 s (a refused request gets none).
fn jetstream_of(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    js
}

/// Publishes to JetStream as `client`; whether the stream acknowledged it within 2 s.
async fn stored(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> Result<(), String> {
    let js = jetstream_of(client);
    let headers = bus::event_headers(&uuid::Uuid::now_v7().to_string(), "forged");
    match js.publish_with_headers(subject.to_owned(), headers, payload.into()).await {
        Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_user_per_service_the_flow_works_and_nobody_else_can_publish_what_services_act_on() {
    let stack = Stack::start_with(StackOptions { nats_permissions: true, ..StackOptions::default() }).await;

    // The whole flow, each service as its own NATS user.
    let victim = stack.register("victim@example.com", "correct horse battery").await;
    let link = stack.smtp.wait_for("victim@example.com", 1, EMAIL_WAIT).await[0].verification_link();

    // Without credentials: no connection at all.
    let anonymous = connect_as(&stack, None).await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    println!("anonymous client: {}", anonymous.unwrap_err());

    // A forged verification of the victim, from every service that is not auth-service.
    let forged = EmailVerified {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: victim.clone(),
        email: "victim@example.com".into(),
        occurred_at: String::new(),
        registration_event_id: String::new(),
    }
    .encode_to_vec();
    let email_service = connect_as(&stack, Some("email-service")).await.expect("email-service connects");
    let refused = stored(&email_service, subjects::AUTH_EMAIL_VERIFIED, forged.clone()).await;
    assert!(refused.is_err(), "email-service published auth.email_verified");
    println!("email-service publishing auth.email_verified: {}", refused.unwrap_err());
    // auth-service may publish its own events but not user-service's.
    let auth_service = connect_as(&stack, Some("auth-service")).await.expect("auth-service connects");
    let registered = UserRegistered {
        event_id: "e".into(),
        user_id: victim.clone(),
        email: "x@example.com".into(),
        ..Default::default()
    };
    let refused = stored(&auth_service, subjects::USERS_REGISTERED, registered.encode_to_vec()).await;
    assert!(refused.is_err(), "auth-service published users.registered");
    // It reads USERS (its own consumer takes users.deleted), but not from another service's
    // consumer, and manages no stream but its own.
    let js = jetstream_of(&auth_service);
    let users = js.get_stream(verimail_proto::streams::USERS).await.expect("auth-service reads USERS");
    let others = users.get_consumer::<jetstream::consumer::pull::Config>("email-service").await;
    assert!(others.is_err(), "auth-service opened email-service's consumer");
    // Only user-service deletes accounts: email-service cannot forge the event of one.
    let refused = stored(&email_service, subjects::USERS_DELETED, b"forged".to_vec()).await;
    assert!(refused.is_err(), "email-service published users.deleted");
    assert!(js.delete_stream(verimail_proto::streams::AUTH).await.is_err(), "auth-service deleted its stream");
    let js = jetstream_of(&email_service);
    assert!(js.get_stream(verimail_proto::streams::AUTH).await.is_err(), "email-service read the AUTH stream");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.status_of(&victim).await, UserStatus::Unverified, "a forged event verified the user");

    // Parking and the ops RPCs on parked messages work within the permissions: a message
    // email-service cannot decode (from user-service, which may publish users.*) is parked,
    // listed and replayed (parked again, being no better).
    let user_service = connect_as(&stack, Some("user-service")).await.expect("user-service connects");
    stored(&user_service, subjects::USERS_REGISTERED, b"not protobuf".to_vec())
        .await
        .expect("user-service publishes users.*");
    let mut parking = stack.email_parking.clone();
    let list = || {
        let mut parking = parking.clone();
        async move { parking.list_parked(ListParkedRequest::default()).await.expect("ListParked").into_inner().messages }
    };
    let deadline = tokio::time::Instant::now() + EMAIL_WAIT;
    let parked = loop {
        if let Some(message) = list().await.pop() {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let replayed =
        parking.replay_parked(ReplayParkedRequest { sequence: parked.sequence }).await.expect("ReplayParked");
    assert_eq!(replayed.into_inner().subject, subjects::USERS_REGISTERED);
    stack.user_parking.clone().list_parked(ListParkedRequest::default()).await.expect("user-service's ListParked");

    // The real click still verifies.
    let page = Browser::new(&stack.gateway_url).click(&link).await;
    assert_eq!(page.kind(), "verified", "{}", page.html);
    assert!(stack.wait_for_status(&victim, UserStatus::Verified, STATUS_WAIT).await);

    // A deletion's erasure runs within the permissions: every service takes users.deleted.
    let request = DeleteUserRequest { user_id: victim.clone(), password: String::new() };
    stack.users.clone().delete_user(request).await.expect("DeleteUser");
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while !stack.find_everywhere("victim@example.com").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not erased: {:?}", stack.find_everywhere("victim@").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let users = jetstream_of(&user_service).get_stream(verimail_proto::streams::USERS).await.expect("USERS");
    let deletions = users.get_consumer::<jetstream::consumer::pull::Config>("user-service-deletions").await;
    let mut deletions = deletions.expect("user-service's consumer of users.deleted");
    // And the one that takes the links of change-of-address notices, on AUTH.
    let auth_stream = jetstream_of(&user_service).get_stream(verimail_proto::streams::AUTH).await.expect("AUTH");
    let undo = auth_stream.get_consumer::<jetstream::consumer::pull::Config>("user-service-undo").await;
    undo.expect("user-service's consumer of auth.email_change_undo_requested");
    loop {
        let info = deletions.info().await.expect("consumer info");
        if info.ack_floor.consumer_sequence >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "user-service never acked users.deleted: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_connects_only_with_the_credentials_the_server_knows() {
    let stack = Stack::start_with(StackOptions { nats_permissions: true, ..StackOptions::default() }).await;
    let wrong = NatsConfig {
        auth: NatsAuth::UserPassword("user-service".into(), "not-the-password".into()),
        ..NatsConfig::url(stack.nats.url())
    };
    // bus::connect waits for NATS for ever: it must still be waiting after 3 s.
    let waiting = tokio::time::timeout(Duration::from_secs(3), bus::connect(&wrong)).await;
    assert!(waiting.is_err(), "connected with a wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_tls_a_service_connects_only_over_tls_with_a_certificate_from_the_ca() {
    let ca = verimail_system_tests::pki::TestCa::new("nats test CA");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (server_cert, server_key) = ca.issue("nats");
    let (client_cert, client_key) = ca.issue("user-service");
    let ca_file = write("ca.pem", ca.pem());
    let (server_cert, server_key) = (write("server.pem", server_cert), write("server-key.pem", server_key));
    let client = (write("client.pem", client_cert), write("client-key.pem", client_key));
    let config = write(
        "tls.conf",
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
            server_cert, server_key, ca_file
        ),
    );
    let nats = verimail_testkit::NatsServer::start_configured(&config, Vec::new());

    // With the CA and a client certificate: JetStream answers.
    let tls = NatsConfig {
        tls_ca: Some(ca_file.clone()),
        tls_client: Some(client),
        tls_required: true,
        ..NatsConfig::url(nats.url())
    };
    let connected = tokio::time::timeout(Duration::from_secs(10), bus::connect(&tls)).await.expect("connects over TLS");
    bus::declare_streams(&jetstream::new(connected), &[bus::USERS_STREAM], Default::default())
        .await
        .expect("JetStream over TLS");

    // Without a client certificate, or without TLS: no connection.
    let no_certificate = NatsConfig { tls_ca: Some(ca_file), tls_required: true, ..NatsConfig::url(nats.url()) };
    for (what, config) in [("no client certificate", no_certificate), ("no TLS", NatsConfig::url(nats.url()))] {
        let waiting = tokio::time::timeout(Duration::from_secs(3), bus::connect(&config)).await;
        assert!(waiting.is_err(), "connected with {what}");
    }
}
