//! The `bounces` table: every message that came back about a delivery, what it was judged to
//! be, and (until its user is deleted) what the remote server said.

use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseTransaction, QueryOrder, QuerySelect};
use std::collections::HashMap;

/// One inbound message about a delivery.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bounces")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub delivery_id: String,
    pub user_id: String,
    /// The keyed hash of the delivery's recipient (`erased:…`).
    pub address_hash: String,
    /// hard, soft, complaint, auto_reply, delivered, unrecognized.
    pub class: String,
    /// Why (the classifier's reason: userunknown, mailboxfull, …); none when unrecognized.
    pub reason: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// The recipient the report names, as it names it.
    pub reported_recipient: Option<String>,
    /// The text of an unrecognized message, for operators.
    pub text: Option<String>,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Records one message that came back, keeping the newest `kept` of its delivery: at the cap
/// the oldest goes (a delivery's history cannot grow without end however often anyone who has
/// its bounce address writes to it).
pub async fn insert(txn: &DatabaseTransaction, row: Model, kept: u64) -> Result<(), DbErr> {
    let held = Entity::find().filter(Column::DeliveryId.eq(&row.delivery_id)).count(txn).await?;
    if held >= kept {
        let oldest = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::DeliveryId.eq(&row.delivery_id))
            .order_by_asc(Column::Id)
            .limit(held + 1 - kept)
            .into_tuple::<String>()
            .all(txn)
            .await?;
        Entity::delete_many().filter(Column::Id.is_in(oldest)).exec(txn).await?;
    }
    Entity::insert(ActiveModel::from(row)).exec_without_returning(txn).await?;
    Ok(())
}

/// How many soft bounces came back for the address with this hash since `since`.
pub async fn soft_since<C: ConnectionTrait>(
    conn: &C,
    hash: &str,
    soft: &str,
    since: DateTimeUtc,
) -> Result<u64, DbErr> {
    Entity::find()
        .filter(Column::AddressHash.eq(hash))
        .filter(Column::Class.eq(soft))
        .filter(Column::ReceivedAt.gte(since))
        .count(conn)
        .await
}

/// The bounces of each of these deliveries, oldest first (their bounce histories).
pub async fn histories<C: ConnectionTrait>(
    conn: &C,
    delivery_ids: &[&str],
) -> Result<HashMap<String, Vec<Model>>, DbErr> {
    let mut histories = HashMap::<String, Vec<Model>>::new();
    if delivery_ids.is_empty() {
        return Ok(histories);
    }
    let rows = Entity::find()
        .filter(Column::DeliveryId.is_in(delivery_ids.iter().copied()))
        .order_by_asc(Column::Id)
        .all(conn)
        .await?;
    for row in rows {
        histories.entry(row.delivery_id.clone()).or_default().push(row);
    }
    Ok(histories)
}

/// A deleted user's bounces, and any about its address (`hash`, if any), keep their hash,
/// class and time; the remote servers' words go.
pub async fn erase_user(txn: &DatabaseTransaction, user_id: &str, hash: Option<&str>) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Diagnostic, Expr::value(None::<String>))
        .col_expr(Column::ReportedRecipient, Expr::value(None::<String>))
        .col_expr(Column::Text, Expr::value(None::<String>))
        .filter(verimail_events::erasure::held_by(Column::UserId, user_id, Column::AddressHash, hash))
        .exec(txn)
        .await?;
    Ok(())
}

/// Bounces go `keep` after they arrived (`DELIVERY_RETENTION_SECONDS`), those of no delivery
/// kept (a notice for a delivery already pruned) included. A suppression stays.
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("bounces", Column::Id, Column::ReceivedAt, keep, |cutoff, _| {
        sea_orm::Condition::all().add(Column::ReceivedAt.lt(cutoff))
    })
}
