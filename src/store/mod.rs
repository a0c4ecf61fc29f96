//! The store: users, instance records, operations, leases, backups and facts of images, in SQLite (one
//! host, embedded, the default) or PostgreSQL (several replicas). SQL lives here only, written once
//! for both (see `sql`); what differs between them is in `sqlite` and `postgres`, and both are held
//! to one contract by one test suite that runs on each (tests/api/store_contract.rs). Invariants
//! that must hold across processes (a port leased once, names unique per user, one operation in
//! flight per instance) are constraints in the schema, mapped to [`StoreError`] variants here; so
//! is what coordinates processes (operation leases, leadership).

mod answers;
mod backups;
mod events;
mod image_facts;
mod instances;
mod leases;
mod location;
mod nodes;
mod operations;
mod postgres;
mod quotas;
mod sessions;
mod sql;
mod sqlite;
mod users;

use std::time::Duration;

pub use answers::{AnswerKey, Cached, Mark, Subject};
pub use backups::{BackupFilter, BackupPolicy, BackupRecord, NewBackup, NewPolicy, StoredObject};
pub use events::{Event, Quarantined};
pub use instances::{InstanceFilter, InstanceRecord, NewInstanceRecord, OwnedInstance, PoolClaim};
pub use location::DatabaseUrl;
pub use nodes::Node;
pub use operations::{NewOperation, OperationRecord, Step};
pub use quotas::{
    BackupQuota, BackupUsage, Exceeded, LimitChange, LimitKind, Limits, Need, Quota, QuotaChange, QuotaOverride, Usage,
};
pub(crate) use quotas::{instances_limit_schema, memory_limit_schema};
pub use sessions::Session;
pub use users::{DemoUsers, User};

use postgres::PostgresDb;
use sql::{Map, Param, params};
use sqlite::SqliteDb;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the port is leased to another instance")]
    PortTaken,
    #[error("the name is already used")]
    NameTaken,
    /// A demo user was asked for under a name that belongs to a real user (the name).
    #[error("{0} is a real user, not a demo user")]
    NotADemoUser(String),
    /// A user cannot be removed while they own instances (how many).
    #[error("the user owns {0} instance(s)")]
    OwnsInstances(u64),
    /// A user cannot be removed while they have backups (how many): their objects would be nobody's.
    #[error("the user has {0} backup(s)")]
    OwnsBackups(u64),
    /// Another operation is in flight on the instance (its id, when it could be read).
    #[error("another operation is in flight on the instance")]
    OperationInFlight,
    /// The user sent this idempotency key before.
    #[error("the idempotency key was used before")]
    IdempotencyKeyUsed,
    /// The change would pass a user's quota or the host's memory budget.
    #[error("the change would pass a limit: {0:?}")]
    OverLimit(Exceeded),
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Read(#[from] rusqlite::Error),
    #[error("cannot make the store's files private: {0}")]
    Private(std::io::Error),
    #[error("cannot lock the store's file for its migrations: {0}")]
    MigrationLock(std::io::Error),
}

#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<Db>,
    /// This store's deployment (see the `deployment` table), read once at open.
    deployment_id: std::sync::Arc<str>,
}

/// The database behind the store: one per process, behind an `Arc`, so its variants' sizes do not
/// matter.
#[allow(clippy::large_enum_variant)]
enum Db {
    Sqlite(SqliteDb),
    Postgres(PostgresDb),
}

impl Store {
    /// Opens (creating a SQLite file if needed) the store at `url` and brings its schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let db = match url {
            DatabaseUrl::Sqlite(path) => Db::Sqlite(SqliteDb::open(path).await?),
            DatabaseUrl::Postgres(url) => Db::Postgres(PostgresDb::open(url).await?),
        };
        // The first process to open a new store names its deployment; every later one reads it.
        db.execute(
            "INSERT INTO deployment (singleton, id, created_at) VALUES (1, $1, $2) ON CONFLICT DO NOTHING",
            params![hex::encode(rand::random::<[u8; 8]>()), sql::now()],
        )
        .await?;
        let deployment_id = db.fetch_one("SELECT id FROM deployment", params![], |row| row.text(0)).await?;
        Ok(Self { db: std::sync::Arc::new(db), deployment_id: deployment_id.into() })
    }

    /// The id stamped on every container and volume this deployment makes.
    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// Answers when the database can run a query (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.execute("SELECT 1", params![]).await?;
        Ok(())
    }
}

/// Each backend's sqlx call for the same query, on `$on` (its pool, or a transaction's connection).
macro_rules! on_backend {
    ($db:expr, $on:ident => $function:ident($($arg:expr),*)) => {
        match $db {
            Db::Sqlite(db) => {
                let $on = &db.pool;
                sqlite::$function($($arg),*).await
            }
            Db::Postgres(db) => {
                let $on = &db.pool;
                postgres::$function($($arg),*).await
            }
        }
    };
}

impl Db {
    /// Runs a statement; how many rows it changed.
    async fn execute(&self, sql: &'static str, params: Vec<Param>) -> Result<u64, StoreError> {
        on_backend!(self, pool => execute(pool, sql, params))
    }

