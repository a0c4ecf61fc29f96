//! The PostgreSQL backend: one database shared by every dbroker replica. What only PostgreSQL does
//! is here: its migrations (run under sqlx's advisory lock, so replicas starting together migrate
//! once), a transaction-scoped advisory lock as the write lock, and PostgreSQL's values (see
//! `sql`). Reads go through sqlx like writes: there is no file to read on this host.

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgExecutor, Postgres, Row};
use time::OffsetDateTime;

use super::StoreError;
use super::sql::{Columns, Map, Param, format_time};

/// The advisory lock a write transaction takes (see `begin_write`): any number, the same in every
/// replica ("dbroker" in ASCII).
const WRITE_LOCK: i64 = 0x0064_6272_6f6b_6572;

/// Connections per replica: a request holds one for a query at a time, and operations a few.
const MAX_CONNECTIONS: u32 = 16;

/// How long a request waits for a connection, or PostgreSQL to answer one, before failing.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) struct PostgresDb {
    pub pool: PgPool,
}

impl PostgresDb {
    /// Connects to the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<PostgresDb, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.application_name("dbroker"))
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresDb { pool })
    }

    /// A transaction that holds the store's write lock from its start, as SQLite's `BEGIN
    /// IMMEDIATE` does: what it reads (room under a quota, who is a real user) is still true when it
    /// writes on, whichever replica writes meanwhile. At READ COMMITTED each later statement sees
    /// everything the lock's previous holders committed.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *transaction).await?;
        Ok(transaction)
    }
}

fn bind(
    mut query: sqlx::query::Query<'static, Postgres, PgArguments>,
    params: Vec<Param>,
) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    for param in params {
        query = match param {
            Param::Text(value) => query.bind(value),
            Param::Int(value) => query.bind(value),
            Param::Bool(value) => query.bind(value),
            Param::Bytes(value) => query.bind(value),
            Param::Time(value) => query.bind(value),
        };
    }
    query
}

pub(super) async fn execute<'e>(
    executor: impl PgExecutor<'e>,
    sql: &'static str,
    params: Vec<Param>,
) -> Result<u64, StoreError> {
    Ok(bind(sqlx::query(sql), params).execute(executor).await?.rows_affected())
}

pub(super) async fn fetch_all<'e, T>(
    executor: impl PgExecutor<'e>,
    sql: &'static str,
    params: Vec<Param>,
    map: Map<T>,
) -> Result<Vec<T>, StoreError> {
    bind(sqlx::query(sql), params).fetch_all(executor).await?.iter().map(|row| map(row)).collect()
}

pub(super) async fn fetch_optional<'e, T>(
    executor: impl PgExecutor<'e>,
    sql: &'static str,
    params: Vec<Param>,
    map: Map<T>,
) -> Result<Option<T>, StoreError> {
    bind(sqlx::query(sql), params).fetch_optional(executor).await?.map(|row| map(&row)).transpose()
}

impl Columns for PgRow {
    fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(column)?)
    }
    fn opt_time(&self, column: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get::<Option<OffsetDateTime>, _>(column)?.map(format_time))
    }
}
