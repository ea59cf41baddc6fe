//! The `deliveries` table: one row per email asked for (by an event, a retry or an operator's
//! test), with how its attempts went.

use crate::address_key::{AddressKey, HASHED};
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::ExprTrait;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    /// The id of the event that asked for the email: one email per event.
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub user_id: String,
    pub recipient: String,
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
    /// The instance (`EMAIL_INSTANCE_ID`) that made the last attempt.
    pub handled_by: Option<String>,
    /// The language the event asked for (the email is written in the nearest one we have);
    /// none for the default.
    pub locale: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum DeliveryStatus {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "sent")]
    Sent,
    #[sea_orm(string_value = "sending")]
    Sending,
    #[sea_orm(string_value = "retrying")]
    Retrying,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "parked")]
    Parked,
    /// A hard bounce came back for it.
    #[sea_orm(string_value = "bounced")]
    Bounced,
    /// The recipient reported it as spam.
    #[sea_orm(string_value = "complained")]
    Complained,
    /// Not sent: the address is on the suppression list.
    #[sea_orm(string_value = "suppressed")]
    Suppressed,
}

/// Replaces the address of every delivery of the user with its keyed hash (and drops the
/// error text, which may quote it): how many it changed.
pub async fn erase_user(
    txn: &sea_orm::DatabaseTransaction,
    user_id: &str,
    email: &str,
    key: &AddressKey,
) -> Result<u64, DbErr> {
    let holders = verimail_events::erasure::held_by(Column::UserId, user_id, Column::Recipient, Some(email));
    let held = Entity::find().filter(holders).filter(Column::Recipient.not_like(format!("{HASHED}%"))).all(txn).await?;
    for row in &held {
        Entity::update_many()
            .col_expr(Column::Recipient, Expr::value(key.hash(&row.recipient)))
            .col_expr(Column::LastError, Expr::value(None::<String>))
            .col_expr(Column::Locale, Expr::value(None::<String>))
            .filter(Column::EventId.eq(row.event_id.as_str()))
            .exec(txn)
            .await?;
    }
    Ok(held.len() as u64)
}

/// The delivery for this event, created as pending on first sight, with one more attempt
/// counted. Safe against two instances seeing the same event at once.
pub async fn start_attempt<C: ConnectionTrait>(
    conn: &C,
    event_id: &str,
    user_id: &str,
    recipient: &str,
    kind: &str,
    locale: &str,
    instance: &str,
) -> Result<Model, DbErr> {
    let now = chrono::Utc::now();
    Entity::insert(ActiveModel {
        event_id: sea_orm::Set(event_id.to_owned()),
        user_id: sea_orm::Set(user_id.to_owned()),
        recipient: sea_orm::Set(recipient.to_owned()),
        kind: sea_orm::Set(kind.to_owned()),
        status: sea_orm::Set(DeliveryStatus::Pending),
        attempts: sea_orm::Set(0),
        last_error: sea_orm::Set(None),
        created_at: sea_orm::Set(now),
        updated_at: sea_orm::Set(now),
        sent_at: sea_orm::Set(None),
        handled_by: sea_orm::Set(Some(instance.to_owned())),
        locale: sea_orm::Set(Some(locale.to_owned()).filter(|l| !l.is_empty())),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(conn)
    .await?;
    Entity::update_many()
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(Column::HandledBy, Expr::value(instance.to_owned()))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::EventId.eq(event_id))
        .filter(Column::Status.ne(DeliveryStatus::Sent))
        .exec(conn)
        .await?;
    Entity::find_by_id(event_id.to_owned())
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("delivery {event_id}")))
}

/// The user's latest delivery whose address is still there (not erased).
pub async fn latest_for_user<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<Option<Model>, DbErr> {
    use sea_orm::QueryOrder;
    Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Recipient.not_like(format!("{HASHED}%")))
        .order_by_desc(Column::CreatedAt)
        .one(conn)
        .await
}

