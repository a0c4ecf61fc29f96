//! Backup targets and the sealed stream, on a real directory (and a full tmpfs) and a real S3
//! server (`s3s-fs` in the test process, checking signatures): large streams round-trip, S3
//! takes them in several parts, failures leave nothing behind, errors say what went wrong, and
//! the `age` and `zstd` commands read a backup without dbroker.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use dbroker::backups::seal::{self, SealError};
use dbroker::backups::{Identity, ObjectKey, Recipient, Target, TargetError, TargetSpec};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::helpers::wait_until;
use crate::s3::S3Server;

/// Bigger than three S3 parts, and than what a test would hold by accident in a buffer.
const LARGE_BYTES: usize = 56 * 1024 * 1024;

/// A key pair, and the identity as an identity file holds it.
struct Keys {
    recipient: Recipient,
    identity: Identity,
    identity_text: String,
}

fn keys() -> Keys {
    let key = age::x25519::Identity::generate();
    let identity_text = format!("# a test key\n{}\n", key.to_string().expose_secret());
    Keys {
        recipient: key.to_public().to_string().parse().unwrap(),
        identity: Identity::parse(&identity_text).unwrap(),
        identity_text,
    }
}

/// A dump-like stream: random bytes (which zstd cannot shrink) and repeated rows (which it can).
fn plaintext(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let random = len * 3 / 4;
    rand::fill(&mut data[..random]);
    let row = b"INSERT INTO t VALUES (42, 'a row much like the one before it');\n";
    for (i, byte) in data[random..].iter_mut().enumerate() {
        *byte = row[i % row.len()];
    }
    data
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn dir_target(name: &str, path: &Path) -> Target {
    Target::from_spec(name, &TargetSpec::Dir { path: path.to_path_buf() }).unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

/// Every file under `dir`, however deep.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Reads the whole plain stream of a backup and returns its sha256.
async fn unsealed_sha256(identity: &Identity, target: &Target, key: &ObjectKey) -> Result<[u8; 32], SealError> {
    Ok(seal::verify(identity, target, key).await?.plain_sha256)
}

#[tokio::test]
async fn a_large_stream_round_trips_sealed_through_a_directory_target_and_the_age_and_zstd_commands_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir_target("local", dir.path());
    let keys = keys();
    let plain = plaintext(LARGE_BYTES);
    let object = key("instances/abc/backup-1.sql.zst.age");

    let stored = seal::seal(&plain[..], &keys.recipient, &target, &object).await.unwrap();

    let on_disk = std::fs::read(dir.path().join(object.as_str())).unwrap();
    assert_eq!((stored.size, stored.sha256), (on_disk.len() as u64, sha256(&on_disk)));
    assert!(stored.size < plain.len() as u64, "compressed: {} of {}", stored.size, plain.len());
    assert!(on_disk.starts_with(b"age-encryption.org/v1\n"), "an age file");
    assert_eq!((target.size(&object).await.unwrap(), target.exists(&object).await.unwrap()), (stored.size, true));
    assert_eq!(unsealed_sha256(&keys.identity, &target, &object).await.unwrap(), sha256(&plain));
    assert_eq!(files_under(dir.path()).len(), 1, "no staging file is left");

    // Without dbroker: `age -d -i KEY BACKUP | zstd -d`.
    if which("age") && which("zstd") {
        let key_file = dir.path().join("backup.key");
        std::fs::write(&key_file, &keys.identity_text).unwrap();
        let decrypted = std::process::Command::new("sh")
            .arg("-c")
            .arg("age -d -i \"$1\" \"$2\" | zstd -d")
            .args(["sh", key_file.to_str().unwrap(), dir.path().join(object.as_str()).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(decrypted.status.success(), "{}", String::from_utf8_lossy(&decrypted.stderr));
        assert_eq!(sha256(&decrypted.stdout), sha256(&plain), "the commands give the plaintext");
    } else {
        eprintln!("age or zstd is not installed (scripts/apt-install age zstd): the commands were not tried");
    }

    target.delete(&object).await.unwrap();
    target.delete(&object).await.unwrap();
    assert!(!target.exists(&object).await.unwrap());
}

fn which(command: &str) -> bool {
    std::process::Command::new("sh").arg("-c").arg(format!("command -v {command}")).output().unwrap().status.success()
}

#[tokio::test]
async fn a_large_stream_round_trips_sealed_through_s3_in_several_parts() {
    let server = S3Server::start().await;
    let target = server.target("offsite", "prod/");
    let keys = keys();
    let plain = plaintext(LARGE_BYTES);
    let object = key("instances/abc/backup-1");

    let stored = seal::seal(&plain[..], &keys.recipient, &target, &object).await.unwrap();

    let in_bucket = std::fs::read(server.object_file("prod/instances/abc/backup-1")).unwrap();
    assert_eq!((stored.size, stored.sha256), (in_bucket.len() as u64, sha256(&in_bucket)));
    let parts = server.part_uploads();
    assert!(parts >= 3, "a multipart upload of several parts, not {parts}");
    assert!(server.uploads_in_progress().is_empty());
    assert_eq!(target.size(&object).await.unwrap(), stored.size);
    assert!(target.exists(&object).await.unwrap());
    assert!(!target.exists(&key("instances/abc/backup-2")).await.unwrap());
    assert_eq!(unsealed_sha256(&keys.identity, &target, &object).await.unwrap(), sha256(&plain));

    target.delete(&object).await.unwrap();
    assert!(!target.exists(&object).await.unwrap());
    assert!(matches!(target.reader(&object).await, Err(TargetError::NotFound { .. })));
}

#[tokio::test]
async fn wrong_s3_credentials_are_refused_as_such_and_the_message_holds_no_secret() {
    let server = S3Server::start().await;
    let wrong_secret = server.target_with("offsite", "", &server.access_key, "not-the-secret-0123456789");
    let wrong_key = server.target_with("offsite", "", "AKNOSUCHKEY", &server.secret_key);
    let object = key("backup-1");

    let refused_secret = wrong_secret.writer(&object).await.err().expect("a wrong secret is refused");
    let refused_key = wrong_key.writer(&object).await.err().expect("an unknown key is refused");
    let refused_read = wrong_secret.exists(&object).await.err().expect("a read with a wrong secret is refused");

    for refused in [&refused_secret, &refused_key, &refused_read] {
        assert!(
            matches!(refused, TargetError::CredentialsRefused { target, .. } if target == "offsite"),
            "{refused:?}"
        );
        let said = refused.to_string();
        assert!(said.contains("offsite") && said.contains("credentials"), "{said}");
        assert!(!said.contains("not-the-secret") && !said.contains(&server.secret_key), "{said}");
    }
    assert!(server.uploads_in_progress().is_empty());
}

#[tokio::test]
async fn an_s3_target_where_nothing_listens_is_unreachable() {
    let server = S3Server::start().await;
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let mut spec = server.spec("", &server.access_key, &server.secret_key);
    spec.endpoint = endpoint.clone();
    let target = Target::from_spec("offsite", &TargetSpec::S3(spec)).unwrap();

    let started = std::time::Instant::now();
    let refused = target.writer(&key("backup-1")).await.err().expect("nothing listens");

    assert!(matches!(refused, TargetError::Unreachable { .. }), "{refused:?}");
    let said = refused.to_string();
    assert!(said.contains("offsite") && said.contains(&endpoint) && said.contains("cannot be reached"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(30), "given up within the retry timeout");
}

/// A dump that fails after `good` bytes, as a dump tool that dies does.
struct FailingAfter {
    good: usize,
}

impl AsyncRead for FailingAfter {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.good == 0 {
            return Poll::Ready(Err(std::io::Error::other("the dump tool died")));
        }
        let n = buf.remaining().min(self.good);
        let mut chunk = vec![0u8; n];
        rand::fill(&mut chunk[..]);
        buf.put_slice(&chunk);
        self.good -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_failed_or_dropped_write_to_s3_leaves_no_object_and_no_upload_in_progress() {
    let server = S3Server::start().await;
    let target = server.target("offsite", "");
    let keys = keys();
    let failed = key("failed");
    let dropped = key("dropped");

    let refused = seal::seal(FailingAfter { good: 40 * 1024 * 1024 }, &keys.recipient, &target, &failed).await;
    let parts_of_the_failed = server.part_uploads();
    let mut writer = target.writer(&dropped).await.unwrap();
    writer.write_all(&plaintext(40 * 1024 * 1024)).await.unwrap();
    wait_until("a part of the upload to be dropped to arrive", Duration::from_secs(20), || async {
        (server.part_uploads() > parts_of_the_failed).then_some(())
    })
    .await;
    assert!(!server.uploads_in_progress().is_empty(), "the upload to be dropped is in progress");
    drop(writer);

    assert!(matches!(refused, Err(SealError::Source(_))), "{refused:?}");
    assert!(parts_of_the_failed >= 1, "the failed backup had sent parts: {parts_of_the_failed}");
    // Each abort waits for its parts in flight, 16 MiB each, which a loaded machine sends slowly.
    wait_until("the unfinished uploads to be aborted", Duration::from_secs(60), || async {
        server.uploads_in_progress().is_empty().then_some(())
    })
    .await;
    assert!(!target.exists(&failed).await.unwrap());
    assert!(!target.exists(&dropped).await.unwrap());
    assert!(files_under(&server.root().join(&server.bucket)).is_empty(), "the bucket holds nothing");
}

#[tokio::test]
async fn a_failed_or_dropped_write_to_a_directory_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir_target("local", dir.path());
    let keys = keys();

    let refused = seal::seal(FailingAfter { good: 3 * 1024 * 1024 }, &keys.recipient, &target, &key("a/failed")).await;
    let mut writer = target.writer(&key("a/dropped")).await.unwrap();
    writer.write_all(&plaintext(1024 * 1024)).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(files_under(dir.path()).len(), 1, "the staging file, while it is written");
    drop(writer);

    assert!(matches!(refused, Err(SealError::Source(_))), "{refused:?}");
    assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn what_a_write_left_when_its_process_died_is_discarded_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir_target("local", dir.path());
    let keys = keys();
    seal::seal(&plaintext(1024)[..], &keys.recipient, &target, &key("a/kept")).await.unwrap();
    let mut writer = target.writer(&key("a/died")).await.unwrap();
    writer.write_all(&plaintext(1024 * 1024)).await.unwrap();
    writer.flush().await.unwrap();
    // As if the process died: its writer never finished, nor was dropped.
    std::mem::forget(writer);
    assert_eq!(files_under(dir.path()).len(), 2);

    target.discard_partial(&key("a/died")).await.unwrap();
    target.discard_partial(&key("never/written")).await.unwrap();

    assert_eq!(files_under(dir.path()), vec![dir.path().join("a/kept")]);
}

#[tokio::test]
async fn the_wrong_identity_is_refused_before_any_byte_is_read() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let other = self::keys();
    let object = key("backup-1");

    for target in [dir_target("local", dir.path()), server.target("offsite", "")] {
        seal::seal(&plaintext(1024 * 1024)[..], &keys.recipient, &target, &object).await.unwrap();

        let refused = seal::unseal(&other.identity, &target, &object).await.err().expect("the wrong key is refused");

        assert!(matches!(refused, SealError::WrongIdentity { .. }), "{refused:?}");
        assert!(refused.to_string().contains("backups.identity_file"), "{refused}");
    }
}

#[tokio::test]
async fn a_truncated_or_altered_object_is_refused_as_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir_target("local", dir.path());
    let keys = keys();
    let plain = plaintext(4 * 1024 * 1024);
    let object = key("backup-1");
    let path = dir.path().join("backup-1");
    seal::seal(&plain[..], &keys.recipient, &target, &object).await.unwrap();
    let whole = std::fs::read(&path).unwrap();
    let mut altered = whole.clone();
    altered[whole.len() / 2] ^= 0x01;
    // In the header, in the middle of a chunk, right after a whole chunk (age's payload: the
    // header up to its `--- MAC` line, a 16-byte nonce, then 64 KiB chunks of 16-byte tags each):
    // age flags the last chunk, so a stream cut between chunks is caught too.
    let mac_line = whole.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let payload = mac_line + whole[mac_line..].iter().position(|b| *b == b'\n').unwrap() + 1 + 16;
    let chunk = 64 * 1024 + 16;
    let after_whole_chunks = payload + (whole.len() - payload - 1) / chunk * chunk;
    let damaged: [(&str, Vec<u8>); 4] = [
        ("cut in the header", whole[..40].to_vec()),
        ("cut in half", whole[..whole.len() / 2].to_vec()),
        ("cut right after a chunk", whole[..after_whole_chunks].to_vec()),
        ("one bit flipped", altered),
    ];

    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes).unwrap();

        let refused = unsealed_sha256(&keys.identity, &target, &object).await.expect_err(what);

        assert!(matches!(refused, SealError::Damaged { .. }), "{what}: {refused:?}");
        assert!(refused.to_string().contains("damaged or truncated"), "{what}: {refused}");
    }
    std::fs::write(&path, &whole).unwrap();
    assert_eq!(unsealed_sha256(&keys.identity, &target, &object).await.unwrap(), sha256(&plain));
}

