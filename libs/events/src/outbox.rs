//! The transactional outbox: an event row is written in the same transaction as the state
//! change it announces, and [`OutboxRelay`] publishes it to JetStream, waits for the publish
//! ack and only then marks it published. A crash between any two steps loses nothing; a
//! publish repeated after a crash is dropped by JetStream's de-duplication on `Nats-Msg-Id`.

use crate::backoff::Backoff;
use crate::bus;
use async_nats::jetstream;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::Instrument;
use verimail_server::shutdown::Shutdown;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// The event id, sent as `Nats-Msg-Id`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub subject: String,
        pub event_type: String,
        pub payload: Vec<u8>,
        pub created_at: DateTimeUtc,
        pub published_at: Option<DateTimeUtc>,
        pub attempts: i32,
        pub last_error: Option<String>,
        /// What the event is about (a user id): events of one aggregate go out in order.
        pub aggregate_id: Option<String>,
        /// The W3C `traceparent` of the work that wrote the event: its publish continues
        /// that trace.
        pub trace_context: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Outbox {
        Table,
        Id,
        Subject,
        EventType,
        Payload,
        CreatedAt,
        PublishedAt,
        Attempts,
        LastError,
        AggregateId,
        TraceContext,
    }

    /// Every service that publishes lists these migrations in its own migrator, first.
    pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(create()), Box::new(add_aggregate()), Box::new(add_trace_context())]
    }

    fn add_trace_context() -> crate::db::SchemaMigration {
        crate::db::SchemaMigration {
            name: "m20261124_000020_add_outbox_trace_context",
            tables: vec![],
            alters: vec![Table::alter().table(Outbox::Table).add_column(string_null(Outbox::TraceContext)).to_owned()],
            indexes: vec![],
        }
    }

    fn add_aggregate() -> crate::db::SchemaMigration {
        crate::db::SchemaMigration {
            name: "m20261124_000010_add_outbox_aggregate",
            tables: vec![],
            alters: vec![Table::alter().table(Outbox::Table).add_column(string_null(Outbox::AggregateId)).to_owned()],
            indexes: vec![],
        }
    }

    fn create() -> crate::db::SchemaMigration {
        crate::db::SchemaMigration {
            name: "m20261124_000000_create_outbox",
            tables: vec![
                Table::create()
                    .table(Outbox::Table)
                    .col(string(Outbox::Id).primary_key())
                    .col(string(Outbox::Subject))
                    .col(string(Outbox::EventType))
                    .col(blob(Outbox::Payload))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::PublishedAt))
                    .col(integer(Outbox::Attempts).default(0))
                    .col(text_null(Outbox::LastError))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("outbox_unpublished")
                    .table(Outbox::Table)
                    .col(Outbox::PublishedAt)
                    .col(Outbox::CreatedAt)
                    .to_owned(),
            ],
        }
    }
}

/// An event to publish, written with [`enqueue`].
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub aggregate_id: String,
    pub id: String,
    pub subject: &'static str,
    pub event_type: String,
    pub payload: Vec<u8>,
    /// The W3C `traceparent` of the work that caused the event: the span current when it was
    /// made, unless set otherwise.
    pub trace_context: Option<String>,
}

impl OutboxEvent {
    /// A protobuf event about `aggregate_id` (a user id); `event_type` is its full protobuf
    /// name.
    pub fn new<M: prost::Message + prost::Name>(
        id: String,
        aggregate_id: &str,
        subject: &'static str,
        message: &M,
    ) -> Self {
        OutboxEvent {
            id,
            aggregate_id: aggregate_id.to_owned(),
            subject,
            event_type: M::full_name(),
            payload: message.encode_to_vec(),
            trace_context: verimail_server::telemetry::current_traceparent(),
        }
    }

    /// An event of the contracts, about its user, on its subject.
    pub fn of<E: verimail_proto::Event>(event: &E) -> Self {
        OutboxEvent::new(event.event_id().to_owned(), event.user_id(), E::SUBJECT, event)
    }
}

/// The one way a service changes its state: a write transaction (from
/// [`crate::db::begin_write`]), the events that announce the change written in it, one commit,
/// and the relay woken so they go out at once. Dropped without [`Write::commit`], it rolls
/// back and announces nothing. It derefs to its transaction, for the store's functions.
pub struct Write<'r> {
    txn: DatabaseTransaction,
    events: Vec<OutboxEvent>,
    relay: &'r OutboxRelay,
}

impl std::ops::Deref for Write<'_> {
    type Target = DatabaseTransaction;
    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

