//! What came back and what it decided: every inbound message about a delivery (`bounces`),
//! and the addresses nothing more is sent to (`suppressions`). Both name the address by its
//! keyed hash, which outlives the account; the readable address and the remote server's words
//! (which quote it) are erased with the user.

use crate::bounce::classify::{Class, Verdict};
use crate::store::{self, AddressKey, Status, delivery};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryOrder, QuerySelect, Set};
use verimail_events::outbox::OutboxEvent;
use verimail_proto::events::v1 as events;

pub mod bounce {
    use sea_orm::entity::prelude::*;

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
}

pub mod listed {
    use sea_orm::entity::prelude::*;

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
        pub delivery_id: Option<String>,
        pub detail: Option<String>,
        pub created_at: DateTimeUtc,
        pub removed_at: Option<DateTimeUtc>,
        pub removed_reason: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Bounces {
        Table,
        Id,
        DeliveryId,
        UserId,
        AddressHash,
        Class,
        Status,
        Diagnostic,
        ReportedRecipient,
        Text,
        ReceivedAt,
    }

    #[derive(DeriveIden)]
    enum Suppressions {
        Table,
        AddressHash,
        Id,
        Address,
        UserId,
        Reason,
        DeliveryId,
        Detail,
        CreatedAt,
        RemovedAt,
        RemovedReason,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000001_create_bounces_and_suppressions",
            tables: vec![
                Table::create()
                    .table(Bounces::Table)
                    .col(string(Bounces::Id).primary_key())
                    .col(string(Bounces::DeliveryId))
                    .col(string(Bounces::UserId))
                    .col(string(Bounces::AddressHash))
                    .col(string_len(Bounces::Class, 16))
                    .col(string_null(Bounces::Status))
                    .col(text_null(Bounces::Diagnostic))
                    .col(text_null(Bounces::ReportedRecipient))
                    .col(text_null(Bounces::Text))
                    .col(timestamp_with_time_zone(Bounces::ReceivedAt))
                    .to_owned(),
                Table::create()
                    .table(Suppressions::Table)
                    .col(string(Suppressions::AddressHash).primary_key())
                    .col(string(Suppressions::Id))
                    .col(string_null(Suppressions::Address))
                    .col(string(Suppressions::UserId))
                    .col(string_len(Suppressions::Reason, 16))
                    .col(string_null(Suppressions::DeliveryId))
                    .col(text_null(Suppressions::Detail))
                    .col(timestamp_with_time_zone(Suppressions::CreatedAt))
                    .col(timestamp_with_time_zone_null(Suppressions::RemovedAt))
                    .col(text_null(Suppressions::RemovedReason))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create().name("bounces_delivery").table(Bounces::Table).col(Bounces::DeliveryId).to_owned(),
                Index::create().name("bounces_user").table(Bounces::Table).col(Bounces::UserId).to_owned(),
                Index::create()
                    .name("bounces_address_time")
                    .table(Bounces::Table)
                    .col(Bounces::AddressHash)
                    .col(Bounces::ReceivedAt)
                    .to_owned(),
                Index::create()
                    .name("suppressions_id")
                    .table(Suppressions::Table)
                    .col(Suppressions::Id)
                    .unique()
                    .to_owned(),
                Index::create()
                    .name("suppressions_user")
                    .table(Suppressions::Table)
                    .col(Suppressions::UserId)
                    .to_owned(),
            ],
        }
    }
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    HardBounce,
    Complaint,
    SoftBounces,
    /// The recipient's server refused it at send time (550, 551, 553, 5.1.x).
    Rejected,
}