/// A small tmpfs mounted for a test, unmounted (and its mount point removed) on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// `None` where mounting is not allowed (not root, or no CAP_SYS_ADMIN in a container).
    fn mount(size: &str) -> Option<SmallTmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !mounted.status.success() {
            eprintln!("cannot mount a tmpfs here: {}", String::from_utf8_lossy(&mounted.stderr));
            return None;
        }
        Some(SmallTmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_directory_target_on_a_full_filesystem_fails_with_no_space_and_leaves_no_partial_file() {
    let Some(tmpfs) = SmallTmpfs::mount("4m") else {
        panic!("the test needs to mount a tmpfs (run the tests as root, as scripts/test does)");
    };
    let target = dir_target("local", tmpfs.path());
    let keys = keys();
    let mut random = vec![0u8; 16 * 1024 * 1024];
    rand::fill(&mut random[..]);

    let refused = seal::seal(&random[..], &keys.recipient, &target, &key("backup-1")).await;

    let refused = refused.expect_err("16 MiB of random bytes do not fit in 4 MiB");
    assert!(matches!(refused, SealError::Target(TargetError::NoSpace { .. })), "{refused:?}");
    assert!(refused.to_string().contains("no space left"), "{refused}");
    assert_eq!(files_under(tmpfs.path()), Vec::<PathBuf>::new(), "no partial file");
}
