//! The v1 API: JSON in and out, errors as problem+json.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::{Charset, Collation, DatabaseName, Engine, InstanceId, InstanceName, MemoryMb, Status, VersionName};
use crate::provision::{Instance, NewInstance};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route("/v1/instances/{id}", get(get_instance).patch(resize_instance).delete(delete_instance))
        .route("/v1/instances/{id}/stop", post(stop_instance))
        .route("/v1/instances/{id}/start", post(start_instance))
        .route("/v1/instances/{id}/restart", post(restart_instance))
        .route("/v1/instances/{id}/rotate-password", post(rotate_password))
        .route("/v1/instances/{id}/logs", get(instance_logs))
        .route("/v1/instances/{id}/events", get(instance_events))
        .route("/v1/engines", get(list_engines))
}

/// `POST /v1/instances`. Unknown fields are refused: nothing else from a request (an image, a
/// port, privileges, mounts) can reach a container.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInstance {
    engine: Engine,
    version: Option<VersionName>,
    name: Option<InstanceName>,
    memory_mb: Option<MemoryMb>,
    charset: Option<Charset>,
    collation: Option<Collation>,
    database: Option<DatabaseName>,
}

/// `PATCH /v1/instances/{id}`: what can change in place.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeInstance {
    memory_mb: MemoryMb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    engine: Option<Engine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    tail: Option<usize>,
}

/// How many log lines `GET …/logs` returns when the caller does not say.
const DEFAULT_LOG_LINES: usize = 100;

#[derive(Serialize)]
struct InstanceView {
    id: String,
    name: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    charset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    created_at: String,
    connection: ConnectionView,
}

#[derive(Serialize)]
struct ConnectionView {
    host: String,
    /// `null` for a failed instance, which holds no port.
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    password: String,
    uri: Option<String>,
}

impl From<Instance> for InstanceView {
    fn from(instance: Instance) -> Self {
        let uri = instance.uri();
        let r = instance.record;
        InstanceView {
            id: r.id.to_string(),
            name: r.name,
            engine: r.engine,
            version: r.version,
            image: r.image,
            status: r.status,
            status_reason: r.status_reason,
            exit_code: r.exit_code,
            oom_killed: r.oom_killed,
            memory_mb: r.memory_mb.0,
            charset: r.charset,
            collation: r.collation,
            database: r.database,
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

fn instance_response(status: StatusCode, instance: Instance) -> Response {
    (status, axum::Json(InstanceView::from(instance))).into_response()
}

async fn create_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let request = NewInstance {
        engine: body.engine,
        version: body.version,
        name: body.name,
        memory: body.memory_mb,
        charset: body.charset,
        collation: body.collation,
        database: body.database,
    };
    let instance = state.provisioner.create(&user.caller(), request).await?;
    Ok(instance_response(StatusCode::CREATED, instance))
}

async fn list_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let instances = state.provisioner.list(user.0.id, query.engine).await?;
    let views: Vec<InstanceView> = instances.into_iter().map(InstanceView::from).collect();
    // A struct, not `json!`: no intermediate `Value` tree on the busiest route.
    #[derive(Serialize)]
    struct Instances {
        instances: Vec<InstanceView>,
    }
    Ok(axum::Json(Instances { instances: views }).into_response())
}

async fn get_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.get(user.0.id, &parse_id(&id)?).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn delete_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.provisioner.delete(&user.caller(), &parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resize_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ChangeInstance>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.resize(&user.caller(), &parse_id(&id)?, body.memory_mb).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn stop_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.stop(&user.caller(), &parse_id(&id)?).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn start_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.start(&user.caller(), &parse_id(&id)?).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn restart_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.restart(&user.caller(), &parse_id(&id)?).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn rotate_password(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.rotate_password(&user.caller(), &parse_id(&id)?).await?;
    Ok(instance_response(StatusCode::OK, instance))
}

async fn instance_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let lines = state.provisioner.logs(user.0.id, &parse_id(&id)?, query.tail.unwrap_or(DEFAULT_LOG_LINES)).await?;
    Ok(axum::Json(serde_json::json!({ "lines": lines })).into_response())
}

async fn instance_events(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let events = state.provisioner.events(user.0.id, &parse_id(&id)?).await?;
    Ok(axum::Json(serde_json::json!({ "events": events })).into_response())
}

/// The catalogue: each engine's versions (and their images), default version, memory bounds in
/// MiB, and the options it takes.
async fn list_engines(State(state): State<AppState>, _user: CurrentUser) -> Response {
    let engines: Vec<serde_json::Value> = state
        .config
        .catalogue
        .engines()
        .map(|(engine, catalogue)| {
            let versions: Vec<serde_json::Value> = catalogue
                .versions
                .iter()
                .map(|(name, spec)| serde_json::json!({ "version": name, "image": spec.image }))
                .collect();
            serde_json::json!({
                "engine": engine,
                "versions": versions,
                "default_version": catalogue.default_version,
                "memory_mb": catalogue.memory,
                "options": crate::engines::options(engine),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "engines": engines })).into_response()
}

/// An id that cannot exist is simply not found, as any id the caller does not own.
pub(super) fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no instance with id {id:?}")))
}
