//! Backups: an instance's data dumped by its own server's tools, sealed (compressed, then
//! encrypted to the operator's public key: see `backups::seal`) and streamed to a configured
//! target, and everything made from one: a new instance, an in-place restore, a verification.
//! Clones, exports and imports use the same dump and load without a target.
//!
//! Each change is an operation: a backup and an in-place restore or import hold their instance; a
//! restore into a new instance or a clone is that instance's create (see `Seed`). Nothing is
//! reported done before it is: a backup is `succeeded` only once its object is complete on the
//! target, with its size and sha256 read back from what was written.

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::backup_schedule::{self, Retention};
use super::lifecycle::require_status;
use super::{Caller, Idempotency, Instance, ProvisionError, Provisioner, Running};
use crate::backups::{self, Backups, Checked, ReadError, SealError, TargetError};
use crate::engines::{self, LoadError};
use crate::model::{BackupId, BackupKind, BackupState, InstanceId, OperationId, OperationKind, Status, TargetName};
use crate::store::{BackupFilter, BackupPolicy, BackupRecord, InstanceRecord, NewBackup, NewPolicy, StoredObject};

/// What a new instance starts with besides its engine's empty data: kept in the create
/// operation's input, so that a takeover knows a create half done has data half loaded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seed {
    /// The data of one of the caller's backups.
    Backup(BackupId),
    /// A copy of one of the caller's instances, dumped while it runs.
    CloneOf(InstanceId),
}

impl Provisioner {
    /// The configured backups, or why there are none.
    fn backups(&self) -> Result<&Backups, ProvisionError> {
        self.backups.as_ref().ok_or_else(|| {
            ProvisionError::Conflict(
                "no backup target is configured: add a [backups] section to the configuration file (see the README)"
                    .into(),
            )
        })
    }

