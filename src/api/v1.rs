//! The v1 API: JSON in and out, errors as problem+json. Every change is an operation: answered
//! when it has finished (201 or 200, as the old tool did), or at once with `Prefer:
//! respond-async` (202 and where to follow it); an `Idempotency-Key` makes a retry safe.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::CurrentUser;
use super::error::reported_problem;
use super::json::JsonBody;
use super::query::QueryParams;
use super::types::{
    ChangeInstance, ConnectionView, CreateInstance, EngineView, Engines, EventsPage, EventsQuery, InstancePath,
    InstanceView, Instances, ListQuery, Logs, LogsQuery, MemoryBoundsView, OperationView, OperationsPage,
    OperationsQuery, VersionView,
};
use super::{ApiError, AppState};
use crate::model::{InstanceId, OperationId, OperationKind};
use crate::provision::{ErrorReport, Idempotency, Instance, MAX_LOG_LINES, NewInstance, ProvisionError, Running, Seed};
use crate::store::OperationRecord;

/// The routes and their descriptions (see each handler's `utoipa::path`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, create_instance))
        .routes(routes!(get_instance, resize_instance, delete_instance))
        .routes(routes!(stop_instance))
        .routes(routes!(start_instance))
        .routes(routes!(restart_instance))
        .routes(routes!(rotate_password))
        .routes(routes!(instance_logs))
        .routes(routes!(super::stats::instance_stats))
        .routes(routes!(instance_events))
        .routes(routes!(instance_operations))
        .routes(routes!(get_operation))
        .routes(routes!(list_engines))
        .merge(super::backups::routes())
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
pub(super) struct Change {
    respond_async: bool,
    key: Option<String>,
    target: String,
}

/// The document's words for a change's headers; `openapi` adds the answers they bring (202, a
/// bad or reused key).
impl utoipa::IntoParams for Change {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Type};
        let header = |name: &str, schema: ObjectBuilder, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Header)
                .schema(Some(schema.schema_type(Type::String)))
                .description(Some(description))
                .build()
        };
        vec![
            header(
                "Prefer",
                ObjectBuilder::new().examples(["respond-async"]),
                "`respond-async`: answer 202 with the operation at once, instead of when it has finished.",
            ),
            header(
                IDEMPOTENCY_KEY,
                ObjectBuilder::new()
                    .min_length(Some(1))
                    .max_length(Some(MAX_IDEMPOTENCY_KEY_LEN))
                    .pattern(Some("^[!-~]+$")),
                "Makes a retry safe: the same key and request within 24 hours answers what the first \
                 answered; the same key with another request is 422. Visible ASCII, such as a UUID; \
                 another is 400.",
            ),
        ]
    }
}

/// The header that makes a change safe to retry.
pub(super) const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

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
    pub(super) fn idempotency(&self, body: &impl Serialize) -> Option<Idempotency> {
        let key = self.key.clone()?;
        let body = serde_json::to_string(body).unwrap_or_default();
        let request_hash = crate::secrets::hash_token(&format!("{}\n{body}", self.target));
        Some(Idempotency { key, request_hash })
    }

    /// The answer to a change that was started (or found started before, for a replayed key):
    /// 202 and the operation at once if asked for, else what it ends with, as `done` answers it.
    pub(super) async fn answer<T>(
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
        OperationKind::Backup => {
            let backup = state.provisioner.backup_of_operation(user.0.id, operation).await?;
            return Ok((StatusCode::CREATED, axum::Json(super::types::BackupView::from(backup))).into_response());
        }
        OperationKind::Create => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let instance = state.provisioner.get(user.0.id, &operation.instance_id).await.map_err(|e| match e {
        ProvisionError::NotFound => ApiError::NotFound(format!(
            "this Idempotency-Key's first request made or changed instance {}, which has been deleted since",
            operation.instance_id
        )),
        other => other.into(),
    })?;
    Ok(instance_response(status, instance))
}

