//! The store: users and instance records in an embedded SQLite database under the data directory.
//! SQL lives here only. Invariants that must hold across processes (a port leased once, names
//! unique per user) are constraints in the schema, mapped to [`StoreError`] variants here.

mod events;
mod instances;
mod reads;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use events::{Event, Quarantined};
pub use instances::{InstanceRecord, NewInstanceRecord};
pub use users::User;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the port is leased to another instance")]
    PortTaken,
    #[error("the name is already used")]
    NameTaken,
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Read(#[from] rusqlite::Error),
}

/// How long a writer waits for another (maybe another process's) to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The connections that read instance records (see `reads`).
    readers: std::sync::Arc<reads::Readers>,
}

impl Store {
    /// Opens (creating if needed) `dbroker.db` in `data_dir` and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("dbroker.db");
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            // WAL: readers never wait for the writer, and several processes can share the file.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, readers: std::sync::Arc::new(reads::Readers::new(path)) })
    }

    /// Answers when the database can run a query (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Maps a unique-constraint violation to the domain error its constraint stands for.
fn map_unique_violation(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        let message = db.message();
        if message.contains("instances.port") {
            return StoreError::PortTaken;
        }
        if message.contains("instances.owner_id, instances.name") || message.contains("users.name") {
            return StoreError::NameTaken;
        }
    }
    StoreError::Database(error)
}

/// Now, as RFC 3339 in UTC: sorts as text, reads as a date.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats as RFC 3339")
}