    /// Backs up one of the caller's running instances to `target` (the default one if `None`), as
    /// an operation on it; its outcome is the backup, succeeded, or the error it failed with (the
    /// backup is then recorded as failed, with that reason). With `verify`, the backup is then
    /// restored into a throwaway server and checked (see `verify_now`).
    pub async fn back_up(
        &self,
        caller: &Caller,
        id: &InstanceId,
        target: Option<TargetName>,
        verify: bool,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<BackupRecord>, ProvisionError> {
        let target = self.backups()?.target_name(target.as_ref()).map_err(invalid_target)?;
        self.store.check_backup_room(caller.user_id, &self.config.quotas.backup_quota()).await?;
        let input = json!({ "target": target, "verify": verify });
        self.change(caller, id, OperationKind::Backup, input, idempotency, move |this, record, progress| async move {
            require_status(&record, &[Status::Running], "back up")?;
            let backup = this.back_up_now(&record, &target, BackupKind::Manual, progress.operation_id()).await?;
            progress.step("backed up").await;
            if !verify {
                return Ok(backup);
            }
            this.verify_now(&backup, progress.operation_id()).await?;
            progress.step("verified").await;
            Ok(this.store.backup(&backup.id).await?.ok_or(ProvisionError::NotFound)?)
        })
        .await
    }

    /// Dumps the instance into a new object on `target`, recording the backup first (running)
    /// and at its end (succeeded, or failed with the reason). A failed upload leaves no object.
    pub(super) async fn back_up_now(
        &self,
        record: &InstanceRecord,
        target_name: &TargetName,
        kind: BackupKind,
        operation: &OperationId,
    ) -> Result<BackupRecord, ProvisionError> {
        let backups = self.backups()?;
        let owner_id =
            record.owner_id.ok_or_else(|| ProvisionError::Conflict("a pool member has no backups".into()))?;
        let id = BackupId::random();
        let key = object_key(record, &id);
        let new = NewBackup {
            id: &id,
            instance_id: &record.id,
            owner_id,
            engine: record.engine(),
            version: &record.version,
            target: target_name,
            object_key: &key,
            encrypted: true,
            kind,
            operation_id: operation,
        };
        // A safety backup is never refused for room: it is what makes a restore safe.
        let quota = self.config.quotas.backup_quota();
        self.store.insert_backup(&new, (kind != BackupKind::Safety).then_some(&quota)).await?;
        match self.dump_and_store(record, backups, target_name, &key).await {
            Ok((stored, digest)) => {
                let digest = digest.to_string();
                let sha256 = stored.sha256_hex();
                let object = StoredObject { size_bytes: stored.size, sha256: &sha256, content_digest: &digest };
                self.store.backup_succeeded(&id, &object).await?;
                self.metrics.backup_stored(record.engine(), stored.size);
                self.store.backup(&id).await?.ok_or(ProvisionError::NotFound)
            }
            Err(error) => {
                self.store.backup_failed(&id, &error.to_string()).await?;
                self.metrics.backup_failed(record.engine());
                Err(error)
            }
        }
    }

    /// Streams a dump of the instance, sealed, into object `key` on `target`. A dump whose tool
    /// fails half way reads as a short stream that seals fine: its object is removed, and its
    /// tool's error is the backup's.
    async fn dump_and_store(
        &self,
        record: &InstanceRecord,
        backups: &Backups,
        target: &TargetName,
        key: &str,
    ) -> Result<(backups::StoredObject, engines::ContentDigest), ProvisionError> {
        let mut dump = self.start_dump(record).await?;
        // Read from Docker on a task of its own, so that reading the dump and sealing it (zstd, then
        // age) run on both cores at once rather than in turn.
        let (reader, mut writer) = tokio::io::duplex(PIPE_BUFFER);
        let reading = tokio::spawn(async move {
            let copied = tokio::io::copy(&mut dump, &mut writer).await;
            drop(writer);
            (copied, dump.finish().await)
        });
        let failed = match backups.store(reader, target, key).await {
            Ok(stored) => match reading.await.map_err(|e| ProvisionError::Internal(e.into()))? {
                (Ok(_), Ok(digest)) => return Ok((stored, digest)),
                (_, Err(dumped)) => ProvisionError::ServerRefused(dumped.to_string()),
                (Err(read), Ok(_)) => ProvisionError::ServerRefused(format!("the dump could not be read: {read}")),
            },
            Err(sealed) => {
                // Dropped half way, the dump ends its tool in the container.
                reading.abort();
                sealed_failed(sealed)
            }
        };
        if let Err(error) = backups.delete(target, key).await {
            tracing::warn!(%error, "could not remove a failed backup's object");
        }
        Err(failed)
    }

    /// Streams a consistent dump of the instance's data, in its engine's own format, into `sink`,
    /// and returns the digest of its content (see `engines::dump`).
    async fn dump_into(
        &self,
        record: &InstanceRecord,
        sink: &mut (impl AsyncWrite + Unpin + Send),
    ) -> Result<engines::ContentDigest, ProvisionError> {
        let mut dump = self.start_dump(record).await?;
        let copied = tokio::io::copy(&mut dump, sink).await;
        // The tool's own error says more than a broken pipe's, so it comes first.
        let digest = dump.finish().await.map_err(|e| ProvisionError::ServerRefused(e.to_string()))?;
        copied.map_err(|e| ProvisionError::TargetFailed(format!("the dump could not be written: {e}")))?;
        Ok(digest)
    }

    /// A consistent dump of the instance's data, streaming (see `engines::dump`).
    async fn start_dump(&self, record: &InstanceRecord) -> Result<engines::Dump, ProvisionError> {
        let container = self.container_name(&record.id);
        engines::dump(record.engine(), &self.runtime, &container, record.database())
            .await
            .map_err(|e| ProvisionError::ServerRefused(format!("the dump did not start: {e}")))
    }

    /// Loads a dump in the instance's engine's own format into its running server. A dump the
    /// server refuses is `NotLoadable` with the server's message.
    async fn load_from(
        &self,
        record: &InstanceRecord,
        input: impl AsyncRead + Unpin + Send + 'static,
    ) -> Result<(), ProvisionError> {
        let password = self.password_of(record)?;
        let host = self.probe_host();
        let endpoint = self.endpoint(record, &host, &password);
        let container = self.container_name(&record.id);
        engines::load(record.engine(), &self.runtime, &container, &endpoint, input).await.map_err(|e| match e {
            LoadError::Rejected(message) => ProvisionError::NotLoadable(message),
            // The input's own error (a backup found damaged as it was read, say) says what.
            LoadError::Input(reason) => ProvisionError::Conflict(format!("the dump could not be read whole: {reason}")),
            LoadError::Runtime(error) => error.into(),
            LoadError::NotReady(reason) => ProvisionError::NotReady { reason, last_logs: Vec::new() },
        })
    }

    /// The backup, read whole from its target and checked with the identity before anything is
    /// changed: a damaged or truncated object, or one sealed to another key, is refused here
    /// (`Conflict`, saying which), as is a backup that did not succeed.
    async fn fetch_checked(&self, backup: &BackupRecord) -> Result<Checked, ProvisionError> {
        let backups = self.backups()?;
        if backup.state != BackupState::Succeeded {
            return Err(ProvisionError::Conflict(format!(
                "backup {} is {}, not succeeded: it cannot be restored",
                backup.id, backup.state
            )));
        }
        backups.check(&backup.target, &backup.object_key).await.map_err(read_failed)
    }

    /// Loads a checked backup into the instance's running server.
    async fn load_backup(&self, record: &InstanceRecord, checked: &Checked) -> Result<(), ProvisionError> {
        let plain = checked.open().await.map_err(read_failed)?;
        self.load_from(record, plain).await
    }

    /// Fills a new instance, just ready, with what it was asked to start with.
    pub(super) async fn seed_now(
        &self,
        owner_id: i64,
        record: &InstanceRecord,
        seed: &Seed,
        progress: &super::Progress,
    ) -> Result<(), ProvisionError> {
        match seed {
            Seed::Backup(backup) => {
                let backup = self.owned_backup(owner_id, backup).await?;
                let checked = self.fetch_checked(&backup).await?;
                progress.step("backup checked").await;
                self.load_backup(record, &checked).await?;
                progress.step("backup loaded").await;
            }
            Seed::CloneOf(source) => {
                let source = self.owned(owner_id, source).await?;
                require_status(&source, &[Status::Running], "clone")?;
                // The dump streams straight into the new server: no copy is kept anywhere.
                let (reader, mut writer) = tokio::io::duplex(PIPE_BUFFER);
                let (dumped, loaded) = tokio::join!(
                    async {
                        let digest = self.dump_into(&source, &mut writer).await;
                        drop(writer);
                        digest
                    },
                    self.load_from(record, reader),
                );
                dumped?;
                loaded?;
                progress.step("data copied").await;
            }
        }
        Ok(())
    }

    /// Creates a new instance of the caller's with a copy of the data of one of their running
    /// instances and credentials of its own: the source's engine, version, memory and settings, and
    /// `name` (or a default one). Its outcome is the copy, once it holds the data (see `seed_now`).
    pub async fn clone_instance(
        &self,
        caller: &Caller,
        id: &InstanceId,
        name: Option<crate::model::InstanceName>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let source = self.owned(caller.user_id, id).await?;
        let request = super::NewInstance {
            version: source.version.parse().ok(),
            name,
            memory: Some(source.memory_mb),
            charset: source.settings.charset().cloned(),
            collation: source.settings.collation().cloned(),
            database: source.settings.database().cloned(),
            seed: Some(Seed::CloneOf(source.id.clone())),
            ..super::NewInstance::of(source.engine())
        };
        self.create(caller, request, idempotency).await
    }

    /// Checks what a seed names before anything is recorded: the backup or the source instance is
    /// the caller's and of the engine asked for.
    pub(super) async fn check_seed(
        &self,
        owner_id: i64,
        engine: crate::model::Engine,
        seed: &Seed,
    ) -> Result<(), ProvisionError> {
        let (what, found) = match seed {
            Seed::Backup(id) => {
                self.backups()?;
                let backup = self.owned_backup(owner_id, id).await.map_err(|_| ProvisionError::Invalid {
                    field: "from_backup",
                    reason: format!("you have no backup {id}"),
                })?;
                if backup.state != BackupState::Succeeded {
                    return Err(ProvisionError::Invalid {
                        field: "from_backup",
                        reason: format!("backup {id} is {}: only a succeeded backup can be restored", backup.state),
                    });
                }
                ("backup", backup.engine)
            }
            Seed::CloneOf(id) => ("instance", self.owned(owner_id, id).await?.engine()),
        };
        if found != engine {
            return Err(ProvisionError::Invalid {
                field: "engine",
                reason: format!("the {what} is {found}, not {engine}: a restore or clone keeps its engine"),
            });
        }
        Ok(())
    }

    /// Restores one of the caller's backups into one of their instances, in place, as an
    /// operation on it: the backup is checked whole first, then a safety backup of the current data
    /// is taken (to the same target), then the backup is loaded; if the load fails, the safety
    /// backup is loaded back, and the instance is as it was.
    pub async fn restore_in_place(
        &self,
        caller: &Caller,
        id: &InstanceId,
        backup: &BackupId,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let backup = self
            .owned_backup(caller.user_id, backup)
            .await
            .map_err(|_| ProvisionError::Invalid { field: "backup", reason: format!("you have no backup {backup}") })?;
        let input = json!({ "backup": backup.id });
        let actor = caller.name.clone();
        self.change(caller, id, OperationKind::Restore, input, idempotency, move |this, record, progress| async move {
            require_status(&record, &[Status::Running], "restore")?;
            if backup.engine != record.engine() {
                return Err(ProvisionError::Invalid {
                    field: "backup",
                    reason: format!("backup {} is of {}, the instance {}", backup.id, backup.engine, record.engine()),
                });
            }
            let checked = this.fetch_checked(&backup).await?;
            progress.step("backup checked").await;
            let operation = progress.operation_id();
            let safety = this.back_up_now(&record, &backup.target, BackupKind::Safety, operation).await?;
            progress.step("safety backup taken").await;
            if let Err(error) = this.replace_data(&record, &checked).await {
                tracing::warn!(instance_id = %record.id, %error, "restore failed; loading the safety backup back");
                let safety = this.fetch_checked(&safety).await?;
                this.replace_data(&record, &safety).await?;
                return Err(error);
            }
            progress.step("backup loaded").await;
            tracing::info!(instance_id = %record.id, backup = %backup.id, %actor, "restored in place");
            this.reveal_current(&record.id).await
        })
        .await
    }

    /// Empties the instance's data and loads `checked` in its place.
    async fn replace_data(&self, record: &InstanceRecord, checked: &Checked) -> Result<(), ProvisionError> {
        self.wipe(record).await?;
        self.load_backup(record, checked).await
    }

    /// Empties the instance's data, keeping its server, credentials and settings.
    async fn wipe(&self, record: &InstanceRecord) -> Result<(), ProvisionError> {
        let password = self.password_of(record)?;
        let host = self.probe_host();
        let endpoint = self.endpoint(record, &host, &password);
        engines::wipe(record.engine(), &endpoint)
            .await
            .map_err(|e| ProvisionError::ServerRefused(format!("could not empty the instance: {e}")))
    }

    /// One of `owner_id`'s backups; another user's is `NotFound`, as if it did not exist.
    pub async fn owned_backup(&self, owner_id: i64, id: &BackupId) -> Result<BackupRecord, ProvisionError> {
        self.store.find_backup(owner_id, id).await?.ok_or(ProvisionError::NotFound)
    }

    /// `owner_id`'s backups, newest first: of one instance (which may be deleted) if given,
    /// `limit` of them, older than backup `before`.
    pub async fn list_backups(
        &self,
        owner_id: i64,
        instance: Option<&InstanceId>,
        before: Option<&BackupId>,
        limit: u32,
    ) -> Result<Vec<BackupRecord>, ProvisionError> {
        let filter = BackupFilter { owner_id: Some(owner_id), instance_id: instance };
        self.store.list_backups(&filter, before, limit).await?.ok_or_else(|| ProvisionError::Invalid {
            field: "before",
            reason: "no such backup (deleted since that page was read?): list again from the first page".into(),
        })
    }

    /// Removes one of the caller's backups: its object, then its record. A running one is refused.
    pub async fn delete_backup(&self, owner_id: i64, id: &BackupId) -> Result<(), ProvisionError> {
        let backup = self.owned_backup(owner_id, id).await?;
        if backup.state == BackupState::Running {
            return Err(ProvisionError::Conflict(format!(
                "backup {id} is still running; delete it once its operation {} has ended",
                backup.operation_id
            )));
        }
        self.remove_backup(&backup).await
    }

    /// Object first, record second: a target that fails half way leaves the record, and a retry
    /// finishes the job.
    pub(super) async fn remove_backup(&self, backup: &BackupRecord) -> Result<(), ProvisionError> {
        // Without the targets, the object would stay behind a record that says it is gone.
        self.backups()?.delete(&backup.target, &backup.object_key).await.map_err(target_failed)?;
        self.store.delete_backup(&backup.id).await?;
        Ok(())
    }
}

/// How much of a dump is in flight between the task that reads it from Docker and what it goes
/// into (a backup's seal, a clone's load).
const PIPE_BUFFER: usize = 256 * 1024;

/// Where a backup's object lives on its target: under its instance, named by its id, with what it
/// holds in its extension (`age -d -i KEY FILE | zstd -d` gives the engine's own dump).
fn object_key(record: &InstanceRecord, id: &BackupId) -> String {
    let format = engines::dump_extension(record.engine());
    format!("{}/{id}.{format}.zst.age", record.id)
}

fn invalid_target(error: TargetError) -> ProvisionError {
    match error {
        TargetError::Unknown { .. } => ProvisionError::Invalid { field: "target", reason: error.to_string() },
        other => target_failed(other),
    }
}

fn target_failed(error: TargetError) -> ProvisionError {
    ProvisionError::TargetFailed(error.to_string())
}

/// A seal that failed: the target's fault, or (when the dump could not be read) the server's.
fn sealed_failed(error: SealError) -> ProvisionError {
    match error {
        SealError::Target(error) => target_failed(error),
        SealError::Source(error) => ProvisionError::ServerRefused(format!("the dump could not be read: {error}")),
        other => ProvisionError::Internal(other.into()),
    }
}

/// A backup that cannot be read back: the target's fault, or the backup's (damaged, truncated,
/// sealed to another key), or no identity to read it with.
fn read_failed(error: ReadError) -> ProvisionError {
    match error {
        ReadError::Target(error) | ReadError::Sealed(SealError::Target(error)) => target_failed(error),
        other => ProvisionError::Conflict(other.to_string()),
    }
}

// ---- verification ----

impl Provisioner {
    /// Restores `backup` into a throwaway server of its engine and version, and compares the
    /// digest of what that server then holds with the one taken when the backup was made. The
    /// outcome is recorded on the backup (`verified_at`, or `verify_error` with what went wrong);
    /// the throwaway is removed either way. Named for `operation`, as a template's build
    /// container is, so that the reconciler removes it if this process dies meanwhile.
    pub(super) async fn verify_now(
        &self,
        backup: &BackupRecord,
        operation: &OperationId,
    ) -> Result<(), ProvisionError> {
        let outcome = self.restore_and_compare(backup, operation).await;
        if let Err(reason) = &outcome {
            tracing::warn!(backup = %backup.id, %reason, "a backup failed its verification");
            self.metrics.backup_verify_failed(backup.engine);
        }
        self.store.set_backup_verified(&backup.id, outcome.as_ref().map(drop).map_err(String::as_str)).await?;
        Ok(())
    }

