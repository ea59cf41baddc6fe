//! The `undeliverable_addresses` table: what email-service said of a user's address, kept with
//! the address it was about.

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

/// Records `row` in place of what was recorded for its user.
pub async fn replace<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), DbErr> {
    Entity::delete_by_id(row.user_id.clone()).exec(conn).await?;
    Entity::insert(ActiveModel::from(row)).exec_without_returning(conn).await?;
    Ok(())
}

/// Clears what is recorded for the user, if it is about `email`.
pub async fn clear<C: ConnectionTrait>(conn: &C, user_id: &str, email: &str) -> Result<(), DbErr> {
    Entity::delete_many().filter(Column::UserId.eq(user_id)).filter(Column::Email.eq(email)).exec(conn).await?;
    Ok(())
}

/// What is recorded for these users, for the addresses they have now.
pub async fn of_users<C: ConnectionTrait>(
    conn: &C,
    users: &[(&str, &str)],
) -> Result<std::collections::HashMap<String, Model>, DbErr> {
    if users.is_empty() {
        return Ok(Default::default());
    }
    let rows = Entity::find().filter(Column::UserId.is_in(users.iter().map(|(id, _)| *id))).all(conn).await?;
    Ok(rows
        .into_iter()
        .filter(|row| users.iter().any(|(id, email)| *id == row.user_id && *email == row.email))
        .map(|row| (row.user_id.clone(), row))
        .collect())
}

/// Deletes what is recorded for these users (deleted accounts; an address moved away from).
pub async fn forget<C: ConnectionTrait>(conn: &C, user_ids: &[&str]) -> Result<(), DbErr> {
    Entity::delete_many().filter(Column::UserId.is_in(user_ids.iter().copied())).exec(conn).await?;
    Ok(())
}
