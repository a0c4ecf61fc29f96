//! Operations whose process died: their lease expired, the leader took them over (see
//! `Store::take_over_operation`), and each is resumed or rolled back by its kind. Every change's
//! `*_now` step is idempotent, so resuming is doing it again from what the record says now.

use super::Reconciler;
use crate::model::{MemoryMb, OperationKind, Status};
use crate::provision::lifecycle::StartMode;
use crate::provision::{ProvisionError, SYSTEM_ACTOR};
use crate::store::OperationRecord;

impl Reconciler {
    /// Resumes a taken-over operation in the background, as this process's own now.
    pub(super) fn resume(&self, operation: OperationRecord) {
        tracing::warn!(operation = %operation.id, kind = %operation.kind, instance_id = %operation.instance_id,
            "taking over an operation whose process stopped renewing its lease");
        self.count("take_over");
        let this = self.clone();
        let input = operation.input.clone();
        let kind = operation.kind;
        let id = operation.instance_id.clone();
        let operation_id = operation.id.clone();
        drop(self.service.ops.run(operation, move |_| async move {
            let interrupted = |what: &str| ProvisionError::Conflict(format!("dbroker stopped during the {what}"));
            let Some(record) = this.service.store.instance(&id).await? else {
                return match kind {
                    // Nothing was recorded yet, or the delete had removed the record: done.
                    OperationKind::Delete => Ok(()),
                    OperationKind::Adopt => {
                        // Back to how it was: stopped, still quarantined.
                        this.service.runtime.stop(&this.service.container_name(&id)).await?;
                        Err(interrupted("adopt, which was undone"))
                    }
                    _ => Err(interrupted("operation, before its instance was recorded")),
                };
            };
            match kind {
                // Its data was being loaded, or was about to be: nobody can tell how much of it.
                OperationKind::Create if input.get("seed").is_some() => {
                    this.service
                        .roll_back(&id, "dbroker stopped while the new instance was loaded with its data")
                        .await;
                    Err(interrupted("create, while its data was loaded; it was rolled back"))
                }
                OperationKind::Create if record.status == Status::Provisioning => {
                    this.finish_or_roll_back_create(&record, &operation_id).await?;
                    // A create rolled back has failed, whatever undid it.
                    match this.service.store.instance(&id).await? {
                        Some(record) if record.status == Status::Failed => Err(ProvisionError::Conflict(
                            record.status_reason.unwrap_or_else(|| "the create was rolled back".into()),
                        )),
                        _ => this.service.reveal_current(&id).await.map(drop),
                    }
                }
                // A create past its record's `running` (a pool member handed over half way: its
                // password may be pending), or an adopt that had finished.
                OperationKind::Create | OperationKind::Adopt => this.settle_or_fail(&record).await,
                OperationKind::Delete => this.service.delete_now(&id, SYSTEM_ACTOR).await,
                OperationKind::Stop => this.service.stop_now(&record, SYSTEM_ACTOR).await,
                OperationKind::Start => this.service.start_now(&record, StartMode::Start, SYSTEM_ACTOR).await,
                OperationKind::Restart => this.service.start_now(&record, StartMode::Restart, SYSTEM_ACTOR).await,
                OperationKind::Resize => {
                    let memory = input["memory_mb"].as_u64().and_then(|m| u32::try_from(m).ok());
                    let memory = memory.ok_or_else(|| interrupted("resize, whose size is not recorded"))?;
                    this.service.resize_now(&record, MemoryMb(memory), SYSTEM_ACTOR).await
                }
                // Which password the server has is all that matters: the stored one, or the
                // pending one, which becomes the stored one.
                OperationKind::Rotate => this.settle_or_fail(&record).await,
                // The next pass looks at the instance again.
                OperationKind::Repair => Err(interrupted("repair")),
                // Its backup is failed, and its partial object removed, once the operation has
                // ended (see `Provisioner::fail_orphaned_backups`).
                OperationKind::Backup => Err(interrupted("backup, which is marked failed")),
                // The safety backup, if it was complete, holds the data as it was.
                OperationKind::Restore => {
                    this.service.undo_interrupted_restore(&record, &operation_id).await?;
                    Err(interrupted("restore; the instance holds its data as it was before"))
                }
                OperationKind::Import => {
                    Err(interrupted("import; its upload was lost with that process, and the data may be partly loaded"))
                }
            }
        }));
    }

    /// Settles a pending password; an error if the server takes neither.
    async fn settle_or_fail(&self, record: &crate::store::InstanceRecord) -> Result<(), ProvisionError> {
        if self.service.settle_password(record).await? {
            Ok(())
        } else {
            Err(ProvisionError::ServerRefused(
                "the server takes neither the stored nor the pending password; it needs an admin".into(),
            ))
        }
    }
}
