//! Registering endpoints, and what operators see of them and of their deliveries.

use super::{Webhooks, guard, payload, sign};
use crate::error::EmailError;
use crate::store::webhook_deliveries::{self, Status, attempts};
use crate::store::webhook_endpoints::{self, Model as Endpoint};

/// How long an endpoint's description may be.
const DESCRIPTION_MAX: usize = 200;

impl Webhooks {
    /// Registers an endpoint for `event_types` at `url` (checked: see [`guard`]): the endpoint
    /// and its secret.
    pub async fn create(
        &self,
        url: &str,
        event_types: &[String],
        description: &str,
    ) -> Result<(Endpoint, String), EmailError> {
        let url = guard::check_url(url, self.config.allow_private).map_err(|why| EmailError::invalid("url", why))?;
        let mut wanted: Vec<&str> = Vec::new();
        for event_type in event_types {
            let known = payload::EVENT_TYPES.iter().find(|known| **known == event_type.trim());
            let Some(known) = known else {
                let known = payload::EVENT_TYPES.join(", ");
                return Err(EmailError::invalid("event_types", format!("{event_type:?} is not one of {known}")));
            };
            if !wanted.contains(known) {
                wanted.push(known);
            }
        }
        if wanted.is_empty() {
            return Err(EmailError::invalid("event_types", "name at least one"));
        }
        if description.chars().count() > DESCRIPTION_MAX {
            return Err(EmailError::invalid("description", format!("at most {DESCRIPTION_MAX} characters")));
        }
        let secret = sign::new_secret();
        let endpoint = Endpoint {
            id: uuid::Uuid::now_v7().to_string(),
            url: url.to_string(),
            event_types: wanted.join(" "),
            description: description.trim().to_owned(),
            secret: secret.clone(),
            previous_secret: None,
            previous_until: None,
            enabled: true,
            created_at: chrono::Utc::now(),
        };
        webhook_endpoints::insert(&verimail_events::db::writer(&self.db), endpoint.clone()).await?;
        self.endpoints_changed.notify_waiters();
        tracing::info!(endpoint = %endpoint.id, url = %endpoint.url, types = %endpoint.event_types, "webhook endpoint registered");
        Ok((endpoint, secret))
    }

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, EmailError> {
        Ok(webhook_endpoints::all(&self.db).await?)
    }

    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<Endpoint, EmailError> {
        let writer = verimail_events::db::writer(&self.db);
        let endpoint = webhook_endpoints::set_enabled(&writer, id, enabled).await?;
        self.endpoints_changed.notify_waiters();
        endpoint.ok_or_else(|| EmailError::NoEndpoint(id.to_owned()))
    }

    /// Removes an endpoint and what was owed to it.
    pub async fn delete(&self, id: &str) -> Result<(), EmailError> {
        let txn = verimail_events::db::begin_write(&self.db).await?;
        webhook_deliveries::delete_of_endpoint(&txn, id).await?;
        let found = webhook_endpoints::delete(&txn, id).await?;
        txn.commit().await?;
        if !found {
            return Err(EmailError::NoEndpoint(id.to_owned()));
        }
        crate::metrics::webhook_endpoint_removed(id);
        self.endpoints_changed.notify_waiters();
        Ok(())
    }

    /// Sends finished deliveries again (one, or a range by creation): how many.
    pub async fn replay(
        &self,
        endpoint: &str,
        id: Option<&str>,
        range: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    ) -> Result<u64, EmailError> {
        if webhook_endpoints::get(&self.db, endpoint).await?.is_none() {
            return Err(EmailError::NoEndpoint(endpoint.to_owned()));
        }
        let writer = verimail_events::db::writer(&self.db);
        let replayed = webhook_deliveries::replay(&writer, endpoint, id, range, chrono::Utc::now()).await?;
        self.wake.notify_waiters();
        tracing::info!(endpoint, replayed, "webhook deliveries replayed");
        Ok(replayed)
    }

    /// A new secret for `id`, the previous one signing beside it for `previous_valid`.
    pub async fn rotate(
        &self,
        id: &str,
        previous_valid: std::time::Duration,
    ) -> Result<(Endpoint, String), EmailError> {
        let secret = sign::new_secret();
        let until = chrono::Utc::now() + chrono::Duration::from_std(previous_valid).unwrap_or(chrono::Duration::MAX);
        let writer = verimail_events::db::writer(&self.db);
        let endpoint = webhook_endpoints::rotate(&writer, id, secret.clone(), until).await?;
        let endpoint = endpoint.ok_or_else(|| EmailError::NoEndpoint(id.to_owned()))?;
        tracing::info!(endpoint = %endpoint.id, "webhook secret rotated");
        Ok((endpoint, secret))
    }

    /// A page of an endpoint's deliveries, newest first, with their attempts.
    pub async fn deliveries(
        &self,
        endpoint: &str,
        status: Option<Status>,
        cursor: Option<&str>,
        size: u64,
    ) -> Result<Vec<(webhook_deliveries::Model, Vec<attempts::Model>)>, EmailError> {
        if webhook_endpoints::get(&self.db, endpoint).await?.is_none() {
            return Err(EmailError::NoEndpoint(endpoint.to_owned()));
        }
        Ok(webhook_deliveries::page(&self.db, endpoint, status, cursor, size).await?)
    }
}