impl Reason {
    /// From what the list records.
    pub fn parse(text: &str) -> Option<Reason> {
        [Reason::HardBounce, Reason::Complaint, Reason::SoftBounces, Reason::Rejected]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    fn to_proto(self) -> events::UndeliverableReason {
        match self {
            Reason::HardBounce => events::UndeliverableReason::HardBounce,
            Reason::Complaint => events::UndeliverableReason::Complaint,
            Reason::SoftBounces => events::UndeliverableReason::SoftBounces,
            Reason::Rejected => events::UndeliverableReason::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::SoftBounces => "soft_bounces",
            Reason::Rejected => "rejected",
        }
    }
}

/// email.address_undeliverable: `user_id`'s address `email` cannot receive mail.
pub fn undeliverable_event(
    user_id: &str,
    email: &str,
    reason: Reason,
    status: Option<&str>,
    delivery_id: &str,
) -> OutboxEvent {
    OutboxEvent::of(&events::AddressUndeliverable {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        reason: reason.to_proto() as i32,
        status: status.unwrap_or_default().to_owned(),
        delivery_id: delivery_id.to_owned(),
        occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
    })
}

/// email.address_deliverable: an operator lifted the suppression of `user_id`'s `email`.
pub fn deliverable_event(user_id: &str, email: &str) -> OutboxEvent {
    OutboxEvent::of(&events::AddressDeliverable {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
    })
}

/// What the list and the bounces know an address by: its keyed hash, whatever its case.
pub fn address_hash(key: &AddressKey, address: &str) -> String {
    key.erased(&address.to_lowercase())
}

/// The suppression of `address`, if one is in force.
pub async fn active<C: ConnectionTrait>(
    conn: &C,
    key: &AddressKey,
    address: &str,
) -> Result<Option<listed::Model>, DbErr> {
    listed::Entity::find_by_id(address_hash(key, address)).filter(listed::Column::RemovedAt.is_null()).one(conn).await
}

/// Puts the address of `delivery` on the list (or back on it after a removal) and, when it was
/// not on it before, announces it in the same transaction (email.address_undeliverable, with
/// `status`, the enhanced code that decided it): whether it did, so the caller wakes the relay.
/// Safe when several bounces for the address are recorded at once (PostgreSQL's read
/// committed): the insert that loses the race changes nothing and announces nothing, and only
/// a lifted suppression is put back.
pub async fn suppress(
    txn: &DatabaseTransaction,
    key: &AddressKey,
    delivery: &delivery::Model,
    reason: Reason,
    status: Option<&str>,
    detail: Option<String>,
) -> Result<bool, DbErr> {
    let new = put_on_list(txn, key, delivery, reason, detail).await?;
    if new {
        let event = undeliverable_event(&delivery.user_id, &delivery.recipient, reason, status, &delivery.event_id);
        verimail_events::outbox::enqueue(txn, event).await?;
    }
    Ok(new)
}

/// The row of [`suppress`]: whether the address was not on the list before.
async fn put_on_list(
    txn: &DatabaseTransaction,
    key: &AddressKey,
    delivery: &delivery::Model,
    reason: Reason,
    detail: Option<String>,
) -> Result<bool, DbErr> {
    use sea_orm::TryInsertResult;
    use sea_orm::sea_query::Expr;
    let hash = address_hash(key, &delivery.recipient);
    let (id, now) = (uuid::Uuid::now_v7().to_string(), chrono::Utc::now());
    let row = listed::ActiveModel {
        address_hash: Set(hash.clone()),
        id: Set(id.clone()),
        address: Set(Some(delivery.recipient.clone())),
        user_id: Set(delivery.user_id.clone()),
        reason: Set(reason.as_str().to_owned()),
        delivery_id: Set(Some(delivery.event_id.clone())),
        detail: Set(detail.clone()),
        created_at: Set(now),
        removed_at: Set(None),
        removed_reason: Set(None),
    };
    // A conflict shows as Conflicted, or (as on SQLite) as zero rows inserted.
    if let TryInsertResult::Inserted(1..) =
        listed::Entity::insert(row).on_conflict_do_nothing().exec_without_returning(txn).await?
    {
        return Ok(true);
    }
    let restored = listed::Entity::update_many()
        .col_expr(listed::Column::Id, Expr::value(id))
        .col_expr(listed::Column::Address, Expr::value(Some(delivery.recipient.clone())))
        .col_expr(listed::Column::UserId, Expr::value(delivery.user_id.clone()))
        .col_expr(listed::Column::Reason, Expr::value(reason.as_str()))
        .col_expr(listed::Column::DeliveryId, Expr::value(Some(delivery.event_id.clone())))
        .col_expr(listed::Column::Detail, Expr::value(detail))
        .col_expr(listed::Column::CreatedAt, Expr::value(now))
        .col_expr(listed::Column::RemovedAt, Expr::value(None::<chrono::DateTime<chrono::Utc>>))
        .col_expr(listed::Column::RemovedReason, Expr::value(None::<String>))
        .filter(listed::Column::AddressHash.eq(hash.as_str()))
        .filter(listed::Column::RemovedAt.is_not_null())
        .exec(txn)
        .await?;
    Ok(restored.rows_affected == 1)
}

/// What one inbound message did to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Recorded; nothing else changes (auto-reply, delivered notice, unrecognized, a soft
    /// bounce under the limit, or an address already suppressed).
    Recorded,
    /// The address was put on the list now.
    Suppressed { delivery: Box<delivery::Model>, reason: Reason },
    /// No such delivery, or its user was deleted: nothing is kept.
    Ignored,
}

