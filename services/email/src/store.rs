//! email-service's own table: one delivery per event that asked for an email.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::ExprTrait;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub mod delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "deliveries")]
    pub struct Model {
        /// The id of the event that asked for the email: one email per event.
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: String,
        pub user_id: String,
        pub recipient: String,
        pub kind: String,
        pub status: super::Status,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
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

mod create_deliveries {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        EventId,
        UserId,
        Recipient,
        Kind,
        Status,
        Attempts,
        LastError,
        CreatedAt,
        UpdatedAt,
        SentAt,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261124_000001_create_deliveries",
            tables: vec![
                Table::create()
                    .table(Deliveries::Table)
                    .col(string(Deliveries::EventId).primary_key())
                    .col(string(Deliveries::UserId))
                    .col(string(Deliveries::Recipient))
                    .col(string(Deliveries::Kind))
                    .col(string_len(Deliveries::Status, 16))
                    .col(integer(Deliveries::Attempts).default(0))
                    .col(text_null(Deliveries::LastError))
                    .col(timestamp_with_time_zone(Deliveries::CreatedAt))
                    .col(timestamp_with_time_zone(Deliveries::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Deliveries::SentAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create().name("deliveries_user").table(Deliveries::Table).col(Deliveries::UserId).to_owned(),
            ],
        }
    }
}

mod add_handled_by {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        HandledBy,
    }

    /// Which email-service instance made the last attempt, for operators running several.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261124_000002_add_deliveries_handled_by",
            tables: vec![],
            alters: vec![
                Table::alter().table(Deliveries::Table).add_column(string_null(Deliveries::HandledBy)).to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod add_locale {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        Locale,
    }

    /// The language each email was asked for in, so that a retry by hand writes it the same.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000005_add_deliveries_locale",
            tables: vec![],
            alters: vec![
                Table::alter().table(Deliveries::Table).add_column(string_null(Deliveries::Locale)).to_owned(),
            ],
            indexes: vec![],
        }
    }
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![
            Box::new(create_deliveries::migration()),
            Box::new(add_handled_by::migration()),
            Box::new(verimail_events::erasure::migration::migration()),
            Box::new(crate::suppression::migration::migration()),
        ];
        // The outbox came with email-service's own events (email.address_undeliverable): last,
        // so that databases from before take it as one more migration.
        migrations.extend(verimail_events::outbox::migration::migrations());
        migrations.push(Box::new(add_locale::migration()));
        migrations
    }
}

/// How the recipient of a deleted user's delivery begins: what follows is its keyed hash.
pub const ERASED: &str = "erased:";

/// The key of the hash that replaces a deleted user's address (`DELIVERY_HASH_KEY`): operators
/// can still tell whether mail went to an address they are asked about (ListDeliveries
/// filters by it), nobody can read the address back.
#[derive(Clone)]
pub struct AddressKey([u8; 32]);

impl std::fmt::Debug for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressKey(***)")
    }
}

type AddressMac = blake2::Blake2bMac<blake2::digest::consts::U32>;

impl AddressKey {
    /// From a secret of any length (at least 32 characters, checked by the configuration).
    pub fn from_secret(secret: &str) -> AddressKey {
        use blake2::Digest;
        let mut digest = blake2::Blake2b::<blake2::digest::consts::U32>::new();
        digest.update(b"verimail/delivery-address-key/v1\0");
        digest.update(secret.as_bytes());
        AddressKey(digest.finalize().into())
    }

    /// The key, for the keys derived from it (the bounce address tags').
    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key of this process alone (development without `DELIVERY_HASH_KEY`).
    pub fn random() -> AddressKey {
        AddressKey(rand::random())
    }

