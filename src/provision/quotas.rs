//! The limits that a change taking an instance or memory is checked against (the store checks
//! them in the transaction that makes the change, see `store::quotas`): each user's quota, by
//! default the configuration's, and the host's memory budget, a share of the memory of the Docker
//! engine's host, which is where the containers run.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::ProvisionError;
use crate::config;
use crate::runtime::Runtime;
use crate::store::{Limits, Quota};

/// The configured limits, and the host's memory once the engine has told it. Cheap to clone.
#[derive(Clone)]
pub(super) struct Quotas {
    config: config::Quotas,
    /// MiB; read at the first change that needs it, and kept: a host's memory does not change
    /// under a running engine.
    host_memory_mb: Arc<OnceCell<u64>>,
}

impl Quotas {
    pub fn new(config: config::Quotas) -> Self {
        Self { config, host_memory_mb: Default::default() }
    }

    /// Every limit, the host's memory budget included (asking the engine its host's memory the
    /// first time).
    pub async fn limits(&self, runtime: &Runtime) -> Result<Limits, ProvisionError> {
        let host_memory_mb = self
            .host_memory_mb
            .get_or_try_init(|| async { runtime.host_memory_bytes().await.map(|bytes| (bytes / (1024 * 1024)) as u64) })
            .await?;
        Ok(Limits { host_memory_mb: self.budget_of(*host_memory_mb), ..self.users() })
    }

    /// The host's memory budget in MiB, if the engine has told its host's memory already.
    pub fn host_memory_budget_mb(&self) -> Option<u64> {
        self.host_memory_mb.get().map(|mb| self.budget_of(*mb))
    }

    fn budget_of(&self, host_memory_mb: u64) -> u64 {
        host_memory_mb * u64::from(self.config.host_memory_percent) / 100
    }

    /// The users' quotas only, the host unbounded: for a check that needs no engine.
    pub fn users(&self) -> Limits {
        Limits {
            default_quota: Quota { instances: self.config.instances, memory_mb: self.config.memory_mb },
            host_memory_mb: u64::MAX,
        }
    }
}