    async fn restore_and_compare(&self, backup: &BackupRecord, operation: &OperationId) -> Result<(), String> {
        let expected = backup.content_digest.clone().ok_or("the backup records no content digest")?;
        let checked = self.fetch_checked(backup).await.map_err(|e| e.to_string())?;
        let version = backup.version.parse().map_err(|e: crate::model::Invalid| e.0)?;
        let (_, spec) = self
            .config
            .catalogue
            .resolve(backup.engine, Some(&version))
            .map_err(|e| format!("version {} is no longer in the catalogue: {}", backup.version, e.0))?;
        let (throwaway, password) =
            self.first_start(backup.engine, &spec.image, engines::TEMPLATE_DATA_PATH, operation);
        let name = throwaway.name.clone();
        let found = async {
            let port = self.runtime.run_throwaway(throwaway).await.map_err(|e| e.to_string())?;
            let database = engines::profile(backup.engine).default_database;
            let endpoint = engines::Endpoint { host: "127.0.0.1", port, password: &password, database };
            self.wait_throwaway_ready(backup.engine, &name, &endpoint).await.map_err(|e| e.to_string())?;
            let plain = checked.open().await.map_err(|e| e.to_string())?;
            engines::load(backup.engine, &self.runtime, &name, &endpoint, plain)
                .await
                .map_err(|e| format!("the server did not load it: {e}"))?;
            engines::content_digest(backup.engine, &self.runtime, &name, database)
                .await
                .map(|digest| digest.to_string())
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = self.runtime.remove_container(&name).await {
            tracing::warn!(container = %name, %error, "could not remove a verification's throwaway server");
        }
        let found = found?;
        if found != expected {
            return Err(format!(
                "the restored server holds other data than was backed up (content digest {found}, expected {expected})"
            ));
        }
        Ok(())
    }
}

// ---- export and import ----

/// A dump as it streams out of an instance, in its engine's own format: its bytes end with an
/// error if the dump tool fails before its end (the client sees a broken transfer, not a short
/// file that looks whole).
pub struct Export {
    pub file_name: String,
    pub bytes: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
}

impl Provisioner {
    /// Streams a consistent dump of one of `owner_id`'s running instances, which the engine's own
    /// client loads (SQL for MySQL and PostgreSQL, an RDB file for Redis). Not an operation: it
    /// changes nothing.
    pub async fn export(&self, owner_id: i64, id: &InstanceId) -> Result<Export, ProvisionError> {
        let record = self.owned(owner_id, id).await?;
        require_status(&record, &[Status::Running], "export")?;
        let dump = engines::dump(record.engine(), &self.runtime, &self.container_name(id), record.database())
            .await
            .map_err(|e| ProvisionError::ServerRefused(format!("the dump did not start: {e}")))?;
        let file_name = format!("{}.{}", record.name.as_str(), engines::dump_extension(record.engine()));
        Ok(Export { file_name, bytes: dump_stream(dump) })
    }

