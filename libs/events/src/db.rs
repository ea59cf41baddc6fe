//! The service's own database: SQLite by default, PostgreSQL when DATABASE_URL says so.
//! Migrations run at start.

use crate::backoff::Backoff;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sea_orm_migration::prelude::{IndexCreateStatement, TableAlterStatement, TableCreateStatement};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use std::sync::Arc;
use std::time::Duration;
use verimail_server::config::{SecretUrl, Vars};

pub use verimail_server::cli::Migrations;

/// How long a statement waits for a pooled connection before the database counts as
/// unreachable.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled PostgreSQL connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

/// A service's database settings (their `Debug` hides the URL's password).
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// `DATABASE_URL`: a SQLite file by default, `postgres://…` for PostgreSQL.
    pub url: SecretUrl,
    /// `DATABASE_MAX_CONNECTIONS` (default 16, at least 2): the pool's size per instance. On
    /// PostgreSQL, instances × services × this must stay under the server's max_connections.
    pub max_connections: u32,
    /// From the command line: what to do about pending migrations.
    pub migrations: Migrations,
}

impl DbConfig {
    pub fn from_vars(vars: &Vars, default_file: &str) -> Result<DbConfig, verimail_server::config::ConfigError> {
        let max_connections = vars.parse("DATABASE_MAX_CONNECTIONS", 16u32)?;
        if max_connections < 2 {
            return Err(verimail_server::config::ConfigError::new(
                "DATABASE_MAX_CONNECTIONS",
                "must be at least 2 (migrating holds one connection for its lock)",
            ));
        }
        Ok(DbConfig {
            url: SecretUrl::new(database_url(vars, default_file)),
            max_connections,
            migrations: Migrations::Apply,
        })
    }

    /// These settings for `url`, migrating at start, with a small pool (tests, tools).
    pub fn url(url: impl Into<String>) -> DbConfig {
        DbConfig { url: SecretUrl::new(url), max_connections: 4, migrations: Migrations::Apply }
    }
}

/// `--migrate-only`: applies pending migrations to `DATABASE_URL` (with
/// `DATABASE_MAX_CONNECTIONS`, the only settings it reads) and returns, for the binary to exit.
pub async fn migrate_only<M: MigratorTrait>(vars: &Vars, default_file: &str) -> anyhow::Result<()> {
    let config = DbConfig::from_vars(vars, default_file)?;
    let db = connect_with::<M>(&config).await?;
    let applied = M::get_applied_migrations(&db).await?.len();
    tracing::info!(database = %config.url.shown(), applied, "migrated; exiting (--migrate-only)");
    db.close().await?;
    Ok(())
}

/// Connects to `url` with a small pool, applying pending migrations.
pub async fn connect<M: MigratorTrait>(url: &str) -> Result<DatabaseConnection, DbErr> {
    connect_with::<M>(&DbConfig::url(url)).await
}

