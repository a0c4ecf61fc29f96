//! Backup targets: where a backup's bytes are stored, a directory on this host or a bucket of
//! S3-compatible object storage, behind one small interface: write a new object as a stream
//! (its size and sha256 returned once it is whole), read one as a stream, its size, whether it
//! exists, delete it. A write that fails or is dropped leaves no object behind, and every error
//! says, in the target's name, what an operator should look at.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::{BackoffConfig, ObjectStoreExt, RetryConfig, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::settings::{BackupSettings, S3Spec, TargetSpec};
use crate::secrets::{Secret, redact};

/// The size of each part of an S3 multipart upload: S3 wants at least 5 MiB (but the last) and
/// at most 10,000 parts, so 16 MiB parts take objects up to 156 GiB.
pub const S3_PART_SIZE_BYTES: usize = 16 * 1024 * 1024;

/// Parts uploaded at once: two keep the link busy while the next part fills, and bound what a
/// backup holds in memory to about three parts.
pub const S3_PARTS_IN_FLIGHT: usize = 2;

/// How long one S3 request is retried (connection refused, 5xx, timeouts) before the target is
/// reported unreachable: long enough for a blip, short enough that a backup fails while its
/// operator still looks.
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(20);
const S3_MAX_RETRIES: usize = 4;

/// The name of an object in a target: `/`-separated segments of letters, digits, `-`, `_` and
/// `.`, none empty, none starting with `.` (so never `..`, and never a directory target's
/// staging file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<ObjectKey, TargetError> {
        let key = key.into();
        let bad = |reason: &str| Err(TargetError::BadKey { key: key.clone(), reason: reason.into() });
        if key.is_empty() || key.len() > 512 {
            return bad("it must have 1 to 512 characters");
        }
        for segment in key.split('/') {
            if segment.is_empty() || segment.starts_with('.') {
                return bad("no segment may be empty or start with a dot");
            }
            if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                return bad("only letters, digits, -, _ and . between slashes");
            }
        }
        Ok(ObjectKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an object's writer stored, once it is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredObject {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the stored bytes (the sealed stream, not the dump).
    pub sha256: [u8; 32],
}

impl StoredObject {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// What went wrong at a target, by what to do about it. Messages name the target and never
/// hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no backup target is named {name:?}; the configured ones are {known}")]
    Unknown { name: String, known: String },
    #[error("{key:?} is not an object name: {reason}")]
    BadKey { key: String, reason: String },
    #[error("backup target {target} cannot be reached: {reason}")]
    Unreachable { target: String, reason: String },
    #[error(
        "backup target {target} refused dbroker's credentials (check its access_key_id and secret_access_key, and \
         what the key may do in the bucket): {reason}"
    )]
    CredentialsRefused { target: String, reason: String },
    #[error("backup target {target} has no object {key}")]
    NotFound { target: String, key: String },
    #[error("backup target {target} has no space left on its device ({path})")]
    NoSpace { target: String, path: String },
    #[error("backup target {target}: {reason}")]
    Other { target: String, reason: String },
}

impl TargetError {
    /// An io error in the target's words: the `TargetError` inside it when a writer or reader
    /// of this module made it, else what its kind says.
    pub fn from_io(target: &str, error: io::Error) -> TargetError {
        if error.get_ref().is_some_and(|inner| inner.is::<TargetError>()) {
            let inner = error.into_inner().expect("checked above");
            return *inner.downcast::<TargetError>().expect("checked above");
        }
        io_error(target, "", error)
    }

    fn into_io(self) -> io::Error {
        io::Error::other(self)
    }
}

/// A directory target's io error on `path`.
fn io_error(target: &str, path: &str, error: io::Error) -> TargetError {
    let target = target.to_string();
    if error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == io::ErrorKind::StorageFull {
        return TargetError::NoSpace { target, path: path.into() };
    }
    let reason = if path.is_empty() { error.to_string() } else { format!("{path}: {error}") };
    TargetError::Other { target, reason }
}

