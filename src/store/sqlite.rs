//! The SQLite backend: one file, shared by the dbroker processes of one host (WAL: readers never
//! wait for the writer). What only SQLite does is here: the file kept private, its migrations,
//! `BEGIN IMMEDIATE` as the write lock, SQLite's values (see `sql`), and the fast read path.
//!
//! The fast read path: sqlx runs every SQLite statement on a worker thread and hands the results
//! across a channel; under load that hand-off (futex wake-ups and context switches: perf put about
//! 40% of the list route's CPU there) cost more than the query. Reads take microseconds in SQLite
//! (the pages are in its cache, and in WAL mode a reader does not wait for a writer), so they run
//! on the caller's thread, on a few query-only rusqlite connections over the same SQLite library.
//! They never wait there: such a connection gives up at once when the file is locked (rare: a WAL
//! being recovered after a crash, a tool holding an exclusive lock), and the read is then done
//! again on a blocking thread, which may wait, so a runtime thread never does.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use super::StoreError;
use super::answers::Answers;
use super::sql::{Columns, Map, Param, format_time, sqlx_calls};

/// How long a writer, or a read moved off the runtime, waits for another connection (maybe another
/// process's) to finish before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read connections kept for the next reads; more are opened when more read at once.
const MAX_IDLE_READERS: usize = 4;

pub(super) struct SqliteDb {
    pub pool: SqlitePool,
    readers: Readers,
    /// Answers kept until the file changes (see `answers`).
    pub answers: Answers,
}

impl SqliteDb {
    /// Opens (making it if needed, private to dbroker's user) the file at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteDb, StoreError> {
        keep_private(path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // sqlx locks nothing around SQLite's first connection (which turns WAL on) or its
        // migrations: of two processes opening a new file at once, one would fail, the file
        // locked or its tables made by the other. An flock on the file itself (apart from the
        // fcntl locks SQLite takes) lets one open it while the others wait, then find it done.
        let file = std::fs::File::open(path).map_err(StoreError::MigrationLock)?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| StoreError::Corrupt(format!("the migration lock's thread failed: {e}")))?
            .map_err(StoreError::MigrationLock)?;
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        let migrated = sqlx::migrate!("./migrations/sqlite").run(&pool).await;
        drop(file);
        migrated?;
        Ok(SqliteDb { pool, readers: Readers::new(path.to_owned()), answers: Answers::open(path)? })
    }

    /// A transaction that holds SQLite's one write lock from its start, so that what it reads is
    /// still true when it writes on: the store's checks of room and of names.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Runs a read on the fast path (see the module's comment).
    pub async fn read<T: Send + 'static>(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        map: Map<T>,
    ) -> Result<Vec<T>, StoreError> {
        let connection = self.readers.take()?;
        let first = query(&connection, sql, &params, map);
        if !is_busy(&first) {
            self.readers.put_back(connection);
            return first;
        }
        // A connection that waited is not put back: it is one of a rare few, and opening one is cheap.
        tokio::task::spawn_blocking(move || {
            connection.busy_timeout(BUSY_TIMEOUT)?;
            query(&connection, sql, &params, map)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("a read's thread failed: {e}")))?
    }
}

/// Runs `sql` on a rusqlite connection and reads every row with `map`.
fn query<T>(connection: &rusqlite::Connection, sql: &str, params: &[Param], map: Map<T>) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut read = Vec::new();
    while let Some(row) = rows.next()? {
        read.push(map(row)?);
    }
    Ok(read)
}

/// Whether a read gave up because the file was locked.
fn is_busy<T>(result: &Result<T, StoreError>) -> bool {
    matches!(
        result,
        Err(StoreError::Read(rusqlite::Error::SqliteFailure(e, _)))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The fast path's idle connections.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl Readers {
    fn new(path: PathBuf) -> Self {
        Self { path, idle: Mutex::new(Vec::new()) }
    }

    fn take(&self) -> Result<rusqlite::Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(connection) => Ok(connection),
            None => Ok(open_reader(&self.path)?),
        }
    }

    fn put_back(&self, connection: rusqlite::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
    }
}

/// A query-only connection to the store's file that never waits for a lock.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(Duration::ZERO)?;
    connection.pragma_update(None, "query_only", true)?;
    Ok(connection)
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

// ---------------------------------------------------------------------------------------------
// Running the shared SQL through sqlx, and through rusqlite on the fast path.

sqlx_calls!(Sqlite, SqliteExecutor, SqliteRow, std::convert::identity, format_time);

/// A time as SQLite stores it: the text it was written as.
fn read_time(row: &SqliteRow, column: usize) -> Result<Option<String>, StoreError> {
    row.opt_text(column)
}

impl Columns for rusqlite::Row<'_> {
    fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(column)?)
    }
    fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(column)?)
    }
    fn flag(&self, column: usize) -> Result<bool, StoreError> {
        Ok(self.get(column)?)
    }
    fn opt_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(column)?)
    }
    fn opt_time(&self, column: usize) -> Result<Option<String>, StoreError> {
        self.opt_text(column)
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(match self {
            Param::Text(value) => value.to_sql()?,
            Param::Int(value) => value.to_sql()?,
            Param::Bool(value) => value.to_sql()?,
            Param::Bytes(value) => value.to_sql()?,
            Param::Time(value) => ToSqlOutput::Owned(value.map_or(Value::Null, |t| Value::Text(format_time(t)))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_opening_a_new_file_at_once_migrate_it_once_and_all_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dbroker.db");
        // Each open has its own connections, as another process would.
        let opens: Vec<_> = (0..4).map(|_| tokio::spawn(SqliteDb::open_owned(path.clone()))).collect();
        for open in opens {
            open.await.unwrap().expect("every open succeeds");
        }
    }

    impl SqliteDb {
        async fn open_owned(path: PathBuf) -> Result<SqliteDb, StoreError> {
            SqliteDb::open(&path).await
        }
    }

    /// The fast read path runs on the caller's thread but never waits there: with the file locked
    /// by another connection (exclusively, as a tool's `locking_mode=EXCLUSIVE` does: in WAL mode
    /// nothing less stops a reader), the read moves to a blocking thread and the runtime's one
    /// thread goes on running other tasks until the lock is gone.
    #[tokio::test(flavor = "current_thread")]
    async fn a_read_that_finds_the_file_locked_waits_off_the_runtimes_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dbroker.db");
        let made = SqliteDb::open(&path).await.unwrap();
        made.pool.close().await;
        drop(made);
        // The only connection while it takes the lock: a WAL file's other connections would stop it.
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE; INSERT INTO leases VALUES ('l', 'h', 1); COMMIT;").unwrap();
        let options = SqliteConnectOptions::from_str("sqlite://").unwrap().filename(&path);
        let db = SqliteDb {
            pool: SqlitePool::connect_lazy_with(options),
            readers: Readers::new(path.clone()),
            answers: Answers::open(&path).unwrap(),
        };
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        let release = std::thread::spawn({
            let ticks = ticks.clone();
            move || {
                // Held until the runtime has shown that it still runs tasks while the read waits.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while ticks.load(Ordering::SeqCst) < 20 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                drop(locker);
            }
        });

        let read = db.read("SELECT holder FROM leases WHERE name = $1", vec![Param::from("l")], |row| row.text(0));

        let read = read.await;
        release.join().unwrap();
        ticker.abort();
        assert_eq!(read.unwrap(), ["h"]);
        assert!(ticks.load(Ordering::SeqCst) >= 20, "the runtime ran other tasks while the read waited");
    }
}
