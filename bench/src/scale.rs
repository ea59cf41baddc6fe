//! Scale-out (PostgreSQL): RegisterUser at 16 clients (production hashing, email-service
//! sending) and POST /verify-email at 32 clients (fresh tokens, email-service stopped), with
//! one instance of every part on one nats-server (streams R1), one instance on a cluster of
//! three (R3), and two instances on that cluster, all on this one machine and its one
//! PostgreSQL server: what an instance more gives on the same cores, and what R3 costs per
//! operation against R1 (the CPU rows count every process, each nats-server included). The
//! instances share the pool size one instance has (16 connections per service).

use crate::{Table, cpu_meter, register, verify};
use verimail_system_tests::procs::{Part, ProcessStack, Scale};

const SHAPES: [(&str, Scale); 3] = [
    ("1 instance each, 1 nats-server (R1)", Scale { nats_nodes: 1, instances: 1 }),
    ("1 instance each, 3 nats-servers (R3)", Scale { nats_nodes: 3, instances: 1 }),
    ("2 instances each, 3 nats-servers (R3)", Scale { nats_nodes: 3, instances: 2 }),
];

pub async fn run(table: &mut Table, seconds: u64) -> anyhow::Result<serde_json::Value> {
    let mut shapes = Vec::new();
    for (label, scale) in SHAPES {
        let stack = ProcessStack::start_scaled(
            scale,
            &[crate::production_pool(scale.instances), crate::production_hashing()].concat(),
        )
        .await;
        let meter = cpu_meter(&stack);
        let registered = register::at_full_speed(&stack, 16, seconds).await?;
        let registration = table.row(&format!("RegisterUser, 16 clients, {label}"), &registered, table.bound > 0.0);
        table.cpu(&meter.per_operation(registered.latencies.len()));
        drop(stack);

        let mut stack = ProcessStack::start_scaled(scale, &crate::production_pool(scale.instances)).await;
        stack.kill_everywhere(Part::Email);
        let tokens = verify::prepare(&stack, verify::enough(true) * seconds as usize).await?;
        let meter = cpu_meter(&stack);
        let clicked = verify::gateway_at_full_speed(&stack, &tokens, crate::VERIFY_CLIENTS, seconds).await?;
        let verification = table.row(&format!("POST /verify-email, 32 clients, {label}"), &clicked, false);
        table.cpu(&meter.per_operation(clicked.latencies.len()));
        shapes.push(serde_json::json!({
            "shape": label,
            "nats_nodes": scale.nats_nodes,
            "instances": scale.instances,
            "register_user": registration,
            "verify_email": verification,
        }));
    }
    Ok(serde_json::Value::Array(shapes))
}
