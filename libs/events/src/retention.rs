//! Retention: each table that grows with traffic keeps its rows for a configured time (the
//! `*_RETENTION_SECONDS` variables; docs/operating.md has the table), and a sweep deletes the
//! rows past it in bounded batches: a short read of at most [`BATCH`] keys, then one short
//! write transaction deleting them (and the rows of other tables that belong to them), so no
//! lock is held for long and the single SQLite writer is never kept from the service's own
//! work for more than a batch. Every instance sweeps; two deleting the same rows delete them
//! once (the second finds them gone). `verimail_retention_deleted_total{table}` counts the rows
//! deleted, `verimail_retention_oldest_seconds{table}` is the age of each table's oldest row.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use verimail_server::config::{ConfigError, Vars};
use verimail_server::shutdown::Shutdown;

/// Keys one batch deletes at most.
pub const BATCH: u64 = 500;
/// Batches of one table per pass: a backlog (a first sweep after an upgrade) drains over passes.
const MAX_BATCHES: usize = 40;

pub use sea_orm::prelude::DateTimeUtc;
pub type SweepFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'a>>;

/// A table's retention.
pub trait Retained: Send + Sync {
    /// The table's name (the metrics' label).
    fn table(&self) -> &'static str;
    /// How long its rows are kept.
    fn keep(&self) -> Duration;
    /// Deletes at most `limit` rows past their retention at `now`: how many.
    fn delete_past<'a>(&'a self, db: &'a DatabaseConnection, now: DateTimeUtc, limit: u64) -> SweepFuture<'a, u64>;
    /// When the oldest row was written (None for an empty table).
    fn oldest<'a>(&'a self, db: &'a DatabaseConnection) -> SweepFuture<'a, Option<DateTimeUtc>>;
}

/// The common case: rows of entity `E` (keyed by a text column) past `keep`, as `past` says of
/// the cutoff (`now - keep`), with the rows of `dependents` (table, column holding the key)
/// deleted in the same transaction.
pub struct Rule<E: EntityTrait> {
    pub table: &'static str,
    pub key: E::Column,
    /// The column whose smallest value is the oldest row's time.
    pub time: E::Column,
    pub keep: Duration,
    /// The rows past retention, given the cutoff (`now - keep`) and `now`.
    pub past: fn(DateTimeUtc, DateTimeUtc) -> Condition,
    pub dependents: &'static [(&'static str, &'static str)],
}

impl<E: EntityTrait> Rule<E> {
    /// `table`'s rows past `keep` as `past` says, keyed by `key`, the oldest by `time`.
    pub fn new(
        table: &'static str,
        key: E::Column,
        time: E::Column,
        keep: Duration,
        past: fn(DateTimeUtc, DateTimeUtc) -> Condition,
    ) -> Rule<E> {
        Rule { table, key, time, keep, past, dependents: &[] }
    }

    /// With the rows of other tables that belong to each (table, column holding the key).
    pub fn with_dependents(self, dependents: &'static [(&'static str, &'static str)]) -> Rule<E> {
        Rule { dependents, ..self }
    }
}

/// The outbox's retention: published rows go `keep` after they were published (never an
/// unpublished one).
pub fn outbox(keep: Duration) -> Rule<crate::outbox::entity::Entity> {
    use crate::outbox::entity::Column;
    Rule::new("outbox", Column::Id, Column::CreatedAt, keep, |cutoff, _| {
        Condition::all().add(Column::PublishedAt.lt(cutoff))
    })
}

/// Tombstones go `keep` after the deletion (`TOMBSTONE_RETENTION_SECONDS`): by then no event
/// of the user can arrive any more.
pub fn tombstones(keep: Duration) -> Rule<crate::erasure::tombstone::Entity> {
    use crate::erasure::tombstone::Column;
    Rule::new("deleted_users", Column::UserId, Column::DeletedAt, keep, |cutoff, _| {
        Condition::all().add(Column::DeletedAt.lt(cutoff))
    })
}

