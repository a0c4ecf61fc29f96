//! Backups' storage: where a backup's bytes go (a directory or S3-compatible object storage, see
//! [`target`]), how they are sealed on the way (zstd, then age to the configured recipient, see
//! [`seal`]), and the `[backups]` section of the configuration file that names both
//! ([`settings`]). What is dumped, and the backups' records, are the provision layer's.

pub mod seal;
pub mod settings;
mod spool;
pub mod target;

pub use seal::{Identity, Recipient, SealError, Unsealed};
pub use settings::{BackupSettings, FileBackups, S3Spec, TargetSpec};
pub use spool::{SpoolError, Spooled};
pub use target::{ObjectKey, ObjectReader, ObjectWriter, StoredObject, Target, TargetError, Targets};

use std::sync::Arc;

use tokio::io::AsyncRead;

use crate::model::TargetName;

/// What the provisioner needs of the configuration's backups: the targets, the recipient every
/// backup is sealed to, and the identity that opens them, if given. Cheap to clone.
#[derive(Clone)]
pub struct Backups(Arc<Inner>);

struct Inner {
    targets: Targets,
    recipient: Recipient,
    identity: Option<Identity>,
}

/// A backup that was read whole and found sound with the identity (see `Backups::check`), ready
/// to be opened for its restore.
pub struct Checked {
    backups: Backups,
    target: TargetName,
    key: ObjectKey,
}

/// Why a backup cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "backups.identity_file is not configured: backups are written, but none can be restored or verified \
         until it names the private key of backups.recipient"
    )]
    NoIdentity,
    #[error(transparent)]
    Sealed(#[from] SealError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl Backups {
    /// The backups `settings` describe. Makes no request (see `Targets::from_settings`).
    pub fn from_settings(settings: &BackupSettings) -> Result<Backups, TargetError> {
        let targets = Targets::from_settings(settings)?;
        let (recipient, identity) = (settings.recipient.clone(), settings.identity.clone());
        Ok(Backups(Arc::new(Inner { targets, recipient, identity })))
    }

    /// The target `name` names, or the default one's name for `None`; unknown is an error that
    /// lists the known ones.
    pub fn target_name(&self, name: Option<&TargetName>) -> Result<TargetName, TargetError> {
        let target = self.0.targets.get(name.map(TargetName::as_str))?;
        Ok(target.name().parse().expect("a configured target's name is a TargetName"))
    }

    fn target(&self, name: &TargetName) -> Result<&Target, TargetError> {
        self.0.targets.get(Some(name.as_str()))
    }

    /// Seals `plain` into the new object `key` on `target` (see `seal::seal`).
    pub async fn store(
        &self,
        plain: impl AsyncRead + Unpin,
        target: &TargetName,
        key: &str,
    ) -> Result<StoredObject, SealError> {
        let key = ObjectKey::new(key)?;
        seal::seal(plain, &self.0.recipient, self.target(target)?, &key).await
    }

    /// Reads the whole of backup `key` on `target` with the identity, and checks every chunk and
    /// its end (see `seal::verify`): what a restore does before it changes anything, so that a
    /// damaged or truncated backup, or one sealed to another key, is refused first.
    pub async fn check(&self, target: &TargetName, key: &str) -> Result<Checked, ReadError> {
        let identity = self.0.identity.as_ref().ok_or(ReadError::NoIdentity)?;
        let key = ObjectKey::new(key)?;
        seal::verify(identity, self.target(target)?, &key).await?;
        Ok(Checked { backups: self.clone(), target: target.clone(), key })
    }

    /// Removes the object `key` from `target` (none there is no error), and what a write of it
    /// that a crash interrupted left (see `Target::discard_partial`).
    pub async fn delete(&self, target: &TargetName, key: &str) -> Result<(), TargetError> {
        let (target, key) = (self.target(target)?, ObjectKey::new(key)?);
        target.delete(&key).await?;
        target.discard_partial(&key).await
    }
}

impl Checked {
    /// The backup's plain bytes (the engine's own dump), read from its target again.
    pub async fn open(&self) -> Result<Unsealed, ReadError> {
        let identity = self.backups.0.identity.as_ref().ok_or(ReadError::NoIdentity)?;
        Ok(seal::unseal(identity, self.backups.target(&self.target)?, &self.key).await?)
    }
}
