//! Routes for admins only: the quarantine of containers found with no record, and what the
//! reconciler has repaired.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::provision::Caller;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/quarantine", get(list_quarantine))
        .route("/v1/admin/quarantine/{container}", delete(remove_quarantined))
        .route("/v1/admin/quarantine/{container}/adopt", post(adopt_quarantined))
        .route("/v1/admin/reconciler", get(reconciler_report))
        .route("/v1/admin/pool", get(list_pool))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Adopt {
    /// The user who will own the adopted instance.
    owner: String,
}

fn require_admin(user: &CurrentUser) -> Result<(), ApiError> {
    if user.0.is_admin { Ok(()) } else { Err(ApiError::Forbidden("only admins may do this")) }
}

async fn list_quarantine(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    require_admin(&user)?;
    let containers = state.provisioner.quarantined().await?;
    Ok(axum::Json(serde_json::json!({ "containers": containers })).into_response())
}

async fn remove_quarantined(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(container): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&user)?;
    state.provisioner.remove_quarantined(&container).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn adopt_quarantined(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(container): Path<String>,
    JsonBody(body): JsonBody<Adopt>,
) -> Result<Response, ApiError> {
    require_admin(&user)?;
    let owner = state
        .store
        .user_by_name(&body.owner)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .ok_or_else(|| ApiError::Unprocessable(format!("owner: no user named {:?}", body.owner)))?;
    let owner = Caller { user_id: owner.id, name: owner.name, is_admin: owner.is_admin };
    let instance = state.provisioner.adopt_quarantined(&user.caller(), &container, &owner).await?;
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "id": instance.record.id, "owner": owner.name })))
        .into_response())
}

/// The warm pool's members: started, owned by nobody, listed to no user.
async fn list_pool(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    require_admin(&user)?;
    let members: Vec<serde_json::Value> = state
        .provisioner
        .pool()
        .await?
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "engine": m.engine(), "version": m.version, "status": m.status,
                "port": m.port, "created_at": m.created_at,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "members": members })).into_response())
}

async fn reconciler_report(State(state): State<AppState>, user: CurrentUser) -> Result<Response, ApiError> {
    require_admin(&user)?;
    Ok(axum::Json(state.reconciler.report()).into_response())
}