/// Every configured target, by name, and the default one.
#[derive(Clone)]
pub struct Targets {
    default: String,
    by_name: BTreeMap<String, Target>,
}

impl Targets {
    /// The targets `[backups]` names. Makes no request: a target that is down at start-up is
    /// reported by the first backup that uses it, and dbroker still starts.
    pub fn from_settings(settings: &BackupSettings) -> Result<Targets, TargetError> {
        let by_name = settings
            .targets
            .iter()
            .map(|(name, spec)| Ok((name.clone(), Target::from_spec(name, spec)?)))
            .collect::<Result<_, TargetError>>()?;
        Ok(Targets { default: settings.default_target.clone(), by_name })
    }

    /// The target `name`, or the default one for `None`.
    pub fn get(&self, name: Option<&str>) -> Result<&Target, TargetError> {
        let name = name.unwrap_or(&self.default);
        self.by_name.get(name).ok_or_else(|| TargetError::Unknown {
            name: name.into(),
            known: self.by_name.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// One target. Cheap to clone.
#[derive(Clone)]
pub struct Target {
    name: Arc<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Dir { root: PathBuf },
    S3 { store: Arc<AmazonS3>, prefix: String, endpoint: String, secret: Secret },
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Dir { root } => write!(f, "Target({}: dir {})", self.name, root.display()),
            Kind::S3 { endpoint, prefix, .. } => write!(f, "Target({}: s3 {endpoint} {prefix:?})", self.name),
        }
    }
}

impl Target {
    pub fn from_spec(name: &str, spec: &TargetSpec) -> Result<Target, TargetError> {
        let kind = match spec {
            TargetSpec::Dir { path } => Kind::Dir { root: path.clone() },
            TargetSpec::S3(s3) => s3_store(name, s3)?,
        };
        Ok(Target { name: name.into(), kind })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A writer of the new object `key`, which replaces an object of that name only once it is
    /// whole ([`ObjectWriter::finish`]). On S3 this starts the multipart upload, so a target that
    /// is unreachable or refuses the credentials fails here, before anything is dumped.
    pub async fn writer(&self, key: &ObjectKey) -> Result<ObjectWriter, TargetError> {
        let sink = match &self.kind {
            Kind::Dir { root } => {
                let path = root.join(key.as_str());
                let parent = path.parent().expect("an object's path is under the root").to_path_buf();
                let error = |e: io::Error| io_error(&self.name, &parent.display().to_string(), e);
                // 0700: backups are encrypted, but their names and sizes are no one else's either.
                tokio::fs::DirBuilder::new().recursive(true).mode(0o700).create(&parent).await.map_err(error)?;
                // Beside the object, so that the rename at the end stays on one filesystem; a
                // name no object has (objects never start with a dot).
                let file_name = path.file_name().expect("a key's last segment").to_string_lossy().into_owned();
                let staging = parent.join(format!(".{file_name}.partial-{}", hex::encode(rand::random::<[u8; 8]>())));
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&staging)
                    .map_err(|e| io_error(&self.name, &staging.display().to_string(), e))?;
                Sink::Dir(DirSink { file: Some(tokio::fs::File::from_std(file)), staging, path })
            }
            Kind::S3 { store, .. } => {
                let upload = store.put_multipart(&self.s3_path(key)).await.map_err(|e| self.s3_error(key, e))?;
                Sink::S3(S3Sink { upload: Some(WriteMultipart::new_with_chunk_size(upload, S3_PART_SIZE_BYTES)) })
            }
        };
        Ok(ObjectWriter { target: self.clone(), key: key.clone(), sink, hasher: Sha256::new(), size: 0 })
    }

    /// The object `key`'s bytes, as a stream.
    pub async fn reader(&self, key: &ObjectKey) -> Result<ObjectReader, TargetError> {
        match &self.kind {
            Kind::Dir { root } => {
                let path = root.join(key.as_str());
                let file = tokio::fs::File::open(&path).await.map_err(|e| self.dir_error(key, &path, e))?;
                Ok(ObjectReader(Box::pin(DirReader { file, target: self.name.clone(), path })))
            }
            Kind::S3 { store, .. } => {
                let got = store.get(&self.s3_path(key)).await.map_err(|e| self.s3_error(key, e))?;
                let this = self.clone();
                let key = key.clone();
                let stream = got.into_stream().map_err(move |e| this.s3_error(&key, e).into_io());
                Ok(ObjectReader(Box::pin(tokio_util::io::StreamReader::new(stream))))
            }
        }
    }

    /// The object `key`'s size in bytes.
    pub async fn size(&self, key: &ObjectKey) -> Result<u64, TargetError> {
        match &self.kind {
            Kind::Dir { root } => {
                let path = root.join(key.as_str());
                let metadata = tokio::fs::metadata(&path).await.map_err(|e| self.dir_error(key, &path, e))?;
                Ok(metadata.len())
            }
            Kind::S3 { store, .. } => Ok(store.head(&self.s3_path(key)).await.map_err(|e| self.s3_error(key, e))?.size),
        }
    }

    /// Whether the object `key` exists.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, TargetError> {
        match self.size(key).await {
            Ok(_) => Ok(true),
            Err(TargetError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the object `key`. One that is not there is no error: a retried cleanup deletes
    /// again what it deleted already.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), TargetError> {
        match &self.kind {
            Kind::Dir { root } => {
                let path = root.join(key.as_str());
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.dir_error(key, &path, e)),
                }
            }
            Kind::S3 { store, .. } => match store.delete(&self.s3_path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.s3_error(key, e)),
            },
        }
    }