    /// Replaces the data of one of the caller's running instances with a dump in its engine's own
    /// format, as an operation on it. The upload is kept whole first (refused beyond the
    /// configured size); then the current data is dumped aside, the instance emptied and the
    /// upload loaded. A dump the server refuses is `NotLoadable` with the server's message, and
    /// the data set aside is loaded back: the instance is as it was.
    pub async fn import(
        &self,
        caller: &Caller,
        id: &InstanceId,
        upload: backups::Spooled,
        idempotency: Option<&Idempotency>,
    ) -> Result<Running<Instance>, ProvisionError> {
        let input = json!({ "bytes": upload.len(), "sha256": upload.sha256() });
        let actor = caller.name.clone();
        self.change(caller, id, OperationKind::Import, input, idempotency, move |this, record, progress| async move {
            require_status(&record, &[Status::Running], "import into")?;
            let spool_failed = |e: std::io::Error| ProvisionError::Internal(anyhow::anyhow!("the spool file: {e}"));
            let aside = backups::Spooled::create(&this.config.data_dir).await.map_err(spool_failed)?;
            let mut writer = aside.writer().await.map_err(spool_failed)?;
            this.dump_into(&record, &mut writer).await?;
            writer.shutdown().await.map_err(spool_failed)?;
            progress.step("current data set aside").await;
            let loaded = async {
                this.wipe(&record).await?;
                this.load_from(&record, upload.reader().await.map_err(spool_failed)?).await
            };
            if let Err(error) = loaded.await {
                tracing::warn!(instance_id = %record.id, %error, "import failed; loading the data set aside back");
                this.wipe(&record).await?;
                this.load_from(&record, aside.reader().await.map_err(spool_failed)?).await?;
                return Err(error);
            }
            progress.step("dump loaded").await;
            tracing::info!(instance_id = %record.id, %actor, "imported a dump");
            this.reveal_current(&record.id).await
        })
        .await
    }
}

/// The bytes of a dump, then its end: an error if the tool failed, which breaks the transfer.
fn dump_stream(dump: engines::Dump) -> futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>> {
    use futures_util::StreamExt;
    let state = Some((dump, bytes::BytesMut::with_capacity(EXPORT_CHUNK)));
    futures_util::stream::unfold(state, |state| async move {
        let (mut dump, mut buffer) = state?;
        buffer.reserve(EXPORT_CHUNK);
        match tokio::io::AsyncReadExt::read_buf(&mut dump, &mut buffer).await {
            Ok(0) => match dump.finish().await {
                Ok(_) => None,
                Err(error) => Some((Err(std::io::Error::other(error.to_string())), None)),
            },
            Ok(_) => Some((Ok(buffer.split().freeze()), Some((dump, buffer)))),
            Err(error) => Some((Err(error), None)),
        }
    })
    .boxed()
}

/// How much of an export is read from the dump at once.
const EXPORT_CHUNK: usize = 64 * 1024;

// ---- policies: scheduled backups and their retention ----

/// Who scheduled backups are taken by, in operations.
const SCHEDULER_ACTOR: &str = "dbroker (backup policy)";

impl Provisioner {
    /// Sets the backup policy of one of `owner_id`'s instances; its first run is the schedule's
    /// next time from now.
    pub async fn put_backup_policy(
        &self,
        owner_id: i64,
        id: &InstanceId,
        policy: &NewPolicy<'_>,
    ) -> Result<BackupPolicy, ProvisionError> {
        self.owned(owner_id, id).await?;
        self.backups()?.target_name(policy.target).map_err(invalid_target)?;
        Ok(self.store.put_backup_policy(id, policy).await?)
    }

