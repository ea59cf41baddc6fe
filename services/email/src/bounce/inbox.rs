//! What a message that came back does: read it, then record it against each delivery it is
//! for, suppressing the address where it calls for that (see [`Suppressions::record`]).

use super::listener::Receiver;
use crate::suppression::{Effect, Suppressions};
use verimail_mail::bounce::classify::{Class, classify};
use verimail_server::telemetry::email;

/// The bounce listener's receiver.
pub struct Inbox {
    pub suppressions: Suppressions,
}

impl Inbox {
    /// Records what `raw` says about each of `deliveries` (their ids, from the bounce
    /// addresses it was sent to): the effect on each.
    pub async fn record(&self, mut deliveries: Vec<String>, raw: &[u8]) -> Result<Vec<Effect>, sea_orm::DbErr> {
        deliveries.sort();
        deliveries.dedup();
        let verdict = classify(raw);
        crate::metrics::bounce(verdict.class.as_str());
        let effects = self.suppressions.record(&deliveries, &verdict).await?;
        let (class, status) = (verdict.class.as_str(), verdict.status.as_deref());
        for (delivery, effect) in deliveries.iter().zip(&effects) {
            match effect {
                Effect::Suppressed { delivery: row, reason } => {
                    tracing::warn!(delivery = %delivery, user_id = %row.user_id, to = %email(&row.recipient), reason = reason.as_str(), status, "address suppressed");
                }
                Effect::Recorded => tracing::info!(delivery = %delivery, class, status, "bounce recorded"),
                Effect::Ignored => {
                    tracing::info!(delivery = %delivery, class, "bounce for a delivery that is gone or erased: not kept");
                }
            }
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