/// A failed operation's error as the store keeps it (see `ProvisionError::report`).
fn report_of(error: &serde_json::Value) -> Option<ErrorReport> {
    serde_json::from_value(error.clone()).ok()
}

/// What an operation's error says if the store's copy cannot be read (none of dbroker's own).
fn unreadable_report() -> ErrorReport {
    ErrorReport {
        code: "internal".into(),
        detail: crate::provision::INTERNAL_DETAIL.into(),
        last_logs: Vec::new(),
        exceeded: None,
    }
}

impl From<&OperationRecord> for OperationView {
    fn from(operation: &OperationRecord) -> Self {
        let error =
            operation.error.as_ref().map(|error| reported_problem(&report_of(error).unwrap_or_else(unreadable_report)));
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

impl From<Instance> for InstanceView {
    fn from(instance: Instance) -> Self {
        let uri = instance.uri();
        let r = instance.record;
        InstanceView {
            id: r.id.clone(),
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

pub(super) fn instance_response(status: StatusCode, instance: Instance) -> Response {
    (status, axum::Json(InstanceView::from(instance))).into_response()
}

#[utoipa::path(post, path = "/v1/instances", tag = "instances",
    params(Change),
    request_body = CreateInstance,
    responses(
        (status = 201, description = "Created, once the database accepts the returned credentials", body = InstanceView),
        (status = 403, description = "Beyond the user's quota"),
        (status = 409, description = "The name is taken"),
        (status = 502, description = "The database did not become ready (`last_logs` holds its last lines)"),
        (status = 503, description = "No free port, the Docker engine unreachable, the image missing, or the host's memory budget passed"),
    ),
)]
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
        seed: body.from_backup.map(Seed::Backup),
    };
    let started = state.provisioner.create(&user.caller(), request, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::CREATED, instance)).await
}

#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    params(ListQuery),
    responses((status = 200, description = "The caller's instances", body = Instances)),
)]
async fn list_instances(
    State(state): State<AppState>,
    user: CurrentUser,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let body = state
        .provisioner
        .list_rendered(user.0.id, query.engine, RENDERING, |instances| {
            json_bytes(&Instances { instances: instances.into_iter().map(InstanceView::from).collect() })
        })
        .await?;
    Ok(json_response(body))
}

#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances",
    params(InstancePath),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        (status = 404, description = "No such instance of the caller's"),
    ),
)]
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

#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances",
    params(InstancePath, Change),
    responses(
        (status = 204, description = "Deleted: its container, volume, port and record are gone"),
        (status = 404, description = "No such instance of the caller's"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
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

#[utoipa::path(patch, path = "/v1/instances/{id}", tag = "instances",
    params(InstancePath, Change),
    request_body = ChangeInstance,
    responses(
        (status = 200, description = "Resized in place", body = InstanceView),
        (status = 403, description = "Growing beyond the user's memory quota"),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance's status does not allow it"),
        (status = 502, description = "The server refused the change"),
        (status = 503, description = "The Docker engine is unreachable, or the host's memory budget passed"),
    ),
)]
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

