//! The production shape on one machine: a three-node NATS cluster that loses a node mid-batch,
//! and every service running twice.

use async_nats::jetstream;
use std::time::{Duration, Instant};
use verimail_system_tests::batch;
use verimail_system_tests::procs::{Part, ProcessStack};
use verimail_system_tests::{Stack, StackOptions};

const BATCH: usize = 200;
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_nats_cluster_loses_the_stream_leader_mid_batch_and_nothing_is_lost() {
    let mut stack = Stack::start_with(StackOptions { nats_nodes: 3, ..StackOptions::default() }).await;
    let js = jetstream::new(async_nats::connect(verimail_events::bus::servers(&stack.nats.url())).await.unwrap());
    let mut users_stream = js.get_stream(verimail_proto::streams::USERS).await.expect("USERS stream");
    drop(js);
    let info = users_stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3, "streams are kept on three servers");
    let cluster = info.cluster.expect("a clustered stream");
    assert_eq!(cluster.replicas.len(), 2, "a leader and two replicas: {cluster:?}");
    let leader = cluster.leader.expect("a leader");
    println!("USERS stream leader: {leader}");

    let started = Instant::now();
    let users = stack.users.clone();
    let registering = tokio::spawn(async move { batch::register(&users, "cluster", 0..BATCH, LIMIT).await });
    batch::wait_for_emails(&stack.smtp, 20, LIMIT).await;
    // SIGKILL the node that leads the users' stream (n1, n2 or n3), in the middle of the batch.
    let node: usize = leader.trim_start_matches('n').parse::<usize>().expect("a node name") - 1;
    stack.nats.nodes[node].kill();
    let at_kill = stack.smtp.all().len();
    assert!(at_kill < BATCH, "the node died in the middle of the batch, not after it ({at_kill} emails)");

    let batch = registering.await.expect("registrations");
    // The two nodes left elected a new leader and carried on.
    let new_leader = loop {
        let asked = async {
            let client = async_nats::connect(verimail_events::bus::servers(&stack.nats.url())).await.ok()?;
            let info = jetstream::new(client)
                .get_stream(verimail_proto::streams::USERS)
                .await
                .ok()?
                .info()
                .await
                .ok()?
                .clone();
            info.cluster.and_then(|c| c.leader)
        };
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Some(now)) if now != leader => break now,
            _ => assert!(started.elapsed() < LIMIT, "no new leader for USERS"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("USERS stream leader after the kill: {new_leader}; {at_kill} emails had gone out at the kill");
    batch::finish("NATS cluster, stream leader SIGKILLed", stack.flow(), &batch, started, 0, LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_every_service_on_one_nats_and_one_postgresql_send_each_email_once() {
    use verimail_proto::email::v1::ListDeliveriesRequest;
    let stack =
        Stack::start_with(StackOptions { instances: 2, email_instances: 2, postgres: true, ..StackOptions::default() })
            .await;
    let started = Instant::now();
    let [a, b] = [&stack.instances[0], &stack.instances[1]];
    // Half the batch through each user-service, at once.
    let (first, second) = tokio::join!(
        batch::register(&a.users, "scale-a", 0..BATCH / 2, LIMIT),
        batch::register(&b.users, "scale-b", BATCH / 2..BATCH, LIMIT),
    );
    // Each half clicks through its own gateway (and so its own auth-service).
    for (instance, half, name) in [(a, &first, "scale-out, instance 1"), (b, &second, "scale-out, instance 2")] {
        let flow = batch::Flow {
            smtp: &stack.smtp,
            nats_url: stack.nats.url(),
            gateway_url: &instance.gateway_url,
            users: &instance.users,
        };
        batch::finish(name, flow, half, started, 0, LIMIT).await;
    }
    assert_eq!(stack.smtp.all().len(), BATCH, "one email per user, no more");
    // The two email-service instances shared the work.
    let mut handled = std::collections::HashMap::<String, usize>::new();
    let mut request = ListDeliveriesRequest { page_size: 100, ..Default::default() };
    loop {
        let page = stack.emails.clone().list_deliveries(request.clone()).await.expect("ListDeliveries").into_inner();
        for delivery in &page.deliveries {
            *handled.entry(delivery.handled_by.clone()).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    println!("scale-out: deliveries by instance {handled:?}");
    assert_eq!(handled.values().sum::<usize>(), BATCH);
    assert!(handled.get("email-1").is_some_and(|n| *n > 0) && handled.get("email-2").is_some_and(|n| *n > 0));
}

/// What a container health check runs: `<binary> --health-check` beside the running part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_binary_checks_the_health_of_the_instance_beside_it() {
    let mut stack = ProcessStack::start().await;
    for part in [Part::User, Part::Auth, Part::Email, Part::Gateway] {
        let (healthy, said) = stack.run_beside(part, &["--health-check"]).await;
        assert!(healthy, "{part:?}: {said}");
    }
    // A template broken on disk since the start: the instances running beside are still
    // healthy (a check reads no templates), while --check-config, which reads them, refuses it.
    let broken = tempfile::tempdir().expect("a templates folder");
    for path in ["en/verification.txt", "en/confirm.html"] {
        let path = broken.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        std::fs::write(path, "{% if %}").expect("write a template");
    }
    let folder = broken.path().display().to_string();
    let templates = [
        (Part::Email, "EMAIL_TEMPLATES_DIR", "verification.txt"),
        (Part::Gateway, "GATEWAY_TEMPLATES_DIR", "confirm.html"),
    ];
    for (part, variable, file) in templates {
        stack.set_var(part, variable, &folder);
        let (healthy, said) = stack.run_beside(part, &["--health-check"]).await;
        assert!(healthy, "{part:?} with a template broken since its start: {said}");
        let (valid, said) = stack.run_beside(part, &["--check-config"]).await;
        assert!(!valid && said.contains(file), "{part:?}: {said}");
    }
    // auth-service gone: its check fails, and so does the gateway's (/readyz needs it).
    stack.kill(Part::Auth);
    let (healthy, said) = stack.run_beside(Part::Auth, &["--health-check"]).await;
    assert!(!healthy, "{said}");
    let (healthy, said) = stack.run_beside(Part::Gateway, &["--health-check"]).await;
    println!("gateway --health-check with auth-service down: {said}");
    assert!(!healthy && said.contains("503") && said.contains("auth-service"), "{said}");
    let (healthy, said) = stack.run_beside(Part::User, &["--health-check"]).await;
    assert!(healthy, "user-service does not need auth-service: {said}");
}
