//! Routes for admins only: every user's instances, the quarantine of containers found with no
//! record, what the reconciler has repaired, the warm pool, and users (see `admin_users`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::query::QueryParams;
use super::types::{
    Adopt, Adopted, AllInstancesQuery, OwnedInstanceView, OwnedInstancesPage, PoolMember, PoolMembers, QuarantineList,
    ReconcilerView,
};
use super::v1::page_size;
use super::{ApiError, AppState};
use crate::model::InstanceId;
use crate::provision::{Caller, OwnerFilter};
use crate::store::OwnedInstance;

/// The routes and their descriptions (see each handler's `utoipa::path`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(super::admin_users::routes())
        .routes(routes!(list_all_instances))
        .routes(routes!(list_quarantine))
        .routes(routes!(remove_quarantined))
        .routes(routes!(adopt_quarantined))
        .routes(routes!(reconciler_report))
        .routes(routes!(list_pool))
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

/// How many instances a page holds when the caller does not say, and at most.
const DEFAULT_INSTANCES_PAGE: u32 = 100;
const MAX_INSTANCES_PAGE: u32 = 1000;

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

#[utoipa::path(get, path = "/v1/admin/instances", tag = "admin",
    params(AllInstancesQuery),
    responses((status = 200, description = "A page of every user's instances", body = OwnedInstancesPage)),
)]
/// Every user's instances, newest first, a page at a time: `next` is the `before` of the next
/// page, `null` on the last.
async fn list_all_instances(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(query): QueryParams<AllInstancesQuery>,
) -> Result<Response, ApiError> {
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
    Ok(axum::Json(OwnedInstancesPage { instances: instances.into_iter().map(Into::into).collect(), next })
        .into_response())
}

#[utoipa::path(get, path = "/v1/admin/quarantine", tag = "admin",
    responses((status = 200, description = "Containers found with no record", body = QuarantineList)),
)]
async fn list_quarantine(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let containers = state.provisioner.quarantined().await?;
    Ok(axum::Json(QuarantineList { containers }).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/quarantine/{container}", tag = "admin",
    params(("container" = String, Path, description = "The quarantined container's name (`PREFIX-ID`)")),
    responses(
        (status = 204, description = "Removed, with its volume"),
        (status = 404, description = "No such quarantined container"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn remove_quarantined(
    State(state): State<AppState>,
    _admin: Admin,
    Path(container): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.provisioner.remove_quarantined(&container).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/quarantine/{container}/adopt", tag = "admin",
    params(("container" = String, Path, description = "The quarantined container's name (`PREFIX-ID`)")),
    request_body = Adopt,
    responses(
        (status = 201, description = "Given a record again, owned by `owner`", body = Adopted),
        (status = 403, description = "Beyond the owner's quota"),
        (status = 404, description = "No such quarantined container"),
        (status = 409, description = "It cannot be adopted as it is"),
        (status = 502, description = "Its database did not become ready, or refused"),
        (status = 503, description = "The Docker engine is unreachable, no free port, or the host's memory budget passed"),
    ),
)]
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
    Ok((StatusCode::CREATED, axum::Json(Adopted { id: instance.record.id, owner: owner.name })).into_response())
}

#[utoipa::path(get, path = "/v1/admin/pool", tag = "admin",
    responses((status = 200, description = "The warm pool's members", body = PoolMembers)),
)]
/// The warm pool's members: started, owned by nobody, listed to no user.
async fn list_pool(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let members = state
        .provisioner
        .pool()
        .await?
        .into_iter()
        .map(|m| PoolMember {
            engine: m.engine(),
            id: m.id,
            version: m.version,
            status: m.status,
            port: m.port,
            created_at: m.created_at,
        })
        .collect();
    Ok(axum::Json(PoolMembers { members }).into_response())
}

#[utoipa::path(get, path = "/v1/admin/reconciler", tag = "admin",
    responses((status = 200, description = "What the reconciler of this process has done", body = ReconcilerView)),
)]
async fn reconciler_report(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let report = state.reconciler.report();
    let repairs = report.repairs.into_iter().map(|(repair, count)| (repair.to_string(), count)).collect();
    Ok(axum::Json(ReconcilerView { leader: report.leader, passes: report.passes, repairs }).into_response())
}
