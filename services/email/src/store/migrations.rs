//! Every migration of email-service's database, in the order they run. A migration, once
//! released, never changes: a new one follows it.

use sea_orm_migration::{MigrationTrait, MigratorTrait};

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![
            Box::new(create_deliveries::migration()),
            Box::new(add_handled_by::migration()),
            Box::new(verimail_events::erasure::migration::migration()),
            Box::new(create_bounces_and_suppressions::migration()),
        ];
        // The outbox came with email-service's own events (email.address_undeliverable): last,
        // so that databases from before take it as one more migration.
        migrations.extend(verimail_events::outbox::migration::migrations());
        migrations.push(Box::new(add_locale::migration()));
        migrations.push(Box::new(add_bounce_reasons::migration()));
        migrations.push(Box::new(create_webhooks::migration()));
        migrations.push(Box::new(add_webhook_previous_secret::migration()));
        migrations.push(Box::new(add_webhook_pending_order::migration()));
        migrations
    }
}

mod create_deliveries {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        EventId,
        UserId,
        Recipient,
        Kind,
        Status,
        Attempts,
        LastError,
        CreatedAt,
        UpdatedAt,
        SentAt,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261124_000001_create_deliveries",
            tables: vec![
                Table::create()
                    .table(Deliveries::Table)
                    .col(string(Deliveries::EventId).primary_key())
                    .col(string(Deliveries::UserId))
                    .col(string(Deliveries::Recipient))
                    .col(string(Deliveries::Kind))
                    .col(string_len(Deliveries::Status, 16))
                    .col(integer(Deliveries::Attempts).default(0))
                    .col(text_null(Deliveries::LastError))
                    .col(timestamp_with_time_zone(Deliveries::CreatedAt))
                    .col(timestamp_with_time_zone(Deliveries::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Deliveries::SentAt))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create().name("deliveries_user").table(Deliveries::Table).col(Deliveries::UserId).to_owned(),
            ],
        }
    }
}