    pub async fn backup_policy(&self, owner_id: i64, id: &InstanceId) -> Result<BackupPolicy, ProvisionError> {
        self.owned(owner_id, id).await?;
        self.store.backup_policy(id).await?.ok_or_else(|| ProvisionError::NoBackupPolicy(id.clone()))
    }

    /// Ends the instance's scheduled backups; those taken are kept.
    pub async fn delete_backup_policy(&self, owner_id: i64, id: &InstanceId) -> Result<(), ProvisionError> {
        self.owned(owner_id, id).await?;
        self.store.delete_backup_policy(id).await?;
        Ok(())
    }

    /// Starts every scheduled backup that is due, once each: a policy's run is recorded (a
    /// compare and set) before its backup starts, so that two leaders in turn never both take
    /// it. Called by the leader only, every tick; a run missed while dbroker was down is due once
    /// at its next start (see `backup_schedule::next_run`). Each backup runs as its instance's
    /// operation; one whose instance is busy or stopped fails with the reason, and the schedule
    /// tries again at its next time.
    pub(super) async fn run_due_backups(&self) -> Result<(), ProvisionError> {
        let now = time::OffsetDateTime::now_utc();
        for policy in self.store.due_backup_policies(now).await? {
            if !self.store.record_backup_run(&policy, now).await? {
                continue; // Another leader took this run.
            }
            if let Err(error) = self.scheduled_backup(&policy).await {
                tracing::warn!(instance_id = %policy.instance_id, %error, "a scheduled backup could not start");
            }
        }
        Ok(())
    }

