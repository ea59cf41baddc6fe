//! auth-service's own tables: one row per issued token (its jti, never the token itself)
//! and the outbox.

use sea_orm::entity::prelude::*;
use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub mod token {
    use sea_orm::entity::prelude::*;

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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod code {
    use sea_orm::entity::prelude::*;

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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod create_codes {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationCodes {
        Table,
        Id,
        UserId,
        Email,
        KeyId,
        CodeHash,
        IssuedAt,
        ExpiresAt,
        WrongTries,
        UsedAt,
    }

    pub fn migration() -> verimail_kit::db::SchemaMigration {
        verimail_kit::db::SchemaMigration {
            name: "m20261124_000002_create_verification_codes",
            tables: vec![
                Table::create()
                    .table(VerificationCodes::Table)
                    .col(string(VerificationCodes::Id).primary_key())
                    .col(string(VerificationCodes::UserId))
                    .col(string(VerificationCodes::Email))
                    .col(string(VerificationCodes::KeyId))
                    .col(blob(VerificationCodes::CodeHash))
                    .col(timestamp_with_time_zone(VerificationCodes::IssuedAt))
                    .col(timestamp_with_time_zone(VerificationCodes::ExpiresAt))
                    .col(integer(VerificationCodes::WrongTries).default(0))
                    .col(timestamp_with_time_zone_null(VerificationCodes::UsedAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("verification_codes_email")
                    .table(VerificationCodes::Table)
                    .col(VerificationCodes::Email)
                    .to_owned(),
            ],
        }
    }
}

mod create_tokens {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationTokens {
        Table,
        Jti,
        UserId,
        Email,
        KeyId,
        IssuedAt,
        ExpiresAt,
        UsedAt,
    }

    pub fn migration() -> verimail_kit::db::SchemaMigration {
        verimail_kit::db::SchemaMigration {
            name: "m20261124_000001_create_verification_tokens",
            tables: vec![
                Table::create()
                    .table(VerificationTokens::Table)
                    .col(string(VerificationTokens::Jti).primary_key())
                    .col(string(VerificationTokens::UserId))
                    .col(string(VerificationTokens::Email))
                    .col(string(VerificationTokens::KeyId))
                    .col(timestamp_with_time_zone(VerificationTokens::IssuedAt))
                    .col(timestamp_with_time_zone(VerificationTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(VerificationTokens::UsedAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("verification_tokens_user")
                    .table(VerificationTokens::Table)
                    .col(VerificationTokens::UserId)
                    .to_owned(),
            ],
        }
    }
}

mod add_revoked_at {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationTokens {
        Table,
        RevokedAt,
    }

    #[derive(DeriveIden)]
    enum VerificationCodes {
        Table,
        RevokedAt,
    }

    /// When an operator revoked a token or code (RevokeVerificationTokens).
    pub fn migration() -> verimail_kit::db::SchemaMigration {
        verimail_kit::db::SchemaMigration {
            name: "m20261124_000003_add_revoked_at",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(timestamp_with_time_zone_null(VerificationTokens::RevokedAt))
                    .to_owned(),
                Table::alter()
                    .table(VerificationCodes::Table)
                    .add_column(timestamp_with_time_zone_null(VerificationCodes::RevokedAt))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = verimail_kit::outbox::migration::migrations();
        migrations.push(Box::new(create_tokens::migration()));
        migrations.push(Box::new(create_codes::migration()));
        migrations.push(Box::new(add_revoked_at::migration()));
        migrations
    }
}

/// Marks the token used if nobody has yet and it is not revoked; true when this call did it.
pub async fn claim_token<C: ConnectionTrait>(conn: &C, jti: &str) -> Result<bool, DbErr> {
    let result = token::Entity::update_many()
        .col_expr(token::Column::UsedAt, Expr::value(chrono::Utc::now()))
        .filter(token::Column::Jti.eq(jti))
        .filter(token::Column::UsedAt.is_null())
        .filter(token::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Whether any token or code of this user has been used: the user's email is verified.
pub async fn user_verified<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<bool, DbErr> {
    let tokens = token::Entity::find()
        .filter(token::Column::UserId.eq(user_id))
        .filter(token::Column::UsedAt.is_not_null())
        .count(conn)
        .await?;
    let codes = code::Entity::find()
        .filter(code::Column::UserId.eq(user_id))
        .filter(code::Column::UsedAt.is_not_null())
        .count(conn)
        .await?;
    Ok(tokens + codes > 0)
}

/// Revokes the user's unused, unrevoked tokens and codes; how many of each.
pub async fn revoke<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<(u64, u64), DbErr> {
    let now = chrono::Utc::now();
    let tokens = token::Entity::update_many()
        .col_expr(token::Column::RevokedAt, Expr::value(now))
        .filter(token::Column::UserId.eq(user_id))
        .filter(token::Column::UsedAt.is_null())
        .filter(token::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    let codes = code::Entity::update_many()
        .col_expr(code::Column::RevokedAt, Expr::value(now))
        .filter(code::Column::UserId.eq(user_id))
        .filter(code::Column::UsedAt.is_null())
        .filter(code::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok((tokens.rows_affected, codes.rows_affected))
}