/// Connects, creates the SQLite file's folder if needed, and treats pending migrations as
/// `migrations` says. While the database does not answer it waits and tries again (with capped
/// backoff) instead of failing the service's start; any other error (a bad URL, a failed
/// migration, pending migrations under `--no-migrate`) is final.
pub async fn connect_with<M: MigratorTrait>(config: &DbConfig) -> Result<DatabaseConnection, DbErr> {
    let (url, migrations) = (config.url.expose(), config.migrations);
    if let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    // A request waits at most 5 s for a connection: with the database unreachable it answers
    // UNAVAILABLE (safe to retry) well before a client's 10 s deadline cuts it off.
    options.max_connections(config.max_connections).acquire_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false);
    // sqlx pings a pooled connection on every checkout by default: on PostgreSQL a round trip
    // to the server before each statement, on SQLite two thread hand-offs to the connection's
    // worker (under load the hand-offs, not the statements, were most of a write's cost). A
    // SQLite file has no far end to lose; a PostgreSQL connection is checked only after it sat
    // idle long enough for a proxy or a restarted server to have dropped it. A hot connection
    // cut by a restart fails its one statement (UNAVAILABLE, retryable) and leaves the pool.
    if url.starts_with("sqlite:") {
        options.test_before_acquire(false);
    } else {
        options.test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
    }
    // For every SQLite connection of the pool: WAL lets readers run beside the one writer;
    // synchronous=NORMAL is durable against a crash of the process (not of the machine)
    // and saves an fsync per commit; the busy timeout queues writers instead of failing them.
    options.map_sqlx_sqlite_opts(|sqlite| {
        sqlite
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Reads through a memory map: a connection whose page cache another one's write
            // made stale re-reads without a system call per page.
            .pragma("mmap_size", "268435456")
    });
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let db = loop {
        match Database::connect(options.clone()).await {
            Ok(db) => break db,
            Err(DbErr::Conn(e)) => {
                let delay = backoff.next_delay();
                tracing::warn!(database = %verimail_server::config::redact_url(url), error = %e, retry_in = ?delay, "database is not reachable yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    };
    match migrations {
        Migrations::Apply => migrate::<M>(&db).await?,
        Migrations::Check => {
            let pending = M::get_pending_migrations(&db).await?;
            if !pending.is_empty() {
                let names: Vec<&str> = pending.iter().map(|m| m.name()).collect();
                return Err(DbErr::Custom(format!(
                    "--no-migrate, but {} migration(s) are pending ({}): run --migrate-only first",
                    names.len(),
                    names.join(", ")
                )));
            }
        }
    }
    open_sqlite_writer(&db).await?;
    Ok(db)
}

/// The PostgreSQL advisory lock that lets one instance migrate at a time ("verimail" in ASCII).
const MIGRATION_LOCK: i64 = 0x7665_7269_6d61_696c;

/// Applies pending migrations. On PostgreSQL, under a session advisory lock held on a
/// connection of its own, so instances starting together take turns: the first migrates, the
/// rest find nothing pending. (SQLite is one process's embedded database.)
async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return M::up(db, None).await;
    }
    let failed = |what: &str, e: sea_orm::sqlx::Error| DbErr::Custom(format!("migration lock: {what}: {e}"));
    let mut holder = db.get_postgres_connection_pool().acquire().await.map_err(|e| failed("no connection", e))?;
    let lock = |sql| sea_orm::sqlx::query(sql).bind(MIGRATION_LOCK);
    lock("SELECT pg_advisory_lock($1)").execute(&mut *holder).await.map_err(|e| failed("taking", e))?;
    let result = M::up(db, None).await;
    // Closing the connection would release it too; unlock so the pooled connection is clean.
    lock("SELECT pg_advisory_unlock($1)").execute(&mut *holder).await.map_err(|e| failed("releasing", e))?;
    result
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (path != ":memory:" && !path.is_empty()).then_some(path)
}

/// Begins a transaction that will write; every write of a service goes through here, or
/// through [`writer`] when it is a single statement.
///
/// On SQLite it runs on the database file's one writer connection (see [`connect_with`]), so
/// writers queue in the process and each takes over the moment the one before commits. SQLite
/// has one writer at a time anyway, but a writer that finds the lock taken polls for it with
/// sleeps of 1, 2, 5, 10 ms and more, and a connection that writes after another one must
/// first drop its page cache: under load most of the time went to both. It takes the write
/// lock at once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails
/// with SQLITE_BUSY_SNAPSHOT when another writer commits in between, which busy_timeout cannot
/// wait out. Elsewhere it is a plain transaction on the pool.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    writer(db)
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        })
        .await
}

/// Where a write of a single statement goes: on SQLite the file's one writer connection (see
/// [`begin_write`]), elsewhere the pool. Several statements that belong together take a
/// transaction from [`begin_write`] instead.
pub fn writer(db: &DatabaseConnection) -> DatabaseConnection {
    sqlite_writer(db).unwrap_or_else(|| db.clone())
}

type Writers = std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, DatabaseConnection>>;

/// The writer connection of each SQLite database file this process has opened.
static SQLITE_WRITERS: std::sync::LazyLock<Writers> = std::sync::LazyLock::new(Default::default);

/// The connect options of a SQLite pool, which name its file; None for other databases.
fn sqlite_options(db: &DatabaseConnection) -> Option<Arc<sea_orm::sqlx::sqlite::SqliteConnectOptions>> {
    (db.get_database_backend() == DbBackend::Sqlite).then(|| db.get_sqlite_connection_pool().connect_options())
}

fn sqlite_writer(db: &DatabaseConnection) -> Option<DatabaseConnection> {
    let options = sqlite_options(db)?;
    SQLITE_WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(options.get_filename()).cloned()
}