    async fn scheduled_backup(&self, policy: &BackupPolicy) -> Result<(), ProvisionError> {
        let record = self.store.instance(&policy.instance_id).await?.ok_or(ProvisionError::NotFound)?;
        let owner_id = record.owner_id.ok_or(ProvisionError::NotFound)?;
        let caller = Caller { user_id: owner_id, name: SCHEDULER_ACTOR.to_string(), is_admin: false };
        let target = self.backups()?.target_name(policy.target.as_ref()).map_err(invalid_target)?;
        let input = json!({ "target": target, "verify": policy.verify, "scheduled": true });
        let policy = policy.clone();
        let running = self
            .change(&caller, &record.id, OperationKind::Backup, input, None, move |this, record, progress| async move {
                require_status(&record, &[Status::Running], "back up")?;
                let operation = progress.operation_id();
                let backup = this.back_up_now(&record, &target, BackupKind::Scheduled, operation).await?;
                progress.step("backed up").await;
                if policy.verify {
                    this.verify_now(&backup, operation).await?;
                    progress.step("verified").await;
                }
                this.apply_retention(&policy).await?;
                Ok(this.store.backup(&backup.id).await?.ok_or(ProvisionError::NotFound)?)
            })
            .await?;
        drop(running); // It runs on; its end is in its operation.
        Ok(())
    }