/// Soft bounces in a window that suppress (`BOUNCE_SOFT_LIMIT`, `BOUNCE_SOFT_WINDOW_SECONDS`).
#[derive(Debug, Clone, Copy)]
pub struct SoftLimit {
    pub count: u64,
    pub window: std::time::Duration,
}

/// Records `verdict` for the delivery `delivery_id` and does what it calls for: a hard bounce
/// or complaint marks the delivery and suppresses the address; a soft one counts, and
/// suppresses once there are `soft.count` in `soft.window`.
pub async fn record(
    txn: &DatabaseTransaction,
    key: &AddressKey,
    delivery_id: &str,
    verdict: &Verdict,
    soft: SoftLimit,
) -> Result<Effect, DbErr> {
    let Some(delivery) = store::get(txn, delivery_id).await? else {
        return Ok(Effect::Ignored);
    };
    if delivery.recipient.starts_with(store::ERASED) {
        return Ok(Effect::Ignored);
    }
    let now = chrono::Utc::now();
    let hash = address_hash(key, &delivery.recipient);
    bounce::Entity::insert(bounce::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        delivery_id: Set(delivery.event_id.clone()),
        user_id: Set(delivery.user_id.clone()),
        address_hash: Set(hash.clone()),
        class: Set(verdict.class.as_str().to_owned()),
        status: Set(verdict.status.clone()),
        diagnostic: Set(verdict.diagnostic.clone()),
        reported_recipient: Set(verdict.recipient.clone()),
        text: Set(verdict.text.clone()),
        received_at: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    let detail = [verdict.status.as_deref(), verdict.diagnostic.as_deref()].into_iter().flatten().collect::<Vec<_>>();
    let detail = (!detail.is_empty()).then(|| detail.join(" "));
    let reason = match verdict.class {
        Class::Hard => {
            store::finish(txn, &delivery.event_id, Status::Bounced, detail.clone()).await?;
            Reason::HardBounce
        }
        Class::Complaint => {
            store::finish(txn, &delivery.event_id, Status::Complained, detail.clone()).await?;
            Reason::Complaint
        }
        Class::Soft => {
            let since = now - chrono::Duration::from_std(soft.window).unwrap_or(chrono::Duration::MAX);
            let recent = bounce::Entity::find()
                .filter(bounce::Column::AddressHash.eq(hash.as_str()))
                .filter(bounce::Column::Class.eq(Class::Soft.as_str()))
                .filter(bounce::Column::ReceivedAt.gte(since))
                .count(txn)
                .await?;
            if recent < soft.count {
                return Ok(Effect::Recorded);
            }
            Reason::SoftBounces
        }
        Class::AutoReply | Class::Delivered | Class::Unrecognized => return Ok(Effect::Recorded),
    };
    Ok(match suppress(txn, key, &delivery, reason, verdict.status.as_deref(), detail).await? {
        true => Effect::Suppressed { delivery: Box::new(delivery), reason },
        false => Effect::Recorded,
    })
}

/// The bounces of each of these deliveries, oldest first (their bounce histories).
pub async fn histories<C: ConnectionTrait>(
    conn: &C,
    delivery_ids: &[&str],
) -> Result<std::collections::HashMap<String, Vec<bounce::Model>>, DbErr> {
    let mut histories = std::collections::HashMap::<String, Vec<bounce::Model>>::new();
    if delivery_ids.is_empty() {
        return Ok(histories);
    }
    let rows = bounce::Entity::find()
        .filter(bounce::Column::DeliveryId.is_in(delivery_ids.iter().copied()))
        .order_by_asc(bounce::Column::Id)
        .all(conn)
        .await?;
    for row in rows {
        histories.entry(row.delivery_id.clone()).or_default().push(row);
    }
    Ok(histories)
}

/// How many addresses are suppressed now.
pub async fn count_active<C: ConnectionTrait>(conn: &C) -> Result<u64, DbErr> {
    listed::Entity::find().filter(listed::Column::RemovedAt.is_null()).count(conn).await
}

/// Suppressions newest first, continuing after the one with id `after`, optionally only that
/// of the address with `hash`, or only those in force.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    hash: Option<&str>,
    active_only: bool,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<listed::Model>, DbErr> {
    let mut query = listed::Entity::find();
    if let Some(hash) = hash {
        query = query.filter(listed::Column::AddressHash.eq(hash));
    }
    if active_only {
        query = query.filter(listed::Column::RemovedAt.is_null());
    }
    if let Some(id) = after {
        query = query.filter(listed::Column::Id.lt(id));
    }
    query.order_by_desc(listed::Column::Id).limit(limit).all(conn).await
}

/// Lifts the suppression of the address with this hash, recording why: the row as it is now
/// (lifted), or none if none was in force.
pub async fn remove(txn: &DatabaseTransaction, hash: &str, why: &str) -> Result<Option<listed::Model>, DbErr> {
    let Some(mut row) =
        listed::Entity::find_by_id(hash.to_owned()).filter(listed::Column::RemovedAt.is_null()).one(txn).await?
    else {
        return Ok(None);
    };
    let now = chrono::Utc::now();
    listed::Entity::update_many()
        .col_expr(listed::Column::RemovedAt, sea_orm::sea_query::Expr::value(now))
        .col_expr(listed::Column::RemovedReason, sea_orm::sea_query::Expr::value(why.to_owned()))
        .filter(listed::Column::AddressHash.eq(hash))
        .exec(txn)
        .await?;
    row.removed_at = Some(now);
    row.removed_reason = Some(why.to_owned());
    Ok(Some(row))
}

/// A deleted user's trace here: the readable address of their suppressions and the remote
/// servers' words about their deliveries go; the hashes, classes and times stay.
pub async fn erase_user(txn: &DatabaseTransaction, user_id: &str) -> Result<(), DbErr> {
    use sea_orm::sea_query::Expr;
    bounce::Entity::update_many()
        .col_expr(bounce::Column::Diagnostic, Expr::value(None::<String>))
        .col_expr(bounce::Column::ReportedRecipient, Expr::value(None::<String>))
        .col_expr(bounce::Column::Text, Expr::value(None::<String>))
        .filter(bounce::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    listed::Entity::update_many()
        .col_expr(listed::Column::Address, Expr::value(None::<String>))
        .col_expr(listed::Column::Detail, Expr::value(None::<String>))
        .filter(listed::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}