impl<E> Retained for Rule<E>
where
    E: EntityTrait,
    E::Model: Sync,
    E::Column: Send + Sync,
{
    fn table(&self) -> &'static str {
        self.table
    }

    fn keep(&self) -> Duration {
        self.keep
    }

    fn delete_past<'a>(&'a self, db: &'a DatabaseConnection, now: DateTimeUtc, limit: u64) -> SweepFuture<'a, u64> {
        Box::pin(async move {
            let Ok(keep) = chrono::Duration::from_std(self.keep) else { return Ok(0) };
            let keys: Vec<String> = E::find()
                .select_only()
                .column(self.key)
                .filter((self.past)(now - keep, now))
                .limit(limit)
                .into_tuple()
                .all(db)
                .await?;
            if keys.is_empty() {
                return Ok(0);
            }
            let txn = crate::db::writer(db).begin().await?;
            for (table, column) in self.dependents {
                let rows = Query::delete()
                    .from_table(Alias::new(*table))
                    .and_where(Expr::col(Alias::new(*column)).is_in(keys.iter().cloned()))
                    .to_owned();
                txn.execute(&rows).await?;
            }
            let deleted = E::delete_many().filter(self.key.is_in(keys)).exec(&txn).await?.rows_affected;
            txn.commit().await?;
            Ok(deleted)
        })
    }

    fn oldest<'a>(&'a self, db: &'a DatabaseConnection) -> SweepFuture<'a, Option<DateTimeUtc>> {
        Box::pin(async move {
            let oldest: Option<Option<DateTimeUtc>> =
                E::find().select_only().column_as(self.time.min(), "oldest").into_tuple().one(db).await?;
            Ok(oldest.flatten())
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

struct Metrics {
    deleted: Family<TableLabel, Counter>,
    oldest: Family<TableLabel, Gauge<f64, AtomicU64>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    deleted: verimail_server::metrics::register(
        "retention_deleted",
        "Rows the retention sweep deleted, per table",
        Family::default(),
    ),
    oldest: verimail_server::metrics::register(
        "retention_oldest_seconds",
        "Age of the oldest row of each table the retention sweep keeps bounded (0 when empty)",
        Family::default(),
    ),
});

/// One pass over every table: deletes what is past retention (at most [`MAX_BATCHES`] batches
/// a table) and sets the metrics. Returns the rows deleted per table.
pub async fn sweep(db: &DatabaseConnection, tables: &[Box<dyn Retained>]) -> Result<Vec<(&'static str, u64)>, DbErr> {
    let mut deleted = Vec::with_capacity(tables.len());
    for table in tables {
        let label = TableLabel { table: table.table().to_owned() };
        let mut total = 0;
        for _ in 0..MAX_BATCHES {
            let batch = table.delete_past(db, chrono::Utc::now(), BATCH).await?;
            total += batch;
            METRICS.deleted.get_or_create(&label).inc_by(batch);
            if batch < BATCH {
                break;
            }
        }
        let age = crate::metrics::age_seconds(table.oldest(db).await?);
        METRICS.oldest.get_or_create(&label).set(age);
        deleted.push((table.table(), total));
    }
    Ok(deleted)
}

/// How often the sweep runs: a tenth of the shortest retention, between a second and 5 minutes.
pub fn interval(tables: &[Box<dyn Retained>]) -> Duration {
    let shortest = tables.iter().map(|table| table.keep()).min().unwrap_or(Duration::from_secs(3000));
    (shortest / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// The default retention of tombstones, deliveries and the other records kept for a while
/// after their last use: 30 days.
pub const DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A retention that guards against duplicates (a tombstone, a delivery): in production, at
/// least as long as the event streams keep a message, so no event can come back (a parked one
/// replayed) after the record that recognises it is gone.
pub fn at_least_events(
    vars: &Vars,
    streams: &crate::bus::StreamSettings,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let keep = vars.seconds(name, default)?;
    if let Some(events) = streams.event_retention
        && vars.is_production()
        && keep < events
    {
        return Err(ConfigError::new(
            name,
            format!(
                "must be at least NATS_EVENT_RETENTION_SECONDS ({} s) in production: an event replayed after its record is gone would be acted on twice",
                events.as_secs()
            ),
        ));
    }
    Ok(keep)
}

/// What every service with a database keeps: its outbox's published events
/// (`OUTBOX_RETENTION_SECONDS`, 7 days) and its tombstones (`TOMBSTONE_RETENTION_SECONDS`, 30
/// days; at least the streams' retention in production).
#[derive(Debug, Clone, Copy)]
pub struct Common {
    pub outbox: Duration,
    pub tombstones: Duration,
}

impl Common {
    pub fn from_vars(vars: &Vars, streams: &crate::bus::StreamSettings) -> Result<Common, ConfigError> {
        Ok(Common {
            outbox: vars.seconds("OUTBOX_RETENTION_SECONDS", crate::outbox::DEFAULT_RETENTION)?,
            tombstones: at_least_events(vars, streams, "TOMBSTONE_RETENTION_SECONDS", DEFAULT)?,
        })
    }

    /// The outbox's and the tombstones' sweeps.
    pub fn tables(&self) -> Vec<Box<dyn Retained>> {
        vec![Box::new(outbox(self.outbox)), Box::new(tombstones(self.tombstones))]
    }
}

/// Sweeps `tables` until `shutdown`, as often as their shortest retention asks ([`interval`]);
/// a failed pass is tried again next time.
pub async fn run(db: DatabaseConnection, tables: Vec<Box<dyn Retained>>, shutdown: Shutdown) {
    let every = interval(&tables);
    loop {
        match sweep(&db, &tables).await {
            Ok(deleted) => {
                for (table, rows) in deleted.into_iter().filter(|(_, rows)| *rows > 0) {
                    tracing::info!(table, rows, "retention: deleted rows past their time");
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; trying again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
    }
}