    /// Removes what an unfinished write of `key` left when its process died before its writer
    /// could (its operation's lease then expires and another process cleans up): a directory
    /// target's staging files of that name. On S3 an unfinished multipart upload stores no
    /// object, and object_store cannot list uploads: a bucket lifecycle rule
    /// (AbortIncompleteMultipartUpload) reclaims their parts.
    pub async fn discard_partial(&self, key: &ObjectKey) -> Result<(), TargetError> {
        let Kind::Dir { root } = &self.kind else { return Ok(()) };
        let path = root.join(key.as_str());
        let parent = path.parent().expect("an object's path is under the root");
        let staging = format!(".{}.partial-", path.file_name().expect("a key's last segment").to_string_lossy());
        let mut entries = match tokio::fs::read_dir(parent).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.name, &parent.display().to_string(), e)),
        };
        let error = |e: io::Error| io_error(&self.name, &parent.display().to_string(), e);
        while let Some(entry) = entries.next_entry().await.map_err(error)? {
            if entry.file_name().to_string_lossy().starts_with(&staging) {
                match tokio::fs::remove_file(entry.path()).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(error(e)),
                }
            }
        }
        Ok(())
    }

    fn s3_path(&self, key: &ObjectKey) -> object_store::path::Path {
        let Kind::S3 { prefix, .. } = &self.kind else { unreachable!("an S3 target") };
        object_store::path::Path::from(format!("{prefix}{key}"))
    }

    fn dir_error(&self, key: &ObjectKey, path: &Path, error: io::Error) -> TargetError {
        if error.kind() == io::ErrorKind::NotFound {
            return TargetError::NotFound { target: self.name.to_string(), key: key.to_string() };
        }
        io_error(&self.name, &path.display().to_string(), error)
    }

    /// An S3 error, by kind: object_store maps 403 and 401 to their own variants; a connection
    /// that failed (refused, no such host, TLS) is an `HttpError` of kind `Connect` in the
    /// chain of causes; the rest is said as object_store says it, any secret taken out.
    fn s3_error(&self, key: &ObjectKey, error: object_store::Error) -> TargetError {
        let Kind::S3 { endpoint, secret, .. } = &self.kind else { unreachable!("an S3 target") };
        let target = self.name.to_string();
        let reason = redact(chain(&error), &[secret]);
        match error {
            object_store::Error::NotFound { .. } => TargetError::NotFound { target, key: key.to_string() },
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                TargetError::CredentialsRefused { target, reason }
            }
            _ if reason.contains("SignatureDoesNotMatch") || reason.contains("InvalidAccessKeyId") => {
                TargetError::CredentialsRefused { target, reason }
            }
            _ if connect_failed(&error) => TargetError::Unreachable { target, reason: format!("{endpoint}: {reason}") },
            _ => TargetError::Other { target, reason },
        }
    }
}

