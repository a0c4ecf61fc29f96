//! The sealed stream a backup is stored as: the engine's native dump, compressed with zstd, then
//! encrypted with age to the configured recipient. Both ways stream with bounded memory (a
//! 64 KiB age chunk, zstd's window, and the target's buffers), whatever the dump's size.
//!
//! A backup is readable without dbroker, with Debian's `age` and `zstd`:
//!
//! ```sh
//! age -d -i /etc/dbroker/backup.key BACKUP | zstd -d > dump
//! ```
//!
//! gives the dump the engine's own tools load (`mysql < dump`, `pg_restore dump`, an RDB file).
//! age authenticates every 64 KiB chunk and the end of the stream, so a wrong key is refused at
//! once, and an altered or truncated object is refused where the damage is, before its bytes are
//! given out: a reader must still read to the end before it trusts the whole (see [`verify`]).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::ZstdDecoder;
use async_compression::tokio::write::ZstdEncoder;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio_util::compat::{
    Compat, FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt,
};

use super::target::{ObjectKey, ObjectReader, StoredObject, Target, TargetError};

/// The public key every backup is encrypted to (`age1...`): dbroker needs no secret to write a
/// backup, so a stolen host or bucket cannot read old ones.
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient(age::x25519::Recipient);

impl FromStr for Recipient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(Recipient).map_err(|e| {
            format!(
                "{s:?} is not an age public key ({e}); make a key pair with `age-keygen -o backup.key`, which prints it"
            )
        })
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.0)
    }
}

/// The private keys that read backups back (an age identity file: one `AGE-SECRET-KEY-1...` a
/// line, `#` comments). Several keys, so that backups written to an older recipient stay
/// readable after a new one is configured. Never printed.
#[derive(Clone)]
pub struct Identity(Arc<Vec<age::x25519::Identity>>);

impl Identity {
    /// The keys of an identity file's text.
    pub fn parse(text: &str) -> Result<Identity, String> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .enumerate()
            .map(|(n, line)| {
                line.parse::<age::x25519::Identity>()
                    .map_err(|_| format!("key {} is not an age secret key (AGE-SECRET-KEY-1...)", n + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("holds no key; make one with `age-keygen -o FILE`".into());
        }
        Ok(Identity(Arc::new(keys)))
    }

    /// Whether these keys read what is encrypted to `recipient`.
    pub fn reads(&self, recipient: &Recipient) -> bool {
        self.0.iter().any(|key| key.to_public() == recipient.0)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identity([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The stream was read, but not what it should be: neither an age file, nor age's
    /// authentication, nor zstd's frame checks hold.
    #[error("backup {key} on target {target} is damaged or truncated ({reason}); it cannot be restored")]
    Damaged { target: String, key: String, reason: String },
    #[error(
        "backup {key} on target {target} was not encrypted to a key of backups.identity_file (wrong key, or \
         written for another recipient)"
    )]
    WrongIdentity { target: String, key: String },
    /// The dump that was being sealed failed to read: the caller's error, not the target's.
    #[error("reading the dump failed: {0}")]
    Source(io::Error),
}

/// Compresses and encrypts `plain` to `recipient`, into a new object `key` on `target`; returns
/// the stored object's size and sha256. On any failure the partial object is removed (the
/// writer's drop): an error never leaves a backup that looks whole.
pub async fn seal<R>(
    plain: R,
    recipient: &Recipient,
    target: &Target,
    key: &ObjectKey,
) -> Result<StoredObject, SealError>
where
    R: AsyncRead + Unpin,
{
    let mut writer = target.writer(key).await?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient.0 as &dyn age::Recipient))
        .expect("one x25519 recipient is always a valid set");
    // By reference: the writer itself is finished below, once age has written its last chunk.
    let encrypted =
        encryptor.wrap_async_output((&mut writer).compat_write()).await.map_err(|e| target_error(target, e))?;
    // zstd's fastest level: a dump streams through it as fast as its tool writes (the benchmark
    // measured the default level at a third of the tool's rate), and still shrinks text by half.
    let mut compressed = ZstdEncoder::with_quality(encrypted.compat_write(), async_compression::Level::Fastest);
    copy(plain, &mut compressed).await.map_err(|failure| match failure {
        CopyFailure::Read(e) => SealError::Source(e),
        CopyFailure::Write(e) => SealError::Target(target_error(target, e)),
    })?;
    // Ends zstd's frame, then age's stream (its last chunk, flagged as the last).
    compressed.shutdown().await.map_err(|e| target_error(target, e))?;
    drop(compressed);
    Ok(writer.finish().await?)
}

/// The plain bytes of the object `key` on `target`: decrypted with `identity`, decompressed.
/// A wrong identity is refused here, before any byte is given; damage is an `InvalidData`
/// error where it is read (its message says which backup and why).
pub async fn unseal(identity: &Identity, target: &Target, key: &ObjectKey) -> Result<Unsealed, SealError> {
    let reader = target.reader(key).await?;
    let damaged = |reason: String| SealError::Damaged { target: target.name().into(), key: key.to_string(), reason };
    let decryptor = age::Decryptor::new_async(reader.compat()).await.map_err(|e| match e {
        age::DecryptError::Io(e) => match e.into_inner().map(|inner| inner.downcast::<TargetError>()) {
            Some(Ok(target_error)) => SealError::Target(*target_error),
            Some(Err(other)) => damaged(format!("not an age file: {other}")),
            None => damaged("not an age file: it ends within the header".into()),
        },
        other => damaged(format!("not an age file: {other}")),
    })?;
    let identities = identity.0.iter().map(|key| key as &dyn age::Identity);
    let decrypted = decryptor.decrypt_async(identities).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => {
            SealError::WrongIdentity { target: target.name().into(), key: key.to_string() }
        }
        other => damaged(other.to_string()),
    })?;
    let decompressed = ZstdDecoder::new(BufReader::new(decrypted.compat()));
    Ok(Unsealed { inner: decompressed, target: target.name().into(), key: key.to_string() })
}