pub async fn finish<C: ConnectionTrait>(
    conn: &C,
    event_id: &str,
    status: DeliveryStatus,
    error: Option<String>,
) -> Result<(), DbErr> {
    let now = chrono::Utc::now();
    let mut update = Entity::update_many()
        .col_expr(Column::Status, Expr::value(status))
        .col_expr(Column::LastError, Expr::value(error))
        .col_expr(Column::UpdatedAt, Expr::value(now));
    if status == DeliveryStatus::Sent {
        update = update.col_expr(Column::SentAt, Expr::value(now));
    }
    // A bounce or complaint can come back before the attempt records its end (a fast relay,
    // a slow database): what the recipient's side said stands.
    update
        .filter(Column::EventId.eq(event_id))
        .filter(Column::Status.is_not_in([DeliveryStatus::Bounced, DeliveryStatus::Complained]))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn set_status<C: ConnectionTrait>(conn: &C, event_id: &str, status: DeliveryStatus) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Status, Expr::value(status))
        .col_expr(Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::EventId.eq(event_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// ListDeliveries' filters.
#[derive(Debug, Default)]
pub struct Filters {
    pub user_id: Option<String>,
    /// The address, and the forms it may be stored in (erased: its keyed hash).
    pub recipient: Option<Vec<String>>,
    pub status: Option<DeliveryStatus>,
}

/// Deliveries newest first (by event id: UUIDv7, so creation order), continuing after the
/// event id `after`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filters: &Filters,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut query = Entity::find();
    if let Some(user_id) = &filters.user_id {
        query = query.filter(Column::UserId.eq(user_id.as_str()));
    }
    if let Some(forms) = &filters.recipient {
        query = query.filter(Column::Recipient.is_in(forms.iter().map(String::as_str)));
    }
    if let Some(status) = filters.status {
        query = query.filter(Column::Status.eq(status));
    }
    if let Some(event_id) = after {
        query = query.filter(Column::EventId.lt(event_id));
    }
    query.order_by_desc(Column::EventId).limit(limit).all(conn).await
}

pub async fn get<C: ConnectionTrait>(conn: &C, event_id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(event_id.to_owned()).one(conn).await
}

/// What a retry found.
pub enum Claim {
    NotFound,
    /// Not failed or parked: the status it has.
    NotRetryable(DeliveryStatus),
    /// Claimed for one more attempt (now pending, its attempts counted); the row as it was.
    Claimed(Box<Model>),
}

/// Claims a failed or parked delivery for one more attempt. Of two retries at once, one wins.
pub async fn claim_retry<C: ConnectionTrait>(conn: &C, event_id: &str, instance: &str) -> Result<Claim, DbErr> {
    let Some(before) = get(conn, event_id).await? else {
        return Ok(Claim::NotFound);
    };
    if !matches!(before.status, DeliveryStatus::Failed | DeliveryStatus::Parked) {
        return Ok(Claim::NotRetryable(before.status));
    }
    let claimed = Entity::update_many()
        .col_expr(Column::Status, Expr::value(DeliveryStatus::Pending))
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .col_expr(Column::HandledBy, Expr::value(instance.to_owned()))
        .col_expr(Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::EventId.eq(event_id))
        .filter(Column::Status.eq(before.status))
        .exec(conn)
        .await?;
    if claimed.rows_affected == 0 {
        let now = get(conn, event_id).await?.map(|row| row.status).unwrap_or(before.status);
        return Ok(Claim::NotRetryable(now));
    }
    Ok(Claim::Claimed(Box::new(before)))
}

/// Deliveries that are over (sent, failed, bounced…: not pending, sending or retrying) go
/// `keep` after their last change (`DELIVERY_RETENTION_SECONDS`), with their bounces. Until
/// then a redelivered event finds its delivery and is not sent twice.
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("deliveries", Column::EventId, Column::CreatedAt, keep, |cutoff, _| {
        let live = [DeliveryStatus::Pending, DeliveryStatus::Sending, DeliveryStatus::Retrying];
        sea_orm::Condition::all().add(Column::UpdatedAt.lt(cutoff)).add(Column::Status.is_not_in(live))
    })
    .with_dependents(&[("bounces", "delivery_id")])
}