/// Whether an error's causes hold a connection that could not be made.
fn connect_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<HttpError>().is_some_and(|http| http.kind() == HttpErrorKind::Connect) {
            return true;
        }
        cause = e.source();
    }
    false
}

/// An error and its causes, on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = e.source();
    }
    text
}

fn s3_store(name: &str, spec: &S3Spec) -> Result<Kind, TargetError> {
    let retry =
        RetryConfig { backoff: BackoffConfig::default(), max_retries: S3_MAX_RETRIES, retry_timeout: S3_RETRY_TIMEOUT };
    // object_store takes a virtual-hosted endpoint with the bucket in it already.
    let endpoint = match spec.endpoint.split_once("://") {
        Some((scheme, host)) if !spec.path_style => format!("{scheme}://{}.{host}", spec.bucket),
        _ => spec.endpoint.clone(),
    };
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(spec.endpoint.starts_with("http://"))
        .with_region(&spec.region)
        .with_bucket_name(&spec.bucket)
        .with_virtual_hosted_style_request(!spec.path_style)
        .with_access_key_id(spec.access_key_id.expose())
        .with_secret_access_key(spec.secret_access_key.expose())
        .with_retry(retry)
        .build()
        .map_err(|e| TargetError::Other {
            target: name.into(),
            reason: redact(chain(&e), &[&spec.secret_access_key]),
        })?;
    Ok(Kind::S3 {
        store: Arc::new(store),
        prefix: spec.prefix.clone(),
        endpoint: spec.endpoint.clone(),
        secret: spec.secret_access_key.clone(),
    })
}

/// A new object being written. Bytes written are stored only by [`ObjectWriter::finish`]
/// (shutting the writer down only flushes it); a writer dropped before, or whose finish failed,
/// removes what it wrote: the staging file, or the S3 multipart upload (aborted on the runtime,
/// in the background; a bucket lifecycle rule on incomplete uploads is the backstop for a
/// process that dies first).
pub struct ObjectWriter {
    target: Target,
    key: ObjectKey,
    sink: Sink,
    hasher: Sha256,
    size: u64,
}

enum Sink {
    Dir(DirSink),
    S3(S3Sink),
}

struct DirSink {
    /// `None` once the staging file has been renamed into place (or given up).
    file: Option<tokio::fs::File>,
    staging: PathBuf,
    path: PathBuf,
}

struct S3Sink {
    /// `None` once the upload completed or was aborted.
    upload: Option<WriteMultipart>,
}

