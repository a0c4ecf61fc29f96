//! The v1 API: JSON in and out, errors as problem+json. Every change is an operation: answered
//! when it has finished (201 or 200, as the old tool did), or at once with `Prefer:
//! respond-async` (202 and where to follow it); an `Idempotency-Key` makes a retry safe.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::CurrentUser;
use super::error::reported_problem;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::{
    Charset, Collation, DatabaseName, Engine, InstanceId, InstanceName, MemoryMb, OperationId, OperationKind,
    OperationState, Status, VersionName,
};
use crate::provision::{ErrorReport, Idempotency, Instance, NewInstance, ProvisionError, Running};
use crate::store::{OperationRecord, Step};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", get(list_instances).post(create_instance))
        .route("/v1/instances/{id}", get(get_instance).patch(resize_instance).delete(delete_instance))
        .route("/v1/instances/{id}/stop", post(stop_instance))
        .route("/v1/instances/{id}/start", post(start_instance))
        .route("/v1/instances/{id}/restart", post(restart_instance))
        .route("/v1/instances/{id}/rotate-password", post(rotate_password))
        .route("/v1/instances/{id}/logs", get(instance_logs))
        .route("/v1/instances/{id}/stats", get(super::stats::instance_stats))
        .route("/v1/instances/{id}/events", get(instance_events))
        .route("/v1/instances/{id}/operations", get(instance_operations))
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/engines", get(list_engines))
}

/// `POST /v1/instances`. Unknown fields are refused: nothing else from a request (an image, a
/// port, privileges, mounts) can reach a container.
#[derive(Debug, Deserialize, Serialize)]
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
#[derive(Debug, Deserialize, Serialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationsQuery {
    limit: Option<u32>,
    before: Option<OperationId>,
}

/// How many log lines `GET …/logs` returns when the caller does not say.
const DEFAULT_LOG_LINES: usize = 100;

/// How many events a page holds when the caller does not say, and at most.
const DEFAULT_EVENTS_PAGE: u32 = 100;
const MAX_EVENTS_PAGE: u32 = 1000;

/// How many operations a page holds when the caller does not say, and at most.
const DEFAULT_OPERATIONS_PAGE: u32 = 20;
const MAX_OPERATIONS_PAGE: u32 = 100;

/// The longest `Idempotency-Key` taken: enough for any UUID or ULID, with room to spare.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// How a change was asked for: `Prefer: respond-async` (answer 202 at once, RFC 7240), and an
/// `Idempotency-Key` with what identifies the request besides its body (method and path).
struct Change {
    respond_async: bool,
    key: Option<String>,
    target: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Change {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let respond_async = parts.headers.get_all("prefer").iter().any(|value| {
            value.to_str().is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("respond-async")))
        });
        let key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let key = value.to_str().map(str::trim).unwrap_or_default();
                if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ApiError::BadRequest(format!(
                        "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters, \
                         such as a UUID"
                    )));
                }
                Some(key.to_string())
            }
        };
        Ok(Change { respond_async, key, target: format!("{} {}", parts.method, parts.uri.path()) })
    }
}

impl Change {
    /// The key, with a hash of the request it came with: method, path and body (as parsed, so
    /// the same fields in another order or spacing are the same request).
    fn idempotency(&self, body: &impl Serialize) -> Option<Idempotency> {
        let key = self.key.clone()?;
        let body = serde_json::to_string(body).unwrap_or_default();
        let request_hash = crate::secrets::hash_token(&format!("{}\n{body}", self.target));
        Some(Idempotency { key, request_hash })
    }

