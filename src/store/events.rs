//! Instance histories, and the quarantine of containers that have no record.

use sqlx::Row;

use super::{Store, StoreError, now_rfc3339};
use crate::model::{EventKind, InstanceId};

/// One entry of an instance's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub at: String,
    pub kind: EventKind,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A container found with no record, waiting for an admin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    pub container: String,
    pub instance_id: String,
    pub engine: Option<String>,
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
        sqlx::query("INSERT INTO events (instance_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)")
            .bind(id.as_str())
            .bind(now_rfc3339())
            .bind(kind.as_str())
            .bind(actor)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An instance's history, oldest first.
    pub async fn events(&self, id: &InstanceId) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query("SELECT at, kind, actor, detail FROM events WHERE instance_id = ? ORDER BY id")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: r.get("at"),
                    kind: r
                        .get::<String, _>("kind")
                        .parse()
                        .map_err(|e: crate::model::Invalid| StoreError::Corrupt(e.0))?,
                    actor: r.get("actor"),
                    detail: r.get("detail"),
                })
            })
            .collect()
    }

    /// Adds a container to the quarantine; `false` if it was there already.
    pub async fn quarantine(
        &self,
        container: &str,
        instance_id: &str,
        engine: Option<&str>,
        owner_label: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO quarantine (container, instance_id, engine, owner_label, found_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (container) DO NOTHING",
        )
        .bind(container)
        .bind(instance_id)
        .bind(engine)
        .bind(owner_label)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let rows = sqlx::query(
            "SELECT container, instance_id, engine, owner_label, found_at FROM quarantine ORDER BY found_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Quarantined {
                container: r.get("container"),
                instance_id: r.get("instance_id"),
                engine: r.get("engine"),
                owner_label: r.get("owner_label"),
                found_at: r.get("found_at"),
            })
            .collect())
    }

    /// One quarantined container, if it is in the quarantine.
    pub async fn quarantined_container(&self, container: &str) -> Result<Option<Quarantined>, StoreError> {
        let row = sqlx::query(
            "SELECT container, instance_id, engine, owner_label, found_at FROM quarantine WHERE container = ?",
        )
        .bind(container)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Quarantined {
            container: r.get("container"),
            instance_id: r.get("instance_id"),
            engine: r.get("engine"),
            owner_label: r.get("owner_label"),
            found_at: r.get("found_at"),
        }))
    }

    /// Takes a container out of the quarantine; `NotFound` if it is not in it.
    pub async fn release_from_quarantine(&self, container: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("DELETE FROM quarantine WHERE container = ?").bind(container).execute(&self.pool).await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}
