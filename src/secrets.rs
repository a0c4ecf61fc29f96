//! Credentials: generation from a CSPRNG, a `Secret` type that never prints itself, API token
//! hashes, and AES-256-GCM encryption of instance passwords at rest under the master key, with
//! where that key comes from.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngExt;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Length of a generated instance password: 32 alphanumerics, about 190 bits. Alphanumerics only,
/// so a password is safe in a URI, a config file and any client without escaping.
pub const PASSWORD_LEN: usize = 32;

/// A value that must never reach a log: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// A fresh password from the thread-local CSPRNG (ChaCha, seeded and reseeded by the OS).
    pub fn generate_password() -> Self {
        Self(random_alphanumeric(PASSWORD_LEN))
    }

    /// Deliberately named: every place that reveals a secret is easy to find.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `text` with every occurrence of each secret replaced by `[redacted]`: for server log lines,
/// which dbroker passes on to users and to its own error answers.
pub fn redact(text: String, secrets: &[&Secret]) -> String {
    secrets.iter().filter(|s| !s.0.is_empty()).fold(text, |text, secret| text.replace(secret.expose(), "[redacted]"))
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// A new API token, shown to its user once: `dbk_` and 40 alphanumerics.
pub fn generate_token() -> Secret {
    Secret(format!("dbk_{}", random_alphanumeric(40)))
}

/// What the store keeps of a token: its SHA-256, hex. Tokens are long random strings, so a fast
/// hash is enough (no dictionary to guess from), and it lets the store look a token up by hash.
pub fn hash_token(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The SHA-256 of a token, as bytes: `hash_token` before its hex.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The key that encrypts instance passwords in the store.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

/// Where the master key comes from. Never the command line: a process's arguments are readable by
/// every user of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `DBROKER_MASTER_KEY`: 64 hex characters.
    Given(Secret),
    /// `--master-key-file` (`DBROKER_MASTER_KEY_FILE`, `master_key_file`): a file dbroker only
    /// reads, for the same key on several replicas.
    File(PathBuf),
    /// Neither: `master.key` in the data directory, which an embedded store's first start makes.
    DataDir,
}

/// How to make a key for replicas: the file private from its first byte (`umask`), not made
/// readable first and then closed.
const HOW_TO_MAKE_A_KEY: &str = "make one once with `(umask 077; openssl rand -hex 32 > /etc/dbroker/master.key)` \
     (or `head -c 32 /dev/urandom | xxd -p -c 64`), and give that same file to every replica as \
     --master-key-file (DBROKER_MASTER_KEY_FILE, master_key_file in the configuration file)";

impl KeySource {
    /// The source the settings name. Both at once is refused rather than one silently winning.
    pub fn from_settings(given: Option<Secret>, file: Option<PathBuf>) -> Result<KeySource, KeyError> {
        match (given, file) {
            (Some(_), Some(file)) => Err(KeyError::GivenTwice { file: file.display().to_string() }),
            (Some(key), None) => Ok(KeySource::Given(key)),
            (None, Some(file)) => Ok(KeySource::File(file)),
            (None, None) => Ok(KeySource::DataDir),
        }
    }

    /// Whether this source may serve a store; checked before the store is opened, so that
    /// nothing is made. A store shared by replicas (not embedded) needs the key given: each
    /// replica making a `master.key` of its own could not read the passwords the others stored.
    pub fn check_for_store(&self, shared_store: bool) -> Result<(), KeyError> {
        match self {
            KeySource::DataDir if shared_store => Err(KeyError::NoneForSharedStore),
            _ => Ok(()),
        }
    }

    /// Names the source for an operator, never its value.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self {
            KeySource::Given(_) => "DBROKER_MASTER_KEY".into(),
            KeySource::File(path) => format!("the key file {} (--master-key-file)", path.display()),
            KeySource::DataDir => data_dir.join(DATA_DIR_KEY).display().to_string(),
        }
    }
}

/// The file in the data directory that holds the key when no other source is given.
const DATA_DIR_KEY: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{from} must hold 64 hex characters (32 bytes), and nothing else but white space")]
    BadKey { from: String },
    #[error("cannot read or create the master key file {path}: {source}")]
    File { path: String, source: std::io::Error },
    /// A key file given is only ever read: making it is the operator's, once for every replica.
    #[error("cannot read the master key file {path} (--master-key-file; if there is no key yet, {HOW_TO_MAKE_A_KEY})")]
    KeyFile { path: String, source: std::io::Error },
    #[error(
        "the master key file {path} may be read by other users than dbroker's (mode {mode:04o}): \
         make it private with `chmod 600 {path}` (or give it through systemd's LoadCredential=)"
    )]
    KeyFileNotPrivate { path: String, mode: u32 },
    #[error("the master key is given twice, by DBROKER_MASTER_KEY and by the key file {file}: give one")]
    GivenTwice { file: String },
    #[error(
        "the store is not embedded (PostgreSQL, shared by replicas), so dbroker does not make a master key in \
         its data directory: each replica would make its own and none could read the others' passwords. Give \
         the key: {HOW_TO_MAKE_A_KEY}"
    )]
    NoneForSharedStore,
    /// There is no key, and a new one would not decrypt what the store holds.
    #[error(
        "the store holds encrypted passwords, but there is no master key ({path}, DBROKER_MASTER_KEY or \
         --master-key-file): restore the key they were encrypted with, from where it was backed up; a new key \
         cannot read them"
    )]
    Missing { path: String },
    #[error("a stored password cannot be decrypted: wrong master key, or a damaged record")]
    Decrypt,
}

