//! The `users` table: one row per account (normalized address, password hash, status).

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
    pub status: AccountStatus,
    pub created_at: DateTimeUtc,
    /// The latest registration, or change of password or address: an unverified account
    /// expires `UNVERIFIED_TTL_SECONDS` after it.
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

/// Whether the account's address has been proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum AccountStatus {
    #[sea_orm(string_value = "unverified")]
    Unverified,
    #[sea_orm(string_value = "verified")]
    Verified,
}

/// `AccountStatus::Unverified` as an SQL literal, where a bound value would not do: in the
/// partial index's condition, and in the sweep's, so a planner sees they match whatever the value.
pub(crate) const UNVERIFIED_LITERAL: &str = "'unverified'";

/// A new account, unverified, registered by `registration`.
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub registration: &'a str,
    pub locale: Option<&'a str>,
}

/// Inserts a new account; fails with a unique violation when the address has one already.
pub async fn insert<C: ConnectionTrait>(conn: &C, user: NewUser<'_>) -> Result<(), DbErr> {
    use sea_orm::ActiveValue::Set;
    let now = chrono::Utc::now();
    let row = ActiveModel {
        id: Set(user.id.to_owned()),
        email: Set(user.email.to_owned()),
        password_hash: Set(user.password_hash.to_owned()),
        status: Set(AccountStatus::Unverified),
        created_at: Set(now),
        updated_at: Set(now),
        verified_at: Set(None),
        registration_event_id: Set(Some(user.registration.to_owned())),
        locale: Set(user.locale.map(str::to_owned)),
    };
    Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

pub async fn find_by_id<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(conn).await
}

pub async fn find_by_email<C: ConnectionTrait>(conn: &C, email: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(Column::Email.eq(email)).one(conn).await
}

/// Users by id, in no particular order (ids that name no user are left out).
pub async fn find_many<C: ConnectionTrait>(conn: &C, ids: &[String]) -> Result<Vec<Model>, DbErr> {
    Entity::find().filter(Column::Id.is_in(ids.iter().map(String::as_str))).all(conn).await
}

/// The filters of ListUsers.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub status: Option<AccountStatus>,
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// Users newest first (ids are UUIDv7, so id order is creation order), continuing after the
/// id `after`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filter: &Filter,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Model>, DbErr> {
    use sea_orm::{QueryOrder, QuerySelect};
    let mut query = Entity::find();
    if let Some(status) = filter.status {
        query = query.filter(Column::Status.eq(status));
    }
    if let Some(at) = filter.created_after {
        query = query.filter(Column::CreatedAt.gte(at));
    }
    if let Some(at) = filter.created_before {
        query = query.filter(Column::CreatedAt.lt(at));
    }
    if let Some(id) = after {
        query = query.filter(Column::Id.lt(id));
    }
    query.order_by_desc(Column::Id).limit(limit).all(conn).await
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
    let mut update = Entity::update_many()
        .col_expr(Column::PasswordHash, Expr::value(password_hash))
        .col_expr(Column::RegistrationEventId, Expr::value(registration))
        .col_expr(Column::UpdatedAt, Expr::value(chrono::Utc::now()));
    if let Some(locale) = locale {
        update = update.col_expr(Column::Locale, Expr::value(locale));
    }
    let replaced =
        update.filter(Column::Id.eq(id)).filter(Column::Status.eq(AccountStatus::Unverified)).exec(conn).await?;
    Ok(replaced.rows_affected == 1)
}

/// A user as [`mark_verified`] found them: status, address, latest registration.
#[derive(Debug, Clone)]
pub struct Before {
    pub status: AccountStatus,
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
) -> Result<(std::collections::HashMap<String, Before>, Vec<Model>), DbErr> {
    use sea_orm::QuerySelect;
    let before: std::collections::HashMap<String, Before> = Entity::find()
        .select_only()
        .columns([Column::Id, Column::Status, Column::Email, Column::RegistrationEventId])
        .filter(Column::Id.is_in(verified.iter().map(|v| v.user_id)))
        .into_tuple::<(String, AccountStatus, String, Option<String>)>()
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
fn verify_many(ids: &[&str], now: chrono::DateTime<chrono::Utc>) -> sea_orm::UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::Status, Expr::value(AccountStatus::Verified))
        .col_expr(Column::VerifiedAt, Expr::value(now))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(Column::Status.eq(AccountStatus::Unverified))
}

/// Replaces the password of the user whose address is still `email`; with `verify`, an
/// unverified one becomes verified too (a reset through the address proved it). The user as
/// it is now, and whether this call verified it; none when the user is gone or moved on.
pub async fn replace_password<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    email: &str,
    password_hash: &str,
    verify: bool,
) -> Result<Option<(Model, bool)>, DbErr> {
    let replaced = Entity::update_many()
        .col_expr(Column::PasswordHash, Expr::value(password_hash))
        .col_expr(Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::Id.eq(id))
        .filter(Column::Email.eq(email))
        .exec_with_returning(conn)
        .await?;
    let Some(user) = replaced.into_iter().next() else { return Ok(None) };
    if verify && user.status == AccountStatus::Unverified {
        let verified = verify_many(&[id], chrono::Utc::now()).exec_with_returning(conn).await?;
        if let Some(user) = verified.into_iter().next() {
            return Ok(Some((user, true)));
        }
    }
    Ok(Some((user, false)))
}

