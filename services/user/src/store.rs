//! user-service's own tables: `users` and the outbox.

use sea_orm::entity::prelude::*;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        /// UUIDv7, as text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub email: String,
        pub password_hash: String,
        pub status: super::Status,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub verified_at: Option<DateTimeUtc>,
        /// The users.registered event of the latest registration of the address: only its
        /// links and codes verify (none for users from before it was recorded).
        pub registration_event_id: Option<String>,
        /// The canonical BCP 47 tag the user's emails are written in; none for the default.
        pub locale: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod change {
    use sea_orm::entity::prelude::*;

    /// A change of address: pending until its new address is verified (completed), or a newer
    /// request or the notice's link cancels it; a completed one can be undone from the notice.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "email_changes")]
    pub struct Model {
        /// UUIDv7: the change id its links and codes are issued for.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub user_id: String,
        pub old_email: String,
        pub new_email: String,
        /// The new address belonged to another account: no verification email went there
        /// (its owner was told instead), so the change can never complete.
        pub taken: bool,
        pub requested_at: DateTimeUtc,
        pub completed_at: Option<DateTimeUtc>,
        pub cancelled_at: Option<DateTimeUtc>,
        pub undone_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "unverified")]
    Unverified,
    #[sea_orm(string_value = "verified")]
    Verified,
}

mod create_users {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Users {
        Table,
        Id,
        Email,
        PasswordHash,
        Status,
        CreatedAt,
        UpdatedAt,
        VerifiedAt,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261124_000001_create_users",
            tables: vec![
                Table::create()
                    .table(Users::Table)
                    .col(string(Users::Id).primary_key())
                    .col(string_uniq(Users::Email))
                    .col(string(Users::PasswordHash))
                    .col(string_len(Users::Status, 16))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone(Users::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Users::VerifiedAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![],
        }
    }
}

mod add_registration_event {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Users {
        Table,
        RegistrationEventId,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261202_000002_add_registration_event",
            tables: vec![],
            alters: vec![
                Table::alter().table(Users::Table).add_column(string_null(Users::RegistrationEventId)).to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod index_unverified {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    enum Users {
        Table,
        Status,
        UpdatedAt,
    }

    /// The expiry sweep asks for unverified users by the time of their latest registration.
    /// Replaced by [`Partial`], and kept so databases that applied it move on from it.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261202_000003_index_users_status_updated",
            tables: vec![],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("users_status_updated_at")
                    .table(Users::Table)
                    .col(Users::Status)
                    .col(Users::UpdatedAt)
                    .to_owned(),
            ],
        }
    }

    /// The sweep's index holds unverified users only, by `updated_at`. The index on
    /// (status, updated_at) it replaces was taken by SQLite's planner (which keeps no
    /// statistics here) for the UPDATE that marks a batch of users verified — `id IN (…) AND
    /// status = 'unverified'` — so every batch read every unverified user instead of its own
    /// ids by primary key: 150 µs of CPU per event at 60,000 users instead of 20.
    pub struct Partial;

    impl MigrationName for Partial {
        fn name(&self) -> &str {
            "m20261203_000001_index_unverified_users_partial"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for Partial {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .drop_index(Index::drop().name("users_status_updated_at").table(Users::Table).if_exists().to_owned())
                .await?;
            let unverified = Expr::col(Users::Status).eq(Expr::cust(super::UNVERIFIED_LITERAL));
            let index = Index::create()
                .name("users_unverified_updated_at")
                .table(Users::Table)
                .col(Users::UpdatedAt)
                .and_where(unverified)
                .if_not_exists()
                .to_owned();
            manager.create_index(index).await
        }
    }
}

/// `Status::Unverified` as an SQL literal, where a bound value would not do: in the partial
/// index's condition, and in the sweep's, so a planner sees they match whatever the value.
const UNVERIFIED_LITERAL: &str = "'unverified'";

mod create_email_changes {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum EmailChanges {
        Table,
        Id,
        UserId,
        OldEmail,
        NewEmail,
        Taken,
        RequestedAt,
        CompletedAt,
        CancelledAt,
        UndoneAt,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261202_000004_create_email_changes",
            tables: vec![
                Table::create()
                    .table(EmailChanges::Table)
                    .col(string(EmailChanges::Id).primary_key())
                    .col(string(EmailChanges::UserId))
                    .col(string(EmailChanges::OldEmail))
                    .col(string(EmailChanges::NewEmail))
                    .col(boolean(EmailChanges::Taken).default(false))
                    .col(timestamp_with_time_zone(EmailChanges::RequestedAt))
                    .col(timestamp_with_time_zone_null(EmailChanges::CompletedAt))
                    .col(timestamp_with_time_zone_null(EmailChanges::CancelledAt))
                    .col(timestamp_with_time_zone_null(EmailChanges::UndoneAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("email_changes_user")
                    .table(EmailChanges::Table)
                    .col(EmailChanges::UserId)
                    .to_owned(),
            ],
        }
    }
}

mod add_locale {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Users {
        Table,
        Locale,
    }

