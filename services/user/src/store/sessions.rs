//! The `sessions` table (one row per sign-in: its current refresh token's hash, its times,
//! how it ended), `retired_refresh_tokens` (the hashes a rotation replaced, for reuse
//! detection) and `session_clock` (one row: the sequence that orders the ends of sessions
//! for the revocation feed).
//!
//! Ending sessions takes the clock first ([`tick`]): the clock's row lock is held until the
//! transaction commits, so ends commit in the order of their sequence numbers and a reader
//! who has seen number n has seen every end before it (the feed never skips one). A
//! transaction takes the clock as its last lock (after any `users` row), so no two wait on
//! each other: every transaction that ends sessions takes the clock before it touches any
//! `sessions` row (and a rotation, which touches one row, never takes the clock).

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{QueryOrder, QuerySelect};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    /// The hash of the refresh token that continues it now.
    #[sea_orm(unique)]
    pub refresh_hash: String,
    /// The client address that signed in (emptied when the user is deleted).
    pub client: String,
    pub created_at: DateTimeUtc,
    pub last_used_at: DateTimeUtc,
    /// When the password was last proven in it.
    pub auth_time: DateTimeUtc,
    /// Its absolute end.
    pub expires_at: DateTimeUtc,
    /// When the last access token signed for it expires.
    pub access_expires_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
    pub end_reason: Option<String>,
    /// The clock's value when it ended: the revocation feed's order.
    pub end_seq: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Whether it can still be used at `now`: not ended, within both lifetimes.
    pub fn is_live(&self, now: DateTimeUtc, idle: chrono::Duration) -> bool {
        self.ended_at.is_none() && now < self.expires_at && now < self.last_used_at + idle
    }
}

/// The refresh tokens rotations replaced: presenting one again is reuse.
pub mod retired {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "retired_refresh_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        pub session_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub async fn insert<C: ConnectionTrait>(conn: &C, row: Model) -> Result<(), DbErr> {
    Entity::insert(ActiveModel::from(row)).exec_without_returning(conn).await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Option<Model>, DbErr> {
    Entity::find_by_id(id.to_owned()).one(conn).await
}

pub async fn find_by_refresh_hash<C: ConnectionTrait>(conn: &C, hash: &str) -> Result<Option<Model>, DbErr> {
    Entity::find().filter(Column::RefreshHash.eq(hash)).one(conn).await
}

/// The session a retired refresh token belonged to.
pub async fn retired_session<C: ConnectionTrait>(conn: &C, hash: &str) -> Result<Option<String>, DbErr> {
    Ok(retired::Entity::find_by_id(hash.to_owned()).one(conn).await?.map(|row| row.session_id))
}

/// Replaces the session's refresh token `old` by `new` (only while `old` is current and the
/// session has not ended) and retires `old`: false when another call got there first.
pub async fn rotate<C: ConnectionTrait>(
    conn: &C,
    id: &str,
    old: &str,
    new: &str,
    access_expires_at: DateTimeUtc,
) -> Result<bool, DbErr> {
    let rotated = Entity::update_many()
        .col_expr(Column::RefreshHash, Expr::value(new))
        .col_expr(Column::LastUsedAt, Expr::value(chrono::Utc::now()))
        .col_expr(Column::AccessExpiresAt, Expr::value(access_expires_at))
        .filter(Column::Id.eq(id))
        .filter(Column::RefreshHash.eq(old))
        .filter(Column::EndedAt.is_null())
        .exec(conn)
        .await?;
    if rotated.rows_affected != 1 {
        return Ok(false);
    }
    let row = retired::ActiveModel {
        hash: sea_orm::ActiveValue::Set(old.to_owned()),
        session_id: sea_orm::ActiveValue::Set(id.to_owned()),
    };
    retired::Entity::insert(row).exec_without_returning(conn).await?;
    Ok(true)
}

/// The user's sessions that have not ended (expired ones included), most recently used first.
pub async fn open_of<C: ConnectionTrait>(conn: &C, user_id: &str) -> Result<Vec<Model>, DbErr> {
    Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::EndedAt.is_null())
        .order_by_desc(Column::LastUsedAt)
        .all(conn)
        .await
}

/// The user's open sessions, `besides` one, after the `keep` most recently used (usually
/// none): one query that reads ids only.
pub async fn beyond<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    besides: &str,
    keep: u64,
) -> Result<Vec<String>, DbErr> {
    Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::UserId.eq(user_id))
        .filter(Column::EndedAt.is_null())
        .filter(Column::Id.ne(besides))
        .order_by_desc(Column::LastUsedAt)
        .order_by_desc(Column::Id)
        .offset(keep)
        .limit(100)
        .into_tuple()
        .all(conn)
        .await
}

/// Which sessions to end.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    One(&'a str),
    /// Every one of these users'.
    Users(&'a [&'a str]),
    /// The user's, but this one.
    AllBut {
        user_id: &'a str,
        keep: &'a str,
    },
    /// These, by id.
    Ids(&'a [&'a str]),
}

/// A session [`end`] ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: String,
    pub user_id: String,
    pub access_expires_at: DateTimeUtc,
}

