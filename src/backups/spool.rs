//! Spooled files: a stream kept whole on local disk before it is used, so that it can be checked
//! (its size, its sha256) or read twice, with memory that does not grow with its size. An
//! upload to import, the data set aside before an import, a backup fetched before its restore.
//! Each is a private file in the data directory's `spool/`, removed when dropped.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Where spooled files live, under the data directory: caches only, like everything there.
const SPOOL_DIR: &str = "spool";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The stream passed the limit it was spooled with.
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The stream itself failed (a client that hung up).
    #[error("{0}")]
    Read(std::io::Error),
    #[error("the spool file: {0}")]
    Io(#[from] std::io::Error),
}

/// A private temporary file and what was written to it.
#[derive(Clone)]
pub struct Spooled {
    path: Arc<tempfile::TempPath>,
    len: u64,
    sha256: String,
}

impl Spooled {
    /// An empty spool file, to be written through `writer`.
    pub async fn create(data_dir: &Path) -> std::io::Result<Spooled> {
        let dir = data_dir.join(SPOOL_DIR);
        tokio::fs::create_dir_all(&dir).await?;
        // `tempfile` makes it 0600 and removes it when the last handle goes.
        let path =
            tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir).map(|f| f.into_temp_path()))
                .await
                .map_err(std::io::Error::other)??;
        Ok(Spooled { path: Arc::new(path), len: 0, sha256: String::new() })
    }

    /// Spools `stream` whole, refusing it once it passes `limit` bytes (the partial file is
    /// removed).
    pub async fn from_stream(
        data_dir: &Path,
        stream: impl Stream<Item = std::io::Result<Bytes>>,
        limit: u64,
    ) -> Result<Spooled, SpoolError> {
        let mut spooled = Spooled::create(data_dir).await?;
        let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(spooled.path()).await?);
        let mut hash = Sha256::new();
        let mut len = 0u64;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(SpoolError::Read)?;
            len += chunk.len() as u64;
            if len > limit {
                return Err(SpoolError::TooLarge(limit));
            }
            hash.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        spooled.len = len;
        spooled.sha256 = hex::encode(hash.finalize());
        Ok(spooled)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length, as `from_stream` wrote it (0 for one written through `writer`).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sha256 of what `from_stream` wrote, in hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// A writer that replaces its contents.
    pub async fn writer(&self) -> std::io::Result<impl AsyncWrite + Unpin + Send + 'static> {
        Ok(tokio::io::BufWriter::new(tokio::fs::File::create(self.path()).await?))
    }

    /// A reader of its contents from the start, which keeps the file alive while it reads.
    pub async fn reader(&self) -> std::io::Result<impl AsyncRead + Unpin + Send + 'static> {
        let file = tokio::fs::File::open(self.path()).await?;
        Ok(KeepAlive { inner: tokio::io::BufReader::new(file), _spooled: self.clone() })
    }
}

pin_project_lite::pin_project! {
    /// A reader that holds its spool file, so that the file outlives every reader of it.
    struct KeepAlive<R> {
        #[pin]
        inner: R,
        _spooled: Spooled,
    }
}

impl<R: AsyncRead> AsyncRead for KeepAlive<R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}
