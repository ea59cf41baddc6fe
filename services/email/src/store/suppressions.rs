//! The `suppressions` table: the addresses nothing more is sent to, by their keyed hash, and
//! the ones an operator lifted.

use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseTransaction, QueryOrder, QuerySelect, TryInsertResult};

/// An address nothing is sent to, or was until an operator lifted it (`removed_at`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "suppressions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub address_hash: String,
    /// A UUIDv7 given at each suppression: the list's order (newest first) and cursor.
    pub id: String,
    /// The address; none once its user was deleted (the hash still suppresses it).
    pub address: Option<String>,
    /// The user of the delivery that suppressed it.
    pub user_id: String,
    /// hard_bounce, complaint, soft_bounces, rejected.
    pub reason: String,
    /// The reason of the bounce or refusal that decided it (userunknown, mailboxfull, …).
    pub bounce_reason: Option<String>,
    pub delivery_id: Option<String>,
    pub detail: Option<String>,
    pub created_at: DateTimeUtc,
    pub removed_at: Option<DateTimeUtc>,
    pub removed_reason: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The suppression in force for the address with this hash, if any.
pub async fn active<C: ConnectionTrait>(conn: &C, hash: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(hash.to_owned()).filter(Column::RemovedAt.is_null()).one(conn).await
}

/// Puts `row`'s address on the list, or back on it if it was lifted: whether it was not on
/// the list before. Safe when several bounces for the address are recorded at once
/// (PostgreSQL's read committed): the insert that loses the race changes nothing, and only a
/// lifted suppression is put back.
pub async fn put(txn: &DatabaseTransaction, row: Model) -> Result<bool, DbErr> {
    let hash = row.address_hash.clone();
    // A conflict shows as Conflicted, or (as on SQLite) as zero rows inserted.
    let inserted = Entity::insert(ActiveModel::from(row.clone())).on_conflict_do_nothing().exec_without_returning(txn);
    if let TryInsertResult::Inserted(1..) = inserted.await? {
        return Ok(true);
    }
    let restored = Entity::update_many()
        .col_expr(Column::Id, Expr::value(row.id))
        .col_expr(Column::Address, Expr::value(row.address))
        .col_expr(Column::UserId, Expr::value(row.user_id))
        .col_expr(Column::Reason, Expr::value(row.reason))
        .col_expr(Column::DeliveryId, Expr::value(row.delivery_id))
        .col_expr(Column::Detail, Expr::value(row.detail))
        .col_expr(Column::CreatedAt, Expr::value(row.created_at))
        .col_expr(Column::RemovedAt, Expr::value(None::<DateTimeUtc>))
        .col_expr(Column::RemovedReason, Expr::value(None::<String>))
        .filter(Column::AddressHash.eq(hash.as_str()))
        .filter(Column::RemovedAt.is_not_null())
        .exec(txn)
        .await?;
    Ok(restored.rows_affected == 1)
}

/// How many addresses are suppressed now.
pub async fn count_active<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    Entity::find().filter(Column::RemovedAt.is_null()).count(conn).await
}

/// Suppressions newest first, continuing after the one with id `after`, optionally only that
/// of the address with `hash`, or only those in force.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    hash: Option<&str>,
    active_only: bool,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    let mut query = Entity::find();
    if let Some(hash) = hash {
        query = query.filter(Column::AddressHash.eq(hash));
    }
    if active_only {
        query = query.filter(Column::RemovedAt.is_null());
    }
    if let Some(id) = after {
        query = query.filter(Column::Id.lt(id));
    }
    query.order_by_desc(Column::Id).limit(limit).all(conn).await
}

/// Lifts the suppression of the address with this hash, recording why: the row as it is now
/// (lifted), or none if none was in force.
pub async fn remove(txn: &DatabaseTransaction, hash: &str, why: &str) -> Result<Option<Model>, DbErr> {
    let Some(mut row) = active(txn, hash).await? else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    Entity::update_many()
        .col_expr(Column::RemovedAt, Expr::value(now))
        .col_expr(Column::RemovedReason, Expr::value(why.to_owned()))
        .filter(Column::AddressHash.eq(hash))
        .exec(txn)
        .await?;
    row.removed_at = Some(now);
    row.removed_reason = Some(why.to_owned());
    Ok(Some(row))
}

/// A deleted user's suppressions, and that of its address (`hash`, if any), keep the hash, the
/// reason and the times; the readable address and the detail (which may quote it) go.
pub async fn erase_user(txn: &DatabaseTransaction, user_id: &str, hash: Option<&str>) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Address, Expr::value(None::<String>))
        .col_expr(Column::Detail, Expr::value(None::<String>))
        .filter(verimail_events::erasure::held_by(Column::UserId, user_id, Column::AddressHash, hash))
        .exec(txn)
        .await?;
    Ok(())
}
