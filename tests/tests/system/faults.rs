//! Fault tests: a batch of users goes through the whole flow while a part fails, and every
//! user still gets exactly one email and ends verified after clicking it.

use async_nats::jetstream;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::ServingStatus;
use verimail_events::bus;
use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest};
use verimail_proto::ops::v1::{ListParkedRequest, ReplayParkedRequest};
use verimail_system_tests::batch::{self, Registered};
use verimail_system_tests::procs::{Part, ProcessStack};
use verimail_system_tests::{Stack, StackOptions};

pub const BATCH: usize = 200;
const LIMIT: Duration = Duration::from_secs(120);

async fn finish(name: &str, stack: &Stack, batch: &[Registered], started: Instant) {
    batch::finish(name, stack.flow(), batch, started, 0, LIMIT).await
}

/// The one delivery for this user, waiting (bounded) until email-service has recorded it.
async fn the_one_delivery_of(stack: &Stack, user_id: &str) -> verimail_proto::email::v1::Delivery {
    let request = ListDeliveriesRequest { user_id: user_id.into(), page_size: 10, ..Default::default() };
    stack.delivery_where(request.clone(), |_| true, LIMIT).await;
    let mut deliveries = stack.deliveries(request).await;
    assert_eq!(deliveries.len(), 1, "one delivery for {user_id}");
    deliveries.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_for_a_while_then_back_delivers_everything_and_a_rejected_recipient_fails_once() {
    let stack = Stack::start_with(StackOptions {
        email_attempts: 10,
        email_backoff: [200, 500, 1000, 2000].map(Duration::from_millis).to_vec(),
        ..StackOptions::default()
    })
    .await;
    let started = Instant::now();
    stack.smtp.reject("rejected@example.com");
    let rejected_id = stack
        .users
        .clone()
        .register_user(verimail_proto::user::v1::RegisterUserRequest {
            email: "rejected@example.com".into(),
            password: "correct horse battery".into(),
            ..Default::default()
        })
        .await
        .expect("RegisterUser")
        .into_inner()
        .user_id;
    let deadline = Instant::now() + LIMIT;
    while the_one_delivery_of(&stack, &rejected_id).await.status() != DeliveryStatus::Failed {
        assert!(Instant::now() < deadline, "the rejected delivery did not end failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let first = batch::register(&stack.users, "before", 0..BATCH / 2, LIMIT).await;
    stack.smtp.go_down();
    let second = batch::register(&stack.users, "during", BATCH / 2..BATCH, LIMIT).await;
    // Long enough for several failed attempts of the events sent while it is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = stack.smtp.all().len();
    assert!(waiting < BATCH, "the server was down, yet {waiting} emails arrived");
    stack.smtp.come_back();

    let batch: Vec<_> = first.into_iter().chain(second).collect();
    finish("smtp down 3 s", &stack, &batch, started).await;

    let failed = the_one_delivery_of(&stack, &rejected_id).await;
    assert_eq!(failed.status(), DeliveryStatus::Failed, "{failed:?}");
    assert_eq!(failed.attempts, 1, "a permanent rejection is not retried");
    assert!(failed.last_error.contains("550"), "{failed:?}");
    assert!(stack.smtp.to("rejected@example.com").is_empty());
    for user in batch.iter().step_by(20) {
        assert_eq!(the_one_delivery_of(&stack, &user.user_id).await.status(), DeliveryStatus::Sent);
    }
}

/// Waits (bounded) until at least `count` emails have arrived: "the middle of the batch".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_parked_listed_and_blocks_nothing_behind_it() {
    let stack = Stack::start().await;
    let started = Instant::now();
    let first = batch::register(&stack.users, "ahead", 0..BATCH / 2, LIMIT).await;
    // Bytes that are no UserRegistered, on the subject email-service consumes.
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    js.publish_with_headers(
        verimail_proto::subjects::USERS_REGISTERED,
        bus::event_headers("poison-1", "verimail.events.v1.UserRegistered"),
        bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let behind = batch::register(&stack.users, "behind", BATCH / 2..BATCH, LIMIT).await;
    let batch: Vec<_> = first.into_iter().chain(behind).collect();
    batch::finish("poison message", stack.flow(), &batch, started, 1, LIMIT).await;

    let parked = Stack::parked(&stack.email_parking).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let poison = &parked[0];
    assert_eq!(
        (poison.consumer.as_str(), poison.subject.as_str()),
        ("email-service", verimail_proto::subjects::USERS_REGISTERED)
    );
    assert_eq!(poison.event_id, "poison-1");
    assert!(poison.error.contains("undecodable"), "{poison:?}");
    assert_eq!(poison.attempts, 1, "it can never succeed, so it is parked at once");
    assert!(Stack::parked(&stack.user_parking).await.is_empty(), "user-service lists only its own consumer's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_parked_after_its_attempts_is_replayed_by_rpc_and_delivered() {
    let stack = Stack::start_with(StackOptions {
        email_attempts: 3,
        email_backoff: vec![Duration::from_millis(100)],
        ..StackOptions::default()
    })
    .await;
    stack.smtp.go_down();
    let user = batch::register(&stack.users, "parked", 0..1, LIMIT).await.remove(0);
    let deadline = Instant::now() + LIMIT;
    let parked = loop {
        let parked = Stack::parked(&stack.email_parking).await;
        if !parked.is_empty() {
            break parked;
        }
        assert!(Instant::now() < deadline, "nothing parked within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, 3, "{:?}", parked[0]);
    assert!(parked[0].error.contains("SMTP"), "{:?}", parked[0]);
    assert_eq!(the_one_delivery_of(&stack, &user.user_id).await.status(), DeliveryStatus::Parked);

    // Bad requests change nothing.
    let mut parking = stack.email_parking.clone();
    let status = parking.replay_parked(ReplayParkedRequest { sequence: 0 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = parking.replay_parked(ReplayParkedRequest { sequence: 999 }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = stack.user_parking.clone().replay_parked(ReplayParkedRequest { sequence: parked[0].sequence }).await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound, "another service's parked message");
    let status = parking.list_parked(ListParkedRequest { after_sequence: 0, limit: 5000 }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(Stack::parked(&stack.email_parking).await.len(), 1);

    stack.smtp.come_back();
    let replayed = parking.replay_parked(ReplayParkedRequest { sequence: parked[0].sequence }).await.unwrap();
    assert_eq!(replayed.into_inner().subject, verimail_proto::subjects::USERS_REGISTERED);
    batch::expect_one_email_each(&stack.smtp, std::slice::from_ref(&user), &Default::default(), LIMIT).await;
    assert!(Stack::parked(&stack.email_parking).await.is_empty());
    let status = parking.replay_parked(ReplayParkedRequest { sequence: parked[0].sequence }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "a replayed message is no longer parked");
    let delivery = the_one_delivery_of(&stack, &user.user_id).await;
    assert_eq!((delivery.status(), delivery.attempts), (DeliveryStatus::Sent, 4));
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, &[user], LIMIT).await;
}

/// Publishes a stored message again, same headers and payload, under a new Nats-Msg-Id.
async fn republish(js: &jetstream::Context, original: &jetstream::message::StreamMessage, msg_id: &str) {
    let mut headers = original.headers.clone();
    headers.insert(verimail_proto::headers::MSG_ID, msg_id);
    js.publish_with_headers(original.subject.to_string(), headers, original.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_published_twice_has_one_effect() {
    let stack = Stack::start().await;
    let started = Instant::now();
    let batch = batch::register(&stack.users, "twice", 0..BATCH, LIMIT).await;
    batch::expect_one_email_each(&stack.smtp, &batch, &Default::default(), LIMIT).await;

    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream = js.get_stream(verimail_proto::streams::USERS).await.unwrap();
    let mut dropped = 0;
    for sequence in 1..=BATCH as u64 {
        let original = stream.get_raw_message(sequence).await.unwrap();
        let event_id = bus::event_id_of(&original.headers).expect("an event id");
        // Again with the same Nats-Msg-Id, inside the duplicate window: JetStream drops it.
        let again = js
            .publish_with_headers(original.subject.to_string(), original.headers.clone(), original.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
        dropped += usize::from(again.duplicate);
        // The same event under a new message id, as after the window: the handler must see
        // that it has already acted on this event id.
        republish(&js, &original, &format!("{event_id}:after-window")).await;
    }
    assert_eq!(dropped, BATCH, "every same-id publish is dropped by JetStream");
    finish("same event twice", &stack, &batch, started).await;

    // And auth.email_verified twice for every user: still one verified user each.
    let auth = js.get_stream(verimail_proto::streams::AUTH).await.unwrap();
    for sequence in 1..=BATCH as u64 {
        let original = auth.get_raw_message(sequence).await.unwrap();
        republish(&js, &original, &format!("again-{sequence}")).await;
    }
    batch::wait_until_drained(&stack.nats.url(), verimail_proto::streams::AUTH, "user-service", LIMIT).await;
    assert_eq!(batch::parked_count(&stack.nats.url()).await, 0);
    for user in batch.iter().step_by(10) {
        assert_eq!(stack.status_of(&user.user_id).await, verimail_proto::user::v1::UserStatus::Verified);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_mid_batch_and_restarted_on_its_store_loses_nothing() {
    let mut stack = Stack::start().await;
    let started = Instant::now();
    let users = stack.users.clone();
    // Registrations keep coming while the broker dies and comes back.
    let registering = tokio::spawn(async move { batch::register(&users, "broker", 0..BATCH, LIMIT).await });
    batch::wait_for_emails(&stack.smtp, 20, LIMIT).await;
    stack.nats.kill();
    let at_kill = stack.smtp.all().len();
    assert!(at_kill < BATCH, "the broker died in the middle of the batch, not after it ({at_kill} emails)");
    // Every service says it cannot work while the broker is away, and recovers by itself.
    let services = [
        (stack.grpc_addrs[0], "verimail.user.v1.UserService"),
        (stack.grpc_addrs[1], "verimail.auth.v1.AuthService"),
        (stack.grpc_addrs[2], "verimail.email.v1.EmailService"),
    ];
    for (addr, name) in services {
        batch::wait_for_health(&addr.to_string(), name, ServingStatus::NotServing, Duration::from_secs(10)).await;
    }
    // The gateway is alive but not ready, and says why.
    let ready = reqwest::get(format!("{}/readyz", stack.gateway_url)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(ready.text().await.unwrap(), "user-service: NOT_SERVING\nauth-service: NOT_SERVING\n");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.nats.restart();
    for (addr, name) in services {
        batch::wait_for_health(&addr.to_string(), name, ServingStatus::Serving, Duration::from_secs(20)).await;
    }
    let batch = registering.await.expect("registrations");
    finish("nats-server SIGKILL 2 s", &stack, &batch, started).await;
}

/// Recipients whose delivery email-service's database says is being sent.
async fn in_doubt(stack: &ProcessStack) -> std::collections::HashSet<String> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use verimail_email::store::deliveries::{self as delivery, DeliveryStatus as Status};
    let db = sea_orm::Database::connect(stack.database_url("email")).await.expect("open email-service's database");
    let rows = delivery::Entity::find()
        .filter(delivery::Column::Status.eq(Status::Sending))
        .all(&db)
        .await
        .expect("deliveries");
    rows.into_iter().map(|row| row.recipient).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_service_killed_mid_batch_and_restarted_sends_each_email_once() {
    let mut stack = ProcessStack::start().await;
    let started = Instant::now();
    let users = stack.users.clone();
    let registering = tokio::spawn(async move { batch::register(&users, "courier", 0..BATCH, LIMIT).await });
    batch::wait_for_emails(&stack.smtp, 20, LIMIT).await;
    stack.kill(Part::Email);
    let at_kill = stack.smtp.all().len();
    assert!(at_kill < BATCH, "email-service died in the middle of the batch, not after it ({at_kill} emails)");
    // The one window no design closes (SMTP has no idempotency key): deliveries handed to the
    // SMTP server whose answer was not recorded yet. Only these may arrive twice.
    let in_doubt = in_doubt(&stack).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.start_part(Part::Email).await;
    let batch = registering.await.expect("registrations");
    batch::finish_with_doubt("email-service SIGKILL", stack.flow(), &batch, started, 0, &in_doubt, LIMIT).await;
    let twice = batch.iter().filter(|u| batch::verification_emails(&stack.smtp, &u.email).len() > 1).count();
    println!("email-service SIGKILL: {} deliveries in doubt at the kill, {twice} of them sent twice", in_doubt.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_service_killed_between_commit_and_publish_still_sends_every_event() {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use verimail_events::outbox::entity;

    let mut stack = ProcessStack::start().await;
    let started = Instant::now();
    // user-service loses the broker: registrations commit (user + outbox row) but no publish
    // can succeed, so every event of the batch sits between commit and publish...
    stack.user_nats_door.set_open(false);
    let batch = batch::register(&stack.users, "outbox", 0..BATCH, LIMIT).await;
    let db = sea_orm::Database::connect(stack.database_url("user")).await.expect("open user-service's database");
    let unpublished =
        entity::Entity::find().filter(entity::Column::PublishedAt.is_null()).count(&db).await.expect("count outbox");
    assert_eq!(unpublished, BATCH as u64, "every event is committed and unpublished");
    assert!(stack.smtp.all().is_empty());
    // ... when it is killed. It comes back with the broker reachable again.
    stack.kill(Part::User);
    stack.user_nats_door.set_open(true);
    stack.start_part(Part::User).await;
    batch::finish("user-service SIGKILL between commit and publish", stack.flow(), &batch, started, 0, LIMIT).await;
    let unpublished =
        entity::Entity::find().filter(entity::Column::PublishedAt.is_null()).count(&db).await.expect("count outbox");
    assert_eq!(unpublished, 0, "the relay marked every row after its publish ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_email_service_instances_share_the_work_and_send_each_email_once() {
    let stack = Stack::start_with(StackOptions { email_instances: 2, ..StackOptions::default() }).await;
    let started = Instant::now();
    let batch = batch::register(&stack.users, "shared", 0..BATCH, LIMIT).await;
    finish("two email-service instances", &stack, &batch, started).await;
    let mut by_instance = std::collections::BTreeMap::<String, usize>::new();
    // The window in which a crash sends an email twice: from the SMTP server's acceptance to
    // the delivery recorded as sent.
    let mut windows = Vec::new();
    for user in &batch {
        let delivery = the_one_delivery_of(&stack, &user.user_id).await;
        assert_eq!((delivery.status(), delivery.attempts), (DeliveryStatus::Sent, 1), "{delivery:?}");
        *by_instance.entry(delivery.handled_by).or_default() += 1;
        let sent_at = chrono::DateTime::parse_from_rfc3339(&delivery.sent_at).expect("sent_at");
        let accepted_at = chrono::DateTime::<chrono::Utc>::from(stack.smtp.to(&user.email)[0].accepted_at);
        windows.push((sent_at.with_timezone(&chrono::Utc) - accepted_at).num_microseconds().unwrap_or(0));
    }
    windows.sort();
    let ms = |us: i64| us as f64 / 1000.0;
    println!(
        "two email-service instances: deliveries by instance {by_instance:?}; SMTP acceptance to recorded sent: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(windows[windows.len() / 2]),
        ms(windows[windows.len() * 9 / 10]),
        ms(windows[windows.len() - 1])
    );
    assert_eq!(by_instance.keys().map(String::as_str).collect::<Vec<_>>(), ["email-1", "email-2"], "both did some");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_email_service_and_user_service_mid_batch_and_they_exit_0() {
    let mut stack = ProcessStack::start().await;
    let started = Instant::now();
    let users = stack.users.clone();
    let registering = tokio::spawn(async move { batch::register(&users, "drain", 0..BATCH, LIMIT).await });
    batch::wait_for_emails(&stack.smtp, 20, LIMIT).await;
    // A drained email-service finishes and records what it holds: nothing is left in doubt.
    let status = stack.terminate(Part::Email);
    assert!(status.success(), "email-service exits 0 on SIGTERM, not {status}");
    assert!(in_doubt(&stack).await.is_empty(), "a drained email-service leaves no delivery in doubt");
    assert!(stack.smtp.all().len() < BATCH, "stopped in the middle of the batch");
    // user-service flushes its outbox on the way out; registrations retry until it is back.
    let status = stack.terminate(Part::User);
    assert!(status.success(), "user-service exits 0 on SIGTERM, not {status}");
    stack.start_part(Part::User).await;
    stack.start_part(Part::Email).await;
    let batch = registering.await.expect("registrations");
    batch::finish("SIGTERM email-service and user-service", stack.flow(), &batch, started, 0, LIMIT).await;
    assert!(stack.log(Part::Email).contains("consumer drained"), "{}", stack.log(Part::Email));
    assert!(stack.log(Part::User).contains("outbox flushed"), "{}", stack.log(Part::User));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_cut_off_from_nats_reports_not_serving_and_recovers_by_itself() {
    let stack = ProcessStack::start().await;
    let addr = stack.grpc_addr(Part::User);
    let service = "verimail.user.v1.UserService";
    batch::wait_for_health(&addr, service, ServingStatus::Serving, LIMIT).await;
    stack.user_nats_door.set_open(false);
    batch::wait_for_health(&addr, service, ServingStatus::NotServing, Duration::from_secs(10)).await;
    // Registration still works (it only needs the database); the event waits in the outbox.
    let user = batch::register(&stack.users, "cut-off", 0..1, LIMIT).await;
    stack.user_nats_door.set_open(true);
    batch::wait_for_health(&addr, service, ServingStatus::Serving, Duration::from_secs(20)).await;
    batch::finish("user-service cut off from NATS", stack.flow(), &user, Instant::now(), 0, LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_on_postgresql_with_a_registration_race() {
    let stack =
        Stack::start_with(StackOptions { postgres: true, enumeration_safe: false, ..StackOptions::default() }).await;
    let started = Instant::now();
    let batch = batch::register(&stack.users, "pg", 0..50, LIMIT).await;
    // One address registered twice at once: the unique index lets one insert; the other,
    // refused by the pre-check or in a race by PostgreSQL's unique index, is a registration of
    // an unverified address again, which replaces the password of that one account.
    let twice = || {
        let mut users = stack.users.clone();
        async move {
            let request = verimail_proto::user::v1::RegisterUserRequest {
                email: "pg-race@example.com".into(),
                password: "correct horse battery".into(),
                ..Default::default()
            };
            users.register_user(request).await.map(|r| r.into_inner().user_id).map_err(|s| s.code())
        }
    };
    let (a, b) = tokio::join!(twice(), twice());
    let (a, b) = (a.expect("the first registration"), b.expect("the second registration"));
    assert_eq!(a, b, "one account, named by both answers (enumeration safety is off)");
    finish("PostgreSQL", &stack, &batch, started).await;
}
