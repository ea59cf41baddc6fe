//! The service's own database: SQLite by default, PostgreSQL when DATABASE_URL says so.
//! Migrations run at start.

use crate::backoff::Backoff;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::prelude::{IndexCreateStatement, TableAlterStatement, TableCreateStatement};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use std::time::Duration;

/// Connects, creates the SQLite file's folder if needed, and applies every pending migration.
/// While the database does not answer it waits and tries again (with capped backoff) instead
/// of failing the service's start; any other error (a bad URL, a failed migration) is final.
pub async fn connect<M: MigratorTrait>(url: &str) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(16).connect_timeout(Duration::from_secs(10)).sqlx_logging(false);
    // For every SQLite connection of the pool: WAL lets readers run beside the one writer;
    // synchronous=NORMAL is durable against a crash of the process (not of the machine)
    // and saves an fsync per commit; the busy timeout queues writers instead of failing them.
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
    });
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let db = loop {
        match Database::connect(options.clone()).await {
            Ok(db) => break db,
            Err(DbErr::Conn(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(database = %redacted(url), error = %e, retry_in = ?delay, "database is not reachable yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    };
    M::up(&db, None).await?;
    Ok(db)
}

/// The URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (path != ":memory:" && !path.is_empty()).then_some(path)
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
/// SQLITE_BUSY_SNAPSHOT when another writer commits in between, which busy_timeout cannot
/// wait out. Elsewhere it is a plain transaction.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// A migration that creates tables (if they are not there yet), alters tables, and creates
/// indexes (if not there yet), in that order: the shape of every migration so far.
pub struct SchemaMigration {
    pub name: &'static str,
    pub tables: Vec<TableCreateStatement>,
    pub alters: Vec<TableAlterStatement>,
    pub indexes: Vec<IndexCreateStatement>,
}

impl MigrationName for SchemaMigration {
    fn name(&self) -> &str {
        self.name
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for SchemaMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in &self.tables {
            manager.create_table(table.clone().if_not_exists().to_owned()).await?;
        }
        for alter in &self.alters {
            manager.alter_table(alter.clone()).await?;
        }
        for index in &self.indexes {
            manager.create_index(index.clone().if_not_exists().to_owned()).await?;
        }
        Ok(())
    }
}

/// True when the error is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn finds_the_sqlite_file_in_a_url() {
        assert_eq!(sqlite_path("sqlite://data/user.db?mode=rwc"), Some("data/user.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://postgres@127.0.0.1/verimail"), None);
    }

    #[test]
    fn logs_never_show_a_password() {
        use super::redacted;
        assert_eq!(redacted("postgres://app:s3cret@db:5432/user"), "postgres://app:***@db:5432/user");
        assert_eq!(redacted("postgres://postgres@127.0.0.1/verimail"), "postgres://postgres@127.0.0.1/verimail");
        assert_eq!(redacted("sqlite://data/user.db?mode=rwc"), "sqlite://data/user.db?mode=rwc");
    }
}
