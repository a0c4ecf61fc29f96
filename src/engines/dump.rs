//! Each engine's dump, load and content digest, run inside the instance's own container (so the
//! dump tool's version is the server's) through the runtime's streaming exec. Engine-neutral for
//! the caller: a [`Dump`] is an `AsyncRead` of the engine's native format (SQL for MySQL and
//! PostgreSQL, an RDB file for Redis) that gives, at its end, a [`ContentDigest`] of what it holds.
//!
//! The digest is what a verification compares: taken while the dump streams, and again from a
//! server loaded with the dump ([`content_digest`]), the two are equal exactly when the restored
//! server holds what the dump was taken of. For MySQL and PostgreSQL it is the sha256 of the dump
//! itself: a dump is a function of the data in its snapshot (the tools are told to leave out
//! dates and comments that change, and lines that carry a random key are skipped), so it is
//! consistent with the snapshot by construction, and a fresh dump of the restored server, which
//! nothing writes to, is the same text. For Redis it is the server's own `DEBUG DIGEST`, taken
//! while writes are paused, at the instant the snapshot forks (see `redis::snapshot`); an RDB
//! file's bytes are no use, since the order of its keys differs from server to server.
//!
//! No password is ever in an argv or an exec's environment: MySQL's scripts read the container's
//! password file, Redis's its configuration file (both kept current on every rotation: the first
//! by dbroker, the second by Redis's own `CONFIG REWRITE`), and PostgreSQL logs in over its socket
//! as the `postgres` user, which the images trust there.

use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use super::{Endpoint, Engine, mysql, postgres, redis};
use crate::runtime::{Execution, Runtime, RuntimeError};

/// A digest of an instance's data, comparable between a backup and a server loaded from it.
/// Prefixed by its kind (`sha256:` of a dump, `redis:` of `DEBUG DIGEST`), so two of different
/// kinds never compare equal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContentDigest(pub String);

impl std::fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The dump tool or the server refused, with its message.
    #[error("the dump failed: {0}")]
    Failed(String),
    /// The server's snapshot did not complete within its deadline.
    #[error("the server's snapshot did not complete within {0:?}")]
    Deadline(std::time::Duration),
}

impl From<RuntimeError> for DumpError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::ExecFailed { code, stderr } => DumpError::Failed(tool_message(code, stderr)),
            other => DumpError::Runtime(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The server (or the engine's checker) refused the dump, with its message: a client's
    /// error (the API answers 422 with it).
    #[error("the dump does not load: {0}")]
    Rejected(String),
    /// The input failed before its end (a broken upload, a failed decryption). MySQL may have
    /// loaded what came before it; PostgreSQL and Redis loaded nothing.
    #[error("the dump's input failed: {0}")]
    Input(String),
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The server did not answer again after it loaded the dump.
    #[error("the server did not answer after the load: {0}")]
    NotReady(String),
}

impl From<RuntimeError> for LoadError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::ExecFailed { code, stderr } => LoadError::Rejected(tool_message(code, stderr)),
            RuntimeError::ExecInput(reason) => LoadError::Input(reason),
            other => LoadError::Runtime(other),
        }
    }
}

impl From<DumpError> for LoadError {
    fn from(error: DumpError) -> Self {
        match error {
            DumpError::Runtime(e) => LoadError::Runtime(e),
            DumpError::Failed(reason) => LoadError::Rejected(reason),
            DumpError::Deadline(d) => LoadError::NotReady(format!("the server was busy for {d:?}")),
        }
    }
}

fn tool_message(code: i64, stderr: String) -> String {
    if stderr.is_empty() { format!("exit code {code}") } else { stderr }
}

/// A dump streaming out of an instance's container. Read it to its end, then `finish` it for its
/// digest and to know it completed: a dump whose tool failed half way reads as a short stream,
/// and only `finish` tells.
pub struct Dump {
    /// The tool's stdout, read ahead by at most `READ_AHEAD_BYTES`.
    reader: BufReader<Execution>,
    digest: DigestKind,
}

/// How much of a dump is read from Docker ahead of the caller: all dbroker holds of it at once.
pub(super) const READ_AHEAD_BYTES: usize = 64 * 1024;

