//! What came back and what it decided: every message about a delivery is recorded against it
//! (`bounces`), and an address that cannot take mail goes on the suppression list, announced
//! once (email.address_undeliverable) until an operator lifts it (email.address_deliverable).
//! Both tables know an address by its keyed hash, which outlives the account.

use crate::address_key::{AddressKey, HASHED};
use crate::error::EmailError;
use crate::store::deliveries::{self, DeliveryStatus};
use crate::store::{bounces, suppressions};
use sea_orm::{DatabaseConnection, DbErr};
use verimail_events::outbox::{OutboxRelay, Write};
use verimail_mail::bounce::classify::{Class, Verdict};
use verimail_proto::events::v1 as events;
use verimail_server::telemetry::email;

/// An address on the list, or lifted from it.
pub use crate::store::suppressions::Model as Suppression;

/// The suppression list and the bounces recorded against deliveries.
#[derive(Clone)]
pub struct Suppressions {
    pub db: DatabaseConnection,
    pub relay: OutboxRelay,
    pub address_key: AddressKey,
    pub soft: SoftLimit,
}

/// The bounce history one delivery keeps: the newest 20 messages about it. A delivery has one
/// recipient; real mail systems send it one bounce, or a few delays and then a failure.
pub const BOUNCES_KEPT_PER_DELIVERY: u64 = 20;

/// Soft bounces in a window that suppress (`BOUNCE_SOFT_LIMIT`, `BOUNCE_SOFT_WINDOW_SECONDS`).
#[derive(Debug, Clone, Copy)]
pub struct SoftLimit {
    pub count: u64,
    pub window: std::time::Duration,
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    HardBounce,
    Complaint,
    SoftBounces,
    /// The recipient's server refused it at send time (550, 551, 553, 5.1.x).
    Rejected,
}

impl Reason {
    /// From what the list records.
    pub fn parse(text: &str) -> Option<Reason> {
        [Reason::HardBounce, Reason::Complaint, Reason::SoftBounces, Reason::Rejected]
            .into_iter()
            .find(|reason| reason.as_str() == text)
    }

    fn to_proto(self) -> events::UndeliverableReason {
        match self {
            Reason::HardBounce => events::UndeliverableReason::HardBounce,
            Reason::Complaint => events::UndeliverableReason::Complaint,
            Reason::SoftBounces => events::UndeliverableReason::SoftBounces,
            Reason::Rejected => events::UndeliverableReason::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::SoftBounces => "soft_bounces",
            Reason::Rejected => "rejected",
        }
    }
}

/// What decided a suppression: the enhanced status, the bounce's reason, and the words.
struct Why<'a> {
    status: Option<&'a str>,
    reason: Option<verimail_mail::bounce::reason::Reason>,
    detail: Option<String>,
}

/// What one inbound message did to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Recorded; nothing else changes (auto-reply, delivered notice, unrecognized, a soft
    /// bounce under the limit, or an address already suppressed).
    Recorded,
    /// The address was put on the list now.
    Suppressed { delivery: Box<deliveries::Model>, reason: Reason },
    /// No such delivery, or its user was deleted: nothing is kept.
    Ignored,
}

/// email.address_undeliverable: `user_id`'s address `email` cannot receive mail.
fn undeliverable(
    user_id: &str,
    email: &str,
    reason: Reason,
    status: Option<&str>,
    bounce_reason: Option<verimail_mail::bounce::reason::Reason>,
    delivery_id: &str,
) -> events::AddressUndeliverable {
    events::AddressUndeliverable {
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        reason: reason.to_proto() as i32,
        status: status.unwrap_or_default().to_owned(),
        delivery_id: delivery_id.to_owned(),
        occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
        bounce_reason: bounce_reason
            .filter(|r| *r != verimail_mail::bounce::reason::Reason::Feedback)
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
    }
}

impl Suppressions {
    /// What the list and the bounces know an address by: its keyed hash, whatever its case.
    pub fn hash(&self, address: &str) -> String {
        self.address_key.hash(&address.to_lowercase())
    }

