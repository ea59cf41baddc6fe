//! The `webhook_deliveries` table: each event owed to each endpoint that wants it, sent in
//! order per user, retried on a schedule, parked at its end; and `webhook_attempts`, what each
//! attempt got back.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{QueryOrder, QuerySelect};

pub mod attempts {
    use sea_orm::entity::prelude::*;

    /// One attempt at a delivery.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_attempts")]
    pub struct Model {
        /// A UUIDv7: the attempts' order.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub delivery_id: String,
        pub at: DateTimeUtc,
        /// The HTTP status; 0 when there was no answer.
        pub http_status: i32,
        /// The start of the answer, or why there was none (bounded).
        pub answer: String,
        pub duration_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// `msg_` and a UUIDv7: the webhook-id header, the deliveries' order, and the cursor.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub endpoint_id: String,
    /// The event's id: one delivery per event and endpoint.
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    /// The JSON body, as signed.
    pub payload: String,
    pub status: Status,
    pub attempts: i32,
    /// When it may be tried next (while pending); a claim moves it on by a lease.
    pub next_attempt_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "delivered")]
    Delivered,
    #[sea_orm(string_value = "parked")]
    Parked,
}

/// Attempts kept per delivery: the newest.
pub const ATTEMPTS_KEPT: u64 = 20;

/// Records `rows` (one event for each endpoint that wants it); an event already recorded for
/// an endpoint stays as it is (the intake may see an event twice).
pub async fn owe<C: ConnectionTrait>(conn: &C, rows: Vec<Model>) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    Entity::insert_many(rows.into_iter().map(ActiveModel::from))
        .on_conflict_do_nothing_on([Column::EndpointId, Column::EventId])
        .exec_without_returning(conn)
        .await
        .map(drop)
}

/// Up to `limit` deliveries of `endpoint` due by `now`, each the oldest still pending for its
/// user there (a user's events go out in order: a later one waits while an earlier one is
/// pending). The oldest due ones are read in order, then each is checked for an earlier one
/// of its user, an index probe each: the database's planner has no say, so a backlog that grew
/// faster than its statistics costs no scans.
pub async fn due<C: ConnectionTrait>(
    conn: &C,
    endpoint: &str,
    now: DateTimeUtc,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let candidates = Entity::find()
        .filter(Column::EndpointId.eq(endpoint))
        .filter(Column::Status.eq(Status::Pending))
        .filter(Column::NextAttemptAt.lte(now))
        .order_by_asc(Column::Id)
        .limit(limit * 4)
        .all(conn)
        .await?;
    let mut due = Vec::new();
    let mut users = std::collections::HashSet::new();
    for row in candidates {
        if due.len() as u64 >= limit {
            break;
        }
        // A user already chosen (or found waiting) sends nothing more in this round.
        if !users.insert(row.user_id.clone()) {
            continue;
        }
        let earlier = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::EndpointId.eq(endpoint))
            .filter(Column::UserId.eq(&row.user_id))
            .filter(Column::Status.eq(Status::Pending))
            .filter(Column::Id.lt(&row.id))
            .into_tuple::<String>()
            .one(conn)
            .await?;
        if earlier.is_none() {
            due.push(row);
        }
    }
    Ok(due)
}

/// When the oldest delivery `endpoint` still owes was made, if it owes any.
pub async fn oldest_pending<C: ConnectionTrait>(conn: &C, endpoint: &str) -> Result<Option<DateTimeUtc>, DbErr> {
    Entity::find()
        .select_only()
        .column(Column::CreatedAt)
        .filter(Column::EndpointId.eq(endpoint))
        .filter(Column::Status.eq(Status::Pending))
        .order_by_asc(Column::Id)
        .into_tuple::<DateTimeUtc>()
        .one(conn)
        .await
}

/// Claims `row` for one attempt until `until` (another instance leaves it be meanwhile):
/// whether this caller got it.
pub async fn claim<C: ConnectionTrait>(conn: &C, row: &Model, until: DateTimeUtc) -> Result<bool, DbErr> {
    let claimed = Entity::update_many()
        .col_expr(Column::NextAttemptAt, Expr::value(until))
        .filter(Column::Id.eq(&row.id))
        .filter(Column::Status.eq(Status::Pending))
        .filter(Column::NextAttemptAt.eq(row.next_attempt_at))
        .exec(conn)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// What an attempt ended in: delivered, another attempt at `retry_at`, or parked (`None`).
pub async fn settle<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    attempt: attempts::Model,
    delivered: bool,
    retry_at: Option<DateTimeUtc>,
) -> Result<(), DbErr> {
    let (status, next) = match (delivered, retry_at) {
        (true, _) => (Status::Delivered, attempt.at),
        (false, Some(at)) => (Status::Pending, at),
        (false, None) => (Status::Parked, attempt.at),
    };
    let mut update = Entity::update_many()
        .col_expr(Column::Status, Expr::value(status))
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(Column::NextAttemptAt, Expr::value(next));
    if delivered {
        update = update.col_expr(Column::DeliveredAt, Expr::value(attempt.at));
    }
    update.filter(Column::Id.eq(id)).exec(conn).await?;
    let held = attempts::Entity::find().filter(attempts::Column::DeliveryId.eq(id)).count(conn).await?;
    if held >= ATTEMPTS_KEPT {
        let oldest = attempts::Entity::find()
            .select_only()
            .column(attempts::Column::Id)
            .filter(attempts::Column::DeliveryId.eq(id))
            .order_by_asc(attempts::Column::Id)
            .limit(held + 1 - ATTEMPTS_KEPT)
            .into_tuple::<String>()
            .all(conn)
            .await?;
        attempts::Entity::delete_many().filter(attempts::Column::Id.is_in(oldest)).exec(conn).await?;
    }
    attempts::Entity::insert(attempts::ActiveModel::from(attempt)).exec_without_returning(conn).await.map(drop)
}