const NONCE_LEN: usize = 12;

impl MasterKey {
    /// The key from its source. `master.key` in the data directory is created on first use with
    /// mode 0600 so only dbroker's user can read it, when `may_create` (a store that holds no
    /// password yet): else a missing one is `Missing`, never replaced.
    pub fn load(source: &KeySource, data_dir: &Path, may_create: bool) -> Result<Self, KeyError> {
        let path = data_dir.join(DATA_DIR_KEY);
        match source {
            KeySource::Given(key) => Self::from_hex(key.expose(), "DBROKER_MASTER_KEY"),
            KeySource::File(file) => Self::from_hex(&read_key_file(file)?, &file.display().to_string()),
            KeySource::DataDir if may_create || path.exists() => {
                Self::from_hex(&read_or_create_key_file(&path)?, &path.display().to_string())
            }
            KeySource::DataDir => Err(KeyError::Missing { path: path.display().to_string() }),
        }
    }

    /// The key written as 64 hex characters (white space around them ignored); `from` names
    /// where they came from, for the error.
    pub fn from_hex(hex_key: &str, from: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadKey { from: from.to_string() };
        let bytes = hex::decode(hex_key.trim()).map_err(|_| bad())?;
        Aes256Gcm::new_from_slice(&bytes).map(Self).map_err(|_| bad())
    }

    /// Encrypts with a fresh random nonce, stored in front of the ciphertext.
    pub fn encrypt(&self, secret: &Secret) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::try_from(&nonce_bytes[..]).expect("a 12-byte nonce");
        let ciphertext = self
            .0
            .encrypt(&nonce, secret.expose().as_bytes())
            .expect("AES-GCM encryption of a short buffer cannot fail");
        [nonce_bytes.as_slice(), &ciphertext].concat()
    }

    pub fn decrypt(&self, stored: &[u8]) -> Result<Secret, KeyError> {
        if stored.len() < NONCE_LEN {
            return Err(KeyError::Decrypt);
        }
        let (nonce_bytes, ciphertext) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce_bytes).map_err(|_| KeyError::Decrypt)?;
        let plain = self.0.decrypt(&nonce, ciphertext).map_err(|_| KeyError::Decrypt)?;
        String::from_utf8(plain).map(Secret).map_err(|_| KeyError::Decrypt)
    }
}

/// A given key file's contents, if only dbroker's user may read it: a key others can read is
/// refused, as ssh refuses such a private key, rather than used.
fn read_key_file(path: &Path) -> Result<String, KeyError> {
    let error = |source| KeyError::KeyFile { path: path.display().to_string(), source };
    let mut file = std::fs::File::open(path).map_err(error)?;
    let mode = file.metadata().map_err(error)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::KeyFileNotPrivate { path: path.display().to_string(), mode });
    }
    let mut key = String::new();
    file.read_to_string(&mut key).map_err(error)?;
    Ok(key)
}

