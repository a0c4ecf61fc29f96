//! The v1 API: JSON in and out, errors as problem+json.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::{Charset, Collation, Engine, InstanceId, InstanceName, MemoryMb, Status};
use crate::provision::{Instance, NewInstance};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route(
            "/v1/instances/{id}",
            get(get_instance).delete(delete_instance),
        )
}

/// `POST /v1/instances`. Unknown fields are refused: nothing else from a request (an image, a
/// port, privileges, mounts) can reach a container.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstance {
    engine: Engine,
    name: Option<InstanceName>,
    memory_mb: Option<MemoryMb>,
    charset: Option<Charset>,
    collation: Option<Collation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    engine: Option<Engine>,
}

#[derive(Serialize)]
struct InstanceView {
    id: String,
    name: String,
    engine: Engine,
    image: String,
    status: Status,
    memory_mb: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    charset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collation: Option<String>,
    created_at: String,
    connection: ConnectionView,
}

#[derive(Serialize)]
struct ConnectionView {
    host: String,
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    password: String,
    uri: String,
}

impl From<Instance> for InstanceView {
    fn from(instance: Instance) -> Self {
        let uri = instance.uri();
        let r = instance.record;
        InstanceView {
            id: r.id.to_string(),
            name: r.name,
            engine: r.engine,
            image: r.image,
            status: r.status,
            memory_mb: r.memory_mb.0,
            charset: r.charset,
            collation: r.collation,
            created_at: r.created_at,
            connection: ConnectionView {
                host: instance.host,
                port: r.port,
                user: r.username,
                password: instance.password.expose().to_string(),
                uri,
            },
        }
    }
}

async fn create_instance(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let request = NewInstance {
        engine: body.engine,
        name: body.name,
        memory: body.memory_mb,
        charset: body.charset,
        collation: body.collation,
    };
    let instance = state.provisioner.create(user.id, request).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InstanceView::from(instance)),
    )
        .into_response())
}

async fn list_instances(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let instances = state.provisioner.list(user.id, query.engine).await?;
    let views: Vec<InstanceView> = instances.into_iter().map(InstanceView::from).collect();
    Ok(axum::Json(serde_json::json!({ "instances": views })).into_response())
}

async fn get_instance(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.get(user.id, &parse_id(&id)?).await?;
    Ok(axum::Json(InstanceView::from(instance)).into_response())
}

async fn delete_instance(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.provisioner.delete(user.id, &parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An id that cannot exist is simply not found, as any id the caller does not own.
pub(super) fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("no instance with id {id:?}")))
}