impl Write<'_> {
    /// Announces `event` if the change commits.
    pub fn announce<E: verimail_proto::Event>(&mut self, event: &E) {
        self.events.push(OutboxEvent::of(event));
    }

    /// Announces these events if the change commits.
    pub fn announce_all(&mut self, events: impl IntoIterator<Item = OutboxEvent>) {
        self.events.extend(events);
    }

    /// Writes the events, commits, and wakes the relay if there were any.
    pub async fn commit(self) -> Result<(), DbErr> {
        let announced = !self.events.is_empty();
        enqueue_all(&self.txn, self.events).await?;
        self.txn.commit().await?;
        if announced {
            self.relay.wake();
        }
        Ok(())
    }
}

/// Writes the event row, on the transaction that makes the state change (from
/// [`crate::db::begin_write`], so on SQLite it is the file's one writer). Only a transaction is
/// taken: an event written through the pool would bypass the single writer, and could be
/// committed without the change it announces.
///
/// ```compile_fail
/// # async fn through_the_pool(db: sea_orm::DatabaseConnection, event: verimail_events::outbox::OutboxEvent) {
/// verimail_events::outbox::enqueue(&db, event).await; // refused: not a transaction
/// # }
/// ```
pub async fn enqueue(txn: &DatabaseTransaction, event: OutboxEvent) -> Result<(), DbErr> {
    enqueue_all(txn, vec![event]).await
}

/// Writes the event rows in one statement (none: nothing), on the transaction that makes the
/// state changes they announce.
pub async fn enqueue_all(txn: &DatabaseTransaction, events: Vec<OutboxEvent>) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let rows = events.into_iter().map(|event| entity::ActiveModel {
        id: Set(event.id),
        subject: Set(event.subject.to_owned()),
        event_type: Set(event.event_type),
        payload: Set(event.payload),
        created_at: Set(now),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        aggregate_id: Set(Some(event.aggregate_id)),
        trace_context: Set(event.trace_context),
    });
    entity::Entity::insert_many(rows).exec_without_returning(txn).await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed: {0}")]
    Db(#[from] DbErr),
    #[error("publish of event {id} to {subject} failed: {reason}")]
    Publish { id: String, subject: String, reason: String },
}

/// Publishes unpublished outbox rows, oldest first (published ones are deleted after their
/// retention by the service's retention sweep: `retention::outbox`).
#[derive(Clone)]
pub struct OutboxRelay {
    db: DatabaseConnection,
    js: jetstream::Context,
    wake: Arc<Notify>,
    batch: u64,
    idle_poll: Duration,
}