/// Takes the clock's next value (and its row lock, until commit): see the module's note. An
/// upsert, so the clock needs no seed row (a table emptied by hand starts it again at 1).
pub async fn tick(txn: &sea_orm::DatabaseTransaction) -> Result<i64, DbErr> {
    use sea_orm::sea_query::OnConflict;
    let mut upsert = Query::insert();
    upsert
        .into_table(Clock::Table)
        .columns([Clock::Id, Clock::Seq])
        .values([1.into(), 1.into()])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::column(Clock::Id).value(Clock::Seq, Expr::col((Clock::Table, Clock::Seq)).add(1)).to_owned(),
        )
        .returning_col(Clock::Seq);
    let row = txn.query_one(&upsert).await?.ok_or_else(|| DbErr::RecordNotFound("session_clock".into()))?;
    row.try_get_by_index::<i64>(0)
}

/// Ends the open sessions `which` names, as number `seq` of the clock: those it ended.
pub async fn end(
    txn: &sea_orm::DatabaseTransaction,
    which: Which<'_>,
    reason: &str,
    seq: i64,
) -> Result<Vec<Ended>, DbErr> {
    let selected = match which {
        Which::One(id) => Expr::col(Column::Id).eq(id),
        Which::Users(ids) => Expr::col(Column::UserId).is_in(ids.iter().copied()),
        Which::AllBut { user_id, keep } => Expr::col(Column::UserId).eq(user_id).and(Expr::col(Column::Id).ne(keep)),
        Which::Ids(ids) => Expr::col(Column::Id).is_in(ids.iter().copied()),
    };
    let update = Query::update()
        .table(Entity)
        .value(Column::EndedAt, chrono::Utc::now())
        .value(Column::EndReason, reason)
        .value(Column::EndSeq, seq)
        .and_where(selected)
        .and_where(Expr::col(Column::EndedAt).is_null())
        .returning(Query::returning().columns([Column::Id, Column::UserId, Column::AccessExpiresAt]))
        .to_owned();
    let rows = txn.query_all(&update).await?;
    rows.iter()
        .map(|row| {
            Ok(Ended {
                id: row.try_get_by_index(0)?,
                user_id: row.try_get_by_index(1)?,
                access_expires_at: row.try_get_by_index(2)?,
            })
        })
        .collect()
}

/// Sessions ended after clock value `after` whose access tokens may still be live at `now`,
/// in the order they ended: (seq, id, user, tokens' expiry).
pub async fn ended_after<C: ConnectionTrait>(
    conn: &C,
    after: i64,
    now: DateTimeUtc,
    limit: u64,
) -> Result<Vec<(i64, String, String, DateTimeUtc)>, DbErr> {
    Entity::find()
        .select_only()
        .columns([Column::EndSeq, Column::Id, Column::UserId, Column::AccessExpiresAt])
        .filter(Column::EndSeq.gt(after))
        .filter(Column::AccessExpiresAt.gt(now))
        .order_by_asc(Column::EndSeq)
        .order_by_asc(Column::Id)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await
}

/// Open sessions past one of their lifetimes at `now`, at most `limit`.
pub async fn expired<C: ConnectionTrait>(
    conn: &C,
    now: DateTimeUtc,
    idle: chrono::Duration,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::EndedAt.is_null())
        .filter(Column::ExpiresAt.lte(now).or(Column::LastUsedAt.lte(now - idle)))
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await
}

/// For deleted users: their sessions keep only what the revocation feed needs (ids, times),
/// not the client addresses; their retired refresh tokens go.
pub async fn forget<C: ConnectionTrait>(conn: &C, user_ids: &[&str]) -> Result<(), DbErr> {
    let sessions: Vec<String> = Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    if sessions.is_empty() {
        return Ok(());
    }
    Entity::update_many()
        .col_expr(Column::Client, Expr::value(""))
        .filter(Column::UserId.is_in(user_ids.iter().copied()))
        .exec(conn)
        .await?;
    retired::Entity::delete_many().filter(retired::Column::SessionId.is_in(sessions)).exec(conn).await?;
    Ok(())
}

#[derive(sea_orm::DeriveIden)]
pub(crate) enum Clock {
    #[sea_orm(iden = "session_clock")]
    Table,
    Id,
    Seq,
}

/// Sessions go `keep` after they ended or expired (`SESSION_RETENTION_SECONDS`), with their
/// retired refresh tokens; never while an access token of theirs may still be live (the
/// revocation feed must go on naming an ended one until then).
pub fn retention(keep: std::time::Duration) -> verimail_events::retention::Rule<Entity> {
    verimail_events::retention::Rule::new("sessions", Column::Id, Column::CreatedAt, keep, |cutoff, now| {
        let over = sea_orm::Condition::any().add(Column::EndedAt.lt(cutoff)).add(Column::ExpiresAt.lt(cutoff));
        sea_orm::Condition::all().add(over).add(Column::AccessExpiresAt.lt(now))
    })
    .with_dependents(&[("retired_refresh_tokens", "session_id")])
}