/// What a whole read of a backup found: its plain bytes' size and sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub plain_size: u64,
    pub plain_sha256: [u8; 32],
}

/// Reads the whole of backup `key` and checks every chunk and its end, without keeping it:
/// what a restore does before it changes anything.
pub async fn verify(identity: &Identity, target: &Target, key: &ObjectKey) -> Result<Verified, SealError> {
    let mut plain = unseal(identity, target, key).await?;
    let mut hasher = Sha256::new();
    let mut plain_size = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = plain.read(&mut buffer).await.map_err(|e| plain.error(e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        plain_size += n as u64;
    }
    Ok(Verified { plain_size, plain_sha256: hasher.finalize().into() })
}

type Decrypted = Compat<age::stream::StreamReader<Compat<ObjectReader>>>;

/// A backup's plain bytes, as they are read from its target. Errors name the backup: an
/// `InvalidData` one says it is damaged or truncated; [`Unsealed::error`] turns any into a
/// [`SealError`].
pub struct Unsealed {
    inner: ZstdDecoder<BufReader<Decrypted>>,
    target: String,
    key: String,
}

impl Unsealed {
    /// What a read error of this stream means: the target's (unreachable...) or damage.
    pub fn error(&self, error: io::Error) -> SealError {
        // This stream's own errors carry the SealError they were made from.
        if error.get_ref().is_some_and(|inner| inner.is::<SealError>()) {
            return *error.into_inner().expect("checked above").downcast::<SealError>().expect("checked above");
        }
        classify_read_error(&self.target, &self.key, error)
    }
}

fn classify_read_error(target: &str, key: &str, error: io::Error) -> SealError {
    let kind = error.kind();
    match error.into_inner().map(|inner| inner.downcast::<TargetError>()) {
        Some(Ok(target_error)) => SealError::Target(*target_error),
        Some(Err(inner)) => SealError::Damaged { target: target.into(), key: key.into(), reason: inner.to_string() },
        None => SealError::Damaged { target: target.into(), key: key.into(), reason: format!("{kind}") },
    }
}

impl AsyncRead for Unsealed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => {
                // Said in our words once, so that whoever reads the stream (a restore's client)
                // reports which backup failed and why.
                let error = classify_read_error(&self.target, &self.key, e);
                let kind = match error {
                    SealError::Damaged { .. } => io::ErrorKind::InvalidData,
                    _ => io::ErrorKind::Other,
                };
                Poll::Ready(Err(io::Error::new(kind, error)))
            }
            other => other,
        }
    }
}

/// A writer's io error in the target's words: the target's own error if it made it.
fn target_error(target: &Target, error: io::Error) -> TargetError {
    TargetError::from_io(target.name(), error)
}

enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

/// `tokio::io::copy`, telling a read failure (the dump's) from a write failure (the target's).
async fn copy<R, W>(mut from: R, to: &mut W) -> Result<u64, CopyFailure>
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = from.read(&mut buffer).await.map_err(CopyFailure::Read)?;
        if n == 0 {
            return Ok(copied);
        }
        to.write_all(&buffer[..n]).await.map_err(CopyFailure::Write)?;
        copied += n as u64;
    }
}
