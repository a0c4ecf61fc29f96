//! A copy of a data-directory template gets an identity of its own before its server first starts
//! (what that takes is the engine's: `engines::identity_edit`).
//!
//! When a template is built, the files that hold the identity are set aside: kept whole in one
//! tar archive of the image, outside the data directory (`ORIGINALS_IN_IMAGE`), and left empty in
//! it. Docker copies the data directory into each new copy's volume when it creates the container
//! (not when it starts it), so there is less to copy, and a copy that did not get an identity of
//! its own cannot start at all, rather than start as the template's twin. Each copy then gets the
//! originals, edited, in one upload before it starts. Docker charges about 45 ms per archive
//! request on top of the bytes (it mounts the container's filesystems and runs a helper), and a
//! PostgreSQL WAL segment is 16 MiB; so the originals are also kept in the data directory, read
//! from the image once per template.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use tokio_util::io::SyncIoBridge;

use super::templates::Template;
use super::{ProvisionError, Provisioner};
use crate::engines::{self, IdentityEdit};
use crate::model::Engine;

/// Where a template image keeps the originals of its identity files: a tar archive, with paths
/// relative to the identity edit's `base`.
const ORIGINALS_IN_IMAGE: &str = "/var/lib/dbroker-template-identity.tar";

/// Where in the data directory the templates' originals are kept, one tar per template.
const ORIGINALS_DIR: &str = "template-files";

/// The buffer between the edited tar stream and its upload.
const PIPE_BYTES: usize = 256 * 1024;

/// Sees each regular file of a tar stream (its path in the new stream) with its first bytes.
type Edit<'a> = &'a mut dyn FnMut(&Path, &mut [u8]) -> Result<(), String>;

const SETTING_ASIDE: &str = "setting the template's identity aside";
const KEEPING: &str = "keeping the template's identity files";

fn failed(what: &str, error: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Internal(anyhow::anyhow!("{what}: {error}"))
}

impl Provisioner {
    /// Sets the identity files of a template being built aside (see the module's comment), in
    /// `container`, its stopped build container, before it is committed.
    pub(super) async fn set_identity_aside(&self, engine: Engine, container: &str) -> Result<(), ProvisionError> {
        let Some(IdentityEdit { base, paths, .. }) = engines::identity_edit(engine, engines::TEMPLATE_DATA_PATH) else {
            return Ok(());
        };
        let originals = tempfile::tempfile().map_err(|e| failed(SETTING_ASIDE, e))?;
        let mut builder = tar::Builder::new(originals);
        for relative in paths {
            let download = SyncIoBridge::new(self.runtime.download(container, &format!("{base}/{relative}")).await?);
            let prefix = Path::new(relative).parent().unwrap_or(Path::new("")).to_path_buf();
            builder = tokio::task::spawn_blocking(move || {
                copy_entries(download, &mut builder, &prefix, 0, &mut |_, _| Ok(()))?;
                Ok::<_, String>(builder)
            })
            .await
            .map_err(|e| failed(SETTING_ASIDE, e))?
            .map_err(|e| failed(SETTING_ASIDE, e))?;
        }
        let (dir, name) = ORIGINALS_IN_IMAGE.rsplit_once('/').expect("an absolute path");
        let (emptied, archive) = tokio::task::spawn_blocking(move || {
            let mut originals = builder.into_inner()?;
            Ok::<_, std::io::Error>((emptied_copy(&mut originals)?, archive_of_file(originals, name)?))
        })
        .await
        .map_err(|e| failed(SETTING_ASIDE, e))?
        .map_err(|e| failed(SETTING_ASIDE, e))?;
        self.runtime.upload(container, &base, std::io::Cursor::new(emptied)).await?;
        self.runtime.upload(container, dir, tokio::fs::File::from_std(archive)).await?;
        Ok(())
    }

    /// Gives `container`, a copy of `template` that has not started yet, the identity of its own
    /// that `engine` keeps in its data directory, if it keeps one.
    pub(super) async fn give_copy_its_own_identity(
        &self,
        engine: Engine,
        template: &Template,
        container: &str,
    ) -> Result<(), ProvisionError> {
        let Some(IdentityEdit { base, head_len, edit: mut edit_file, .. }) =
            engines::identity_edit(engine, engines::TEMPLATE_DATA_PATH)
        else {
            return Ok(());
        };
        let originals = self.template_originals(template, container).await?;
        let (edited, upload) = tokio::io::duplex(PIPE_BYTES);
        let edited = SyncIoBridge::new(edited);
        let rewrite = tokio::task::spawn_blocking(move || {
            let originals = std::fs::File::open(&originals).map_err(|e| e.to_string())?;
            let mut builder = tar::Builder::new(edited);
            copy_entries(originals, &mut builder, Path::new(""), head_len, &mut *edit_file)?;
            builder.into_inner().and_then(|mut edited| edited.flush()).map_err(|e| e.to_string())
        });
        let (uploaded, rewritten) = tokio::join!(self.runtime.upload(container, &base, upload), rewrite);
        // Docker's refusal first: a refused upload also breaks the rewrite's pipe.
        uploaded?;
        rewritten
            .map_err(|e| ProvisionError::Internal(e.into()))?
            .map_err(|e| failed("giving the copy its own identity", e))
    }