    /// The answer to a change that was started (or found started before, for a replayed key):
    /// 202 and the operation at once if asked for, else what it ends with, as `done` answers it.
    async fn answer<T>(
        &self,
        state: &AppState,
        user: &CurrentUser,
        started: Result<Running<T>, ProvisionError>,
        done: impl FnOnce(T) -> Response,
    ) -> Result<Response, ApiError> {
        match started {
            Ok(running) if self.respond_async => Ok(accepted(&running.operation)),
            Ok(running) => Ok(done(running.outcome().await?)),
            Err(ProvisionError::Replay(first)) if self.respond_async => {
                let current = state.provisioner.operation(&user.caller(), &first.id).await?;
                Ok(accepted(&current))
            }
            Err(ProvisionError::Replay(first)) => {
                let ended = state.provisioner.wait_for(&first.id).await?;
                replayed(state, user, &ended).await
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// `202 Accepted`, where to follow the operation, and the operation.
fn accepted(operation: &OperationRecord) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(OperationView::from(operation))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/operations/{}", operation.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response.headers_mut().insert("preference-applied", HeaderValue::from_static("respond-async"));
    response
}

/// What a request answers when its idempotency key names an operation that has ended: what
/// the first request answered, with the instance as it is now.
async fn replayed(state: &AppState, user: &CurrentUser, operation: &OperationRecord) -> Result<Response, ApiError> {
    if let Some(error) = &operation.error {
        let report =
            report_of(error).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("an unreadable error report")))?;
        return Err(ApiError::Reported(report));
    }
    let status = match operation.kind {
        OperationKind::Delete => return Ok(StatusCode::NO_CONTENT.into_response()),
        OperationKind::Create => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let instance = state.provisioner.get(user.0.id, &operation.instance_id).await?;
    Ok(instance_response(status, instance))
}

/// A failed operation's error as the store keeps it (see `ProvisionError::report`).
fn report_of(error: &serde_json::Value) -> Option<ErrorReport> {
    serde_json::from_value(error.clone()).ok()
}

/// An operation as the API shows it.
#[derive(Serialize)]
struct OperationView {
    id: OperationId,
    instance_id: InstanceId,
    kind: OperationKind,
    state: OperationState,
    requested_by: String,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    steps: Vec<Step>,
    /// A failed operation's error, as the problem detail its request answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

impl From<&OperationRecord> for OperationView {
    fn from(operation: &OperationRecord) -> Self {
        let error = operation
            .error
            .as_ref()
            .map(|error| report_of(error).map_or_else(|| error.clone(), |r| reported_problem(&r)));
        OperationView {
            id: operation.id.clone(),
            instance_id: operation.instance_id.clone(),
            kind: operation.kind,
            state: operation.state,
            requested_by: operation.requested_by.clone(),
            created_at: operation.created_at.clone(),
            updated_at: operation.updated_at.clone(),
            finished_at: operation.finished_at.clone(),
            steps: operation.steps.clone(),
            error,
        }
    }
}

#[derive(Serialize)]
struct InstanceView {
    id: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    charset: Option<Charset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collation: Option<Collation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<DatabaseName>,
    created_at: String,
    connection: ConnectionView,
    /// The operation in flight on the instance, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    running_operation: Option<OperationId>,
    /// Why the reconciler stopped retrying a repair for now, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_attention: Option<String>,
}

#[derive(Serialize)]
struct ConnectionView {
    host: String,
    /// `null` for a failed instance, which holds no port.
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// `null` if this master key cannot decrypt it (see `needs_attention`).
    password: Option<String>,
    uri: Option<String>,
}

impl From<Instance> for InstanceView {
    fn from(instance: Instance) -> Self {
        let uri = instance.uri();
        let r = instance.record;
        InstanceView {
            id: r.id.to_string(),
            engine: r.engine(),
            name: r.name,
            version: r.version,
            image: r.image,
            status: r.status,
            status_reason: r.status_reason,
            exit_code: r.exit_code,
            oom_killed: r.oom_killed,
            memory_mb: r.memory_mb.0,
            charset: r.settings.charset().cloned(),
            collation: r.settings.collation().cloned(),
            database: r.settings.database().cloned(),
            created_at: r.created_at,
            running_operation: r.running_operation,
            needs_attention: r.attention,
            connection: ConnectionView {
                host: instance.host,
                port: r.port,
                user: r.username,
                password: instance.password.as_ref().map(|p| p.expose().to_string()),
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
    change: Change,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&body);
    let request = NewInstance {
        engine: body.engine,
        version: body.version,
        name: body.name,
        memory: body.memory_mb,
        charset: body.charset,
        collation: body.collation,
        database: body.database,
    };
    let started = state.provisioner.create(&user.caller(), request, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::CREATED, instance)).await
}

async fn list_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    // A struct, not `json!`: no intermediate `Value` tree on the busiest route.
    #[derive(Serialize)]
    struct Instances {
        instances: Vec<InstanceView>,
    }
    let body = state
        .provisioner
        .list_rendered(user.0.id, query.engine, RENDERING, |instances| {
            json_bytes(&Instances { instances: instances.into_iter().map(InstanceView::from).collect() })
        })
        .await?;
    Ok(json_response(body))
}

async fn get_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body = state
        .provisioner
        .get_rendered(user.0.id, &id, RENDERING, |instance| json_bytes(&InstanceView::from(instance)))
        .await?;
    Ok(json_response(body))
}

/// What the store keeps this API's read answers as (see `Provisioner::list_rendered`).
const RENDERING: &str = "v1 json";

fn json_bytes(view: &impl Serialize) -> anyhow::Result<Bytes> {
    Ok(serde_json::to_vec(view)?.into())
}

/// A JSON body rendered before, answered as `axum::Json` answers it.
fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

async fn delete_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&());
    let started = state.provisioner.delete(&user.caller(), &parse_id(&id)?, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |()| StatusCode::NO_CONTENT.into_response()).await
}