/// Opens the one connection that writes to this SQLite file (a pool of one, handed out first
/// come first served), with the same settings as the pool's.
async fn open_sqlite_writer(db: &DatabaseConnection) -> Result<(), DbErr> {
    let Some(options) = sqlite_options(db) else { return Ok(()) };
    let file = options.get_filename().to_owned();
    let options = (*options).clone();
    let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
    let writer = sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    SQLITE_WRITERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(file, writer);
    Ok(())
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

/// The answer to a caller whose request failed on `database` ("user", "auth", "email"):
/// UNAVAILABLE (retry later) when the database could not be reached ([`is_unavailable`]),
/// INTERNAL for a statement's own failure, which a retry would not mend. Logged either way.
pub fn status_of(database: &str, err: &DbErr) -> tonic::Status {
    if is_unavailable(err) {
        tracing::error!(error = %err, database, "database unavailable");
        tonic::Status::unavailable(format!("the {database} database is unavailable; retry later"))
    } else {
        tracing::error!(error = %err, database, "database error");
        tonic::Status::internal("internal error")
    }
}

/// Whether `err` means the database could not be reached (no connection, a connection cut,
/// the pool closed or out of connections): worth retrying later, UNAVAILABLE to a caller;
/// anything else is the statement's own failure.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)) => matches!(
            **e,
            Sqlx::Io(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed
                | Sqlx::Tls(_)
                | Sqlx::Protocol(_)
        ),
        _ => false,
    }
}

/// True when the error is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// This service's database, `DATABASE_URL`, defaulting to a SQLite file under `data/`.
pub fn database_url(vars: &Vars, default_file: &str) -> String {
    vars.var("DATABASE_URL").unwrap_or_else(|| format!("sqlite://data/{default_file}?mode=rwc"))
}

#[cfg(test)]
mod tests {
    use super::{Migrations, SchemaMigration, sqlite_path};
    use sea_orm_migration::{MigrationTrait, MigratorTrait};

    fn with(url: &str, migrations: Migrations) -> super::DbConfig {
        super::DbConfig { migrations, ..super::DbConfig::url(url) }
    }

    /// Ten tables, each with an index: enough DDL for racing instances to collide.
    struct TenTables;

    impl MigratorTrait for TenTables {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            use sea_orm_migration::prelude::*;
            let names = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"];
            names
                .into_iter()
                .enumerate()
                .map(|(n, name)| {
                    let table = Alias::new(format!("t{n}"));
                    Box::new(SchemaMigration {
                        name,
                        tables: vec![
                            Table::create()
                                .table(table.clone())
                                .col(ColumnDef::new(Alias::new("id")).string().primary_key())
                                .col(ColumnDef::new(Alias::new("v")).string())
                                .to_owned(),
                        ],
                        alters: vec![],
                        indexes: vec![
                            Index::create().name(format!("t{n}_v")).table(table).col(Alias::new("v")).to_owned(),
                        ],
                    }) as Box<dyn MigrationTrait>
                })
                .collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_on_postgresql_migrate_once_each_and_all_start() {
        let db = verimail_testkit::PostgresDb::create().await;
        let url = db.url();
        let starts: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { super::connect::<TenTables>(&url).await.map(drop) })
            })
            .collect();
        for start in starts {
            start.await.unwrap().expect("every instance starts");
        }
        let conn = super::connect_with::<TenTables>(&with(&url, Migrations::Check)).await.expect("nothing pending");
        assert_eq!(TenTables::get_applied_migrations(&conn).await.unwrap().len(), 10);
        drop(conn);
    }

    #[tokio::test]
    async fn no_migrate_refuses_a_database_with_pending_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        let refused = super::connect_with::<TenTables>(&with(&url, Migrations::Check)).await.unwrap_err();
        assert!(refused.to_string().contains("10 migration(s) are pending"), "{refused}");
        super::connect_with::<TenTables>(&with(&url, Migrations::Apply)).await.expect("migrates");
        super::connect_with::<TenTables>(&with(&url, Migrations::Check)).await.expect("nothing pending now");
    }

    #[test]
    fn finds_the_sqlite_file_in_a_url() {
        assert_eq!(sqlite_path("sqlite://data/user.db?mode=rwc"), Some("data/user.db"));
        assert_eq!(sqlite_path("sqlite:/tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://postgres@127.0.0.1/verimail"), None);
    }

    #[test]
    fn logs_never_show_a_password() {
        assert_eq!(
            verimail_server::config::redact_url("postgres://app:s3cret@db:5432/user"),
            "postgres://app:***@db:5432/user"
        );
        assert_eq!(
            verimail_server::config::redact_url("postgres://postgres@127.0.0.1/verimail"),
            "postgres://postgres@127.0.0.1/verimail"
        );
        assert_eq!(
            verimail_server::config::redact_url("sqlite://data/user.db?mode=rwc"),
            "sqlite://data/user.db?mode=rwc"
        );
    }
}