    /// `erased:` and the hex of the address's keyed BLAKE2b.
    #[allow(clippy::expect_used, reason = "BLAKE2b takes keys of up to 64 bytes, and ours are 32")]
    pub fn erased(&self, address: &str) -> String {
        use blake2::digest::{KeyInit, Mac};
        let mut mac = AddressMac::new_from_slice(&self.0).expect("a 32-byte key fits BLAKE2b");
        mac.update(address.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!("{ERASED}{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// Replaces the address of every delivery of the user with its keyed hash (and drops the
/// error text, which may quote it): how many it changed.
pub async fn erase_user(txn: &sea_orm::DatabaseTransaction, user_id: &str, key: &AddressKey) -> Result<u64, DbErr> {
    let held = delivery::Entity::find()
        .filter(delivery::Column::UserId.eq(user_id))
        .filter(delivery::Column::Recipient.not_like(format!("{ERASED}%")))
        .all(txn)
        .await?;
    for row in &held {
        delivery::Entity::update_many()
            .col_expr(delivery::Column::Recipient, Expr::value(key.erased(&row.recipient)))
            .col_expr(delivery::Column::LastError, Expr::value(None::<String>))
            .col_expr(delivery::Column::Locale, Expr::value(None::<String>))
            .filter(delivery::Column::EventId.eq(row.event_id.as_str()))
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
) -> Result<delivery::Model, DbErr> {
    let now = chrono::Utc::now();
    delivery::Entity::insert(delivery::ActiveModel {
        event_id: sea_orm::Set(event_id.to_owned()),
        user_id: sea_orm::Set(user_id.to_owned()),
        recipient: sea_orm::Set(recipient.to_owned()),
        kind: sea_orm::Set(kind.to_owned()),
        status: sea_orm::Set(Status::Pending),
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
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Attempts, Expr::col(delivery::Column::Attempts).add(1))
        .col_expr(delivery::Column::HandledBy, Expr::value(instance.to_owned()))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::EventId.eq(event_id))
        .filter(delivery::Column::Status.ne(Status::Sent))
        .exec(conn)
        .await?;
    delivery::Entity::find_by_id(event_id.to_owned())
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("delivery {event_id}")))
}

/// The user's latest delivery whose address is still there (not erased).
pub async fn latest_for_user<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<Option<delivery::Model>, DbErr> {
    use sea_orm::QueryOrder;
    delivery::Entity::find()
        .filter(delivery::Column::UserId.eq(user_id))
        .filter(delivery::Column::Recipient.not_like(format!("{ERASED}%")))
        .order_by_desc(delivery::Column::CreatedAt)
        .one(conn)
        .await
}

pub async fn finish<C: ConnectionTrait>(
    conn: &C,
    event_id: &str,
    status: Status,
    error: Option<String>,
) -> Result<(), DbErr> {
    let now = chrono::Utc::now();
    let mut update = delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(status))
        .col_expr(delivery::Column::LastError, Expr::value(error))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now));
    if status == Status::Sent {
        update = update.col_expr(delivery::Column::SentAt, Expr::value(now));
    }
    // A bounce or complaint can come back before the attempt records its end (a fast relay,
    // a slow database): what the recipient's side said stands.
    update
        .filter(delivery::Column::EventId.eq(event_id))
        .filter(delivery::Column::Status.is_not_in([Status::Bounced, Status::Complained]))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn set_status<C: ConnectionTrait>(conn: &C, event_id: &str, status: Status) -> Result<(), DbErr> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(status))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(delivery::Column::EventId.eq(event_id))
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
    pub status: Option<Status>,
}

/// Deliveries newest first (by event id: UUIDv7, so creation order), continuing after the
/// event id `after`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filters: &Filters,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<delivery::Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut query = delivery::Entity::find();
    if let Some(user_id) = &filters.user_id {
        query = query.filter(delivery::Column::UserId.eq(user_id.as_str()));
    }
    if let Some(forms) = &filters.recipient {
        query = query.filter(delivery::Column::Recipient.is_in(forms.iter().map(String::as_str)));
    }
    if let Some(status) = filters.status {
        query = query.filter(delivery::Column::Status.eq(status));
    }
    if let Some(event_id) = after {
        query = query.filter(delivery::Column::EventId.lt(event_id));
    }
    query.order_by_desc(delivery::Column::EventId).limit(limit).all(conn).await
}

pub async fn get<C: ConnectionTrait>(conn: &C, event_id: &str) -> Result<Option<delivery::Model>, DbErr> {
    delivery::Entity::find_by_id(event_id.to_owned()).one(conn).await
}

/// What a retry found.
pub enum Claim {
    NotFound,
    /// Not failed or parked: the status it has.
    NotRetryable(Status),
    /// Claimed for one more attempt (now pending, its attempts counted); the row as it was.
    Claimed(Box<delivery::Model>),
}

/// Claims a failed or parked delivery for one more attempt. Of two retries at once, one wins.
pub async fn claim_retry<C: ConnectionTrait>(conn: &C, event_id: &str, instance: &str) -> Result<Claim, DbErr> {
    let Some(before) = get(conn, event_id).await? else {
        return Ok(Claim::NotFound);
    };
    if !matches!(before.status, Status::Failed | Status::Parked) {
        return Ok(Claim::NotRetryable(before.status));
    }
    let claimed = delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(Status::Pending))
        .col_expr(delivery::Column::Attempts, Expr::col(delivery::Column::Attempts).add(1))
        .col_expr(delivery::Column::HandledBy, Expr::value(instance.to_owned()))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(delivery::Column::EventId.eq(event_id))
        .filter(delivery::Column::Status.eq(before.status))
        .exec(conn)
        .await?;
    if claimed.rows_affected == 0 {
        let now = get(conn, event_id).await?.map(|row| row.status).unwrap_or(before.status);
        return Ok(Claim::NotRetryable(now));
    }
    Ok(Claim::Claimed(Box::new(before)))
}

#[cfg(test)]
mod tests {
    use super::AddressKey;

    #[test]
    fn an_erased_address_is_a_keyed_hash_that_finds_it_again_and_never_shows_it() {
        let key = AddressKey::from_secret("a-secret-of-at-least-32-characters-0123");
        let erased = key.erased("ann@example.com");
        assert!(erased.starts_with("erased:") && erased.len() == "erased:".len() + 64, "{erased}");
        assert!(!erased.contains("ann") && !erased.contains("example"), "{erased}");
        assert_eq!(key.erased("ann@example.com"), erased, "the same address, the same hash: findable");
        assert_ne!(key.erased("bob@example.com"), erased);
        let other = AddressKey::from_secret("another-secret-of-at-least-32-characters");
        assert_ne!(other.erased("ann@example.com"), erased, "without the key, no lookup table helps");
    }
}