/// Sets the language of the user's emails; false when the user is gone. It leaves
/// `updated_at` alone: ResendVerification sets it, and a caller without the password must not
/// postpone an unverified account's expiry.
pub async fn set_locale<C: ConnectionTrait>(conn: &C, id: &str, locale: &str) -> Result<bool, DbErr> {
    let set = Entity::update_many()
        .col_expr(Column::Locale, Expr::value(locale))
        .filter(Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(set.rows_affected == 1)
}

/// Replaces a password hash with one of the current parameters, if it is still `old` (a
/// password change or a newer registration in between wins).
pub async fn upgrade_hash<C: ConnectionTrait>(conn: &C, id: &str, old: &str, new: &str) -> Result<bool, DbErr> {
    let replaced = Entity::update_many()
        .col_expr(Column::PasswordHash, Expr::value(new))
        .filter(Column::Id.eq(id))
        .filter(Column::PasswordHash.eq(old))
        .exec(conn)
        .await?;
    Ok(replaced.rows_affected == 1)
}

/// Moves the user from `from` to `to`, if the account still has `from`: whether it did. Fails
/// with a unique violation when `to` belongs to another account by now.
/// What email-service said of the address it leaves goes with it.
pub async fn move_address<C: ConnectionTrait>(conn: &C, user_id: &str, from: &str, to: &str) -> Result<bool, DbErr> {
    let moved = Entity::update_many()
        .col_expr(Column::Email, Expr::value(to))
        .col_expr(Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::Id.eq(user_id))
        .filter(Column::Email.eq(from))
        .exec(conn)
        .await?;
    if moved.rows_affected == 1 {
        super::undeliverable::forget(conn, &[user_id]).await?;
    }
    Ok(moved.rows_affected == 1)
}

/// Deletes up to `limit` users who are still unverified and whose latest registration is
/// older than `cutoff`: the users it deleted. The rows are claimed as they are chosen (on
/// PostgreSQL `FOR UPDATE SKIP LOCKED`: another instance's sweep passes over them, and a
/// verification holding one keeps it; on SQLite the file's one writer runs one sweep at a time).
pub async fn delete_expired(
    txn: &sea_orm::DatabaseTransaction,
    cutoff: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> Result<Vec<Deleted>, DbErr> {
    deleted(txn, Column::Id.in_subquery(expired(cutoff, limit))).await
}

/// The ids of up to `limit` unverified users registered before `cutoff`, oldest first.
fn expired(cutoff: chrono::DateTime<chrono::Utc>, limit: u64) -> sea_orm::sea_query::SelectStatement {
    use sea_orm::sea_query::{ExprTrait, LockBehavior, LockType, Query};
    Query::select()
        .column(Column::Id)
        .from(Entity)
        .and_where(Expr::col(Column::Status).eq(Expr::cust(UNVERIFIED_LITERAL)))
        .and_where(Column::UpdatedAt.lt(cutoff))
        .order_by(Column::UpdatedAt, sea_orm::Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned()
}

/// A user a deletion removed: its id and the address it had.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub id: String,
    pub email: String,
}

/// Deletes one user: the user it deleted, if there was one.
pub async fn delete(txn: &sea_orm::DatabaseTransaction, id: &str) -> Result<Option<Deleted>, DbErr> {
    Ok(deleted(txn, Column::Id.eq(id)).await?.pop())
}

/// `DELETE … RETURNING id, email` of the users `which` selects.
async fn deleted(txn: &sea_orm::DatabaseTransaction, which: Expr) -> Result<Vec<Deleted>, DbErr> {
    use sea_orm::sea_query::Query;
    let delete = Query::delete()
        .from_table(Entity)
        .and_where(which)
        .returning(Query::returning().columns([Column::Id, Column::Email]))
        .to_owned();
    let rows = txn.query_all(&delete).await?;
    rows.iter()
        .map(|row| Ok(Deleted { id: row.try_get_by_index::<String>(0)?, email: row.try_get_by_index::<String>(1)? }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm_migration::MigratorTrait;

    /// SQLite's plans, on a migrated database with no statistics (as every SQLite database of
    /// ours is): marking a batch verified reads its users by primary key, not every unverified
    /// user; the sweep reads the unverified users' index.
    #[tokio::test]
    async fn verifying_a_batch_reads_its_users_by_key_and_the_sweep_reads_unverified_users_only() {
        use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
        let db = sea_orm::Database::connect("sqlite::memory:").await.expect("SQLite");
        super::super::Migrator::up(&db, None).await.expect("migrations");
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
        assert_eq!(UNVERIFIED_LITERAL, format!("'{}'", AccountStatus::Unverified.to_value()));
    }

    #[test]
    fn a_verification_counts_only_for_the_current_address_and_the_latest_registration() {
        let user = Before {
            status: AccountStatus::Unverified,
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
