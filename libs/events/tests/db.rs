//! The database connection against the machine's real PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use sea_orm::EntityTrait;
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use std::time::Duration;
use verimail_events::outbox::{self, entity};
use verimail_testkit::{PostgresDb, TcpDoor};

struct OutboxOnly;

impl MigratorTrait for OutboxOnly {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        outbox::migration::migrations()
    }
}

#[tokio::test]
async fn connect_waits_for_postgresql_and_migrates_once_it_answers() {
    let database = PostgresDb::create().await;
    let door = TcpDoor::open(database.server_addr());
    door.set_open(false);
    let url = database.url_through(door.port());
    let connecting = tokio::spawn(async move { verimail_events::db::connect::<OutboxOnly>(&url).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!connecting.is_finished(), "it waits while the database does not answer");
    door.set_open(true);
    let db = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .expect("connected within 15 s of the database answering")
        .unwrap()
        .expect("connected and migrated");
    assert_eq!(db.get_database_backend(), sea_orm::DbBackend::Postgres);
    assert!(entity::Entity::find().all(&db).await.unwrap().is_empty(), "the outbox table exists");
    // Migrations are idempotent: a second start (or a second instance) applies nothing new.
    verimail_events::db::connect::<OutboxOnly>(&database.url()).await.expect("connect again");
}
