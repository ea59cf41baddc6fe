//! Every migration of auth-service's database, in the order they run. A migration, once
//! released, never changes: a new one follows it.

use sea_orm_migration::{MigrationTrait, MigratorTrait};

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
        migrations.push(Box::new(add_code_purpose::migration()));
        migrations
    }
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

mod add_code_purpose {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum VerificationCodes {
        Table,
        Purpose,
    }

    /// Codes of password resets beside those that verify an address.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000001_add_code_purpose",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(VerificationCodes::Table)
                    .add_column(string_len_null(VerificationCodes::Purpose, 32))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}