async fn resize_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ChangeInstance>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&body);
    let started = state.provisioner.resize(&user.caller(), &parse_id(&id)?, body.memory_mb, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::OK, instance)).await
}

/// The verbs on an instance that take no body: stop, start, restart, rotate-password.
#[derive(Clone, Copy)]
enum Action {
    Stop,
    Start,
    Restart,
    RotatePassword,
}

async fn act(
    state: AppState,
    user: CurrentUser,
    change: Change,
    id: String,
    action: Action,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let idempotency = change.idempotency(&());
    let (caller, key, p) = (user.caller(), idempotency.as_ref(), &state.provisioner);
    let started = match action {
        Action::Stop => p.stop(&caller, &id, key).await,
        Action::Start => p.start(&caller, &id, key).await,
        Action::Restart => p.restart(&caller, &id, key).await,
        Action::RotatePassword => p.rotate_password(&caller, &id, key).await,
    };
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::OK, instance)).await
}

async fn stop_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Stop).await
}

async fn start_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Start).await
}

async fn restart_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Restart).await
}

async fn rotate_password(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::RotatePassword).await
}

/// `GET /v1/operations/{id}`: for the instance's owner and admins; anyone else 404.
async fn get_operation(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no operation with id {id:?}"));
    let id: OperationId = id.parse().map_err(|_| not_found())?;
    let operation = state.provisioner.operation(&user.caller(), &id).await.map_err(|e| match e {
        ProvisionError::NotFound => not_found(),
        other => other.into(),
    })?;
    Ok(axum::Json(OperationView::from(&operation)).into_response())
}

/// `GET /v1/instances/{id}/operations?limit=&before=`: newest first, a page at a time; `next` is
/// the `before` of the next page, `null` on the last.
async fn instance_operations(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    query: Result<Query<OperationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let limit = page_size(query.limit, DEFAULT_OPERATIONS_PAGE, MAX_OPERATIONS_PAGE, "operations")?;
    // One more than asked for tells whether there is a next page.
    let mut operations =
        state.provisioner.operations(user.0.id, &parse_id(&id)?, query.before.as_ref(), limit + 1).await?;
    let next = if operations.len() > limit as usize {
        operations.truncate(limit as usize);
        operations.last().map(|o| o.id.clone())
    } else {
        None
    };
    #[derive(Serialize)]
    struct Page {
        operations: Vec<OperationView>,
        next: Option<OperationId>,
    }
    let page = Page { operations: operations.iter().map(OperationView::from).collect(), next };
    Ok(axum::Json(page).into_response())
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

/// `GET /v1/instances/{id}/events?limit=&before=`: the latest `limit` events (older than event
/// `before`), oldest first; `next` is the `before` of the page of older ones, `null` on the first.
async fn instance_events(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let limit = page_size(query.limit, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE, "events")?;
    // One more than asked for tells whether there are older ones.
    let mut events = state.provisioner.events(user.0.id, &parse_id(&id)?, query.before, limit + 1).await?;
    let next = (events.len() > limit as usize).then(|| {
        events.remove(0);
        events[0].id
    });
    #[derive(Serialize)]
    struct Page {
        events: Vec<crate::store::Event>,
        next: Option<i64>,
    }
    Ok(axum::Json(Page { events, next }).into_response())
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
                "options": crate::engines::profile(engine).options,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "engines": engines })).into_response()
}

/// A page's size: the one asked for, within 1 and `max`, or `default`.
pub(super) fn page_size(asked: Option<u32>, default: u32, max: u32, what: &str) -> Result<u32, ApiError> {
    match asked.unwrap_or(default) {
        size @ 1.. if size <= max => Ok(size),
        _ => Err(ApiError::Unprocessable(format!("limit: a page holds 1 to {max} {what}"))),
    }
}

/// An id that cannot exist is simply not found, as any id the caller does not own.
pub(super) fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no instance with id {id:?}")))
}
