//! The `verification_tokens` table: one row per issued link (its jti, never the token).

use sea_orm::entity::prelude::*;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "verification_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    pub user_id: String,
    pub email: String,
    pub key_id: String,
    pub issued_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    /// Set by RevokeVerificationTokens: the token no longer verifies.
    pub revoked_at: Option<DateTimeUtc>,
    /// The users.registered event this token's email was for (its own, or the one a
    /// resend names), or the change of address; none when issued without one.
    pub registration_event_id: Option<String>,
    /// `email_change` for verifying a change's new address, `undo_email_change` for a
    /// change-of-address notice's link; none for verifying a registration's.
    pub purpose: Option<String>,
    /// The `traceparent` of the work that issued it: the click's trace links to it.
    pub trace: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Why this token cannot be used now as a link of `purpose`; none when it can.
    pub fn refusal(&self, purpose: &str) -> Option<crate::error::AuthError> {
        use crate::error::AuthError;
        use crate::links::TokenError;
        if self.purpose.as_deref() != Some(purpose) {
            Some(AuthError::Token(TokenError::WrongPurpose))
        } else if self.used_at.is_some() {
            Some(AuthError::TokenUsed)
        } else if self.revoked_at.is_some() {
            Some(AuthError::TokenRevoked)
        } else if self.expires_at <= chrono::Utc::now() {
            Some(AuthError::Token(TokenError::Expired))
        } else {
            None
        }
    }
}

/// Marks these tokens used where nobody has yet, they are neither revoked nor expired, and
/// they are for one of `purposes`: the rows this call claimed (`UPDATE … RETURNING`, so two
/// instances never both claim one).
pub async fn claim<C: ConnectionTrait>(
    conn: &C,
    jtis: &[&str],
    purposes: sea_orm::Condition,
) -> Result<HashMap<String, Model>, DbErr> {
    let now = chrono::Utc::now();
    let claimed = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::Jti.is_in(jtis.iter().copied()))
        .filter(Column::UsedAt.is_null())
        .filter(Column::RevokedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .filter(purposes)
        .exec_with_returning(conn)
        .await?;
    Ok(claimed.into_iter().map(|row| (row.jti.clone(), row)).collect())
}

/// The rows of these tokens, by jti.
pub async fn find_many<C: ConnectionTrait>(conn: &C, jtis: &[&str]) -> Result<HashMap<String, Model>, DbErr> {
    if jtis.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = Entity::find().filter(Column::Jti.is_in(jtis.iter().copied())).all(conn).await?;
    Ok(rows.into_iter().map(|row| (row.jti.clone(), row)).collect())
}

/// Undo links: the link of a change-of-address notice.
pub fn undoes() -> sea_orm::Condition {
    sea_orm::Condition::all().add(Column::Purpose.eq(crate::links::UNDO_EMAIL_CHANGE))
}

/// Password-reset links.
pub fn resets() -> sea_orm::Condition {
    sea_orm::Condition::all().add(Column::Purpose.eq(crate::links::PASSWORD_RESET))
}

/// Tokens that verify an address (of a registration, or a change's new one), not undo links.
pub fn verifies() -> sea_orm::Condition {
    sea_orm::Condition::any().add(Column::Purpose.is_null()).add(Column::Purpose.eq(crate::links::EMAIL_CHANGE))
}

/// Records an issued token (its jti, never the token): for `registration` (or a change), of
/// `purpose` (none for a registration's verification), in the current trace.
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    issued: &crate::links::IssuedToken,
    user_id: &str,
    email: &str,
    registration: Option<&str>,
    purpose: Option<&str>,
) -> Result<(), DbErr> {
    use sea_orm::ActiveValue::Set;
    Entity::insert(ActiveModel {
        jti: Set(issued.jti.clone()),
        user_id: Set(user_id.to_owned()),
        email: Set(email.to_owned()),
        key_id: Set(issued.key_id.clone()),
        issued_at: Set(chrono::Utc::now()),
        expires_at: Set(issued.expires_at),
        used_at: Set(None),
        revoked_at: Set(None),
        registration_event_id: Set(registration.map(str::to_owned)),
        purpose: Set(purpose.map(str::to_owned)),
        trace: Set(verimail_server::telemetry::current_traceparent()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Whether a later registration of the user than `registration` has had a token issued:
/// then this one is superseded. (Registration ids are UUIDv7s, whose text orders by time.)
pub async fn superseded<C: ConnectionTrait>(conn: &C, user_id: &str, registration: &str) -> Result<bool, DbErr> {
    let later = Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::RegistrationEventId.gt(registration))
        .one(conn)
        .await?;
    Ok(later.is_some())
}

/// The row of one token.
pub async fn find<C: ConnectionTrait>(conn: &C, jti: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(jti.to_owned()).one(conn).await
}

/// The tokens of the user, and any holding `email` (if not empty), lose their address and
/// trace, and are revoked (erasure): how many.
pub async fn erase<C: ConnectionTrait>(conn: &C, user_id: &str, email: &str, erased: &str) -> Result<u64, DbErr> {
    let held = verimail_events::erasure::held_by(Column::UserId, user_id, Column::Email, Some(email));
    let erasing = Entity::update_many()
        .col_expr(Column::Email, Expr::value(erased))
        .col_expr(Column::Trace, Expr::value(Option::<String>::None))
        .col_expr(Column::RevokedAt, Expr::value(chrono::Utc::now()))
        .filter(held)
        .filter(Column::Email.ne(erased))
        .exec(conn)
        .await?;
    Ok(erasing.rows_affected)
}

/// Links go `keep` after they expire (`VERIFICATION_RETENTION_SECONDS`); a late click on one
/// still answers "expired" (an authentic link without its row, see `authority::usable_link`).
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("verification_tokens", Column::Jti, Column::IssuedAt, keep, |cutoff, _| {
        sea_orm::Condition::all().add(Column::ExpiresAt.lt(cutoff))
    })
}
