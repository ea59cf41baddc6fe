//! The `verification_codes` table: one row per issued code (never the code, only its keyed
//! hash).

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::ExprTrait;

/// One row per issued verification code: never the code, only its keyed hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "verification_codes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    pub email: String,
    pub key_id: String,
    pub code_hash: Vec<u8>,
    pub issued_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub wrong_tries: i32,
    pub used_at: Option<DateTimeUtc>,
    /// Set by RevokeVerificationTokens: the code no longer verifies.
    pub revoked_at: Option<DateTimeUtc>,
    /// The users.registered event this code's email was for (see the token's), or the reset.
    pub registration_event_id: Option<String>,
    /// `password_reset` for a reset's code; none for one that verifies an address.
    pub purpose: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub async fn insert<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(ActiveModel::from(row)).exec_without_returning(conn).await?;
    Ok(())
}

/// Every code of `purpose` (none: those that verify an address) sent to one of these
/// addresses (an address, and its erased forms).
pub async fn sent_to<C: ConnectionTrait>(
    conn: &C,
    addresses: Vec<String>,
    purpose: Option<&str>,
) -> Result<Vec<Model>, DbErr> {
    let of_purpose = match purpose {
        Some(purpose) => Column::Purpose.eq(purpose),
        None => Column::Purpose.is_null(),
    };
    Entity::find().filter(Column::Email.is_in(addresses)).filter(of_purpose).all(conn).await
}

/// Uses the code if it is still live (a concurrent use, or the last wrong try, may have come
/// first): whether it did.
pub async fn use_live<C: ConnectionTrait>(conn: &C, id: &str, max_tries: i32) -> Result<bool, DbErr> {
    let used = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(chrono::Utc::now()))
        .filter(Column::Id.eq(id))
        .filter(Column::UsedAt.is_null())
        .filter(Column::RevokedAt.is_null())
        .filter(Column::WrongTries.lt(max_tries))
        .exec(conn)
        .await?;
    Ok(used.rows_affected == 1)
}

/// Counts one wrong try against each of these codes, each while it is under the cap: the
/// condition is checked row by row as it updates, so concurrent misses never count past it.
pub async fn count_wrong_try<C: ConnectionTrait>(conn: &C, ids: Vec<String>, max_tries: i32) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::WrongTries, Expr::col(Column::WrongTries).add(1))
        .filter(Column::Id.is_in(ids))
        .filter(Column::WrongTries.lt(max_tries))
        .exec(conn)
        .await?;
    Ok(())
}

/// The codes of the user, and any holding `email` (if not empty), whose address is not erased yet.
pub async fn holding_address<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    email: &str,
    erased: &str,
) -> Result<Vec<Model>, DbErr> {
    let held = verimail_events::erasure::held_by(Column::UserId, user_id, Column::Email, Some(email));
    Entity::find().filter(held).filter(Column::Email.not_like(format!("{erased}%"))).all(conn).await
}

/// Replaces the code's address with its erased form, and revokes it (at `revoked_at`).
pub async fn erase<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    erased: &str,
    revoked_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), DbErr> {
    Entity::update_many()
        .col_expr(Column::Email, Expr::value(erased))
        .col_expr(Column::RevokedAt, Expr::value(revoked_at))
        .filter(Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Codes go `keep` after they expire (`VERIFICATION_RETENTION_SECONDS`).
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("verification_codes", Column::Id, Column::IssuedAt, keep, |cutoff, _| {
        sea_orm::Condition::all().add(Column::ExpiresAt.lt(cutoff))
    })
}
