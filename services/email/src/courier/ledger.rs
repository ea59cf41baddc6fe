//! The ops view's reads: what became of each email, with what came back about it.

use super::Courier;
use crate::store::{bounces, deliveries};
use sea_orm::DbErr;

pub use crate::store::bounces::Model as Bounce;
pub use crate::store::deliveries::DeliveryStatus;

/// A delivery as operators see it: the row, and the messages that came back about it, oldest
/// first.
pub struct Delivery {
    pub row: deliveries::Model,
    pub bounces: Vec<Bounce>,
}

/// Which deliveries ListDeliveries shows.
#[derive(Debug, Default)]
pub struct DeliveryFilter {
    pub user_id: Option<String>,
    /// An address (lower-cased): found as it is, or by its keyed hash once its user is deleted.
    pub email: Option<String>,
    pub status: Option<DeliveryStatus>,
}

impl Courier {
    /// Deliveries newest first, continuing after the event id `after`.
    pub async fn deliveries(
        &self,
        filter: DeliveryFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<Delivery>, DbErr> {
        let recipient = filter.email.map(|email| vec![self.suppressions.hash(&email), email]);
        let filters = deliveries::Filters { user_id: filter.user_id, recipient, status: filter.status };
        let rows = deliveries::list(&self.db, &filters, after, limit).await?;
        self.with_bounces(rows).await
    }

    /// The delivery of the event `event_id`, if there is one.
    pub async fn delivery(&self, event_id: &str) -> Result<Option<Delivery>, DbErr> {
        let row = deliveries::get(&self.db, event_id).await?;
        Ok(self.with_bounces(row.into_iter().collect()).await?.pop())
    }

    /// The address and language of the user's latest delivery whose address is still there.
    pub async fn latest_for_user(&self, user_id: &str) -> Result<Option<(String, Option<String>)>, DbErr> {
        let latest = deliveries::latest_for_user(&self.db, user_id).await?;
        Ok(latest.map(|row| (row.recipient, row.locale)))
    }

    /// The deliveries, each with its bounce history (one query for all of them).
    async fn with_bounces(&self, rows: Vec<deliveries::Model>) -> Result<Vec<Delivery>, DbErr> {
        let ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
        let mut histories = bounces::histories(&self.db, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| Delivery { bounces: histories.remove(&row.event_id).unwrap_or_default(), row })
            .collect())
    }
}