    /// The template's originals of its identity files, kept in the data directory; read from
    /// `container`, a copy of it, the first time.
    async fn template_originals(&self, template: &Template, container: &str) -> Result<PathBuf, ProvisionError> {
        let dir = self.config.data_dir.join(ORIGINALS_DIR);
        let path = dir.join(format!("{}.tar", template.image_id.trim_start_matches("sha256:")));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(|e| failed(KEEPING, e))?;
        let mut partial = tempfile::NamedTempFile::new_in(&dir).map_err(|e| failed(KEEPING, e))?;
        let download = SyncIoBridge::new(self.runtime.download(container, ORIGINALS_IN_IMAGE).await?);
        partial = tokio::task::spawn_blocking(move || {
            // Docker's archive holds one entry: the originals' own archive.
            let mut archive = tar::Archive::new(download);
            let mut entry = archive.entries()?.next().ok_or(std::io::ErrorKind::UnexpectedEof)??;
            std::io::copy(&mut entry, &mut partial)?;
            std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
            Ok::<_, std::io::Error>(partial)
        })
        .await
        .map_err(|e| failed(KEEPING, e))?
        .map_err(|e| failed(KEEPING, e))?;
        // Atomic: a process that does the same at the same time writes the same bytes.
        partial.persist(&path).map_err(|e| failed(KEEPING, e))?;
        Ok(path)
    }
}

/// The entries of the tar archive `originals`, with every regular file emptied.
fn emptied_copy(originals: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    originals.rewind()?;
    let mut archive = tar::Archive::new(&mut *originals);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries()? {
        let entry = entry?;
        let mut header = entry.header().clone();
        if header.entry_type().is_file() {
            header.set_size(0);
        }
        builder.append_data(&mut header, entry.path()?, std::io::empty())?;
    }
    builder.into_inner()
}

/// A tar archive holding `file` as `name`, for an upload.
fn archive_of_file(mut file: std::fs::File, name: &str) -> std::io::Result<std::fs::File> {
    let len = file.seek(std::io::SeekFrom::End(0))?;
    file.rewind()?;
    let mut header = tar::Header::new_gnu();
    header.set_size(len);
    header.set_mode(0o600);
    let mut builder = tar::Builder::new(tempfile::tempfile()?);
    builder.append_data(&mut header, name, file)?;
    let mut archive = builder.into_inner()?;
    archive.rewind()?;
    Ok(archive)
}

/// Appends the entries of a tar stream to `builder`, their paths under `prefix`, passing each
/// regular file's first `head_len` bytes through `edit`. Reads the stream to its end, so that a
/// download is over when this returns: Docker serves one archive request per container at a time.
fn copy_entries<W: Write>(
    original: impl Read,
    builder: &mut tar::Builder<W>,
    prefix: &Path,
    head_len: usize,
    edit: Edit,
) -> Result<(), String> {
    let mut archive = tar::Archive::new(original);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = prefix.join(entry.path().map_err(|e| e.to_string())?);
        let mut header = entry.header().clone();
        let mut head = Vec::new();
        if header.entry_type().is_file() {
            (&mut entry).take(head_len as u64).read_to_end(&mut head).map_err(|e| e.to_string())?;
            edit(&path, &mut head)?;
        }
        builder.append_data(&mut header, &path, head.as_slice().chain(entry)).map_err(|e| e.to_string())?;
    }
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| e.to_string())?;
    Ok(())
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

    fn files_of(tarball: &[u8]) -> Vec<(String, String, u64, u32)> {
        let mut archive = tar::Archive::new(tarball);
        let entries = archive.entries().unwrap();
        entries
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut contents = String::new();
                entry.read_to_string(&mut contents).unwrap();
                let header = entry.header();
                (entry.path().unwrap().display().to_string(), contents, header.uid().unwrap(), header.mode().unwrap())
            })
            .collect()
    }

    #[test]
    fn only_the_head_of_each_file_is_edited_and_paths_owners_and_the_rest_are_kept() {
        let original = tarball(&[("d/a", b"abcdef", 999), ("d/b", b"xy", 70)]);
        let mut builder = tar::Builder::new(Vec::new());

        copy_entries(original.as_slice(), &mut builder, Path::new("p"), 4, &mut |path, head| {
            assert!(head.len() <= 4 && path.starts_with("p/d"), "{path:?}");
            head.make_ascii_uppercase();
            Ok(())
        })
        .unwrap();

        let edited = builder.into_inner().unwrap();
        let expected = [("p/d/a".into(), "ABCDef".into(), 999, 0o600), ("p/d/b".into(), "XY".into(), 70, 0o600)];
        assert_eq!(files_of(&edited), expected);
    }

    #[test]
    fn an_edit_that_fails_stops_the_copy() {
        let original = tarball(&[("a", b"abc", 0)]);
        let mut builder = tar::Builder::new(Vec::new());
        let result = copy_entries(original.as_slice(), &mut builder, Path::new(""), 4, &mut |_, _| Err("no".into()));
        assert_eq!(result, Err("no".to_string()));
    }
}
