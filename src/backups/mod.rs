//! Backups' storage: where a backup's bytes go (a directory or S3-compatible object storage, see
//! [`target`]), how they are sealed on the way (zstd, then age to the configured recipient, see
//! [`seal`]), and the `[backups]` section of the configuration file that names both
//! ([`settings`]). What is dumped, and the backups' records, are the provision layer's.

pub mod seal;
pub mod settings;
pub mod target;

pub use seal::{Identity, Recipient, SealError, Unsealed};
pub use settings::{BackupSettings, FileBackups, S3Spec, TargetSpec};
pub use target::{ObjectKey, ObjectReader, ObjectWriter, StoredObject, Target, TargetError, Targets};