    /// Removes what every policy's retention no longer keeps (see `apply_retention`): on each of
    /// the leader's passes, so that `keep_days` holds while no new backup is taken.
    pub(super) async fn sweep_retention(&self) -> Result<(), ProvisionError> {
        for policy in self.store.backup_policies().await? {
            self.apply_retention(&policy).await?;
        }
        Ok(())
    }

    /// Removes the instance's backups that the policy's retention no longer keeps (see
    /// `backup_schedule::to_remove`: never a manual one, never the newest good one). A deleted
    /// instance's policy stays for its backups' retention, and goes with its last backup.
    async fn apply_retention(&self, policy: &BackupPolicy) -> Result<(), ProvisionError> {
        let backups = self.store.backups_of_instance(&policy.instance_id).await?;
        let now = time::OffsetDateTime::now_utc();
        for id in backup_schedule::to_remove(&backups, Retention::from(policy), now) {
            let Some(backup) = backups.iter().find(|b| b.id == id) else { continue };
            if let Err(error) = self.remove_backup(backup).await {
                tracing::warn!(backup = %backup.id, %error, "could not remove a backup past its retention");
            }
        }
        if backups.is_empty() && self.store.instance(&policy.instance_id).await?.is_none() {
            self.store.delete_backup_policy(&policy.instance_id).await?;
        }
        Ok(())
    }
}

// ---- after a crash ----

impl Provisioner {
    /// Fails the backups left running by operations no longer in flight (their process died and
    /// the operation was taken over and ended), and removes what was written of their objects.
    /// Called by the leader after each look for abandoned operations.
    pub(super) async fn fail_orphaned_backups(&self) -> Result<(), ProvisionError> {
        for backup in self.store.fail_orphaned_backups("dbroker stopped while it ran").await? {
            tracing::warn!(backup = %backup.id, "a backup interrupted by a crash is marked failed");
            self.metrics.backup_failed(backup.engine);
            if let Some(backups) = &self.backups
                && let Err(error) = backups.delete(&backup.target, &backup.object_key).await
            {
                tracing::warn!(backup = %backup.id, %error, "could not remove an interrupted backup's partial object");
            }
        }
        Ok(())
    }

