//! auth-service's tables, one module each, the statements that span both, and every
//! migration in order. Only the domain modules call these; the gRPC adapter never does.

pub mod codes;
pub mod migrations;
pub mod tokens;

pub use migrations::Migrator;

use sea_orm::entity::prelude::*;
use std::collections::HashSet;

/// A user and the registration (or change of address) a link or code was issued for.
pub type Issue = (String, Option<String>);

/// Which registrations (or changes of address) of these users have had a verification token
/// (other than those of `except`) or code used: their address of that registration is verified.
pub async fn used_registrations<C: ConnectionTrait>(
    conn: &C,
    user_ids: &[&str],
    except: &[&str],
) -> Result<HashSet<Issue>, DbErr> {
    use sea_orm::QuerySelect;
    let mut used = tokens::Entity::find()
        .select_only()
        .columns([tokens::Column::UserId, tokens::Column::RegistrationEventId])
        .filter(tokens::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(tokens::Column::UsedAt.is_not_null())
        .filter(tokens::verifies());
    if !except.is_empty() {
        used = used.filter(tokens::Column::Jti.is_not_in(except.iter().copied()));
    }
    let tokens: Vec<Issue> = used.into_tuple().all(conn).await?;
    let codes: Vec<Issue> = codes::Entity::find()
        .select_only()
        .columns([codes::Column::UserId, codes::Column::RegistrationEventId])
        .filter(codes::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(codes::Column::UsedAt.is_not_null())
        .filter(codes::Column::Purpose.is_null())
        .into_tuple()
        .all(conn)
        .await?;
    Ok(tokens.into_iter().chain(codes).collect())
}

/// Holds the user's issuing lock until `txn` ends (PostgreSQL; SQLite's one writer already runs
/// one transaction at a time): two issues for one user at once would each miss the other's
/// token, and neither would revoke or refuse the other (a replaced change's link would live).
pub async fn lock_user(txn: &sea_orm::DatabaseTransaction, user_id: &str) -> Result<(), DbErr> {
    use sea_orm::{DbBackend, Statement};
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let lock = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, lock, [user_id.into()])).await?;
    Ok(())
}

/// Which registrations [`revoke`] revokes the tokens and codes of.
#[derive(Debug, Clone, Copy)]
pub enum Revoked<'a> {
    All,
    /// Those of registrations before it (and those issued without one).
    Before(&'a str),
    /// Those of this registration (or change of address) alone.
    Of(&'a str),
}

/// Revokes the user's unused, unrevoked verification tokens and codes of `which`
/// registrations; how many of each.
pub async fn revoke<C: ConnectionTrait>(conn: &C, user_id: &str, which: Revoked<'_>) -> Result<(u64, u64), DbErr> {
    use sea_orm::Condition;
    use sea_orm::sea_query::{Alias, ExprTrait};
    // Both tables name these columns alike.
    let column = |name: &str| Expr::col(Alias::new(name));
    let mut unused = Condition::all()
        .add(column("user_id").eq(user_id))
        .add(column("used_at").is_null())
        .add(column("revoked_at").is_null());
    let registration_of = || column("registration_event_id");
    match which {
        Revoked::All => {}
        Revoked::Before(registration) => {
            unused =
                unused.add(Condition::any().add(registration_of().is_null()).add(registration_of().lt(registration)));
        }
        Revoked::Of(registration) => unused = unused.add(registration_of().eq(registration)),
    }
    let now = chrono::Utc::now();
    // An undo link outlives later changes: it is the earlier address's way back.
    let tokens = tokens::Entity::update_many()
        .col_expr(tokens::Column::RevokedAt, Expr::value(now))
        .filter(unused.clone())
        .filter(tokens::verifies())
        .exec(conn)
        .await?;
    let codes = codes::Entity::update_many()
        .col_expr(codes::Column::RevokedAt, Expr::value(now))
        .filter(unused)
        .exec(conn)
        .await?;
    Ok((tokens.rows_affected, codes.rows_affected))
}

/// Revokes the user's unused password-reset links and codes (but `keep`, the one just used):
/// how many of each.
pub async fn revoke_resets<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    keep: Option<&str>,
) -> Result<(u64, u64), DbErr> {
    let now = chrono::Utc::now();
    let mut tokens = tokens::Entity::update_many()
        .col_expr(tokens::Column::RevokedAt, Expr::value(now))
        .filter(tokens::Column::UserId.eq(user_id))
        .filter(tokens::Column::UsedAt.is_null())
        .filter(tokens::Column::RevokedAt.is_null())
        .filter(tokens::Column::Purpose.eq(crate::links::PASSWORD_RESET));
    if let Some(keep) = keep {
        tokens = tokens.filter(tokens::Column::Jti.ne(keep));
    }
    let tokens = tokens.exec(conn).await?;
    let codes = codes::Entity::update_many()
        .col_expr(codes::Column::RevokedAt, Expr::value(now))
        .filter(codes::Column::UserId.eq(user_id))
        .filter(codes::Column::UsedAt.is_null())
        .filter(codes::Column::RevokedAt.is_null())
        .filter(codes::Column::Purpose.eq(crate::links::PASSWORD_RESET))
        .exec(conn)
        .await?;
    Ok((tokens.rows_affected, codes.rows_affected))
}
