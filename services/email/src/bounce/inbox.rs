//! What a message that came back does: read it, record it against each delivery it is for,
//! and suppress the address where it calls for that, in one transaction.

use super::classify::{Class, classify};
use super::listener::Receiver;
use crate::store::AddressKey;
use crate::suppression::{self, Effect, SoftLimit};
use sea_orm::DatabaseConnection;
use verimail_events::db::begin_write;

/// The bounce listener's receiver.
pub struct Inbox {
    pub db: DatabaseConnection,
    pub address_key: AddressKey,
    pub soft: SoftLimit,
    /// Woken when a message suppressed an address (its email.address_undeliverable is in the
    /// outbox).
    pub relay: verimail_events::outbox::OutboxRelay,
}

impl Inbox {
    /// Records what `raw` says about each of `deliveries` (their ids, from the bounce
    /// addresses it was sent to): the effect on each.
    pub async fn record(&self, mut deliveries: Vec<String>, raw: &[u8]) -> Result<Vec<Effect>, sea_orm::DbErr> {
        deliveries.sort();
        deliveries.dedup();
        let verdict = classify(raw);
        crate::metrics::bounce(verdict.class.as_str());
        let txn = begin_write(&self.db).await?;
        let mut effects = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            effects.push(suppression::record(&txn, &self.address_key, delivery, &verdict, self.soft).await?);
        }
        txn.commit().await?;
        for (delivery, effect) in deliveries.iter().zip(&effects) {
            match effect {
                Effect::Suppressed { delivery: row, reason } => {
                    tracing::warn!(delivery = %delivery, user_id = %row.user_id, to = %verimail_server::telemetry::email(&row.recipient), reason = reason.as_str(), status = verdict.status.as_deref(), "address suppressed");
                }
                Effect::Recorded => {
                    tracing::info!(delivery = %delivery, class = verdict.class.as_str(), status = verdict.status.as_deref(), "bounce recorded");
                }
                Effect::Ignored => {
                    tracing::info!(delivery = %delivery, class = verdict.class.as_str(), "bounce for a delivery that is gone or erased: not kept");
                }
            }
        }
        if effects.iter().any(|e| matches!(e, Effect::Suppressed { .. })) {
            self.relay.wake();
            crate::metrics::refresh_suppressed(&self.db).await;
        }
        if verdict.class == Class::Unrecognized {
            tracing::info!(
                deliveries = deliveries.len(),
                "an unrecognized message came back: kept for operators (ListDeliveries shows it)"
            );
        }
        Ok(effects)
    }
}

impl Receiver for Inbox {
    async fn receive(&self, deliveries: Vec<String>, raw: Vec<u8>) -> Result<(), String> {
        self.record(deliveries, &raw).await.map(drop).map_err(|e| e.to_string())
    }
}
