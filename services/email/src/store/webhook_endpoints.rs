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
