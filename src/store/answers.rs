//! Answers built from a user's instance records (a serialised list or detail), kept until the
//! database changes, so that a read asked again and again costs one check of SQLite instead of a
//! query, the passwords' decryption and the JSON. The SQLite backend's fast path: PostgreSQL
//! answers every `cached_answer` with a miss, and loses nothing but speed. The check is a read on
//! the caller's thread, as the fast path's reads are (see `sqlite`): microseconds, and it never
//! waits: a watch that finds the file locked answers a miss whose answer is not kept.
//!
//! Why a kept answer is never stale: each runtime thread checks on a connection of its own (a
//! watch, which never writes), so that checks on two threads never wait for each other. SQLite
//! changes a connection's `PRAGMA data_version` whenever any other connection, of this process or
//! another on the same file, has committed a change since that connection last looked. A watch
//! that reads a number other than the one it read last (its first look counts as a change: it
//! cannot know what it missed) adds one to a generation shared by all; every answer is kept with
//! the generation read just after its thread's check, *before* its records were read, and served
//! only while the generation is the same. Now take a write of any path (a handler's, an
//! operation's, the reconciler's, another dbroker's, `dbroker user` on the host) that committed
//! before a read R began. The first look of R's watch since that commit (R's own, or an earlier
//! one) reads a changed number, so it moved the generation on, after the commit and by R's check at
//! the latest; an answer whose records were read before the commit took its generation before
//! that, so R does not serve it. There is no list of writers to keep in step. A write that commits
//! between a check and the records' read makes the answer newer than its generation: a later read
//! rebuilds it for nothing, never the reverse. And an answer is only kept under the key it was
//! asked under, which holds the owner's id, so one user never sees another's.
//!
//! An answer holds what it shows its owner, connection passwords included, as the answer did on
//! its way out before; kept in this process's memory only, never written anywhere.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use rusqlite::Connection;
use thread_local::ThreadLocal;

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

/// The generation when a read that missed began (see the module's comment); `None` for an answer
/// that is not to be kept (the backend keeps none, or the check could not be made).
#[derive(Debug, Clone, Copy)]
pub struct Mark(Option<u64>);

pub(super) struct Answers {
    path: PathBuf,
    /// Each thread's watch (see the module's comment); a thread that ends leaves its watch to the
    /// next thread given its id, which goes on comparing that connection's numbers.
    watches: ThreadLocal<RefCell<Watch>>,
    /// Moved on by any watch that sees a change; never moves back.
    generation: AtomicU64,
    /// Behind a read-write lock so that hits, on both runtime threads at once, do not wait for
    /// each other; only a keep or a change writes.
    kept: RwLock<Kept>,
}

/// A connection that reads `PRAGMA data_version`, and the number it read last.
struct Watch {
    connection: Connection,
    seen: Option<i64>,
}

#[derive(Default)]
struct Kept {
    /// The generation the answers were made at.
    generation: u64,
    answers: HashMap<AnswerKey, Bytes>,
}

impl Answers {
    pub fn open(path: &Path) -> rusqlite::Result<Answers> {
        // Opened here once, so that a store that cannot be read fails at open, not at a read.
        let watches = ThreadLocal::new();
        watches.get_or_try(|| Watch::open(path))?;
        Ok(Answers { path: path.to_owned(), watches, generation: AtomicU64::new(0), kept: RwLock::default() })
    }

    /// The generation, after this thread's watch has looked for a change.
    fn generation(&self) -> rusqlite::Result<u64> {
        let mut watch = self.watches.get_or_try(|| Watch::open(&self.path))?.borrow_mut();
        let version = watch.connection.prepare_cached("PRAGMA data_version")?.query_row([], |row| row.get(0))?;
        if watch.seen != Some(version) {
            watch.seen = Some(version);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.generation.load(Ordering::SeqCst))
    }