mod add_handled_by {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        HandledBy,
    }

    /// Which email-service instance made the last attempt, for operators running several.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261124_000002_add_deliveries_handled_by",
            tables: vec![],
            alters: vec![
                Table::alter().table(Deliveries::Table).add_column(string_null(Deliveries::HandledBy)).to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod add_locale {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Deliveries {
        Table,
        Locale,
    }

    /// The language each email was asked for in, so that a retry by hand writes it the same.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000005_add_deliveries_locale",
            tables: vec![],
            alters: vec![
                Table::alter().table(Deliveries::Table).add_column(string_null(Deliveries::Locale)).to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod create_bounces_and_suppressions {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Bounces {
        Table,
        Id,
        DeliveryId,
        UserId,
        AddressHash,
        Class,
        Status,
        Diagnostic,
        ReportedRecipient,
        Text,
        ReceivedAt,
    }

    #[derive(DeriveIden)]
    enum Suppressions {
        Table,
        AddressHash,
        Id,
        Address,
        UserId,
        Reason,
        DeliveryId,
        Detail,
        CreatedAt,
        RemovedAt,
        RemovedReason,
    }

    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261203_000001_create_bounces_and_suppressions",
            tables: vec![
                Table::create()
                    .table(Bounces::Table)
                    .col(string(Bounces::Id).primary_key())
                    .col(string(Bounces::DeliveryId))
                    .col(string(Bounces::UserId))
                    .col(string(Bounces::AddressHash))
                    .col(string_len(Bounces::Class, 16))
                    .col(string_null(Bounces::Status))
                    .col(text_null(Bounces::Diagnostic))
                    .col(text_null(Bounces::ReportedRecipient))
                    .col(text_null(Bounces::Text))
                    .col(timestamp_with_time_zone(Bounces::ReceivedAt))
                    .to_owned(),
                Table::create()
                    .table(Suppressions::Table)
                    .col(string(Suppressions::AddressHash).primary_key())
                    .col(string(Suppressions::Id))
                    .col(string_null(Suppressions::Address))
                    .col(string(Suppressions::UserId))
                    .col(string_len(Suppressions::Reason, 16))
                    .col(string_null(Suppressions::DeliveryId))
                    .col(text_null(Suppressions::Detail))
                    .col(timestamp_with_time_zone(Suppressions::CreatedAt))
                    .col(timestamp_with_time_zone_null(Suppressions::RemovedAt))
                    .col(text_null(Suppressions::RemovedReason))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create().name("bounces_delivery").table(Bounces::Table).col(Bounces::DeliveryId).to_owned(),
                Index::create().name("bounces_user").table(Bounces::Table).col(Bounces::UserId).to_owned(),
                Index::create()
                    .name("bounces_address_time")
                    .table(Bounces::Table)
                    .col(Bounces::AddressHash)
                    .col(Bounces::ReceivedAt)
                    .to_owned(),
                Index::create()
                    .name("suppressions_id")
                    .table(Suppressions::Table)
                    .col(Suppressions::Id)
                    .unique()
                    .to_owned(),
                Index::create()
                    .name("suppressions_user")
                    .table(Suppressions::Table)
                    .col(Suppressions::UserId)
                    .to_owned(),
            ],
        }
    }
}

mod add_bounce_reasons {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum Bounces {
        Table,
        Reason,
    }

    #[derive(DeriveIden)]
    enum Suppressions {
        Table,
        BounceReason,
    }

    /// Why each message came back (the classifier's reason: userunknown, mailboxfull, …), and
    /// the reason of the bounce or refusal that suppressed each address. Empty for rows from
    /// before, and for unrecognized messages.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000001_add_bounce_reasons",
            tables: vec![],
            alters: vec![
                Table::alter().table(Bounces::Table).add_column(string_null(Bounces::Reason)).to_owned(),
                Table::alter()
                    .table(Suppressions::Table)
                    .add_column(string_null(Suppressions::BounceReason))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod create_webhooks {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum WebhookEndpoints {
        Table,
        Id,
        Url,
        EventTypes,
        Description,
        Secret,
        Enabled,
        CreatedAt,
    }

    #[derive(DeriveIden)]
    enum WebhookDeliveries {
        Table,
        Id,
        EndpointId,
        EventId,
        EventType,
        UserId,
        Payload,
        Status,
        Attempts,
        NextAttemptAt,
        CreatedAt,
        DeliveredAt,
    }

    #[derive(DeriveIden)]
    enum WebhookAttempts {
        Table,
        Id,
        DeliveryId,
        At,
        HttpStatus,
        Answer,
        DurationMs,
    }

    /// Webhook endpoints, the deliveries owed to them, and each attempt's answer.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000002_create_webhooks",
            tables: vec![
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(string(WebhookEndpoints::Id).primary_key())
                    .col(text(WebhookEndpoints::Url))
                    .col(text(WebhookEndpoints::EventTypes))
                    .col(text(WebhookEndpoints::Description))
                    .col(string(WebhookEndpoints::Secret))
                    .col(boolean(WebhookEndpoints::Enabled))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .to_owned(),
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(string(WebhookDeliveries::Id).primary_key())
                    .col(string(WebhookDeliveries::EndpointId))
                    .col(string(WebhookDeliveries::EventId))
                    .col(string(WebhookDeliveries::EventType))
                    .col(string(WebhookDeliveries::UserId))
                    .col(text(WebhookDeliveries::Payload))
                    .col(string_len(WebhookDeliveries::Status, 16))
                    .col(integer(WebhookDeliveries::Attempts))
                    .col(timestamp_with_time_zone(WebhookDeliveries::NextAttemptAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::DeliveredAt))
                    .to_owned(),
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(string(WebhookAttempts::Id).primary_key())
                    .col(string(WebhookAttempts::DeliveryId))
                    .col(timestamp_with_time_zone(WebhookAttempts::At))
                    .col(integer(WebhookAttempts::HttpStatus))
                    .col(text(WebhookAttempts::Answer))
                    .col(big_integer(WebhookAttempts::DurationMs))
                    .to_owned(),
            ],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("webhook_deliveries_event")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::EventId)
                    .unique()
                    .to_owned(),
                Index::create()
                    .name("webhook_deliveries_due")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
                Index::create()
                    .name("webhook_deliveries_user")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::UserId)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
                Index::create()
                    .name("webhook_attempts_delivery")
                    .table(WebhookAttempts::Table)
                    .col(WebhookAttempts::DeliveryId)
                    .to_owned(),
            ],
        }
    }
}

mod add_webhook_previous_secret {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    #[derive(DeriveIden)]
    enum WebhookEndpoints {
        Table,
        PreviousSecret,
        PreviousUntil,
    }

    /// The secret before a rotation, which signs beside the new one until `previous_until`.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000003_add_webhook_previous_secret",
            tables: vec![],
            alters: vec![
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .add_column(string_null(WebhookEndpoints::PreviousSecret))
                    .to_owned(),
                Table::alter()
                    .table(WebhookEndpoints::Table)
                    .add_column(timestamp_with_time_zone_null(WebhookEndpoints::PreviousUntil))
                    .to_owned(),
            ],
            indexes: vec![],
        }
    }
}

mod add_webhook_pending_order {
    use sea_orm_migration::prelude::*;

    #[derive(DeriveIden)]
    enum WebhookDeliveries {
        Table,
        EndpointId,
        Status,
        Id,
    }

    /// An endpoint's pending deliveries in order: the dispatcher reads the oldest first.
    pub fn migration() -> verimail_events::db::SchemaMigration {
        verimail_events::db::SchemaMigration {
            name: "m20261205_000004_add_webhook_pending_order",
            tables: vec![],
            alters: vec![],
            indexes: vec![
                Index::create()
                    .name("webhook_deliveries_pending")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            ],
        }
    }
}
