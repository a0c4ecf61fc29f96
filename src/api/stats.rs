//! `GET /v1/instances/{id}/stats`: an instance's figures as its owner reads them (the answer's
//! types are in `types`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::auth::CurrentUser;
use super::types::{ContainerStatsView, DatabaseSizeView, InstanceStatsView, ServerStatsView};
use super::v1::parse_id;
use super::{ApiError, AppState};
use crate::engines::{DatabaseSize, ServerStats};
use crate::provision::InstanceStats;

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
#[utoipa::path(get, path = "/v1/instances/{id}/stats", tag = "instances",
    params(super::types::InstancePath),
    responses(
        (status = 200, description = "The instance's figures, read now", body = InstanceStatsView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running, or has no container"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
pub(super) async fn instance_stats(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let stats = state.provisioner.stats(user.0.id, &id).await?;
    Ok(axum::Json(InstanceStatsView::new(id.to_string(), stats)).into_response())
}