impl ObjectWriter {
    /// Makes the object whole and visible under its name: on a directory, the staging file is
    /// synced and renamed, and the directory synced; on S3, the last part is sent and the
    /// upload completed. Returns what was stored.
    pub async fn finish(mut self) -> Result<StoredObject, TargetError> {
        let stored = StoredObject { size: self.size, sha256: self.hasher.clone().finalize().into() };
        match &mut self.sink {
            Sink::Dir(dir) => {
                let name = self.target.name.to_string();
                let staging = dir.staging.display().to_string();
                let mut file = dir.file.take().expect("finish runs once");
                use tokio::io::AsyncWriteExt;
                let synced = async {
                    file.flush().await?;
                    file.sync_all().await
                };
                if let Err(e) = synced.await {
                    let _ = std::fs::remove_file(&dir.staging);
                    return Err(io_error(&name, &staging, e));
                }
                drop(file);
                if let Err(e) = tokio::fs::rename(&dir.staging, &dir.path).await {
                    let _ = std::fs::remove_file(&dir.staging);
                    return Err(io_error(&name, &staging, e));
                }
                // The rename itself is durable only once its directory is.
                let parent = dir.path.parent().expect("under the root").to_path_buf();
                let synced = tokio::task::spawn_blocking(move || std::fs::File::open(&parent)?.sync_all()).await;
                if let Ok(Err(e)) = synced {
                    return Err(io_error(&name, &dir.path.display().to_string(), e));
                }
            }
            Sink::S3(s3) => {
                let upload = s3.upload.take().expect("finish runs once");
                // WriteMultipart aborts the upload itself when a part or the completion fails.
                upload.finish().await.map_err(|e| self.target.s3_error(&self.key, e))?;
            }
        }
        Ok(stored)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        match &mut self.sink {
            Sink::Dir(dir) => {
                if dir.file.take().is_some() {
                    let _ = std::fs::remove_file(&dir.staging);
                }
            }
            Sink::S3(s3) => {
                if let Some(mut upload) = s3.upload.take() {
                    let target = self.target.name.to_string();
                    let key = self.key.to_string();
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => {
                            runtime.spawn(async move {
                                // A part still arriving when the abort does may be kept (S3's own
                                // advice is to abort again): the parts in flight end first. Each
                                // error is one part that failed; the loop ends when none is left.
                                while upload.wait_for_capacity(0).await.is_err() {}
                                if let Err(e) = upload.abort().await {
                                    tracing::warn!(%target, %key, "could not abort an unfinished upload: {e}");
                                }
                            });
                        }
                        Err(_) => {
                            tracing::warn!(%target, %key, "an unfinished upload was left (no runtime to abort it)")
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for ObjectWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = match &mut this.sink {
            Sink::Dir(dir) => {
                let Some(file) = dir.file.as_mut() else { return Poll::Ready(Err(finished())) };
                match ready!(Pin::new(file).poll_write(cx, buf)) {
                    Ok(n) => n,
                    Err(e) => {
                        return Poll::Ready(Err(
                            io_error(&this.target.name, &dir.staging.display().to_string(), e).into_io()
                        ));
                    }
                }
            }
            Sink::S3(s3) => {
                let Some(upload) = s3.upload.as_mut() else { return Poll::Ready(Err(finished())) };
                // Back-pressure: no more than S3_PARTS_IN_FLIGHT parts are sent at once.
                if let Err(e) = ready!(upload.poll_for_capacity(cx, S3_PARTS_IN_FLIGHT)) {
                    return Poll::Ready(Err(this.target.s3_error(&this.key, e).into_io()));
                }
                upload.write(buf);
                buf.len()
            }
        };
        this.hasher.update(&buf[..written]);
        this.size += written as u64;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match &mut this.sink {
            Sink::Dir(DirSink { file: Some(file), staging, .. }) => Pin::new(file)
                .poll_flush(cx)
                .map_err(|e| io_error(&this.target.name, &staging.display().to_string(), e).into_io()),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Only flushes: the object is stored by `finish`, which can say what was stored.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

fn finished() -> io::Error {
    io::Error::other("the object's writer has finished")
}

/// An object's bytes, as its target sends them. Errors are `TargetError`s inside `io::Error`s
/// ([`TargetError::from_io`] takes them out).
pub struct ObjectReader(Pin<Box<dyn AsyncRead + Send>>);

impl AsyncRead for ObjectReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

/// A directory object's file, its read errors said as the target's (a disk failing is not a
/// damaged backup).
struct DirReader {
    file: tokio::fs::File,
    target: Arc<str>,
    path: PathBuf,
}

impl AsyncRead for DirReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        Pin::new(&mut this.file)
            .poll_read(cx, buf)
            .map_err(|e| io_error(&this.target, &this.path.display().to_string(), e).into_io())
    }
}
