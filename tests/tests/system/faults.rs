//! Fault tests: a batch of users goes through the whole flow while a part fails, and every
//! user still gets exactly one email and ends verified after clicking it.

use std::time::{Duration, Instant};
use verimail_proto::email::v1::{DeliveryStatus, ListDeliveriesRequest};
use verimail_system_tests::batch::{self, Registered};
use verimail_system_tests::{Stack, StackOptions};

pub const BATCH: usize = 200;
const LIMIT: Duration = Duration::from_secs(120);

/// Every user of the batch got exactly one email and is verified after clicking it; nothing
/// is left for email-service to do. Prints the figures the closing note reports.
async fn finish(name: &str, stack: &Stack, batch: &[Registered], started: Instant) {
    let received = batch::expect_one_email_each(&stack.smtp, batch, LIMIT).await;
    batch::wait_until_drained(&stack.nats.url(), "USERS", "email-service", LIMIT).await;
    let received_after_drain = batch::expect_one_email_each(&stack.smtp, batch, LIMIT).await;
    assert_eq!(received, received_after_drain);
    batch::click_all_and_expect_verified(&stack.smtp, &stack.gateway_url, &stack.users, batch, LIMIT).await;
    assert_eq!(batch::parked_count(&stack.nats.url()).await, 0, "nothing parked");
    println!(
        "fault {name}: batch {} users, {} emails expected, {} received, {:.1} s",
        batch.len(),
        batch.len(),
        batch.iter().map(|u| stack.smtp.to(&u.email).len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
}

async fn delivery_of(stack: &Stack, user_id: &str) -> verimail_proto::email::v1::Delivery {
    let deadline = Instant::now() + LIMIT;
    loop {
        let deliveries = stack
            .emails
            .clone()
            .list_deliveries(ListDeliveriesRequest { user_id: user_id.into(), limit: 10 })
            .await
            .expect("ListDeliveries")
            .into_inner()
            .deliveries;
        if !deliveries.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery for {user_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut deliveries = stack
        .emails
        .clone()
        .list_deliveries(ListDeliveriesRequest { user_id: user_id.into(), limit: 10 })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
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
        })
        .await
        .expect("RegisterUser")
        .into_inner()
        .user_id;
    let deadline = Instant::now() + LIMIT;
    while delivery_of(&stack, &rejected_id).await.status() != DeliveryStatus::Failed {
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

    let failed = delivery_of(&stack, &rejected_id).await;
    assert_eq!(failed.status(), DeliveryStatus::Failed, "{failed:?}");
    assert_eq!(failed.attempts, 1, "a permanent rejection is not retried");
    assert!(failed.last_error.contains("550"), "{failed:?}");
    assert!(stack.smtp.to("rejected@example.com").is_empty());
    for user in batch.iter().step_by(20) {
        assert_eq!(delivery_of(&stack, &user.user_id).await.status(), DeliveryStatus::Sent);
    }
}