fn read_or_create_key_file(path: &Path) -> Result<String, KeyError> {
    let file_error = |source| KeyError::File { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(key) => return Ok(key.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(file_error(e)),
        Err(_) => {}
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    // create_new: two dbroker processes starting at once must not each write their own key.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(key.as_bytes()).map_err(file_error)?;
            file.sync_all().map_err(file_error)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map(|k| k.trim().to_string()).map_err(file_error)
        }
        Err(e) => Err(file_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn redact_removes_every_occurrence_of_every_secret() {
        let old = Secret::new("OldPass123".into());
        let new = Secret::new("NewPass456".into());
        let line = "auth OldPass123 then NewPass456 then OldPass123".to_string();

        assert_eq!(redact(line, &[&old, &new]), "auth [redacted] then [redacted] then [redacted]");
        assert_eq!(redact("nothing here".into(), &[&Secret::new(String::new())]), "nothing here");
    }

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_distinct() {
        let a = Secret::generate_password();
        let b = Secret::generate_password();
        assert!(a.expose().len() >= 24 && a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn a_password_encrypted_with_the_master_key_decrypts_to_itself_and_not_with_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load(&KeySource::DataDir, dir.path(), true).unwrap();
        let other = MasterKey::from_hex(&"11".repeat(32), "a test").unwrap();
        let secret = Secret::generate_password();

        let stored = key.encrypt(&secret);

        assert!(!String::from_utf8_lossy(&stored).contains(secret.expose()));
        assert_eq!(key.decrypt(&stored).unwrap(), secret);
        assert!(other.decrypt(&stored).is_err());
    }

    #[test]
    fn the_master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load(&KeySource::DataDir, dir.path(), true).unwrap();
        let second = MasterKey::load(&KeySource::DataDir, dir.path(), true).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();

        assert_eq!(mode & 0o777, 0o600);
        let secret = Secret::generate_password();
        assert_eq!(second.decrypt(&first.encrypt(&secret)).unwrap(), secret);
    }

    #[test]
    fn a_master_key_that_is_not_64_hex_characters_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let given = KeySource::Given(Secret::new("abc".into()));

        let refused = MasterKey::load(&given, dir.path(), true);

        assert!(matches!(refused, Err(KeyError::BadKey { ref from }) if from == "DBROKER_MASTER_KEY"));
    }

    #[test]
    fn a_missing_key_is_not_replaced_when_the_store_holds_passwords() {
        let dir = tempfile::tempdir().unwrap();

        let refused = MasterKey::load(&KeySource::DataDir, dir.path(), false);

        assert!(matches!(refused, Err(KeyError::Missing { .. })));
        assert!(!dir.path().join("master.key").exists(), "no new key was written");
    }

    /// A key file holding `contents`, with `mode`.
    fn key_file(dir: &Path, contents: &str, mode: u32) -> PathBuf {
        let path = dir.join("given.key");
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_key_file_holds_the_same_key_as_the_environment_and_no_master_key_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let hex_key = "ab".repeat(32);
        let file = key_file(dir.path(), &format!("{hex_key}\n"), 0o600);
        let secret = Secret::generate_password();

        let from_file = MasterKey::load(&KeySource::File(file), dir.path(), true).unwrap();
        let from_env = MasterKey::load(&KeySource::Given(Secret::new(hex_key)), dir.path(), true).unwrap();

        assert_eq!(from_env.decrypt(&from_file.encrypt(&secret)).unwrap(), secret);
        assert!(!dir.path().join("master.key").exists());
    }

    #[test]
    fn a_missing_key_file_is_refused_naming_it_and_saying_how_to_make_one_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("absent.key");

        let refused = MasterKey::load(&KeySource::File(file.clone()), dir.path(), true).err().unwrap().to_string();

        assert!(refused.contains(&file.display().to_string()) && refused.contains("openssl rand -hex 32"), "{refused}");
        assert!(!file.exists() && !dir.path().join("master.key").exists());
    }

    #[test]
    fn a_key_file_readable_by_group_or_others_is_refused_saying_how_to_make_it_private() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604] {
            let file = key_file(dir.path(), &"ab".repeat(32), mode);

            let refused = MasterKey::load(&KeySource::File(file.clone()), dir.path(), true).err().unwrap().to_string();

            assert!(refused.contains(&format!("chmod 600 {}", file.display())), "{refused}");
        }
    }

    #[test]
    fn a_key_file_that_holds_no_64_hex_characters_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = key_file(dir.path(), "not a key", 0o400);

        let refused = MasterKey::load(&KeySource::File(file.clone()), dir.path(), true).err().unwrap().to_string();

        assert!(refused.contains(&file.display().to_string()) && refused.contains("64 hex"), "{refused}");
    }

    #[test]
    fn a_shared_store_without_a_given_key_is_refused_saying_how_to_make_one_for_every_replica() {
        let refused = KeySource::DataDir.check_for_store(true).unwrap_err().to_string();

        assert!(refused.contains("openssl rand -hex 32") && refused.contains("every replica"), "{refused}");
        assert!(refused.contains("--master-key-file"), "{refused}");
    }

    #[test]
    fn a_given_key_serves_any_store_and_the_data_directorys_an_embedded_one_only() {
        let given = [KeySource::Given(Secret::new("ab".repeat(32))), KeySource::File("/etc/dbroker/master.key".into())];

        for source in &given {
            assert!(source.check_for_store(true).is_ok() && source.check_for_store(false).is_ok(), "{source:?}");
        }
        assert!(KeySource::DataDir.check_for_store(false).is_ok());
    }

    #[test]
    fn neither_a_key_nor_a_key_file_is_the_data_directorys_key() {
        assert_eq!(KeySource::from_settings(None, None).unwrap(), KeySource::DataDir);
    }

    #[test]
    fn a_key_given_both_in_the_environment_and_as_a_file_is_refused() {
        let refused = KeySource::from_settings(Some(Secret::new("ab".repeat(32))), Some("/k".into()));

        assert!(matches!(refused, Err(KeyError::GivenTwice { .. })));
    }
}
