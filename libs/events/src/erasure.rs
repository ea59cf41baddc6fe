//! What every service does when an account is deleted (users.deleted): it erases what it holds
//! of the user, keeps a tombstone (the user id, why and when: no address) so that an event of
//! the user that arrives later is dropped instead of bringing the address back, and removes
//! the user's parked messages from PARKED.

use crate::bus::{ConsumerSpec, Delivery, HandlerError, StreamSettings, USERS_STREAM};
use prost::Message;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseTransaction, QuerySelect};
use verimail_proto::events::v1::{DeletionReason, UserDeleted};
use verimail_proto::subjects;

/// The rows an erasure reaches: the user's (`user` is `user_id`), and any other user's that
/// hold the address the user had (`address` is `held`, when the event names one: another
/// account's change of address to it).
pub fn held_by<C: ColumnTrait>(user: C, user_id: &str, address: C, held: Option<&str>) -> sea_orm::Condition {
    let rows = sea_orm::Condition::any().add(user.eq(user_id));
    match held.filter(|held| !held.is_empty()) {
        Some(held) => rows.add(address.eq(held)),
        None => rows,
    }
}

pub mod tombstone {
    use sea_orm::entity::prelude::*;

    /// One row per deleted account: the id alone, never the address.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deleted_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// `expired` or `requested`.
        pub reason: String,
        pub deleted_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum DeletedUsers {
        Table,
        UserId,
        Reason,
        DeletedAt,
    }

    /// Every service lists it in its own migrator.
    pub fn migration() -> crate::db::SchemaMigration {
        crate::db::SchemaMigration {
            name: "m20261202_000100_create_deleted_users",
            tables: vec![
                Table::create()
                    .table(DeletedUsers::Table)
                    .col(string(DeletedUsers::UserId).primary_key())
                    .col(string_len(DeletedUsers::Reason, 16))
                    .col(timestamp_with_time_zone(DeletedUsers::DeletedAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![],
        }
    }
}

/// Why an account was deleted, as tombstones record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Expired,
    Requested,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::Requested => "requested",
        }
    }

    fn parse(text: &str) -> Reason {
        if text == "expired" { Reason::Expired } else { Reason::Requested }
    }

    pub fn to_proto(self) -> DeletionReason {
        match self {
            Reason::Expired => DeletionReason::Expired,
            Reason::Requested => DeletionReason::Requested,
        }
    }
}

/// Records that these users were deleted (a user already recorded keeps the first record).
pub async fn bury(txn: &DatabaseTransaction, user_ids: &[&str], reason: Reason) -> Result<(), DbErr> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let rows = user_ids.iter().map(|id| tombstone::ActiveModel {
        user_id: sea_orm::Set((*id).to_owned()),
        reason: sea_orm::Set(reason.as_str().to_owned()),
        deleted_at: sea_orm::Set(now),
    });
    tombstone::Entity::insert_many(rows).on_conflict_do_nothing().exec_without_returning(txn).await?;
    Ok(())
}

/// Which of these users were deleted, and why.
pub async fn buried<C: ConnectionTrait>(
    conn: &C,
    user_ids: &[&str],
) -> Result<std::collections::HashMap<String, Reason>, DbErr> {
    if user_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, String)> = tombstone::Entity::find()
        .select_only()
        .columns([tombstone::Column::UserId, tombstone::Column::Reason])
        .filter(tombstone::Column::UserId.is_in(user_ids.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|(id, reason)| (id, Reason::parse(&reason))).collect())
}

/// Deletes the outbox rows about these users (published or not): their payloads carry the
/// address. Written in the transaction that erases the rest.
pub async fn forget_events(txn: &DatabaseTransaction, user_ids: &[&str]) -> Result<u64, DbErr> {
    use crate::outbox::entity;
    let about = entity::Column::AggregateId.is_in(user_ids.iter().copied());
    Ok(entity::Entity::delete_many().filter(about).exec(txn).await?.rows_affected)
}

/// The durable consumer of users.deleted named `durable`.
pub fn consumer(durable: &'static str, streams: StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, ..ConsumerSpec::new(USERS_STREAM, durable, subjects::USERS_DELETED) }
}

/// The users.deleted a delivery carries; an undecodable one or one without a user is parked.
pub fn decode(delivery: &Delivery) -> Result<UserDeleted, HandlerError> {
    let event = UserDeleted::decode(delivery.payload.clone())
        .map_err(|e| HandlerError::Permanent(format!("undecodable UserDeleted: {e}")))?;
    if uuid::Uuid::parse_str(&event.user_id).is_err() {
        return Err(HandlerError::Permanent(format!("UserDeleted names no user: {:?}", event.user_id)));
    }
    Ok(event)
}

/// The reason a users.deleted gives (an unknown one counts as requested).
pub fn reason_of(event: &UserDeleted) -> Reason {
    match event.reason() {
        DeletionReason::Expired => Reason::Expired,
        _ => Reason::Requested,
    }
}

/// Removes the user's messages parked by `durables`; NATS unreachable is worth a retry.
pub async fn forget_parked(
    js: &async_nats::jetstream::Context,
    durables: &[&str],
    user_id: &str,
) -> Result<(), HandlerError> {
    let removed = crate::parking::forget_user(js, durables, user_id)
        .await
        .map_err(|e| HandlerError::Retry(format!("removing parked messages: {e}")))?;
    if removed > 0 {
        tracing::info!(%user_id, removed, "parked messages of a deleted user removed");
    }
    Ok(())
}