/// How long published rows are kept by default (for an operator looking back).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl OutboxRelay {
    pub fn new(db: DatabaseConnection, js: jetstream::Context) -> Self {
        OutboxRelay {
            db,
            js,
            wake: Arc::new(Notify::new()),
            batch: 256,
            // Rows are normally picked up at once through `wake`; polling covers rows written
            // by another instance and anything left by a crash.
            idle_poll: Duration::from_millis(500),
        }
    }

    /// Begins a change of the service's state whose events this relay publishes.
    pub async fn begin(&self) -> Result<Write<'_>, DbErr> {
        let txn = crate::db::begin_write(&self.db).await?;
        Ok(Write { txn, events: Vec::new(), relay: self })
    }

    /// Call after committing a transaction that enqueued events, so they go out at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes until `shutdown` (then publishes what is left), backing off while NATS or the
    /// database fails. The longest gap between two tries is 6.4 s, far
    /// inside the streams' duplicate window, so a retried publish is always de-duplicated.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(6400));
        let mut next_report = tokio::time::Instant::now();
        loop {
            let pause = match self.publish_pending().await {
                // Something went out: there may be more (a full batch, an aggregate's next event).
                Ok(count) if count > 0 => Duration::ZERO,
                Ok(_) => {
                    backoff.reset();
                    self.idle_poll
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "outbox relay failed");
                    delay
                }
            };
            if tokio::time::Instant::now() >= next_report {
                if let Err(e) = self.report_backlog().await {
                    tracing::debug!(error = %e, "cannot measure the outbox backlog");
                }
                next_report = tokio::time::Instant::now() + Duration::from_secs(1);
            }
            tokio::select! {
                _ = shutdown.wait() => return self.flush().await,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// On shutdown: publishes what is still unpublished, while publishing succeeds.
    async fn flush(&self) {
        loop {
            match self.publish_pending().await {
                Ok(0) => return tracing::info!("outbox flushed"),
                Ok(_) => {}
                Err(e) => return tracing::warn!(error = %e, "outbox not flushed; the next start publishes the rest"),
            }
        }
    }

    /// Sets `verimail_outbox_backlog` and `verimail_outbox_oldest_unsent_seconds`.
    async fn report_backlog(&self) -> Result<(), DbErr> {
        use sea_orm::QuerySelect;
        // One statement, so the two agree: a row written between two reads would show an age
        // beside an empty backlog.
        let (backlog, oldest): (i64, Option<chrono::DateTime<chrono::Utc>>) = entity::Entity::find()
            .select_only()
            .column_as(entity::Column::Id.count(), "backlog")
            .column_as(entity::Column::CreatedAt.min(), "oldest")
            .filter(entity::Column::PublishedAt.is_null())
            .into_tuple()
            .one(&self.db)
            .await?
            .unwrap_or((0, None));
        let age = crate::metrics::age_seconds(oldest);
        let metrics = crate::metrics::metrics();
        metrics.outbox_backlog.set(backlog);
        metrics.outbox_oldest_unsent_seconds.set(age);
        Ok(())
    }

    /// One pass over the oldest unpublished rows: publishes the first unpublished event of each
    /// aggregate (a later one waits for the next pass, so an aggregate's events reach the
    /// stream in order), many in flight at once, and marks every one whose publish JetStream
    /// acknowledged. Returns how many were published; an error names the first that was not.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let rows = entity::Entity::find()
            .filter(entity::Column::PublishedAt.is_null())
            .order_by_asc(entity::Column::CreatedAt)
            .order_by_asc(entity::Column::Id)
            .limit(self.batch)
            .all(&self.db)
            .await?;
        let mut aggregates = HashSet::new();
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|row| aggregates.insert(row.aggregate_id.clone().unwrap_or_else(|| row.id.clone())))
            .collect();
        // Send the whole batch, then collect the acks: one round trip of latency, not one per row.
        let mut pending_acks = Vec::with_capacity(rows.len());
        for row in &rows {
            // A producer span in the trace of the work that wrote the event; consumers continue it.
            let span = tracing::info_span!(
                "publish",
                otel.name = %format_args!("{} publish", row.subject),
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.message.id = %row.id,
                trace_id = tracing::field::Empty,
            );
            verimail_server::telemetry::continue_trace(&span, |field| match field {
                "traceparent" => row.trace_context.clone(),
                _ => None,
            });
            let mut headers = bus::event_headers(&row.id, &row.event_type);
            if let Some(user_id) = &row.aggregate_id {
                headers.insert(verimail_proto::headers::USER_ID, user_id.as_str());
            }
            for (field, value) in verimail_server::telemetry::carrier(&span) {
                headers.insert(field.as_str(), value.as_str());
            }
            let publish = self.js.publish_with_headers(row.subject.clone(), headers, row.payload.clone().into());
            pending_acks.push(publish.instrument(span).await);
        }
        let mut acked_ids = Vec::with_capacity(rows.len());
        // An erasure's own event names the address it erases: once published it is not kept.
        let mut erasures = Vec::new();
        let mut first_failure = None;
        for (row, sent) in rows.iter().zip(pending_acks) {
            let acked = match sent {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => {
                    acked_ids.push(row.id.clone());
                    if row.subject == verimail_proto::subjects::USERS_DELETED {
                        erasures.push(row.id.as_str());
                    }
                }
                Err(reason) => {
                    self.record_failure(&row.id, &reason).await?;
                    first_failure.get_or_insert(RelayError::Publish {
                        id: row.id.clone(),
                        subject: row.subject.clone(),
                        reason,
                    });
                }
            }
        }
        // One statement marks the whole acknowledged batch.
        if !acked_ids.is_empty() {
            entity::Entity::update_many()
                .col_expr(entity::Column::PublishedAt, Expr::value(chrono::Utc::now()))
                .col_expr(entity::Column::Attempts, Expr::col(entity::Column::Attempts).add(1))
                .filter(entity::Column::Id.is_in(acked_ids.iter().map(String::as_str)))
                .exec(&crate::db::writer(&self.db))
                .await?;
        }
        if !erasures.is_empty() {
            entity::Entity::delete_many()
                .filter(entity::Column::Id.is_in(erasures))
                .exec(&crate::db::writer(&self.db))
                .await?;
        }
        match first_failure {
            Some(error) => Err(error),
            None => Ok(acked_ids.len()),
        }
    }

    async fn record_failure(&self, id: &str, reason: &str) -> Result<(), DbErr> {
        entity::Entity::update_many()
            .col_expr(entity::Column::Attempts, Expr::col(entity::Column::Attempts).add(1))
            .col_expr(entity::Column::LastError, Expr::value(reason.to_owned()))
            .filter(entity::Column::Id.eq(id))
            .exec(&crate::db::writer(&self.db))
            .await?;
        Ok(())
    }
}
