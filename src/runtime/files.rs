//! Files inside containers, through Docker's archive API (tar streams; no shell, no exec): a
//! server's configuration written before its first start, a file read back, whole trees copied
//! out and in, and whether an image has a file.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::TryStreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use super::{Runtime, RuntimeError, SpecFile};

/// How much of an upload goes to Docker at once: large, since a WAL segment is 16 MiB.
const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;

impl Runtime {
    /// Writes a file into a container through Docker's archive API (no shell, no exec): a small
    /// tar extracted into `file.dir`, or into its parent when the tar creates `dir` too. Quick on
    /// a container that has not started; tens of milliseconds on a running one.
    pub async fn write_file(&self, container: &str, file: &SpecFile) -> Result<(), RuntimeError> {
        let unpackable = |e: std::io::Error| RuntimeError::Refused(format!("cannot pack {}: {e}", file.name));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut archive = tar::Builder::new(Vec::new());
        let dir = std::path::Path::new(&file.dir);
        let (upload_to, path_in_tar) = match (file.dir_mode, dir.parent(), dir.file_name()) {
            (Some(mode), Some(parent), Some(dir_name)) => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(mode);
                header.set_mtime(now);
                header.set_size(0);
                archive.append_data(&mut header, dir_name, std::io::empty()).map_err(unpackable)?;
                (parent.to_string_lossy().to_string(), std::path::Path::new(dir_name).join(&file.name))
            }
            _ => (file.dir.clone(), std::path::PathBuf::from(&file.name)),
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents.len() as u64);
        header.set_mode(file.mode);
        header.set_mtime(now);
        archive.append_data(&mut header, path_in_tar, file.contents.as_slice()).map_err(unpackable)?;
        let tarball = archive.into_inner().map_err(unpackable)?;
        let options = UploadToContainerOptionsBuilder::default().path(&upload_to).build();
        self.docker()
            .await?
            .upload_to_container(container, Some(options), bollard::body_full(tarball.into()))
            .await
            .map_err(self.failed("upload_to_container"))?;
        Ok(())
    }

    /// Reads a file out of a container, running or not; `None` if there is no such file.
    pub async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let chunks =
            self.docker().await?.download_from_container(container, Some(options)).try_collect::<Vec<_>>().await;
        let tarball: Vec<u8> = match chunks.map_err(self.failed("download_from_container")) {
            Ok(chunks) => chunks.concat(),
            Err(RuntimeError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let mut archive = tar::Archive::new(tarball.as_slice());
        let unreadable = |e: std::io::Error| RuntimeError::Refused(format!("cannot read {path}: {e}"));
        let mut entries = archive.entries().map_err(unreadable)?;
        match entries.next() {
            Some(entry) => {
                let mut contents = Vec::new();
                std::io::Read::read_to_end(&mut entry.map_err(unreadable)?, &mut contents).map_err(unreadable)?;
                Ok(Some(contents))
            }
            None => Ok(None),
        }
    }

    /// Copies `path` (a file or a directory) out of a container, as a tar stream whose entries
    /// are named from `path`'s last component on. Works on a container that never started.
    pub async fn download(
        &self,
        container: &str,
        path: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, RuntimeError> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let stream = self.docker().await?.download_from_container(container, Some(options));
        Ok(StreamReader::new(stream.map_err(std::io::Error::other)))
    }

    /// Extracts a tar stream into directory `dir` of a container, as it is: owners and modes from
    /// the archive. Docker serves one archive request per container at a time, so `tar` must not
    /// wait for a download from the same container.
    pub async fn upload(
        &self,
        container: &str,
        dir: &str,
        tar: impl AsyncRead + Send + 'static,
    ) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        let body = bollard::body_try_stream(ReaderStream::with_capacity(tar, UPLOAD_CHUNK_BYTES));
        self.docker()
            .await?
            .upload_to_container(container, Some(options), body)
            .await
            .map_err(self.failed("upload_to_container"))?;
        Ok(())
    }

    /// Which of `paths` (files or directories) `image` has (see `look_into_image`).
    pub async fn image_has_paths(
        &self,
        image: &str,
        paths: &[&str],
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<bool>, RuntimeError> {
        self.look_into_image(image, name, labels, async |docker| {
            let mut found = Vec::new();
            for path in paths {
                let options = ContainerArchiveInfoOptionsBuilder::default().path(path).build();
                match docker.get_container_archive_info(name, Some(options)).await.map_err(self.failed("archive_info"))
                {
                    Ok(_) => found.push(true),
                    Err(RuntimeError::NotFound) => found.push(false),
                    Err(other) => return Err(other),
                }
            }
            Ok(found)
        })
        .await
    }

    /// File `path` of `image`, `None` if it has no such file (see `look_into_image`).
    pub async fn image_file(
        &self,
        image: &str,
        path: &str,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<Option<Vec<u8>>, RuntimeError> {
        self.look_into_image(image, name, labels, async |_| self.read_file(name, path).await).await
    }

    /// Runs `look` on a container `name` of `image` that is created for it, never started, and
    /// removed again (Docker's archive API reads the filesystem of a container that never ran):
    /// nothing of the image runs. The container has `labels`, so that one left by a process that
    /// died is found and removed.
    async fn look_into_image<T>(
        &self,
        image: &str,
        name: &str,
        labels: HashMap<String, String>,
        look: impl AsyncFnOnce(&Docker) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let docker = self.docker().await?;
        let body = ContainerCreateBody { image: Some(image.to_string()), labels: Some(labels), ..Default::default() };
        docker
            .create_container(Some(CreateContainerOptionsBuilder::default().name(name).build()), body)
            .await
            .map_err(self.failed("create_container"))?;
        let looked = look(&docker).await;
        self.remove_container(name).await?;
        looked
    }
}