    /// Loads back the safety backup an interrupted in-place restore took, if it was complete: the
    /// restore may have emptied the instance or loaded part of the backup. If it was not, the
    /// restore had not changed anything yet.
    pub(super) async fn undo_interrupted_restore(
        &self,
        record: &InstanceRecord,
        operation: &OperationId,
    ) -> Result<(), ProvisionError> {
        let backups = self.store.backups_of_instance(&record.id).await?;
        let safety = backups.into_iter().find(|b| {
            &b.operation_id == operation && b.kind == BackupKind::Safety && b.state == BackupState::Succeeded
        });
        let Some(safety) = safety else { return Ok(()) };
        self.wait_until_ready(record).await?;
        let checked = self.fetch_checked(&safety).await?;
        self.replace_data(record, &checked).await
    }
}

impl Provisioner {
    /// The backup an operation took (not its safety backup), for a replayed request's answer.
    pub async fn backup_of_operation(
        &self,
        owner_id: i64,
        operation: &crate::store::OperationRecord,
    ) -> Result<BackupRecord, ProvisionError> {
        let backups = self.store.backups_of_instance(&operation.instance_id).await?;
        backups
            .into_iter()
            .find(|b| b.operation_id == operation.id && b.kind != BackupKind::Safety && b.owner_id == owner_id)
            .ok_or(ProvisionError::NotFound)
    }

    /// The largest dump an import takes.
    pub fn import_max_bytes(&self) -> u64 {
        let configured = self.config.backups.as_ref().map(|b| b.import_max_bytes);
        configured.unwrap_or(crate::backups::settings::DEFAULT_IMPORT_MAX_BYTES)
    }
}
