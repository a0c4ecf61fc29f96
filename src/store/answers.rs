//! Answers built from a user's instance records (a serialised list or detail), kept until the
//! database changes, so that a read asked again and again costs one check of SQLite instead of a
//! query, the passwords' decryption and the JSON. A SQLite backend's fast path: a store without it
//! (PostgreSQL, say) would answer every `cached_answer` with a miss and lose nothing but speed.
//! The check is a read transaction on the caller's thread, as `reads`' are: microseconds.
//!
//! Why a kept answer is never stale: every answer is kept with the `PRAGMA data_version` that a
//! connection of its own (`watch`, which never writes) read *before* the records were read, and
//! served only while that connection reads the same number. SQLite changes it whenever any other
//! connection, of this process or another on the same file, has committed a change since the
//! connection last looked; so a write of any path (a handler's, an operation's, the reconciler's,
//! another dbroker's, `dbroker user` on the host) that committed before a read began changes it,
//! and the read rebuilds its answer. There is no list of writers to keep in step. A write that
//! commits between the check and the records' read makes the answer newer than its number: the
//! next read rebuilds it for nothing, never the reverse. And an answer is only kept under the key
//! it was asked under, which holds the owner's id, so one user never sees another's.
//!
//! An answer holds what it shows its owner, connection passwords included, as the answer did on
//! its way out before; kept in this process's memory only, never written anywhere.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use rusqlite::Connection;

use super::StoreError;
use crate::model::{Engine, InstanceId};

/// Answers past this many are forgotten all at once: a bound on memory, not an eviction policy.
/// All are forgotten too whenever the database changes, so this is reached only by that many
/// users reading in a quiet time.
const MAX_ANSWERS: usize = 10_000;

/// Which answer: whose, of what, and in which rendering (the v1 API's, say), since each
/// renders the same records in its own bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    pub owner_id: i64,
    pub subject: Subject,
    pub rendering: &'static str,
}

/// What an answer is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The owner's instances, of one engine or all.
    Instances(Option<Engine>),
    /// One of the owner's instances.
    Instance(InstanceId),
}

/// What `Store::cached_answer` found: the answer, or the mark to keep the one made now with.
pub enum Cached {
    Hit(Bytes),
    Miss(Mark),
}

/// The database's version when a read that missed began (see the module's comment).
#[derive(Debug, Clone, Copy)]
pub struct Mark(i64);

pub(super) struct Answers {
    /// Reads `PRAGMA data_version`; only ever compared with its own earlier answers.
    watch: Mutex<Connection>,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// The version the answers were made at.
    version: i64,
    answers: HashMap<AnswerKey, Bytes>,
}

impl Answers {
    pub fn open(path: &Path) -> rusqlite::Result<Answers> {
        let watch = super::reads::open_reader(path)?;
        Ok(Answers { watch: Mutex::new(watch), kept: Mutex::default() })
    }

    fn version(&self) -> rusqlite::Result<i64> {
        let watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        watch.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))
    }

    pub fn get(&self, key: &AnswerKey) -> Result<Cached, StoreError> {
        let version = self.version()?;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        // Versions only grow; a read that looked before another but locks after it is a miss.
        if version > kept.version {
            kept.version = version;
            kept.answers.clear();
        }
        let kept_answer = if version == kept.version { kept.answers.get(key) } else { None };
        Ok(match kept_answer {
            Some(answer) => Cached::Hit(answer.clone()),
            None => Cached::Miss(Mark(version)),
        })
    }

    /// Keeps `answer`, unless the database changed since `mark` was taken (a read that missed
    /// since has moved the version on, and `answer` may be older than its records).
    pub fn keep(&self, Mark(version): Mark, key: AnswerKey, answer: Bytes) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.version != version {
            return;
        }
        if kept.answers.len() >= MAX_ANSWERS {
            kept.answers.clear();
        }
        kept.answers.insert(key, answer);
    }
}

impl super::Store {
    /// The answer kept for `key`, if the database has not changed since it was made; else the
    /// mark to keep the one made now with (see [`Store::keep_answer`]).
    pub fn cached_answer(&self, key: &AnswerKey) -> Result<Cached, StoreError> {
        self.answers.get(key)
    }

    /// Keeps `answer`, made from records read after `mark` was taken, for the next reads of `key`.
    pub fn keep_answer(&self, mark: Mark, key: AnswerKey, answer: Bytes) {
        self.answers.keep(mark, key, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn key(owner_id: i64) -> AnswerKey {
        AnswerKey { owner_id, subject: Subject::Instances(None), rendering: "test" }
    }

    fn mark_of(cached: Cached) -> Mark {
        match cached {
            Cached::Miss(mark) => mark,
            Cached::Hit(answer) => panic!("{answer:?} was kept"),
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_kept_answer_is_served_to_its_owner_only_until_the_database_changes() {
        let (_dir, store) = store().await;
        let mark = mark_of(store.cached_answer(&key(1)).unwrap());
        store.keep_answer(mark, key(1), Bytes::from_static(b"alice's"));

        assert!(matches!(store.cached_answer(&key(1)).unwrap(), Cached::Hit(a) if a == "alice's"));
        assert!(matches!(store.cached_answer(&key(2)).unwrap(), Cached::Miss(_)), "another owner's key");

        store.add_user(&"carol".parse().unwrap(), "token", false).await.unwrap();

        assert!(matches!(store.cached_answer(&key(1)).unwrap(), Cached::Miss(_)));
    }

    #[tokio::test]
    async fn an_answer_made_from_a_read_that_began_before_a_write_is_not_served_after_it() {
        // The race of a read that missed, read the records, and was overtaken by a write that
        // committed before it kept its answer.
        let (_dir, store) = store().await;
        let mark = mark_of(store.cached_answer(&key(1)).unwrap());

        store.add_user(&"carol".parse().unwrap(), "token", false).await.unwrap();
        store.keep_answer(mark, key(1), Bytes::from_static(b"before the write"));

        assert!(matches!(store.cached_answer(&key(1)).unwrap(), Cached::Miss(_)));
    }
}
