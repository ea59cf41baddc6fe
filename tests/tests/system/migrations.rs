//! Deployments that migrate apart from the services: `--migrate-only` applies the schema and
//! exits, `--no-migrate` refuses to start on a database that still needs it, and instances
//! migrating one PostgreSQL database at once take turns.

use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::Duration;
use verimail_system_tests::procs::{printed, run_binary};

/// Runs a service binary with `args` and only `DATABASE_URL` (and a quiet log) set, for at
/// most 30 s: its exit status and what it printed.
async fn run(service: &str, args: &[&str], database_url: &str) -> (bool, String) {
    let env = [
        ("VERIMAIL_ENV", "development"),
        ("DATABASE_URL", database_url),
        ("RUST_LOG", "info,sqlx=warn"),
        // Nothing else is reachable: a service that went on to NATS would hang, not exit.
        ("NATS_URL", "nats://127.0.0.1:1"),
    ];
    let output = run_binary(service, args, env, Duration::from_secs(30)).await;
    (output.status.success(), printed(&output))
}

async fn applied(database_url: &str) -> i64 {
    let db = Database::connect(database_url).await.expect("open the database");
    let sql = "SELECT COUNT(*) FROM seaql_migrations";
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_only_applies_the_schema_and_no_migrate_refuses_a_database_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    for (service, file) in [("user-service", "user.db"), ("auth-service", "auth.db"), ("email-service", "email.db")] {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join(file).display());
        let (started, said) = run(service, &["--no-migrate"], &url).await;
        assert!(!started, "{service} --no-migrate on an empty database: {said}");
        assert!(said.contains("pending") && said.contains("--migrate-only"), "{service}: {said}");

        let (ok, said) = run(service, &["--migrate-only"], &url).await;
        assert!(ok, "{service} --migrate-only: {said}");
        assert!(said.contains("migrated; exiting"), "{said}");
        let count = applied(&url).await;
        assert!(count >= 2, "{service}: {count} migrations applied");
        // Again: nothing to do, same schema.
        assert!(run(service, &["--migrate-only"], &url).await.0);
        assert_eq!(applied(&url).await, count);

        let (ok, said) = run(service, &["--migrate-only", "--no-migrate"], &url).await;
        assert!(!ok && said.contains("at most one"), "{said}");
        let (ok, said) = run(service, &["--port", "1"], &url).await;
        assert!(!ok && said.contains("unknown argument \"--port\""), "{said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_each_service_migrate_one_postgresql_database_at_once() {
    for service in ["user-service", "auth-service", "email-service"] {
        let db = verimail_testkit::PostgresDb::create().await;
        let url = db.url();
        let (first, second) =
            tokio::join!(run(service, &["--migrate-only"], &url), run(service, &["--migrate-only"], &url));
        assert!(first.0 && second.0, "{service}:\n{}\n{}", first.1, second.1);
        let count = applied(&url).await;
        let (ok, said) = run(service, &["--migrate-only"], &url).await;
        assert!(ok, "{said}");
        assert_eq!(applied(&url).await, count, "{service}: each migration applied once");
    }
}
