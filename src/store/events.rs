//! Instance histories, and the quarantine of containers that have no record.

use sqlx::Row;

use super::{Store, StoreError, now_rfc3339};
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

    /// An instance's history: the `limit` latest events older than event `before` (or the latest
    /// `limit`), oldest first.
    pub async fn events(&self, id: &InstanceId, before: Option<i64>, limit: u32) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, actor, detail FROM (SELECT * FROM events WHERE instance_id = ?1 \
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3) ORDER BY id",
        )
        .bind(id.as_str())
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.get("id"),
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

    /// Forgets the history older than `age`: events, and operations that have ended (an
    /// operation in flight is kept, however old). Returns how many rows went.
    pub async fn prune_history(&self, age: std::time::Duration) -> Result<u64, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc() - age;
        let cutoff = cutoff
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Stored times are RFC 3339 in UTC, which sort as text.
        let events = sqlx::query("DELETE FROM events WHERE at < ?").bind(&cutoff).execute(&self.pool).await?;
        let operations = sqlx::query(
            "DELETE FROM operations WHERE state IN ('succeeded', 'failed') AND coalesce(finished_at, updated_at) < ?",
        )
        .bind(&cutoff)
        .execute(&self.pool)
        .await?;
        Ok(events.rows_affected() + operations.rows_affected())
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
