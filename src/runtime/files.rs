//! Files inside containers, through Docker's archive API (tar streams; no shell, no exec): a
//! server's configuration written before its first start, a file read back, and files edited in
//! place before a container first starts.

use std::io::{Read, Seek, Write};
use std::path::Path;

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use futures_util::TryStreamExt;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};

use super::{Runtime, RuntimeError, SpecFile};

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
        self.docker().await?.upload_to_container(container, Some(options), bollard::body_full(tarball.into())).await?;
        Ok(())
    }

    /// Reads a file out of a container, running or not; `None` if there is no such file.
    pub async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let chunks =
            self.docker().await?.download_from_container(container, Some(options)).try_collect::<Vec<_>>().await;
        let tarball: Vec<u8> = match chunks.map_err(RuntimeError::from) {
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

    /// Edits the files under `path` (a file or a directory) in a container, in place: copies
    /// them out and back in, letting `edit` change the first `head_len` bytes of each regular file
    /// (all of a shorter one), given its path relative to `path`'s parent. Names, owners, modes
    /// and the rest of the contents stay as they were. The edited copy waits in an unnamed
    /// temporary file, not in memory (a WAL segment is 16 MiB), and goes back only once the
    /// download has ended: Docker serves one archive request per container at a time, so a
    /// download and an upload that overlap wait for each other forever.
    /// Meant for a container that has not started.
    pub async fn edit_files<E>(&self, container: &str, path: &str, head_len: usize, edit: E) -> Result<(), RuntimeError>
    where
        E: FnMut(&Path, &mut [u8]) -> Result<(), String> + Send + 'static,
    {
        let docker = self.docker().await?;
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let download = docker.download_from_container(container, Some(options)).map_err(std::io::Error::other);
        let original = SyncIoBridge::new(StreamReader::new(download));
        let edited = tokio::task::spawn_blocking(move || {
            let mut edited = tempfile::tempfile().map_err(|e| e.to_string())?;
            rewrite_tar(original, &mut edited, head_len, edit)?;
            edited.rewind().map_err(|e| e.to_string())?;
            Ok::<_, String>(edited)
        })
        .await
        .map_err(|e| RuntimeError::Refused(format!("editing {path} failed: {e}")))?
        .map_err(|e| RuntimeError::Refused(format!("cannot edit {path}: {e}")))?;
        let parent = Path::new(path).parent().and_then(Path::to_str).unwrap_or("/");
        let options = UploadToContainerOptionsBuilder::default().path(parent).build();
        let body = ReaderStream::new(tokio::fs::File::from_std(edited));
        docker.upload_to_container(container, Some(options), bollard::body_try_stream(body)).await?;
        Ok(())
    }
}

/// Copies a tar stream to its end, passing each regular file's first `head_len` bytes through
/// `edit`.
fn rewrite_tar<E>(original: impl Read, edited: impl Write, head_len: usize, mut edit: E) -> Result<(), String>
where
    E: FnMut(&Path, &mut [u8]) -> Result<(), String>,
{
    let mut archive = tar::Archive::new(original);
    let mut builder = tar::Builder::new(edited);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let mut header = entry.header().clone();
        let mut head = Vec::new();
        if header.entry_type().is_file() {
            (&mut entry).take(head_len as u64).read_to_end(&mut head).map_err(|e| e.to_string())?;
            edit(&path, &mut head)?;
        }
        builder.append_data(&mut header, &path, head.as_slice().chain(entry)).map_err(|e| e.to_string())?;
    }
    // Read to the end, so that the download is over (see `edit_files`).
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| e.to_string())?;
    builder.into_inner().and_then(|mut edited| edited.flush()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8], u64)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, contents, uid) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o600);
            header.set_uid(*uid);
            builder.append_data(&mut header, path, *contents).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn only_the_head_of_each_file_is_edited_and_owners_and_the_rest_are_kept() {
        let original = tarball(&[("d/a", b"abcdef", 999), ("d/b", b"xy", 70)]);
        let mut edited = Vec::new();

        rewrite_tar(original.as_slice(), &mut edited, 4, |path, head| {
            assert!(head.len() <= 4, "{path:?}");
            head.make_ascii_uppercase();
            Ok(())
        })
        .unwrap();

        let mut archive = tar::Archive::new(edited.as_slice());
        let files: Vec<(String, String, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut contents = String::new();
                entry.read_to_string(&mut contents).unwrap();
                let header = entry.header();
                (entry.path().unwrap().display().to_string(), contents, header.uid().unwrap(), header.mode().unwrap())
            })
            .collect();
        assert_eq!(files, [("d/a".into(), "ABCDef".into(), 999, 0o600), ("d/b".into(), "XY".into(), 70, 0o600)]);
    }

    #[test]
    fn an_edit_that_fails_stops_the_rewrite() {
        let original = tarball(&[("a", b"abc", 0)]);
        let result = rewrite_tar(original.as_slice(), Vec::new(), 4, |_, _| Err("no".to_string()));
        assert_eq!(result, Err("no".to_string()));
    }
}