#[utoipa::path(post, path = "/v1/instances/{id}/stop", tag = "instances",
    params(InstancePath, Change),
    responses(
        (status = 200, description = "Stopped: port, data and credentials kept", body = InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance's status does not allow it"),
        (status = 502, description = "The database did not become ready, or refused"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn stop_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Stop).await
}

#[utoipa::path(post, path = "/v1/instances/{id}/start", tag = "instances",
    params(InstancePath, Change),
    responses(
        (status = 200, description = "Started, once the database accepts logins again", body = InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance's status does not allow it"),
        (status = 502, description = "The database did not become ready, or refused"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn start_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Start).await
}

#[utoipa::path(post, path = "/v1/instances/{id}/restart", tag = "instances",
    params(InstancePath, Change),
    responses(
        (status = 200, description = "Restarted, once the database accepts logins again", body = InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance's status does not allow it"),
        (status = 502, description = "The database did not become ready, or refused"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn restart_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::Restart).await
}

#[utoipa::path(post, path = "/v1/instances/{id}/rotate-password", tag = "instances",
    params(InstancePath, Change),
    responses(
        (status = 200, description = "A new password, which works at once; the old one is refused", body = InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance's status does not allow it"),
        (status = 502, description = "The database did not become ready, or refused"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn rotate_password(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    act(state, user, change, id, Action::RotatePassword).await
}

#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations",
    params(("id" = OperationId, Path, description = "The operation's id; one on another user's instance is 404")),
    responses(
        (status = 200, description = "The operation", body = OperationView),
        (status = 404, description = "No such operation of the caller's"),
    ),
)]
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

#[utoipa::path(get, path = "/v1/instances/{id}/operations", tag = "operations",
    params(InstancePath, OperationsQuery),
    responses(
        (status = 200, description = "A page of the instance's operations", body = OperationsPage),
        (status = 404, description = "No such instance of the caller's"),
    ),
)]
/// `GET /v1/instances/{id}/operations?limit=&before=`: newest first, a page at a time; `next` is
/// the `before` of the next page, `null` on the last.
async fn instance_operations(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<OperationsQuery>,
) -> Result<Response, ApiError> {
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
    let page = OperationsPage { operations: operations.iter().map(OperationView::from).collect(), next };
    Ok(axum::Json(page).into_response())
}

#[utoipa::path(get, path = "/v1/instances/{id}/logs", tag = "instances",
    params(InstancePath, LogsQuery),
    responses(
        (status = 200, description = "The server's last lines, its password removed", body = Logs),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance has no container"),
        (status = 503, description = "The Docker engine is unreachable"),
    ),
)]
async fn instance_logs(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> Result<Response, ApiError> {
    let tail = query.tail.unwrap_or(DEFAULT_LOG_LINES);
    if tail > MAX_LOG_LINES {
        return Err(ApiError::Unprocessable(format!("tail: at most {MAX_LOG_LINES} lines")));
    }
    let lines = state.provisioner.logs(user.0.id, &parse_id(&id)?, tail).await?;
    Ok(axum::Json(Logs { lines }).into_response())
}

#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "instances",
    params(InstancePath, EventsQuery),
    responses(
        (status = 200, description = "A page of the instance's history", body = EventsPage),
        (status = 404, description = "No such instance of the caller's"),
    ),
)]
/// `GET /v1/instances/{id}/events?limit=&before=`: the latest `limit` events (older than event
/// `before`), oldest first; `next` is the `before` of the page of older ones, `null` on the first.
async fn instance_events(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(query.limit, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE, "events")?;
    // One more than asked for tells whether there are older ones.
    let mut events = state.provisioner.events(user.0.id, &parse_id(&id)?, query.before, limit + 1).await?;
    let next = (events.len() > limit as usize).then(|| {
        events.remove(0);
        events[0].id
    });
    Ok(axum::Json(EventsPage { events, next }).into_response())
}

#[utoipa::path(get, path = "/v1/engines", tag = "engines",
    responses((status = 200, description = "The catalogue", body = Engines)),
)]
/// The catalogue: each engine's versions (and their images), default version, memory bounds in
/// MiB, and the options it takes.
async fn list_engines(State(state): State<AppState>, _user: CurrentUser) -> Response {
    let engines = state
        .config
        .catalogue
        .engines()
        .map(|(engine, catalogue)| EngineView {
            engine,
            versions: catalogue
                .versions
                .iter()
                .map(|(name, spec)| VersionView { version: name.clone(), image: spec.image.clone() })
                .collect(),
            default_version: catalogue.default_version.clone(),
            memory_mb: MemoryBoundsView {
                min: catalogue.memory.min.0,
                max: catalogue.memory.max.0,
                default: catalogue.memory.default.0,
            },
            options: crate::engines::profile(engine).options.iter().map(|o| o.to_string()).collect(),
        })
        .collect();
    axum::Json(Engines { engines }).into_response()
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