enum DigestKind {
    /// The sha256 of the stream as it is read, lines that begin with `skip` left out.
    Stream(CanonicalHasher),
    /// Known before the stream started: Redis's `DEBUG DIGEST` at the snapshot's instant.
    Known(ContentDigest),
}

impl Dump {
    pub(super) fn hashed(execution: Execution, skip: &'static [&'static [u8]]) -> Dump {
        let reader = BufReader::with_capacity(READ_AHEAD_BYTES, execution);
        Dump { reader, digest: DigestKind::Stream(CanonicalHasher::new(skip)) }
    }

    pub(super) fn with_digest(reader: BufReader<Execution>, digest: ContentDigest) -> Dump {
        Dump { reader, digest: DigestKind::Known(digest) }
    }

    /// Reads what is left (into the digest), waits for the tool to exit and returns the digest of
    /// the whole dump; `Err` if the tool failed.
    pub async fn finish(mut self) -> Result<ContentDigest, DumpError> {
        let mut sink = tokio::io::sink();
        tokio::io::copy(&mut self, &mut sink)
            .await
            .map_err(|e| DumpError::Runtime(RuntimeError::Unreachable(e.to_string())))?;
        let Dump { reader, digest } = self;
        // Read to its end above: `into_inner` drops no data.
        reader.into_inner().finish().await?;
        Ok(match digest {
            DigestKind::Stream(hasher) => ContentDigest(format!("sha256:{}", hasher.finish())),
            DigestKind::Known(digest) => digest,
        })
    }
}

impl AsyncRead for Dump {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.reader).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), DigestKind::Stream(hasher)) = (&polled, &mut this.digest) {
            hasher.update(&buf.filled()[before..]);
        }
        polled
    }
}

/// A transactionally consistent dump of the instance in `container`, in the engine's native
/// format, taken while it goes on taking writes: MariaDB's and MySQL's `--single-transaction`,
/// `pg_dump`'s snapshot, Redis's own fork. `database` is a PostgreSQL instance's database (its
/// record's); the other engines dump all of their users' data.
pub async fn dump(
    engine: Engine,
    runtime: &Runtime,
    container: &str,
    database: Option<&str>,
) -> Result<Dump, DumpError> {
    match engine {
        Engine::Mysql => Ok(Dump::hashed(runtime.exec(container, mysql::dump_command()).await?, &[])),
        Engine::Postgres => {
            let command = postgres::dump_command(database.unwrap_or(postgres::DEFAULT_DATABASE))?;
            Ok(Dump::hashed(runtime.exec(container, command).await?, postgres::VOLATILE_DUMP_LINES))
        }
        Engine::Redis => redis::dump(runtime, container).await,
    }
}

/// Loads a dump (as `dump` makes them) from `input` into the running instance in `container`,
/// whose server `endpoint` reaches, and returns once it answers with the data:
/// - MySQL: each database in the dump is dropped and made again from it; other databases stay.
///   Not atomic (MySQL's DDL commits as it goes): a dump that fails half way leaves what came
///   before it loaded; a dump that is no SQL at all fails at its first statement, before any
///   change.
/// - PostgreSQL: one transaction into the endpoint's database: each object of the dump replaces
///   its namesake, others stay; a dump that fails anywhere changes nothing.
/// - Redis: the whole dataset is replaced by the RDB's, and kept (its append-only file is
///   rewritten from it); an RDB that fails the server's own check changes nothing.
pub async fn load(
    engine: Engine,
    runtime: &Runtime,
    container: &str,
    endpoint: &Endpoint<'_>,
    input: impl AsyncRead + Send + Unpin + 'static,
) -> Result<(), LoadError> {
    match engine {
        Engine::Mysql => runtime.exec(container, mysql::load_command(input)).await?.finish().await?,
        Engine::Postgres => {
            let command = postgres::load_command(endpoint.database(), input)?;
            runtime.exec(container, command).await?.finish().await?
        }
        Engine::Redis => redis::load(runtime, container, input).await?,
    }
    super::wait_answers(engine, endpoint).await.map_err(LoadError::NotReady)
}

/// The digest of what the instance in `container` holds now, as a `Dump` of it would give:
/// for a server that nothing writes to, such as one just loaded from a backup, to compare with
/// the backup's.
pub async fn content_digest(
    engine: Engine,
    runtime: &Runtime,
    container: &str,
    database: Option<&str>,
) -> Result<ContentDigest, DumpError> {
    match engine {
        Engine::Mysql | Engine::Postgres => dump(engine, runtime, container, database).await?.finish().await,
        Engine::Redis => redis::digest(runtime, container).await,
    }
}

