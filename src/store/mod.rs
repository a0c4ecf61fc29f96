//! The store: users, instance records, operations, leases and facts of images, in an embedded
//! SQLite database under the data directory. SQL lives here only. Invariants that must hold
//! across processes (a port leased once, names unique per user, one operation in flight per
//! instance) are constraints in the schema, mapped to [`StoreError`] variants here; so is what
//! coordinates processes (operation leases, the reconciler's leadership).

mod answers;
mod events;
mod image_facts;
mod instances;
mod leases;
mod location;
mod operations;
mod quotas;
mod reads;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use answers::{AnswerKey, Cached, Mark, Subject};
pub use events::{Event, Quarantined};
pub use location::DatabaseUrl;
pub use instances::{InstanceFilter, InstanceRecord, NewInstanceRecord, OwnedInstance, PoolClaim};
pub use operations::{NewOperation, OperationRecord, Step};
pub use quotas::{Exceeded, LimitChange, LimitKind, Limits, Need, Quota, QuotaChange, QuotaOverride, Usage};
pub(crate) use quotas::{instances_limit_schema, memory_limit_schema};
pub use users::{DemoUsers, User};

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
}

/// How long a writer waits for another (maybe another process's) to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The connections that read instance records (see `reads`).
    readers: std::sync::Arc<reads::Readers>,
    /// Answers kept until the database changes (see `answers`).
    answers: std::sync::Arc<answers::Answers>,
    /// This store's deployment (see the `deployment` table), read once at open.
    deployment_id: std::sync::Arc<str>,
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let path = match url {
            DatabaseUrl::Sqlite(path) => path.clone(),
            DatabaseUrl::Postgres(_) => return Err(StoreError::Corrupt("PostgreSQL is not supported yet".into())),
        };
        keep_private(&path)?;
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
        // The first process to open a new store names its deployment; every later one reads it.
        sqlx::query("INSERT INTO deployment (singleton, id, created_at) VALUES (1, ?, ?) ON CONFLICT DO NOTHING")
            .bind(hex::encode(rand::random::<[u8; 8]>()))
            .bind(now_rfc3339())
            .execute(&pool)
            .await?;
        let deployment_id: String = sqlx::query_scalar("SELECT id FROM deployment").fetch_one(&pool).await?;
        Ok(Self {
            pool,
            answers: std::sync::Arc::new(answers::Answers::open(&path)?),
            readers: std::sync::Arc::new(reads::Readers::new(path)),
            deployment_id: deployment_id.into(),
        })
    }

    /// The id stamped on every container and volume this deployment makes.
    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// Answers when the database can run a query (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Makes the store's files readable by dbroker's user only: they hold user names, token hashes
/// and encrypted passwords. A new database file is created with mode 0600 before SQLite opens it,
/// and SQLite gives its journal files (`-wal`, `-shm`) the database file's mode.
fn keep_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::Private(e)),
                    _ => {}
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Private(e)),
    }
}

/// The unique constraints a caller may run into, each standing for a domain error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Constraint {
    PortLease,
    InstanceName,
    UserName,
    OperationInFlight,
    IdempotencyKey,
}

impl Constraint {
    /// The schema's name for it (what PostgreSQL reports), and the columns SQLite reports instead:
    /// SQLite names no constraint in its errors, only `table.column, …`.
    const ALL: [(Constraint, &'static str, &'static str); 5] = [
        (Constraint::PortLease, "instances_port_unique", "instances.port"),
        (Constraint::InstanceName, "instances_owner_name_unique", "instances.owner_id, instances.name"),
        (Constraint::UserName, "users_name_unique", "users.name"),
        (Constraint::OperationInFlight, "operations_one_in_flight", "operations.instance_id"),
        (Constraint::IdempotencyKey, "operations_idempotency", "operations.owner_id, operations.idempotency_key"),
    ];

    /// Which constraint a unique violation broke, if it is one of ours.
    fn of(error: &sqlx::Error) -> Option<Constraint> {
        let sqlx::Error::Database(db) = error else { return None };
        if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
            return None;
        }
        let message = db.message();
        Constraint::ALL.into_iter().find_map(|(constraint, name, columns)| {
            let named = db.constraint() == Some(name);
            // The column list ends the message ("UNIQUE constraint failed: instances.port"), so
            // a list that is another's prefix cannot match by mistake.
            (named || message.ends_with(columns)).then_some(constraint)
        })
    }

    fn error(self) -> StoreError {
        match self {
            Constraint::PortLease => StoreError::PortTaken,
            Constraint::InstanceName | Constraint::UserName => StoreError::NameTaken,
            Constraint::OperationInFlight => StoreError::OperationInFlight,
            Constraint::IdempotencyKey => StoreError::IdempotencyKeyUsed,
        }
    }
}

/// Maps a unique-constraint violation to the domain error its constraint stands for.
fn map_unique_violation(error: sqlx::Error) -> StoreError {
    match Constraint::of(&error) {
        Some(constraint) => constraint.error(),
        None => StoreError::Database(error),
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

/// Now, as RFC 3339 in UTC: sorts as text, reads as a date.
pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats as RFC 3339")
}
