//! Credentials: generation from a CSPRNG, a `Secret` type that never prints itself, API token
//! hashes, and AES-256-GCM encryption of instance passwords at rest.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("DBROKER_MASTER_KEY must be 64 hex characters (32 bytes)")]
    BadKey,
    #[error("cannot read or create the master key file {path}: {source}")]
    File { path: String, source: std::io::Error },
    /// There is no key, and a new one would not decrypt what the store holds.
    #[error(
        "the store holds encrypted passwords, but there is no master key ({path}, or DBROKER_MASTER_KEY): \
         restore the key they were encrypted with, from where it was backed up; a new key cannot read them"
    )]
    Missing { path: String },
    #[error("a stored password cannot be decrypted: wrong master key, or a damaged record")]
    Decrypt,
}

const NONCE_LEN: usize = 12;

impl MasterKey {
    /// The key from `DBROKER_MASTER_KEY` if given, else from `master.key` in the data directory,
    /// created on first use with mode 0600 so only dbroker's user can read it, when `may_create`
    /// (a store that holds no password yet): else a missing key is `Missing`, never replaced.
    pub fn load(from_env: Option<&str>, data_dir: &Path, may_create: bool) -> Result<Self, KeyError> {
        let path = data_dir.join("master.key");
        let hex_key = match from_env {
            Some(value) => value.trim().to_string(),
            None if may_create || path.exists() => read_or_create_key_file(&path)?,
            None => return Err(KeyError::Missing { path: path.display().to_string() }),
        };
        let bytes = hex::decode(&hex_key).map_err(|_| KeyError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::BadKey)?;
        Ok(Self(cipher))
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
        let key = MasterKey::load(None, dir.path(), true).unwrap();
        let other = MasterKey::load(Some(&"11".repeat(32)), dir.path(), true).unwrap();
        let secret = Secret::generate_password();

        let stored = key.encrypt(&secret);

        assert!(!String::from_utf8_lossy(&stored).contains(secret.expose()));
        assert_eq!(key.decrypt(&stored).unwrap(), secret);
        assert!(other.decrypt(&stored).is_err());
    }

    #[test]
    fn the_master_key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load(None, dir.path(), true).unwrap();
        let second = MasterKey::load(None, dir.path(), true).unwrap();
        let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();

        assert_eq!(mode & 0o777, 0o600);
        let secret = Secret::generate_password();
        assert_eq!(second.decrypt(&first.encrypt(&secret)).unwrap(), secret);
    }

    #[test]
    fn a_master_key_that_is_not_64_hex_characters_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(MasterKey::load(Some("abc"), dir.path(), true), Err(KeyError::BadKey)));
    }

    #[test]
    fn a_missing_key_is_not_replaced_when_the_store_holds_passwords() {
        let dir = tempfile::tempdir().unwrap();

        let refused = MasterKey::load(None, dir.path(), false);

        assert!(matches!(refused, Err(KeyError::Missing { .. })));
        assert!(!dir.path().join("master.key").exists(), "no new key was written");
    }
}
