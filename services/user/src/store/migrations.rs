//! Every migration of user-service's database, in the order they run. A migration, once
//! released, never changes: a new one follows it.

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = verimail_events::outbox::migration::migrations();
        migrations.push(Box::new(create_users::migration()));
        migrations.push(Box::new(add_registration_event::migration()));
        migrations.push(Box::new(index_unverified::migration()));
        migrations.push(Box::new(verimail_events::erasure::migration::migration()));
        migrations.push(Box::new(create_email_changes::migration()));
        migrations.push(Box::new(create_undeliverable_addresses::migration()));
        migrations.push(Box::new(add_locale::migration()));
        migrations.push(Box::new(index_unverified::Partial));
        migrations.push(Box::new(create_sessions::migration()));
        migrations
    }
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
            let unverified = Expr::col(Users::Status).eq(Expr::cust(crate::store::users::UNVERIFIED_LITERAL));
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

mod create_undeliverable_addresses {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum UndeliverableAddresses {
        Table,
        UserId,
        Email,
        Reason,
        Status,
        Since,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000005_create_undeliverable_addresses",
            tables: vec![
                Table::create()
                    .table(UndeliverableAddresses::Table)
                    .col(string(UndeliverableAddresses::UserId).primary_key())
                    .col(string(UndeliverableAddresses::Email))
                    .col(string_len(UndeliverableAddresses::Reason, 16))
                    .col(string_null(UndeliverableAddresses::Status))
                    .col(timestamp_with_time_zone(UndeliverableAddresses::Since))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![],
        }
    }
}

mod create_sessions {
    use crate::store::sessions::Clock;
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    #[sea_orm(iden = "sessions")]
    enum SessionsTable {
        #[sea_orm(iden = "sessions")]
        Table,
        Id,
        UserId,
        RefreshHash,
        Client,
        CreatedAt,
        LastUsedAt,
        AuthTime,
        ExpiresAt,
        AccessExpiresAt,
        EndedAt,
        EndReason,
        EndSeq,
    }

    #[derive(DeriveIden)]
    enum RetiredRefreshTokens {
        Table,
        Hash,
        SessionId,
    }

    /// Sessions, the refresh tokens rotations retired, and the clock of the revocation feed
    /// (one row, made by its first tick).
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000001_create_sessions",
            tables: vec![
                Table::create()
                    .table(SessionsTable::Table)
                    .col(string(SessionsTable::Id).primary_key())
                    .col(string(SessionsTable::UserId))
                    .col(string_uniq(SessionsTable::RefreshHash))
                    .col(string(SessionsTable::Client))
                    .col(timestamp_with_time_zone(SessionsTable::CreatedAt))
                    .col(timestamp_with_time_zone(SessionsTable::LastUsedAt))
                    .col(timestamp_with_time_zone(SessionsTable::AuthTime))
                    .col(timestamp_with_time_zone(SessionsTable::ExpiresAt))
                    .col(timestamp_with_time_zone(SessionsTable::AccessExpiresAt))
                    .col(timestamp_with_time_zone_null(SessionsTable::EndedAt))
                    .col(string_len_null(SessionsTable::EndReason, 32))
                    .col(big_integer_null(SessionsTable::EndSeq))
                    .to_owned(),
                Table::create()
                    .table(RetiredRefreshTokens::Table)
                    .col(string(RetiredRefreshTokens::Hash).primary_key())
                    .col(string(RetiredRefreshTokens::SessionId))
                    .to_owned(),
                Table::create()
                    .table(Clock::Table)
                    .col(integer(Clock::Id).primary_key())
                    .col(big_integer(Clock::Seq))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create().name("sessions_user").table(SessionsTable::Table).col(SessionsTable::UserId).to_owned(),
                Index::create()
                    .name("sessions_end_seq")
                    .table(SessionsTable::Table)
                    .col(SessionsTable::EndSeq)
                    .to_owned(),
                Index::create()
                    .name("retired_refresh_tokens_session")
                    .table(RetiredRefreshTokens::Table)
                    .col(RetiredRefreshTokens::SessionId)
                    .to_owned(),
            ],
        }
    }
}