    async fn fetch_all<T>(&self, sql: &'static str, params: Vec<Param>, map: Map<T>) -> Result<Vec<T>, StoreError> {
        on_backend!(self, pool => fetch_all(pool, sql, params, map))
    }

    async fn fetch_optional<T>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        map: Map<T>,
    ) -> Result<Option<T>, StoreError> {
        on_backend!(self, pool => fetch_optional(pool, sql, params, map))
    }

    async fn fetch_one<T>(&self, sql: &'static str, params: Vec<Param>, map: Map<T>) -> Result<T, StoreError> {
        self.fetch_optional(sql, params, map).await?.ok_or(StoreError::NotFound)
    }

    /// A read that may take the backend's fast path (SQLite's: see `sqlite`).
    async fn read<T: Send + 'static>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        map: Map<T>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Db::Sqlite(db) => db.read(sql, params, map).await,
            Db::Postgres(db) => postgres::fetch_all(&db.pool, sql, params, map).await,
        }
    }

    /// Runs `work` in a transaction that holds the store's write lock from its first statement
    /// (see each backend's `begin_write`), and commits it if `work` succeeds: what `work` reads is
    /// still true when it writes, whichever process writes meanwhile. An error rolls it all back.
    async fn write<T>(&self, work: impl AsyncFnOnce(&mut Tx) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut tx = match self {
            Db::Sqlite(db) => Tx::Sqlite(db.begin_write().await?),
            Db::Postgres(db) => Tx::Postgres(db.begin_write().await?),
        };
        let done = work(&mut tx).await?;
        match tx {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(done)
    }
}

/// A write transaction (see `Db::write`), with the calls of `Db` on its connection.
enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// As `on_backend!`, on a transaction's connection.
macro_rules! on_transaction {
    ($tx:expr, $on:ident => $function:ident($($arg:expr),*)) => {
        match $tx {
            Tx::Sqlite(tx) => {
                let $on = &mut **tx;
                sqlite::$function($($arg),*).await
            }
            Tx::Postgres(tx) => {
                let $on = &mut **tx;
                postgres::$function($($arg),*).await
            }
        }
    };
}

impl Tx {
    async fn execute(&mut self, sql: &'static str, params: Vec<Param>) -> Result<u64, StoreError> {
        on_transaction!(self, connection => execute(connection, sql, params))
    }

    async fn fetch_all<T>(&mut self, sql: &'static str, params: Vec<Param>, map: Map<T>) -> Result<Vec<T>, StoreError> {
        on_transaction!(self, connection => fetch_all(connection, sql, params, map))
    }

    async fn fetch_optional<T>(
        &mut self,
        sql: &'static str,
        params: Vec<Param>,
        map: Map<T>,
    ) -> Result<Option<T>, StoreError> {
        on_transaction!(self, connection => fetch_optional(connection, sql, params, map))
    }

    async fn fetch_one<T>(&mut self, sql: &'static str, params: Vec<Param>, map: Map<T>) -> Result<T, StoreError> {
        self.fetch_optional(sql, params, map).await?.ok_or(StoreError::NotFound)
    }
}

/// The unique constraints a caller may run into, each standing for a domain error. A statement
/// is written so that it can break at most one of them (another it might break is an `ON
/// CONFLICT … DO NOTHING` that the caller reads as zero rows), and maps its error with
/// [`StoreError::or_broke`]: PostgreSQL names the constraint a violation broke, SQLite names none
/// (only a message, which is not an interface), so there the statement's one is the one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Constraint {
    PortLease,
    InstanceName,
    UserName,
    OperationInFlight,
}

impl Constraint {
    /// The schema's name for it, in both backends' schemas.
    fn name(self) -> &'static str {
        match self {
            Constraint::PortLease => "instances_port_unique",
            Constraint::InstanceName => "instances_owner_name_unique",
            Constraint::UserName => "users_name_unique",
            Constraint::OperationInFlight => "operations_one_in_flight",
        }
    }

    fn error(self) -> StoreError {
        match self {
            Constraint::PortLease => StoreError::PortTaken,
            Constraint::InstanceName | Constraint::UserName => StoreError::NameTaken,
            Constraint::OperationInFlight => StoreError::OperationInFlight,
        }
    }
}

impl StoreError {
    /// The domain error of `constraint` if this is a unique violation of it, else this error.
    fn or_broke(self, constraint: Constraint) -> StoreError {
        let StoreError::Database(sqlx::Error::Database(db)) = &self else { return self };
        let broke = db.kind() == sqlx::error::ErrorKind::UniqueViolation
            && db.constraint().is_none_or(|name| name == constraint.name());
        if broke { constraint.error() } else { self }
    }
}

/// Now, in Unix milliseconds: what lease expiries are compared with.
pub(crate) fn now_millis() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// `duration` from now, in Unix milliseconds.
fn millis_from_now(duration: Duration) -> i64 {
    now_millis().saturating_add(duration.as_millis() as i64)
}

/// Now, as the API shows times (RFC 3339 in UTC; see `sql::format_time`).
pub(crate) fn now_rfc3339() -> String {
    sql::format_time(sql::now())
}

/// A time as the API shows it (see `sql::format_time`).
pub fn format_time(time: time::OffsetDateTime) -> String {
    sql::format_time(time)
}
