//! Routes for admins only: every user's instances, the quarantine of containers found with no
//! record, what the reconciler has repaired, the warm pool, and users (see `admin_users`).

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::v1::page_size;
use super::{ApiError, AppState};
use crate::model::{Engine, InstanceId, InstanceName, OperationId, Status, UserName};
use crate::provision::{Caller, OwnerFilter};
use crate::store::OwnedInstance;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(super::admin_users::routes())
        .route("/v1/admin/instances", get(list_all_instances))
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

/// The caller, who is an admin: anyone else is refused with 403 before a body is read.
pub(super) struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.0.is_admin { Ok(Admin(user)) } else { Err(ApiError::Forbidden("only admins may do this")) }
    }
}

/// `GET /v1/admin/instances`: each filter one value; paged like an instance's operations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllInstancesQuery {
    owner: Option<UserName>,
    engine: Option<Engine>,
    status: Option<Status>,
    limit: Option<u32>,
    before: Option<String>,
}

/// How many instances a page holds when the caller does not say, and at most.
const DEFAULT_INSTANCES_PAGE: u32 = 100;
const MAX_INSTANCES_PAGE: u32 = 1000;

/// An instance as admins see it: whose it is and how it stands, never its credentials (an admin
/// does not use other users' databases; the owner has them).
#[derive(Serialize)]
struct OwnedInstanceView {
    id: InstanceId,
    owner: String,
    name: InstanceName,
    engine: Engine,
    version: String,
    image: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    oom_killed: bool,
    memory_mb: u32,
    /// `null` for a failed instance, which holds no port.
    port: Option<u16>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    running_operation: Option<OperationId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_attention: Option<String>,
}

impl From<OwnedInstance> for OwnedInstanceView {
    fn from(OwnedInstance { record: r, owner }: OwnedInstance) -> Self {
        OwnedInstanceView {
            engine: r.engine(),
            id: r.id,
            owner,
            name: r.name,
            version: r.version,
            image: r.image,
            status: r.status,
            status_reason: r.status_reason,
            exit_code: r.exit_code,
            oom_killed: r.oom_killed,
            memory_mb: r.memory_mb.0,
            port: r.port,
            created_at: r.created_at,
            running_operation: r.running_operation,
            needs_attention: r.attention,
        }
    }
}

/// Every user's instances, newest first, a page at a time: `next` is the `before` of the next
/// page, `null` on the last.
async fn list_all_instances(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<AllInstancesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let limit = page_size(query.limit, DEFAULT_INSTANCES_PAGE, MAX_INSTANCES_PAGE, "instances")?;
    let before = match &query.before {
        Some(id) => Some(id.parse::<InstanceId>().map_err(|e| ApiError::Unprocessable(format!("before: {e}")))?),
        None => None,
    };
    let filter = OwnerFilter { owner: query.owner, engine: query.engine, status: query.status };
    // One more than asked for tells whether there is a next page.
    let mut instances = state.provisioner.every_users_instances(&filter, before.as_ref(), limit + 1).await?;
    let next = if instances.len() > limit as usize {
        instances.truncate(limit as usize);
        instances.last().map(|i| i.record.id.clone())
    } else {
        None
    };
    #[derive(Serialize)]
    struct Page {
        instances: Vec<OwnedInstanceView>,
        next: Option<InstanceId>,
    }
    Ok(axum::Json(Page { instances: instances.into_iter().map(Into::into).collect(), next }).into_response())
}

async fn list_quarantine(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let containers = state.provisioner.quarantined().await?;
    Ok(axum::Json(serde_json::json!({ "containers": containers })).into_response())
}

async fn remove_quarantined(
    State(state): State<AppState>,
    _admin: Admin,
    Path(container): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.provisioner.remove_quarantined(&container).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn adopt_quarantined(
    State(state): State<AppState>,
    Admin(user): Admin,
    Path(container): Path<String>,
    JsonBody(body): JsonBody<Adopt>,
) -> Result<Response, ApiError> {
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
async fn list_pool(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
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

async fn reconciler_report(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    Ok(axum::Json(state.reconciler.report()).into_response())
}