    /// The language each user's emails are written in.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000006_add_user_locale",
            tables: vec![],
            alters: vec![Table::alter().table(Users::Table).add_column(string_null(Users::Locale)).to_owned()],
            indexes: vec![],
        }
    }
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = verimail_events::outbox::migration::migrations();
        migrations.push(Box::new(create_users::migration()));
        migrations.push(Box::new(add_registration_event::migration()));
        migrations.push(Box::new(index_unverified::migration()));
        migrations.push(Box::new(verimail_events::erasure::migration::migration()));
        migrations.push(Box::new(create_email_changes::migration()));
        migrations.push(Box::new(crate::undeliverable::migration::migration()));
        migrations.push(Box::new(add_locale::migration()));
        migrations.push(Box::new(index_unverified::Partial));
        migrations
    }
}

pub async fn find_by_id<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id.to_owned()).one(conn).await
}

pub async fn find_by_email<C: ConnectionTrait>(conn: &C, email: &str) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find().filter(user::Column::Email.eq(email)).one(conn).await
}

/// Users newest first (ids are UUIDv7, so id order is creation order), with the filters of
/// ListUsers, continuing after the id `after`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    status: Option<Status>,
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<user::Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut query = user::Entity::find();
    if let Some(status) = status {
        query = query.filter(user::Column::Status.eq(status));
    }
    if let Some(at) = created_after {
        query = query.filter(user::Column::CreatedAt.gte(at));
    }
    if let Some(at) = created_before {
        query = query.filter(user::Column::CreatedAt.lt(at));
    }
    if let Some(id) = after {
        query = query.filter(user::Column::Id.lt(id));
    }
    query.order_by_desc(user::Column::Id).limit(limit).all(conn).await
}

/// Replaces the password (and the language, if one is given) of a user who is still
/// unverified (a newer registration of the address, `registration`); false when the user is
/// verified by now, or gone.
pub async fn replace_unverified_password<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    password_hash: &str,
    registration: &str,
    locale: Option<&str>,
) -> Result<bool, DbErr> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::RegistrationEventId, Expr::value(registration))
        .col_expr(user::Column::UpdatedAt, Expr::value(chrono::Utc::now()));
    if let Some(locale) = locale {
        update = update.col_expr(user::Column::Locale, Expr::value(locale));
    }
    let replaced =
        update.filter(user::Column::Id.eq(id)).filter(user::Column::Status.eq(Status::Unverified)).exec(conn).await?;
    Ok(replaced.rows_affected == 1)
}

/// A user as [`mark_verified`] found them: status, address, latest registration.
#[derive(Debug, Clone)]
pub struct Before {
    pub status: Status,
    pub email: String,
    pub registration_event_id: Option<String>,
}

/// What a verification event says was verified.
pub struct Verified<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    /// Empty when the token was issued without a registration.
    pub registration_event_id: &'a str,
}

impl Before {
    /// Whether `verified` speaks for this user as they are now: their current address, and
    /// their latest registration (a link of an earlier one, whose password was replaced since,
    /// verifies nothing).
    pub fn accepts(&self, verified: &Verified) -> bool {
        let registration = verified.registration_event_id;
        self.email == verified.email
            && (registration.is_empty()
                || self.registration_event_id.as_deref().is_none_or(|latest| latest == registration))
    }
}

