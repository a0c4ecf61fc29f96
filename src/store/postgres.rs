//! The PostgreSQL backend: one database shared by every dbroker replica. What only PostgreSQL does
//! is here: its migrations (run under sqlx's advisory lock, so replicas starting together migrate
//! once), a transaction-scoped advisory lock as the write lock, and PostgreSQL's values (see
//! `sql`). Reads go through sqlx like writes: there is no file to read on this host.

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use time::OffsetDateTime;

use super::StoreError;
use super::sql::{Columns, Map, Param, format_time, sqlx_calls};

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

sqlx_calls!(Postgres, PgExecutor, PgRow, without_nul, std::convert::identity);

/// A text as PostgreSQL can hold it: its `text` holds no NUL character, and a value with one is an
/// error (an invalid byte sequence), so U+FFFD stands in for it. What dbroker stores of its own
/// never holds one (names are checked at the edge), so a key with a NUL matches nothing, as in
/// SQLite, and a text from elsewhere (a server's log line) is kept with a mark where it was.
fn without_nul(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// A time as PostgreSQL stores it (`TIMESTAMPTZ`), as the API shows it.
fn read_time(row: &PgRow, column: usize) -> Result<Option<String>, StoreError> {
    Ok(sqlx::Row::try_get::<Option<OffsetDateTime>, _>(row, column)?.map(format_time))
}
