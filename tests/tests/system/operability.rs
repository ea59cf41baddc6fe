//! What operators rely on: health, reflection, and no second email for a redelivered event.

use crate::EMAIL_WAIT;
use async_nats::jetstream;
use std::time::Duration;
use tokio_stream::StreamExt;
use verimail_events::bus;
use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest};
use verimail_system_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_reflection_v1_and_v1alpha() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    let stack = Stack::start().await;
    const PARKING: &str = "verimail.ops.v1.ParkingService";
    // Each service also answers for its consumers' parked messages.
    let services = [
        (stack.grpc_addrs[0], "verimail.user.v1.UserService"),
        (stack.grpc_addrs[1], "verimail.auth.v1.AuthService"),
        (stack.grpc_addrs[2], "verimail.email.v1.EmailService"),
    ];
    for (addr, name) in services {
        let channel = verimail_server::tls::GrpcTls::off().channel("test", &addr.to_string()).unwrap();
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: name.into() })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(health.status(), ServingStatus::Serving, "{name}");

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut replies = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            replies.next().await.expect("a reply").expect("ok").message_response
        else {
            panic!("not a service list")
        };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        // Only what this address answers: grpcurl's `list` must not offer another service's RPCs.
        let mut expected = vec!["grpc.health.v1.Health", name, PARKING];
        if name == "verimail.email.v1.EmailService" {
            expected.push("verimail.email.v1.WebhookService");
        }
        expected.sort();
        assert_eq!(names, expected, "{addr}");

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                name.into(),
            )),
        };
        let mut replies = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let reply = replies.next().await.expect("a reply").expect("ok");
        assert!(
            matches!(
                reply.message_response,
                Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
            ),
            "{name} descriptor over v1alpha"
        );
    }

    let health = reqwest::get(format!("{}/healthz", stack.gateway_url)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = reqwest::get(format!("{}/readyz", stack.gateway_url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.text().await.unwrap(), "user-service: SERVING\nauth-service: SERVING\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_registration_sends_nothing_twice() {
    let stack = Stack::start().await;
    let user_id = stack.register("grace@example.com", "correct horse battery").await;
    stack.smtp.wait_for("grace@example.com", 1, EMAIL_WAIT).await;

    // Put the same event on the stream again under a new message id, past JetStream's
    // de-duplication: the consumer sees it as a redelivery of the same event.
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream(verimail_proto::streams::USERS).await.unwrap();
    let original = stream.get_raw_message(1).await.unwrap();
    js.publish_with_headers(
        original.subject.to_string(),
        bus::event_headers("replayed-copy", "verimail.events.v1.UserRegistered"),
        original.payload.clone(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = stream.consumer_info("email-service").await.unwrap();
        if info.ack_floor.stream_sequence >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the copy was not handled within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stack.smtp.to("grace@example.com").len(), 1, "one email, not two");
    let deliveries = stack
        .emails
        .clone()
        .list_deliveries(ListDeliveriesRequest { user_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status(), DeliveryStatus::Sent);
    assert_eq!(deliveries[0].attempts, 1);
    assert!(!deliveries[0].sent_at.is_empty(), "a sent delivery says when");
}

type Health = tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>;
use tonic_health::pb::health_check_response::ServingStatus;

fn health_of(addr: std::net::SocketAddr) -> Health {
    Health::new(verimail_server::tls::GrpcTls::off().channel("test", &addr.to_string()).unwrap())
}

async fn status(mut client: Health) -> ServingStatus {
    let request = tonic_health::pb::HealthCheckRequest::default();
    client.check(request).await.expect("health").into_inner().status()
}

/// Polls until `client` reports `want` (at most 10 s); how long that took.
async fn wait_for(client: &Health, want: ServingStatus) -> Duration {
    let started = std::time::Instant::now();
    while status(client.clone()).await != want {
        assert!(started.elapsed() < Duration::from_secs(10), "never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// email-service's health follows its SMTP server, from a cached probe (every
/// `smtp_check_interval`, 1 s in tests): asking health often costs the SMTP server nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_service_health_follows_its_smtp_server_without_hammering_it() {
    let stack = Stack::start().await;
    let (email, user) = (health_of(stack.grpc_addrs[2]), health_of(stack.grpc_addrs[0]));
    wait_for(&email, ServingStatus::Serving).await;
    let sessions = stack.smtp.sessions();
    let started = std::time::Instant::now();
    // 200 checks over about 3 s: the probe (one SMTP session a second) runs 2 to 4 times.
    for _ in 0..200 {
        assert_eq!(status(email.clone()).await, ServingStatus::Serving);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let probes_due = started.elapsed().as_secs() as usize + 1;
    let opened = stack.smtp.sessions() - sessions;
    println!("200 health checks in {:?} opened {opened} SMTP sessions", started.elapsed());
    assert!((1..=probes_due).contains(&opened), "{opened} SMTP sessions for 200 health checks");

    stack.smtp.go_down();
    let noticed = wait_for(&email, ServingStatus::NotServing).await;
    println!("SMTP down: NOT_SERVING after {noticed:?}");
    assert_eq!(status(user).await, ServingStatus::Serving, "user-service does not depend on SMTP");
    stack.smtp.come_back();
    let noticed = wait_for(&email, ServingStatus::Serving).await;
    println!("SMTP back: SERVING after {noticed:?}");
}
