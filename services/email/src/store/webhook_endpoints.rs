//! The `webhook_endpoints` table: where events are POSTed, which ones, and the secret their
//! signatures are keyed with.

use sea_orm::entity::prelude::*;
use sea_orm::{QueryOrder, Set};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    /// A UUIDv7: the endpoints' order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub url: String,
    /// The event types it wants, separated by spaces.
    pub event_types: String,
    pub description: String,
    /// `whsec_…`: the key of its deliveries' signatures.
    pub secret: String,
    /// The secret before the last rotation, which signs beside it until `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<DateTimeUtc>,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.split(' ').any(|wanted| wanted == event_type)
    }

    /// The secrets that sign at `now`: the current one, and the previous while it is valid.
    pub fn signing_secrets(&self, now: DateTimeUtc) -> Vec<&str> {
        let previous = self.previous_secret.as_deref().filter(|_| self.previous_until.is_some_and(|until| now < until));
        std::iter::once(self.secret.as_str()).chain(previous).collect()
    }
}

/// Gives `id` the secret `secret`, the one before it signing until `previous_until`.
pub async fn rotate<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    secret: String,
    previous_until: DateTimeUtc,
) -> Result<Option<Model>, DbErr> {
    let Some(row) = get(conn, id).await? else { return Ok(None) };
    let mut active = ActiveModel::from(row.clone());
    active.previous_secret = Set(Some(row.secret));
    active.previous_until = Set(Some(previous_until));
    active.secret = Set(secret);
    active.update(conn).await.map(Some)
}

pub async fn insert<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(ActiveModel::from(row)).exec_without_returning(conn).await.map(drop)
}

/// Every endpoint, oldest first.
pub async fn all<C: ConnectionTrait>(conn: &C) -> Result<Vec<Model>, DbErr> {
    Entity::find().order_by_asc(Column::Id).all(conn).await
}

pub async fn get<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(conn).await
}

/// Enables or disables `id`: the endpoint as it is now, if there is one.
pub async fn set_enabled<C: ConnectionTrait>(conn: &C, id: &str, enabled: bool) -> Result<Option<Model>, DbErr> {
    let Some(row) = get(conn, id).await? else { return Ok(None) };
    let mut active = ActiveModel::from(row);
    active.enabled = Set(enabled);
    active.update(conn).await.map(Some)
}

/// Removes `id`: whether there was one.
pub async fn delete<C: ConnectionTrait>(conn: &C, id: &str) -> Result<bool, DbErr> {
    Ok(Entity::delete_by_id(id.to_owned()).exec(conn).await?.rows_affected > 0)
}
