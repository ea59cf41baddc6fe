//! The `email_changes` table: each change of address asked for, and what became of it.

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

/// What happened to a change, each a column with its time.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Completed,
    Cancelled,
    Undone,
}

pub async fn insert<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(ActiveModel::from(row)).exec_without_returning(conn).await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(conn).await
}

/// Records what became of the change, now.
pub async fn mark<C: ConnectionTrait>(conn: &C, id: &str, outcome: Outcome) -> Result<(), DbErr> {
    mark_many(conn, &[id], outcome).await
}

/// The pending change of address of each of these users (the latest; older ones were
/// cancelled when it was asked for).
pub async fn pending_of<C: ConnectionTrait>(
    conn: &C,
    user_ids: &[&str],
) -> Result<std::collections::HashMap<String, Model>, DbErr> {
    use sea_orm::QueryOrder;
    if user_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows = Entity::find()
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .filter(Column::CompletedAt.is_null())
        .filter(Column::CancelledAt.is_null())
        .order_by_asc(Column::Id)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|row| (row.user_id.clone(), row)).collect())
}

/// Deletes these users' changes of address (they hold addresses): with the accounts.
pub async fn forget<C: ConnectionTrait>(conn: &C, user_ids: &[&str]) -> Result<u64, DbErr> {
    let of = Column::UserId.is_in(user_ids.iter().copied());
    Ok(Entity::delete_many().filter(of).exec(conn).await?.rows_affected)
}

/// What a change of address to an erased address keeps in its place.
pub const ERASED: &str = "erased";

/// Other accounts' changes of address to `addresses` (being erased with their accounts): each
/// loses the address and, if pending, is cancelled. `(user, change)` of each.
pub async fn erase_address<C: ConnectionTrait>(conn: &C, addresses: &[&str]) -> Result<Vec<(String, String)>, DbErr> {
    use sea_orm::QuerySelect;
    let to = Column::NewEmail.is_in(addresses.iter().copied());
    let changes: Vec<(String, String)> = Entity::find()
        .select_only()
        .columns([Column::UserId, Column::Id])
        .filter(to.clone())
        .into_tuple()
        .all(conn)
        .await?;
    if changes.is_empty() {
        return Ok(changes);
    }
    let now = chrono::Utc::now();
    Entity::update_many()
        .col_expr(Column::CancelledAt, Expr::value(now))
        .filter(to.clone())
        .filter(Column::CompletedAt.is_null())
        .filter(Column::CancelledAt.is_null())
        .exec(conn)
        .await?;
    Entity::update_many().col_expr(Column::NewEmail, Expr::value(ERASED)).filter(to).exec(conn).await?;
    Ok(changes)
}

/// Cancels the user's pending changes: how many.
pub async fn cancel_pending<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<u64, DbErr> {
    let cancelled = Entity::update_many()
        .col_expr(Column::CancelledAt, Expr::value(chrono::Utc::now()))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::CompletedAt.is_null())
        .filter(Column::CancelledAt.is_null())
        .exec(conn)
        .await?;
    Ok(cancelled.rows_affected)
}

/// The user's changes asked for at or after `change_id` (ids are UUIDv7s: in order of
/// request), oldest first.
pub async fn since<C: ConnectionTrait>(conn: &C, user_id: &str, change_id: &str) -> Result<Vec<Model>, DbErr> {
    use sea_orm::QueryOrder;
    Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::Id.gte(change_id))
        .order_by_asc(Column::Id)
        .all(conn)
        .await
}

/// Records `outcome` for these changes, now.
pub async fn mark_many<C: ConnectionTrait>(conn: &C, ids: &[&str], outcome: Outcome) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    let column = match outcome {
        Outcome::Completed => Column::CompletedAt,
        Outcome::Cancelled => Column::CancelledAt,
        Outcome::Undone => Column::UndoneAt,
    };
    Entity::update_many()
        .col_expr(column, Expr::value(chrono::Utc::now()))
        .filter(Column::Id.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Changes of address go `keep` after they were asked for (`EMAIL_CHANGE_RETENTION_SECONDS`,
/// at least `EMAIL_CHANGE_UNDO_TTL_SECONDS`: a notice's undo link finds its change until it
/// expires).
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("email_changes", Column::Id, Column::RequestedAt, keep, |cutoff, _| {
        sea_orm::Condition::all().add(Column::RequestedAt.lt(cutoff))
    })
}