    /// The suppression of `address`, if one is in force.
    pub async fn active(&self, address: &str) -> Result<Option<Suppression>, DbErr> {
        suppressions::active(&self.db, &self.hash(address)).await
    }

    /// Suppressions newest first (ListSuppressions), optionally only `address`'s, or only
    /// those in force, continuing after the one with id `after`.
    pub async fn list(
        &self,
        address: Option<&str>,
        active_only: bool,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Suppression>, DbErr> {
        let hash = address.map(|address| self.hash(address));
        suppressions::list(&self.db, hash.as_deref(), active_only, after, limit).await
    }

    /// An email for `user_id` was not sent because `found` suppresses its address, which may
    /// have been another account's: the user hears of it (email.address_undeliverable).
    pub async fn tell_user(&self, user_id: &str, email: &str, found: &Suppression) -> Result<(), DbErr> {
        let Some(reason) = Reason::parse(&found.reason) else { return Ok(()) };
        let mut write = self.relay.begin().await?;
        let bounce_reason = found.bounce_reason.as_deref().and_then(verimail_mail::bounce::reason::Reason::parse);
        let delivery = found.delivery_id.as_deref().unwrap_or_default();
        write.announce(&undeliverable(user_id, email, reason, None, bounce_reason, delivery));
        write.commit().await
    }

    /// A recipient refused at send time (SMTP 550, 551, 553 or 5.1.x): the address goes on the
    /// suppression list, as for a hard bounce.
    pub async fn refused(&self, event_id: &str, reason: &str) -> Result<(), DbErr> {
        let mut write = self.relay.begin().await?;
        let Some(row) = deliveries::get(&*write, event_id).await? else { return Ok(()) };
        let status = verimail_mail::bounce::classify::enhanced_status(reason);
        let why = Why {
            status: status.as_deref(),
            reason: Some(verimail_mail::bounce::reason::of_refusal(None, reason)),
            detail: Some(reason.to_owned()),
        };
        let new = self.suppress(&mut write, &row, Reason::Rejected, why).await?;
        write.commit().await?;
        if new {
            tracing::warn!(event_id, user_id = %row.user_id, to = %email(&row.recipient), "address suppressed: refused at send time");
            self.refresh_metric().await;
        }
        Ok(())
    }

    /// RemoveSuppression: lifts the suppression of `address`, recording `why`, and announces
    /// it (email.address_deliverable).
    pub async fn lift(&self, address: &str, why: &str) -> Result<Suppression, EmailError> {
        let mut write = self.relay.begin().await?;
        let Some(row) = suppressions::remove(&write, &self.hash(address), why).await? else {
            return Err(EmailError::NotSuppressed(address.to_owned()));
        };
        write.announce(&events::AddressDeliverable {
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: row.user_id.clone(),
            email: address.to_owned(),
            occurred_at: verimail_server::rfc3339(chrono::Utc::now()),
        });
        write.commit().await?;
        tracing::info!(user_id = %row.user_id, to = %email(address), reason = why, "suppression lifted by an operator");
        self.refresh_metric().await;
        Ok(row)
    }

    /// Records `verdict` against each of `delivery_ids` in one transaction, and does what it
    /// calls for: a hard bounce or complaint marks the delivery and suppresses the address; a
    /// soft one counts, and suppresses once there are `soft.count` in `soft.window`. The
    /// effect on each.
    pub async fn record(&self, delivery_ids: &[String], verdict: &Verdict) -> Result<Vec<Effect>, DbErr> {
        let mut write = self.relay.begin().await?;
        let mut effects = Vec::with_capacity(delivery_ids.len());
        for delivery_id in delivery_ids {
            effects.push(self.record_one(&mut write, delivery_id, verdict).await?);
        }
        write.commit().await?;
        if effects.iter().any(|e| matches!(e, Effect::Suppressed { .. })) {
            self.refresh_metric().await;
        }
        Ok(effects)
    }

    async fn record_one(&self, write: &mut Write<'_>, delivery_id: &str, verdict: &Verdict) -> Result<Effect, DbErr> {
        let Some(delivery) = deliveries::get(&**write, delivery_id).await? else {
            return Ok(Effect::Ignored);
        };
        if delivery.recipient.starts_with(HASHED) {
            return Ok(Effect::Ignored);
        }
        let now = chrono::Utc::now();
        let hash = self.hash(&delivery.recipient);
        let row = bounces::Model {
            id: uuid::Uuid::now_v7().to_string(),
            delivery_id: delivery.event_id.clone(),
            user_id: delivery.user_id.clone(),
            address_hash: hash.clone(),
            class: verdict.class.as_str().to_owned(),
            reason: verdict.reason.map(|r| r.as_str().to_owned()),
            status: verdict.status.clone(),
            diagnostic: verdict.diagnostic.clone(),
            reported_recipient: verdict.recipient.clone(),
            text: verdict.text.clone(),
            received_at: now,
        };
        bounces::insert(write, row, BOUNCES_KEPT_PER_DELIVERY).await?;
        let detail = [verdict.status.as_deref(), verdict.diagnostic.as_deref()].into_iter().flatten();
        let detail = detail.collect::<Vec<_>>().join(" ");
        let detail = (!detail.is_empty()).then_some(detail);
        let reason = match verdict.class {
            Class::Hard => {
                deliveries::finish(&**write, &delivery.event_id, DeliveryStatus::Bounced, detail.clone()).await?;
                Reason::HardBounce
            }
            Class::Complaint => {
                deliveries::finish(&**write, &delivery.event_id, DeliveryStatus::Complained, detail.clone()).await?;
                Reason::Complaint
            }
            Class::Soft => {
                let since = now - chrono::Duration::from_std(self.soft.window).unwrap_or(chrono::Duration::MAX);
                if bounces::soft_since(&**write, &hash, Class::Soft.as_str(), since).await? < self.soft.count {
                    return Ok(Effect::Recorded);
                }
                Reason::SoftBounces
            }
            Class::AutoReply | Class::Delivered | Class::Unrecognized => return Ok(Effect::Recorded),
        };
        let why = Why { status: verdict.status.as_deref(), reason: verdict.reason, detail };
        Ok(match self.suppress(write, &delivery, reason, why).await? {
            true => Effect::Suppressed { delivery: Box::new(delivery), reason },
            false => Effect::Recorded,
        })
    }

    /// Puts the address of `delivery` on the list (or back on it after a removal) and, when it
    /// was not on it before, announces it with the change (email.address_undeliverable, with
    /// the enhanced code that decided it): whether it did.
    async fn suppress(
        &self,
        write: &mut Write<'_>,
        delivery: &deliveries::Model,
        reason: Reason,
        Why { status, reason: bounce_reason, detail }: Why<'_>,
    ) -> Result<bool, DbErr> {
        let row = suppressions::Model {
            address_hash: self.hash(&delivery.recipient),
            id: uuid::Uuid::now_v7().to_string(),
            address: Some(delivery.recipient.clone()),
            user_id: delivery.user_id.clone(),
            reason: reason.as_str().to_owned(),
            bounce_reason: bounce_reason.map(|r| r.as_str().to_owned()),
            delivery_id: Some(delivery.event_id.clone()),
            detail,
            created_at: chrono::Utc::now(),
            removed_at: None,
            removed_reason: None,
        };
        let new = suppressions::put(write, row).await?;
        if new {
            let event = undeliverable(
                &delivery.user_id,
                &delivery.recipient,
                reason,
                status,
                bounce_reason,
                &delivery.event_id,
            );
            write.announce(&event);
        }
        Ok(new)
    }

    /// Sets the suppression list's gauge from the database (after a change, and at start).
    pub async fn refresh_metric(&self) {
        match suppressions::count_active(&self.db).await {
            Ok(count) => crate::metrics::suppressed(count),
            Err(e) => tracing::warn!(error = %e, "could not count the suppression list"),
        }
    }
}
