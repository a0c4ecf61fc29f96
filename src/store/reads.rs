//! Reads of instance records, on the caller's own thread. sqlx runs every SQLite statement on a
//! worker thread and hands the results across a channel; under load that hand-off (futex
//! wake-ups and context switches: perf put about 40% of the list route's CPU there) cost more
//! than the query. These reads take microseconds in SQLite (the pages are in its cache, and in
//! WAL mode a reader never waits for a writer), so they run synchronously, on a few query-only
//! connections of their own: rusqlite, over the same SQLite library as sqlx. Writes stay on sqlx;
//! a write that hands back the record reads it here once it has committed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// Idle connections kept for the next reads; more are opened when more read at once.
const MAX_IDLE: usize = 4;

/// How long a read may wait for a lock. Readers wait only in rare cases (a WAL being recovered
/// after a crash), and the wait holds a runtime thread, so it is short.
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: PathBuf) -> Self {
        Self { path, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `read` on an idle connection, or on a new one.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let connection = match idle {
            Some(connection) => connection,
            None => self.open()?,
        };
        let result = read(&connection);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(connection);
        }
        Ok(result?)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        open_reader(&self.path)
    }
}

/// A query-only connection to the store's file.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "query_only", true)?;
    Ok(connection)
}
