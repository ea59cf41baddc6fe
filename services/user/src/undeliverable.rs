//! What email-service says about users' addresses: email.address_undeliverable (the address
//! is on its suppression list) and email.address_deliverable (an operator lifted it). Kept per
//! user with the address it was about, so GetUser shows it only while the account still has
//! that address: a change of address leaves it behind by itself.

use prost::Message;
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, Set};
use verimail_events::bus::{ConsumerSpec, Delivery, EMAIL_STREAM, HandlerError, StreamSettings};
use verimail_proto::events::v1::{AddressDeliverable, AddressUndeliverable, UndeliverableReason};
use verimail_proto::subjects;

/// The durable that reads email-service's events.
pub const DURABLE: &str = "user-service-undeliverable";

pub mod row {
    use sea_orm::entity::prelude::*;

    /// The user's address that email-service cannot deliver to, and why.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "undeliverable_addresses")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        pub email: String,
        /// hard_bounce, complaint, soft_bounces, rejected.
        pub reason: String,
        pub status: Option<String>,
        pub since: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum UndeliverableAddresses {
        Table,
        UserId,
        Email,
        Reason,
        Status,
        Since,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000005_create_undeliverable_addresses",
            tables: vec![
                Table::create()
                    .table(UndeliverableAddresses::Table)
                    .col(string(UndeliverableAddresses::UserId).primary_key())
                    .col(string(UndeliverableAddresses::Email))
                    .col(string_len(UndeliverableAddresses::Reason, 16))
                    .col(string_null(UndeliverableAddresses::Status))
                    .col(timestamp_with_time_zone(UndeliverableAddresses::Since))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![],
        }
    }
}

/// email.> on the EMAIL stream (both of email-service's events; nats-server 2.9 filters on one
/// subject).
pub fn consumer(streams: StreamSettings) -> ConsumerSpec {
    ConsumerSpec { streams, ..ConsumerSpec::new(EMAIL_STREAM, DURABLE, verimail_proto::streams::EMAIL_SUBJECTS) }
}

fn reason_text(reason: UndeliverableReason) -> &'static str {
    match reason {
        UndeliverableReason::HardBounce => "hard_bounce",
        UndeliverableReason::Complaint => "complaint",
        UndeliverableReason::SoftBounces => "soft_bounces",
        UndeliverableReason::Rejected => "rejected",
        UndeliverableReason::Unspecified => "unspecified",
    }
}

/// Records or clears what an event says, for a user who still has the address it names.
/// Idempotent; an event about a deleted user, or an address the user no longer has, changes
/// nothing.
pub async fn on_event(db: &DatabaseConnection, delivery: Delivery) -> Result<(), HandlerError> {
    let undecodable = |e: prost::DecodeError| HandlerError::Permanent(format!("undecodable {}: {e}", delivery.subject));
    match delivery.subject.as_str() {
        subjects::EMAIL_ADDRESS_UNDELIVERABLE => {
            let event = AddressUndeliverable::decode(delivery.payload.clone()).map_err(undecodable)?;
            let txn = verimail_events::db::begin_write(db).await?;
            let Some(user) = crate::store::find_by_id(&txn, &event.user_id).await? else { return Ok(()) };
            if user.email != event.email {
                return Ok(());
            }
            let since = chrono::DateTime::parse_from_rfc3339(&event.occurred_at)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| chrono::Utc::now());
            let recorded = row::ActiveModel {
                user_id: Set(event.user_id.clone()),
                email: Set(event.email.clone()),
                reason: Set(reason_text(event.reason()).to_owned()),
                status: Set((!event.status.is_empty()).then(|| event.status.clone())),
                since: Set(since),
            };
            row::Entity::delete_by_id(event.user_id.clone()).exec(&txn).await?;
            row::Entity::insert(recorded).exec_without_returning(&txn).await?;
            txn.commit().await?;
            tracing::info!(user_id = %event.user_id, reason = reason_text(event.reason()), "the user's address cannot receive mail");
        }
        subjects::EMAIL_ADDRESS_DELIVERABLE => {
            let event = AddressDeliverable::decode(delivery.payload.clone()).map_err(undecodable)?;
            let txn = verimail_events::db::begin_write(db).await?;
            row::Entity::delete_many()
                .filter(row::Column::UserId.eq(event.user_id.as_str()))
                .filter(row::Column::Email.eq(event.email.as_str()))
                .exec(&txn)
                .await?;
            txn.commit().await?;
        }
        _ => {}
    }
    Ok(())
}

/// What is recorded for these users, for the addresses they have now.
pub async fn of_users<C: ConnectionTrait>(
    conn: &C,
    users: &[(&str, &str)],
) -> Result<std::collections::HashMap<String, row::Model>, DbErr> {
    if users.is_empty() {
        return Ok(Default::default());
    }
    let rows = row::Entity::find().filter(row::Column::UserId.is_in(users.iter().map(|(id, _)| *id))).all(conn).await?;
    Ok(rows
        .into_iter()
        .filter(|row| users.iter().any(|(id, email)| *id == row.user_id && *email == row.email))
        .map(|row| (row.user_id.clone(), row))
        .collect())
}

/// Deletes what is recorded for these users (deleted accounts; an address moved away from).
pub async fn forget<C: ConnectionTrait>(conn: &C, user_ids: &[&str]) -> Result<(), DbErr> {
    row::Entity::delete_many().filter(row::Column::UserId.is_in(user_ids.iter().copied())).exec(conn).await?;
    Ok(())
}
