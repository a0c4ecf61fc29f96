//! `GET /v1/instances/{id}/stats`: an instance's figures as its owner reads them, and the types of
//! the answer (a client may reuse them: they deserialize what they serialize).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::v1::parse_id;
use super::{ApiError, AppState};
use crate::engines::{DatabaseSize, ServerStats};
use crate::provision::InstanceStats;

/// An instance's figures, read at `read_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatsView {
    pub id: String,
    pub read_at: String,
    pub container: ContainerStatsView,
    /// What the server says of itself; `null` if it did not answer in time (or refused), and
    /// `server_unavailable` then says why.
    pub server: Option<ServerStatsView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_unavailable: Option<String>,
}

/// What Docker reports of the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatsView {
    /// The CPU time used since the container started, all cores together (user and system), in
    /// seconds: two readings make a rate.
    pub cpu_seconds: f64,
    /// Memory in use, without the page cache the kernel reclaims before the cap (as `docker
    /// stats` counts it).
    pub memory_used_bytes: u64,
    /// The memory cap: the instance's `memory_mb`, in bytes.
    pub memory_limit_bytes: u64,
}

/// What the server says of itself, by engine. Connections and clients leave out the one dbroker
/// reads these figures with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum ServerStatsView {
    Mysql {
        /// `Threads_connected`.
        connections: u64,
        /// Every database but the server's own, with its tables' data and indexes in bytes.
        databases: Vec<DatabaseSizeView>,
    },
    Redis {
        /// `used_memory`: what Redis compares with its `maxmemory`.
        used_memory_bytes: u64,
        /// Keys in all its databases.
        keys: u64,
        connected_clients: u64,
    },
    Postgres {
        /// Client connections to any of the cluster's databases.
        connections: u64,
        /// The instance's database, with its size on disk.
        database: DatabaseSizeView,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSizeView {
    pub name: String,
    pub bytes: u64,
}

impl From<DatabaseSize> for DatabaseSizeView {
    fn from(DatabaseSize { name, bytes }: DatabaseSize) -> Self {
        DatabaseSizeView { name, bytes }
    }
}

impl From<ServerStats> for ServerStatsView {
    fn from(stats: ServerStats) -> Self {
        match stats {
            ServerStats::Mysql { connections, databases } => {
                ServerStatsView::Mysql { connections, databases: databases.into_iter().map(Into::into).collect() }
            }
            ServerStats::Redis { used_memory_bytes, keys, connected_clients } => {
                ServerStatsView::Redis { used_memory_bytes, keys, connected_clients }
            }
            ServerStats::Postgres { connections, database } => {
                ServerStatsView::Postgres { connections, database: database.into() }
            }
        }
    }
}

impl InstanceStatsView {
    fn new(id: String, stats: InstanceStats) -> Self {
        let InstanceStats { read_at, container, server } = stats;
        let (server, server_unavailable) = match server {
            Ok(server) => (Some(server.into()), None),
            Err(reason) => (None, Some(format!("the server's own figures are missing: {reason}"))),
        };
        InstanceStatsView {
            id,
            read_at,
            container: ContainerStatsView {
                cpu_seconds: container.cpu_nanos as f64 / 1e9,
                memory_used_bytes: container.memory_used_bytes,
                memory_limit_bytes: container.memory_limit_bytes,
            },
            server,
            server_unavailable,
        }
    }
}

/// For the owner of a running instance; anyone else 404, a stopped instance 409.
pub(super) async fn instance_stats(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let stats = state.provisioner.stats(user.0.id, &id).await?;
    Ok(axum::Json(InstanceStatsView::new(id.to_string(), stats)).into_response())
}