/// A sha256 of a stream of lines, leaving out the lines that begin with any of `skip`: lines a
/// tool writes differently each time for the same data (pg_dump's `\restrict KEY`, whose key
/// is random). The stream is fed in whatever pieces it comes in.
struct CanonicalHasher {
    sha: Sha256,
    skip: &'static [&'static [u8]],
    /// The start of the current line, while it may still begin with one of `skip`.
    head: Vec<u8>,
    line: Line,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Undecided,
    Kept,
    Skipped,
}

impl CanonicalHasher {
    fn new(skip: &'static [&'static [u8]]) -> Self {
        let line = if skip.is_empty() { Line::Kept } else { Line::Undecided };
        CanonicalHasher { sha: Sha256::new(), skip, head: Vec::new(), line }
    }

    fn update(&mut self, mut data: &[u8]) {
        if self.skip.is_empty() {
            self.sha.update(data);
            return;
        }
        while !data.is_empty() {
            match self.line {
                Line::Kept | Line::Skipped => {
                    let end = data.iter().position(|&b| b == b'\n').map(|i| i + 1);
                    let (this_line, rest) = data.split_at(end.unwrap_or(data.len()));
                    if self.line == Line::Kept {
                        self.sha.update(this_line);
                    }
                    if end.is_some() {
                        self.line = Line::Undecided;
                    }
                    data = rest;
                }
                Line::Undecided => {
                    let byte = data[0];
                    data = &data[1..];
                    self.head.push(byte);
                    if self.skip.contains(&self.head.as_slice()) {
                        self.head.clear();
                        self.line = Line::Skipped;
                    } else if byte == b'\n' || !self.skip.iter().any(|prefix| prefix.starts_with(&self.head)) {
                        self.sha.update(&self.head);
                        self.line = if byte == b'\n' { Line::Undecided } else { Line::Kept };
                        self.head.clear();
                    }
                }
            }
        }
    }

    fn finish(mut self) -> String {
        self.sha.update(&self.head);
        hex::encode(self.sha.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIP: &[&[u8]] = &[b"\\restrict ", b"\\unrestrict "];

    /// A dump is what an HTTP response's body or an upload's task can own and move between threads.
    #[test]
    fn a_dump_can_be_sent_to_another_task() {
        fn sendable<T: AsyncRead + Send + Unpin + 'static>() {}
        sendable::<Dump>();
    }

    fn digest_in_pieces(text: &[u8], piece: usize) -> String {
        let mut hasher = CanonicalHasher::new(SKIP);
        for chunk in text.chunks(piece) {
            hasher.update(chunk);
        }
        hasher.finish()
    }

    #[test]
    fn lines_with_a_random_key_do_not_change_the_digest() {
        let one = b"SET x = 1;\n\\restrict abc123\nCREATE TABLE t ();\n\\unrestrict abc123\n";
        let other = b"SET x = 1;\n\\restrict zzz999\nCREATE TABLE t ();\n\\unrestrict zzz999\n";
        let plain = b"SET x = 1;\nCREATE TABLE t ();\n";
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(digest_in_pieces(one, piece), digest_in_pieces(other, piece), "pieces of {piece}");
            assert_eq!(digest_in_pieces(one, piece), hex::encode(Sha256::digest(plain)), "pieces of {piece}");
        }
    }

    #[test]
    fn every_other_line_counts_whatever_the_pieces() {
        let text = b"\\r\n\\restricted_not\n\\restrict\n x \\restrict y\nlast line without newline";
        for piece in [1, 2, 5, 1000] {
            assert_eq!(digest_in_pieces(text, piece), hex::encode(Sha256::digest(text)), "pieces of {piece}");
        }
    }

    #[test]
    fn without_lines_to_skip_it_is_the_sha256_of_the_stream() {
        let mut hasher = CanonicalHasher::new(&[]);
        hasher.update(b"\\restrict k\n");
        assert_eq!(hasher.finish(), hex::encode(Sha256::digest(b"\\restrict k\n")));
    }
}
