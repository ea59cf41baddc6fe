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

    pub fn migration() -> verimail_kit::db::SchemaMigration {
        verimail_kit::db::SchemaMigration {
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

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = verimail_kit::outbox::migration::migrations();
        migrations.push(Box::new(create_users::migration()));
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

/// Replaces the password of a user who is still unverified (a newer registration of the
/// address); false when the user is verified by now, or gone.
pub async fn replace_unverified_password<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    password_hash: &str,
) -> Result<bool, DbErr> {
    let replaced = user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
        .col_expr(user::Column::UpdatedAt, Expr::value(chrono::Utc::now()))
        .filter(user::Column::Id.eq(id))
        .filter(user::Column::Status.eq(Status::Unverified))
        .exec(conn)
        .await?;
    Ok(replaced.rows_affected == 1)
}

/// A user's status and address before [`mark_verified`].
pub type Before = std::collections::HashMap<String, (Status, String)>;

/// Marks these users verified, each only if the address that was verified (the pair's second)
/// is the user's current one; one who already is stays as they are. Returns each existing
/// user's status and address before (an id that names no user is not in it).
pub async fn mark_verified<C: ConnectionTrait>(conn: &C, verified: &[(&str, &str)]) -> Result<Before, DbErr> {
    use sea_orm::QuerySelect;
    let before: Before = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::Status)
        .column(user::Column::Email)
        .filter(user::Column::Id.is_in(verified.iter().map(|(id, _)| *id)))
        .into_tuple::<(String, Status, String)>()
        .all(conn)
        .await?
        .into_iter()
        .map(|(id, status, email)| (id, (status, email)))
        .collect();
    let ids: Vec<&str> = verified
        .iter()
        .filter(|(id, email)| before.get(*id).is_some_and(|(_, current)| current == email))
        .map(|(id, _)| *id)
        .collect();
    let now = chrono::Utc::now();
    user::Entity::update_many()
        .col_expr(user::Column::Status, Expr::value(Status::Verified))
        .col_expr(user::Column::VerifiedAt, Expr::value(now))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .filter(user::Column::Id.is_in(ids.iter().copied()))
        .filter(user::Column::Status.eq(Status::Unverified))
        .exec(conn)
        .await?;
    Ok(before)
}
