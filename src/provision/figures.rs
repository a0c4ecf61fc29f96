//! What `/metrics` reads from the store when Prometheus scrapes (see `crate::metrics`): instances,
//! the warm pool, ports, the host's memory budget and backups, counted from the records as they are then.

use super::{ProvisionError, Provisioner};
use crate::metrics::Figures;
use crate::model::{Engine, Status};

const MIB: u64 = 1024 * 1024;

impl Provisioner {
    /// The figures of the store now (the reconciler's leadership is the reconciler's to say).
    pub async fn figures(&self) -> Result<Figures, ProvisionError> {
        let records = self.store.all_instances().await?;
        let range = self.node.port_range;
        let mut figures = Figures {
            instances: Engine::ALL.iter().flat_map(|e| Status::ALL.iter().map(move |s| ((*e, *s), 0))).collect(),
            ports_in_range: u64::from(range.last - range.first) + 1,
            ..Figures::default()
        };
        for (engine, catalogue) in self.config.catalogue.engines() {
            for (version, spec) in catalogue.versions.iter().filter(|(_, spec)| spec.pool > 0) {
                figures.pool_targets.insert((engine, version.clone()), spec.pool.into());
            }
        }
        let mut ports_held = 0;
        for record in &records {
            let engine = record.engine();
            match record.owner_id {
                Some(_) => *figures.instances.entry((engine, record.status)).or_default() += 1,
                None => *figures.pool_members.entry((engine, record.version.clone(), record.status)).or_default() += 1,
            }
            // As the quotas count them (see `store::quotas`).
            if record.status != Status::Failed {
                figures.host_memory_capped_bytes += u64::from(record.memory_mb.0) * MIB;
                figures.instances_held += u64::from(record.owner_id.is_some());
            }
            figures.needing_attention += u64::from(record.attention.is_some());
            ports_held += u64::from(record.port.is_some_and(|p| (range.first..=range.last).contains(&p)));
        }
        figures.ports_free = figures.ports_in_range - ports_held;
        for usage in self.store.backup_usage_by_owner().await?.values() {
            figures.backups_held += usage.backups;
            figures.backup_bytes_held += usage.bytes;
        }
        // Known once the engine has told its host's memory; a scrape never waits on the engine.
        figures.host_memory_budget_bytes = self.quotas.host_memory_budget_mb().map(|mb| mb * MIB);
        Ok(figures)
    }
}
