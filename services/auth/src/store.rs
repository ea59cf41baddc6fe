//! auth-service's own tables: one row per issued token (its jti, never the token itself)
//! and the outbox.

use sea_orm::entity::prelude::*;
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use std::collections::{HashMap, HashSet};

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
        /// The users.registered event this code's email was for (see the token's).
        pub registration_event_id: Option<String>,
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

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
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

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
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
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
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

mod index_codes_by_user {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    enum VerificationCodes {
        Table,
        UserId,
    }

    /// Every verification asks whether the user has used any code (`user_verified`): without
    /// this index that read scans every code ever issued.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261201_000004_index_verification_codes_user",
            tables: vec![],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("verification_codes_user")
                    .table(VerificationCodes::Table)
                    .col(VerificationCodes::UserId)
                    .to_owned(),
            ],
        }
    }
}

mod add_registration_event {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationTokens {
        Table,
        RegistrationEventId,
    }

    #[derive(DeriveIden)]
    enum VerificationCodes {
        Table,
        RegistrationEventId,
    }

    /// Which registration a token or code was issued for: a later registration revokes them.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261202_000005_add_registration_event",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(string_null(VerificationTokens::RegistrationEventId))
                    .to_owned(),
                Table::alter()
                    .table(VerificationCodes::Table)
                    .add_column(string_null(VerificationCodes::RegistrationEventId))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod add_token_purpose {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationTokens {
        Table,
        Purpose,
    }

    /// What a token is for: verification (none), or undoing a change of address.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261202_000006_add_token_purpose",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(string_null(VerificationTokens::Purpose))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod add_token_trace {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationTokens {
        Table,
        Trace,
    }

    /// The trace a token was issued in, which its link used to carry.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000007_add_token_trace",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(VerificationTokens::Table)
                    .add_column(string_null(VerificationTokens::Trace))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = verimail_events::outbox::migration::migrations();
        migrations.push(Box::new(create_tokens::migration()));
        migrations.push(Box::new(create_codes::migration()));
        migrations.push(Box::new(add_revoked_at::migration()));
        migrations.push(Box::new(index_codes_by_user::migration()));
        migrations.push(Box::new(add_registration_event::migration()));
        migrations.push(Box::new(verimail_events::erasure::migration::migration()));
        migrations.push(Box::new(add_token_purpose::migration()));
        migrations.push(Box::new(add_token_trace::migration()));
        migrations
    }
}

/// Marks these tokens used where nobody has yet, they are neither revoked nor expired, and
/// they are for one of `purposes`: the rows this call claimed (`UPDATE … RETURNING`, so two
/// instances never both claim one).
pub async fn claim_tokens<C: ConnectionTrait>(
    conn: &C,
    jtis: &[&str],
    purposes: sea_orm::Condition,
) -> Result<HashMap<String, token::Model>, DbErr> {
    let now = chrono::Utc::now();
    let claimed = token::Entity::update_many()
        .col_expr(token::Column::UsedAt, Expr::value(now))
        .filter(token::Column::Jti.is_in(jtis.iter().copied()))
        .filter(token::Column::UsedAt.is_null())
        .filter(token::Column::RevokedAt.is_null())
        .filter(token::Column::ExpiresAt.gt(now))
        .filter(purposes)
        .exec_with_returning(conn)
        .await?;
    Ok(claimed.into_iter().map(|row| (row.jti.clone(), row)).collect())
}

/// The rows of these tokens, by jti.
pub async fn tokens<C: ConnectionTrait>(conn: &C, jtis: &[&str]) -> Result<HashMap<String, token::Model>, DbErr> {
    if jtis.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = token::Entity::find().filter(token::Column::Jti.is_in(jtis.iter().copied())).all(conn).await?;
    Ok(rows.into_iter().map(|row| (row.jti.clone(), row)).collect())
}

/// Undo links: the link of a change-of-address notice.
pub fn undoes() -> sea_orm::Condition {
    sea_orm::Condition::all().add(token::Column::Purpose.eq(crate::token::UNDO_EMAIL_CHANGE))
}

/// Tokens that verify an address (of a registration, or a change's new one), not undo links.
pub fn verifies() -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(token::Column::Purpose.is_null())
        .add(token::Column::Purpose.eq(crate::token::EMAIL_CHANGE))
}

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
    let mut used = token::Entity::find()
        .select_only()
        .columns([token::Column::UserId, token::Column::RegistrationEventId])
        .filter(token::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(token::Column::UsedAt.is_not_null())
        .filter(verifies());
    if !except.is_empty() {
        used = used.filter(token::Column::Jti.is_not_in(except.iter().copied()));
    }
    let tokens: Vec<Issue> = used.into_tuple().all(conn).await?;
    let codes: Vec<Issue> = code::Entity::find()
        .select_only()
        .columns([code::Column::UserId, code::Column::RegistrationEventId])
        .filter(code::Column::UserId.is_in(user_ids.iter().copied()))
        .filter(code::Column::UsedAt.is_not_null())
        .into_tuple()
        .all(conn)
        .await?;
    Ok(tokens.into_iter().chain(codes).collect())
}

/// Records an issued token (its jti, never the token): for `registration` (or a change), of
/// `purpose` (none for a registration's verification), in the current trace.
pub async fn record_token<C: ConnectionTrait>(
    conn: &C,
    issued: &crate::token::IssuedToken,
    user_id: &str,
    email: &str,
    registration: Option<&str>,
    purpose: Option<&str>,
) -> Result<(), DbErr> {
    use sea_orm::ActiveValue::Set;
    token::Entity::insert(token::ActiveModel {
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

/// Whether a later registration of the user than `registration` has had a token issued:
/// then this one is superseded. (Registration ids are UUIDv7s, whose text orders by time.)
pub async fn superseded<C: ConnectionTrait>(conn: &C, user_id: &str, registration: &str) -> Result<bool, DbErr> {
    let later = token::Entity::find()
        .filter(token::Column::UserId.eq(user_id))
        .filter(token::Column::RegistrationEventId.gt(registration))
        .one(conn)
        .await?;
    Ok(later.is_some())
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
    let tokens = token::Entity::update_many()
        .col_expr(token::Column::RevokedAt, Expr::value(now))
        .filter(unused.clone())
        .filter(verifies())
        .exec(conn)
        .await?;
    let codes = code::Entity::update_many()
        .col_expr(code::Column::RevokedAt, Expr::value(now))
        .filter(unused)
        .exec(conn)
        .await?;
    Ok((tokens.rows_affected, codes.rows_affected))
}