    pub fn get(&self, key: &AnswerKey) -> Result<Cached, StoreError> {
        let generation = match self.generation() {
            Ok(generation) => generation,
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                return Ok(Cached::Miss(Mark(None)));
            }
            Err(error) => return Err(error.into()),
        };
        {
            let kept = self.kept.read().unwrap_or_else(PoisonError::into_inner);
            if kept.generation == generation {
                if let Some(answer) = kept.answers.get(key) {
                    return Ok(Cached::Hit(answer.clone()));
                }
            }
            if kept.generation >= generation {
                return Ok(Cached::Miss(Mark(Some(generation))));
            }
        }
        // The first read since a change forgets the answers made before it. Generations only
        // grow; a read that looked before another but locks after it leaves the newer ones be.
        let mut kept = self.kept.write().unwrap_or_else(PoisonError::into_inner);
        if generation > kept.generation {
            kept.generation = generation;
            kept.answers.clear();
        }
        Ok(Cached::Miss(Mark(Some(generation))))
    }

    /// Keeps `answer`, unless the database changed since `mark` was taken (a watch has moved the
    /// generation on since, and `answer` may be older than its records).
    pub fn keep(&self, Mark(generation): Mark, key: AnswerKey, answer: Bytes) {
        let Some(generation) = generation else { return };
        let mut kept = self.kept.write().unwrap_or_else(PoisonError::into_inner);
        if kept.generation != generation || self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if kept.answers.len() >= MAX_ANSWERS {
            kept.answers.clear();
        }
        kept.answers.insert(key, answer);
    }
}

impl Watch {
    fn open(path: &Path) -> rusqlite::Result<RefCell<Watch>> {
        Ok(RefCell::new(Watch { connection: super::sqlite::open_reader(path)?, seen: None }))
    }
}

impl super::Store {
    /// The answer kept for `key`, if the database has not changed since it was made; else the
    /// mark to keep the one made now with (see [`Store::keep_answer`]).
    pub fn cached_answer(&self, key: &AnswerKey) -> Result<Cached, StoreError> {
        match &*self.db {
            super::Db::Sqlite(db) => db.answers.get(key),
            super::Db::Postgres(_) => Ok(Cached::Miss(Mark(None))),
        }
    }

    /// Keeps `answer`, made from records read after `mark` was taken, for the next reads of `key`.
    pub fn keep_answer(&self, mark: Mark, key: AnswerKey, answer: Bytes) {
        if let super::Db::Sqlite(db) = &*self.db {
            db.answers.keep(mark, key, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

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
        let store = Store::open(&crate::store::DatabaseUrl::in_data_dir(dir.path())).await.unwrap();
        (dir, store)
    }

    /// A thread of its own, so a watch of its own, that looks up answers when asked.
    struct OtherThread {
        asks: Option<mpsc::Sender<(AnswerKey, mpsc::Sender<Cached>)>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl OtherThread {
        fn start(store: &Store) -> OtherThread {
            let store = store.clone();
            let (asks, asked) = mpsc::channel::<(AnswerKey, mpsc::Sender<Cached>)>();
            let thread = std::thread::spawn(move || {
                for (key, answer) in asked {
                    answer.send(store.cached_answer(&key).unwrap()).unwrap();
                }
            });
            OtherThread { asks: Some(asks), thread: Some(thread) }
        }

        fn cached_answer(&self, key: AnswerKey) -> Cached {
            let (answer, answered) = mpsc::channel();
            self.asks.as_ref().unwrap().send((key, answer)).unwrap();
            answered.recv().unwrap()
        }
    }

    impl Drop for OtherThread {
        fn drop(&mut self) {
            drop(self.asks.take());
            let _ = self.thread.take().map(std::thread::JoinHandle::join);
        }
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

    #[tokio::test]
    async fn a_change_seen_by_one_threads_watch_invalidates_the_answers_kept_through_another() {
        let (_dir, store) = store().await;
        let other = OtherThread::start(&store);
        // Its first look, a change (see the next test), before anything is kept.
        mark_of(other.cached_answer(key(1)));
        let mark = mark_of(store.cached_answer(&key(1)).unwrap());
        store.keep_answer(mark, key(1), Bytes::from_static(b"alice's"));
        assert!(matches!(other.cached_answer(key(1)), Cached::Hit(a) if a == "alice's"), "kept for both threads");

        store.add_user(&"carol".parse().unwrap(), "token", false).await.unwrap();

        assert!(matches!(other.cached_answer(key(1)), Cached::Miss(_)));
        // This thread's watch saw nothing new since the other's did: the generation is shared.
        assert!(matches!(store.cached_answer(&key(1)).unwrap(), Cached::Miss(_)));
    }

    #[tokio::test]
    async fn a_watchs_first_look_counts_as_a_change() {
        // A thread that first reads after a write cannot tell the write from an older one.
        let (_dir, store) = store().await;
        let mark = mark_of(store.cached_answer(&key(1)).unwrap());
        store.keep_answer(mark, key(1), Bytes::from_static(b"before the write"));

        store.add_user(&"carol".parse().unwrap(), "token", false).await.unwrap();

        assert!(matches!(OtherThread::start(&store).cached_answer(key(1)), Cached::Miss(_)));
    }
}
