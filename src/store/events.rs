//! Instance histories, and the quarantine of containers that have no record.

use super::sql::{Columns, now, params, parsed};
use super::{Store, StoreError};
use crate::model::{EventKind, InstanceId};

/// One entry of an instance's history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Its place in the history: what `before` pages by.
    pub id: i64,
    pub at: String,
    pub kind: EventKind,
    pub actor: String,
    /// What happened, in words, where the kind alone does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A container found with no record, waiting for an admin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Quarantined {
    pub container: String,
    pub instance_id: String,
    /// Its `dbroker.engine` label, `null` if it had none.
    #[schema(required = true)]
    pub engine: Option<String>,
    /// Its `dbroker.owner` label, `null` if it had none.
    #[schema(required = true)]
    pub owner_label: Option<String>,
    pub found_at: String,
}

impl Store {
    pub async fn add_event(
        &self,
        id: &InstanceId,
        kind: EventKind,
        actor: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO events (instance_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)",
                params![id.as_str(), now(), kind.as_str(), actor, detail],
            )
            .await?;
        Ok(())
    }

    /// An instance's history: the `limit` latest events older than event `before` (or the latest
    /// `limit`), oldest first.
    pub async fn events(&self, id: &InstanceId, before: Option<i64>, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.db
            .fetch_all(
                "SELECT id, at, kind, actor, detail FROM (SELECT * FROM events WHERE instance_id = $1 \
                 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3) AS latest ORDER BY id",
                params![id.as_str(), before, limit],
                |row| {
                    Ok(Event {
                        id: row.int(0)?,
                        at: row.time(1)?,
                        kind: parsed(row, 2)?,
                        actor: row.text(3)?,
                        detail: row.opt_text(4)?,
                    })
                },
            )
            .await
    }

    /// Forgets the history older than `age`: events, and operations that have ended (an
    /// operation in flight is kept, however old). Returns how many rows went.
    pub async fn prune_history(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff = now() - age;
        let events = self.db.execute("DELETE FROM events WHERE at < $1", params![cutoff]).await?;
        let operations = self
            .db
            .execute(
                "DELETE FROM operations WHERE state IN ('succeeded', 'failed') \
                 AND coalesce(finished_at, updated_at) < $1",
                params![cutoff],
            )
            .await?;
        Ok(events + operations)
    }

    /// Adds a container to the quarantine; `false` if it was there already.
    pub async fn quarantine(
        &self,
        container: &str,
        instance_id: &str,
        engine: Option<&str>,
        owner_label: Option<&str>,
    ) -> Result<bool, StoreError> {
        let added = self
            .db
            .execute(
                "INSERT INTO quarantine (container, instance_id, engine, owner_label, found_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (container) DO NOTHING",
                params![container, instance_id, engine, owner_label, now()],
            )
            .await?;
        Ok(added > 0)
    }

    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let sql = concat!("SELECT ", quarantine_columns!(), " FROM quarantine ORDER BY found_at");
        self.db.fetch_all(sql, params![], quarantined_from_row).await
    }

    /// One quarantined container, if it is in the quarantine.
    pub async fn quarantined_container(&self, container: &str) -> Result<Option<Quarantined>, StoreError> {
        let sql = concat!("SELECT ", quarantine_columns!(), " FROM quarantine WHERE container = $1");
        self.db.fetch_optional(sql, params![container], quarantined_from_row).await
    }

    /// Takes a container out of the quarantine; `NotFound` if it is not in it.
    pub async fn release_from_quarantine(&self, container: &str) -> Result<(), StoreError> {
        let removed = self.db.execute("DELETE FROM quarantine WHERE container = $1", params![container]).await?;
        if removed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

/// The columns `quarantined_from_row` reads, in its order.
macro_rules! quarantine_columns {
    () => {
        "container, instance_id, engine, owner_label, found_at"
    };
}
use quarantine_columns;

fn quarantined_from_row(row: &dyn Columns) -> Result<Quarantined, StoreError> {
    Ok(Quarantined {
        container: row.text(0)?,
        instance_id: row.text(1)?,
        engine: row.opt_text(2)?,
        owner_label: row.opt_text(3)?,
        found_at: row.time(4)?,
    })
}