/// A page of `endpoint`'s deliveries, newest first, after `cursor` (a delivery id), with
/// `status` if given; and the attempts of each, oldest first.
pub async fn page<C: ConnectionTrait>(
    conn: &C,
    endpoint: &str,
    status: Option<Status>,
    cursor: Option<&str>,
    size: u64,
) -> Result<Vec<(Model, Vec<attempts::Model>)>, DbErr> {
    let mut query = Entity::find().filter(Column::EndpointId.eq(endpoint));
    if let Some(status) = status {
        query = query.filter(Column::Status.eq(status));
    }
    if let Some(cursor) = cursor {
        query = query.filter(Column::Id.lt(cursor));
    }
    let rows = query.order_by_desc(Column::Id).limit(size).all(conn).await?;
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let mut tried = attempts::Entity::find()
        .filter(attempts::Column::DeliveryId.is_in(ids))
        .order_by_asc(attempts::Column::Id)
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (own, rest): (Vec<_>, Vec<_>) = tried.drain(..).partition(|a| a.delivery_id == row.id);
            tried = rest;
            (row, own)
        })
        .collect())
}

/// Forgets what the finished deliveries of a deleted user said (their bodies hold its
/// address); those still pending go out first, then are forgotten the same way.
pub async fn erase_finished<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Payload, Expr::value(""))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Status.is_in([Status::Delivered, Status::Parked]))
        .exec(conn)
        .await
        .map(drop)
}

/// Makes finished deliveries of `endpoint` pending again, due now, from the schedule's start:
/// `id`'s, or those created from `since` to `until`. Erased ones (a deleted user's) stay as
/// they are. How many.
pub async fn replay<C: ConnectionTrait>(
    conn: &C,
    endpoint: &str,
    id: Option<&str>,
    range: Option<(DateTimeUtc, DateTimeUtc)>,
    now: DateTimeUtc,
) -> Result<u64, DbErr> {
    let mut update = Entity::update_many()
        .col_expr(Column::Status, Expr::value(Status::Pending))
        .col_expr(Column::Attempts, Expr::value(0))
        .col_expr(Column::NextAttemptAt, Expr::value(now))
        .filter(Column::EndpointId.eq(endpoint))
        .filter(Column::Status.is_in([Status::Delivered, Status::Parked]))
        .filter(Column::Payload.ne(""));
    if let Some(id) = id {
        update = update.filter(Column::Id.eq(id));
    }
    if let Some((since, until)) = range {
        update = update.filter(Column::CreatedAt.gte(since)).filter(Column::CreatedAt.lte(until));
    }
    Ok(update.exec(conn).await?.rows_affected)
}

/// Removes an endpoint's deliveries and their attempts.
pub async fn delete_of_endpoint<C: ConnectionTrait>(conn: &C, endpoint: &str) -> Result<(), DbErr> {
    let ids = Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::EndpointId.eq(endpoint))
        .into_tuple::<String>()
        .all(conn)
        .await?;
    for chunk in ids.chunks(500) {
        attempts::Entity::delete_many().filter(attempts::Column::DeliveryId.is_in(chunk.to_vec())).exec(conn).await?;
    }
    Entity::delete_many().filter(Column::EndpointId.eq(endpoint)).exec(conn).await.map(drop)
}

/// Webhook deliveries that are over (delivered or parked) go `keep` after they were made
/// (`WEBHOOK_DELIVERY_RETENTION_SECONDS`), with their attempts; a parked one not replayed by
/// then goes too.
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("webhook_deliveries", Column::Id, Column::CreatedAt, keep, |cutoff, _| {
        sea_orm::Condition::all().add(Column::CreatedAt.lt(cutoff)).add(Column::Status.ne(Status::Pending))
    })
    .with_dependents(&[("webhook_attempts", "delivery_id")])
}