/// Marks these users verified, each only where [`Before::accepts`] the event; one who already
/// is stays as they are. Returns each existing user as found before (an id that names no user
/// is not in it), and the users this call verified, as they are now: exactly those whose row
/// it changed (RETURNING), so a concurrent transaction that verified one first has it instead.
pub async fn mark_verified<C: ConnectionTrait>(
    conn: &C,
    verified: &[Verified<'_>],
) -> Result<(std::collections::HashMap<String, Before>, Vec<user::Model>), DbErr> {
    use sea_orm::QuerySelect;
    let before: std::collections::HashMap<String, Before> = user::Entity::find()
        .select_only()
        .columns([user::Column::Id, user::Column::Status, user::Column::Email, user::Column::RegistrationEventId])
        .filter(user::Column::Id.is_in(verified.iter().map(|v| v.user_id)))
        .into_tuple::<(String, Status, String, Option<String>)>()
        .all(conn)
        .await?
        .into_iter()
        .map(|(id, status, email, registration_event_id)| (id, Before { status, email, registration_event_id }))
        .collect();
    let ids: Vec<&str> = verified
        .iter()
        .filter(|v| before.get(v.user_id).is_some_and(|user| user.accepts(v)))
        .map(|v| v.user_id)
        .collect();
    if ids.is_empty() {
        return Ok((before, Vec::new()));
    }
    let newly = verify_many(&ids, chrono::Utc::now()).exec_with_returning(conn).await?;
    Ok((before, newly))
}

/// Marks these users verified, those still unverified (an UPDATE, so two instances that
/// handle the same event verify once).
fn verify_many(ids: &[&str], now: chrono::DateTime<chrono::Utc>) -> sea_orm::UpdateMany<user::Entity> {
    user::Entity::update_many()
        .col_expr(user::Column::Status, Expr::value(Status::Verified))
        .col_expr(user::Column::VerifiedAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .filter(user::Column::Status.eq(Status::Unverified))
}

/// Users by id, in no particular order (ids that name no user are left out).
/// Sets the language of the user's emails; false when the user is gone.
pub async fn set_locale<C: ConnectionTrait>(conn: &C, id: &str, locale: &str) -> Result<bool, DbErr> {
    let set = user::Entity::update_many()
        .col_expr(user::Column::Locale, Expr::value(locale))
        .col_expr(user::Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(user::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(set.rows_affected == 1)
}

pub async fn find_many<C: ConnectionTrait>(conn: &C, ids: &[String]) -> Result<Vec<user::Model>, DbErr> {
    user::Entity::find().filter(user::Column::Id.is_in(ids.iter().map(String::as_str))).all(conn).await
}

/// Replaces a password hash with one of the current parameters, if it is still `old` (a
/// password change or a newer registration in between wins).
pub async fn upgrade_hash<C: ConnectionTrait>(conn: &C, id: &str, old: &str, new: &str) -> Result<bool, DbErr> {
    let replaced = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(new))
        .filter(user::Column::Id.eq(id))
        .filter(user::Column::PasswordHash.eq(old))
        .exec(conn)
        .await?;
    Ok(replaced.rows_affected == 1)
}

/// The pending change of address of each of these users (the latest; older ones were
/// cancelled when it was asked for).
pub async fn pending_changes<C: ConnectionTrait>(
    conn: &C,
    user_ids: &[&str],
) -> Result<std::collections::HashMap<String, change::Model>, DbErr> {
    use sea_orm::QueryOrder;
    if user_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows = change::Entity::find()
        .filter(change::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(change::Column::CompletedAt.is_null())
        .filter(change::Column::CancelledAt.is_null())
        .order_by_asc(change::Column::Id)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| (row.user_id.clone(), row)).collect())
}

/// Deletes these users' changes of address (they hold addresses): with the accounts.
pub async fn forget_changes<C: ConnectionTrait>(conn: &C, user_ids: &[&str]) -> Result<u64, DbErr> {
    let of = change::Column::UserId.is_in(user_ids.iter().copied());
    Ok(change::Entity::delete_many().filter(of).exec(conn).await?.rows_affected)
}

/// Cancels the user's pending changes: how many.
pub async fn cancel_pending<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<u64, DbErr> {
    let cancelled = change::Entity::update_many()
        .col_expr(change::Column::CancelledAt, Expr::value(chrono::Utc::now()))
        .filter(change::Column::UserId.eq(user_id))
        .filter(change::Column::CompletedAt.is_null())
        .filter(change::Column::CancelledAt.is_null())
        .exec(conn)
        .await?;
    Ok(cancelled.rows_affected)
}

/// Moves the user from `from` to `to`, if the account still has `from`: whether it did. Fails
/// with a unique violation when `to` belongs to another account by now.
/// What email-service said of the address it leaves goes with it.
pub async fn move_address<C: ConnectionTrait>(conn: &C, user_id: &str, from: &str, to: &str) -> Result<bool, DbErr> {
    let moved = user::Entity::update_many()
        .col_expr(user::Column::Email, Expr::value(to))
        .col_expr(user::Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::Email.eq(from))
        .exec(conn)
        .await?;
    if moved.rows_affected == 1 {
        crate::undeliverable::forget(conn, &[user_id]).await?;
    }
    Ok(moved.rows_affected == 1)
}

/// Deletes up to `limit` users who are still unverified and whose latest registration is
/// older than `cutoff`: the ids it deleted. The rows are claimed as they are chosen (on
/// PostgreSQL `FOR UPDATE SKIP LOCKED`: another instance's sweep passes over them, and a
/// verification holding one keeps it; on SQLite the file's one writer runs one sweep at a time).
pub async fn delete_expired(
    txn: &sea_orm::DatabaseTransaction,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    deleted_ids(txn, user::Column::Id.in_subquery(expired(cutoff, limit))).await
}

/// The ids of up to `limit` unverified users registered before `cutoff`, oldest first.
fn expired(cutoff: chrono::DateTime<chrono::Utc>, limit: u64) -> sea_orm::sea_query::SelectStatement {
    use sea_orm::sea_query::{ExprTrait, LockBehavior, LockType, Query};
    Query::select()
        .column(user::Column::Id)
        .from(user::Entity)
        .and_where(Expr::col(user::Column::Status).eq(Expr::cust(UNVERIFIED_LITERAL)))
        .and_where(user::Column::UpdatedAt.lt(cutoff))
        .order_by(user::Column::UpdatedAt, sea_orm::Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned()
}

/// Deletes one user: whether there was one.
pub async fn delete_user(txn: &sea_orm::DatabaseTransaction, id: &str) -> Result<bool, DbErr> {
    Ok(!deleted_ids(txn, user::Column::Id.eq(id)).await?.is_empty())
}

/// `DELETE … RETURNING id` of the users `which` selects.
async fn deleted_ids(txn: &sea_orm::DatabaseTransaction, which: Expr) -> Result<Vec<String>, DbErr> {
    use sea_orm::sea_query::Query;
    let delete = Query::delete().from_table(user::Entity).and_where(which).returning_col(user::Column::Id).to_owned();
    let rows = txn.query_all(&delete).await?;
    rows.iter().map(|row| row.try_get_by_index::<String>(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plans, on a migrated database with no statistics (as every SQLite database of
    /// ours is): marking a batch verified reads its users by primary key, not every unverified
    /// user; the sweep reads the unverified users' index.
    #[tokio::test]
    async fn verifying_a_batch_reads_its_users_by_key_and_the_sweep_reads_unverified_users_only() {
        use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
        let db = sea_orm::Database::connect("sqlite::memory:").await.expect("SQLite");
        Migrator::up(&db, None).await.expect("migrations");
        let plan = |statement: Statement| {
            let values = statement.values.map(|values| values.0).unwrap_or_default();
            let sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
            let db = db.clone();
            async move {
                let rows = db.query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)).await;
                let rows = rows.expect("a plan");
                rows.iter().map(|row| row.try_get::<String>("", "detail").expect("detail")).collect::<Vec<_>>()
            }
        };
        let now = chrono::Utc::now();
        let verify = plan(verify_many(&["a", "b"], now).build(DbBackend::Sqlite)).await;
        assert_eq!(verify, ["SEARCH users USING INDEX sqlite_autoindex_users_1 (id=?)"]);
        let sweep = plan(DbBackend::Sqlite.build(&expired(now, 100))).await;
        assert_eq!(sweep, ["SEARCH users USING INDEX users_unverified_updated_at (updated_at<?)"]);
        assert_eq!(UNVERIFIED_LITERAL, format!("'{}'", Status::Unverified.to_value()));
    }

    #[test]
    fn a_verification_counts_only_for_the_current_address_and_the_latest_registration() {
        let user = Before {
            status: Status::Unverified,
            email: "ann@example.com".into(),
            registration_event_id: Some("0193-b".into()),
        };
        let verified = |email, registration_event_id| Verified { user_id: "u", email, registration_event_id };
        assert!(user.accepts(&verified("ann@example.com", "0193-b")));
        assert!(user.accepts(&verified("ann@example.com", "")), "a token issued without a registration");
        assert!(!user.accepts(&verified("ann@example.com", "0193-a")), "an earlier registration");
        assert!(!user.accepts(&verified("eve@example.com", "0193-b")), "another address");
        let legacy = Before { registration_event_id: None, ..user };
        assert!(
            legacy.accepts(&verified("ann@example.com", "0193-a")),
            "a user from before registrations were recorded"
        );
    }
}
