//! The v1 backup routes: take, list, read and delete backups, set an instance's backup policy,
//! restore in place, clone, and export and import an engine's own dump. A restore into a new
//! instance is a create with `from_backup` (see `v1::create_instance`).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::query::QueryParams;
use super::types::{
    BackupPath, BackupPolicyView, BackupView, Backups, BackupsQuery, CloneInstance, InstancePath, PutBackupPolicy,
    RestoreInstance, TakeBackup,
};
use super::v1::{Change, instance_response, parse_id};
use super::{ApiError, AppState};
use crate::model::BackupId;
use crate::provision::ProvisionError;
use crate::store::{BackupPolicy, BackupRecord, NewPolicy, format_time};

impl From<BackupRecord> for BackupView {
    fn from(b: BackupRecord) -> Self {
        BackupView {
            id: b.id,
            instance_id: b.instance_id,
            engine: b.engine,
            version: b.version,
            target: b.target,
            kind: b.kind,
            state: b.state,
            reason: b.reason,
            size_bytes: b.size_bytes,
            sha256: b.sha256,
            encrypted: b.encrypted,
            started_at: format_time(b.started_at),
            finished_at: b.finished_at.map(format_time),
            verified_at: b.verified_at.map(format_time),
            verify_error: b.verify_error,
            operation_id: b.operation_id,
        }
    }
}

impl From<BackupPolicy> for BackupPolicyView {
    fn from(p: BackupPolicy) -> Self {
        BackupPolicyView {
            schedule: p.schedule,
            target: p.target,
            keep_last: p.keep_last,
            keep_days: p.keep_days,
            verify: p.verify,
            last_run_at: p.last_run_at.map(format_time),
            next_run_at: p.next_due_at.map(format_time),
        }
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(take_backup, instance_backups))
        .routes(routes!(list_backups))
        .routes(routes!(get_backup, delete_backup))
        .routes(routes!(put_backup_policy, get_backup_policy, delete_backup_policy))
        .routes(routes!(restore_instance))
        .routes(routes!(clone_instance))
        .routes(routes!(export_instance))
        .routes(routes!(import_instance))
}

fn parse_backup_id(id: &str) -> Result<BackupId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no backup with id {id:?}")))
}

/// A backup of the caller's that does not exist is 404 saying which.
fn backup_not_found(id: &BackupId) -> impl FnOnce(ProvisionError) -> ApiError + '_ {
    move |error| match error {
        ProvisionError::NotFound => ApiError::NotFound(format!("no backup with id {id}")),
        other => other.into(),
    }
}

#[utoipa::path(post, path = "/v1/instances/{id}/backups", tag = "backups",
    params(InstancePath, Change),
    request_body = TakeBackup,
    responses(
        (status = 201, description = "Backed up: the object is complete on its target", body = BackupView),
        (status = 403, description = "Beyond the user's backup quota"),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running, or no backup target is configured"),
        (status = 422, description = "No such target"),
        (status = 502, description = "The dump failed, or the target refused or could not be reached (the backup is recorded as failed, with the reason)"),
    ),
)]
async fn take_backup(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TakeBackup>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&body);
    let started = state
        .provisioner
        .back_up(&user.caller(), &parse_id(&id)?, body.target, body.verify.unwrap_or(false), idempotency.as_ref())
        .await;
    change
        .answer(&state, &user, started, |backup| {
            (StatusCode::CREATED, axum::Json(BackupView::from(backup))).into_response()
        })
        .await
}

#[utoipa::path(get, path = "/v1/instances/{id}/backups", tag = "backups",
    params(InstancePath, BackupsQuery),
    responses(
        (status = 200, description = "A page of the instance's backups, newest first", body = Backups),
        (status = 404, description = "No such instance of the caller's"),
        (status = 422, description = "A `before` backup that does not exist (or no longer does), or another `instance` than the path's"),
    ),
)]
async fn instance_backups(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<BackupsQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if query.instance.as_ref().is_some_and(|other| *other != id) {
        return Err(ApiError::Unprocessable("instance: the path names the instance already".into()));
    }
    state.provisioner.get(user.0.id, &id).await?;
    page_of_backups(&state, &user, Some(&id), query).await
}

#[utoipa::path(get, path = "/v1/backups", tag = "backups",
    params(BackupsQuery),
    responses(
        (status = 200, description = "A page of the caller's backups, newest first, also of deleted instances", body = Backups),
        (status = 422, description = "A `before` backup that does not exist (or no longer does)"),
    ),
)]
async fn list_backups(
    State(state): State<AppState>,
    user: CurrentUser,
    QueryParams(query): QueryParams<BackupsQuery>,
) -> Result<Response, ApiError> {
    let instance = query.instance.clone();
    page_of_backups(&state, &user, instance.as_ref(), query).await
}

/// How many backups a page holds when the caller does not say, and at most.
const DEFAULT_BACKUPS_PAGE: u32 = 20;
const MAX_BACKUPS_PAGE: u32 = 100;

async fn page_of_backups(
    state: &AppState,
    user: &CurrentUser,
    instance: Option<&crate::model::InstanceId>,
    query: BackupsQuery,
) -> Result<Response, ApiError> {
    let limit = super::v1::page_size(query.limit, DEFAULT_BACKUPS_PAGE, MAX_BACKUPS_PAGE, "backups")?;
    // One more than asked for tells whether there is a next page.
    let mut backups = state.provisioner.list_backups(user.0.id, instance, query.before.as_ref(), limit + 1).await?;
    let next = if backups.len() > limit as usize {
        backups.truncate(limit as usize);
        backups.last().map(|b| b.id.clone())
    } else {
        None
    };
    Ok(axum::Json(Backups { backups: backups.into_iter().map(BackupView::from).collect(), next }).into_response())
}

#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups",
    params(BackupPath),
    responses(
        (status = 200, description = "The backup", body = BackupView),
        (status = 404, description = "No such backup of the caller's"),
    ),
)]
async fn get_backup(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_backup_id(&id)?;
    let backup = state.provisioner.owned_backup(user.0.id, &id).await.map_err(backup_not_found(&id))?;
    Ok(axum::Json(BackupView::from(backup)).into_response())
}

#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups",
    params(BackupPath),
    responses(
        (status = 204, description = "Deleted: its object and its record are gone"),
        (status = 404, description = "No such backup of the caller's"),
        (status = 409, description = "The backup is still running"),
        (status = 502, description = "The target refused or could not be reached; the backup is kept"),
    ),
)]
async fn delete_backup(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_backup_id(&id)?;
    state.provisioner.delete_backup(user.0.id, &id).await.map_err(backup_not_found(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(put, path = "/v1/instances/{id}/backup-policy", tag = "backups",
    params(InstancePath),
    request_body = PutBackupPolicy,
    responses(
        (status = 200, description = "The policy, with its next run", body = BackupPolicyView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "No backup target is configured"),
        (status = 422, description = "A schedule that is not a 5-field cron line, or no such target"),
    ),
)]
async fn put_backup_policy(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PutBackupPolicy>,
) -> Result<Response, ApiError> {
    let policy = NewPolicy {
        schedule: &body.schedule,
        target: body.target.as_ref(),
        keep_last: body.keep_last,
        keep_days: body.keep_days,
        verify: body.verify.unwrap_or(false),
    };
    let policy = state.provisioner.put_backup_policy(user.0.id, &parse_id(&id)?, &policy).await?;
    Ok(axum::Json(BackupPolicyView::from(policy)).into_response())
}

#[utoipa::path(get, path = "/v1/instances/{id}/backup-policy", tag = "backups",
    params(InstancePath),
    responses(
        (status = 200, description = "The policy, with its last and next run", body = BackupPolicyView),
        (status = 404, description = "No such instance of the caller's, or it has no policy"),
    ),
)]
async fn get_backup_policy(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = state.provisioner.backup_policy(user.0.id, &parse_id(&id)?).await?;
    Ok(axum::Json(BackupPolicyView::from(policy)).into_response())
}

#[utoipa::path(delete, path = "/v1/instances/{id}/backup-policy", tag = "backups",
    params(InstancePath),
    responses(
        (status = 204, description = "No more scheduled backups; those taken are kept"),
        (status = 404, description = "No such instance of the caller's"),
    ),
)]
async fn delete_backup_policy(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.provisioner.delete_backup_policy(user.0.id, &parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/v1/instances/{id}/restore", tag = "backups",
    params(InstancePath, Change),
    request_body = RestoreInstance,
    responses(
        (status = 200, description = "Restored in place, after a safety backup", body = super::types::InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running, or the backup cannot be restored (corrupted, truncated, sealed to another key): nothing was changed"),
        (status = 422, description = "No such backup of the caller's, another engine's, or one the server refused (the instance is as it was)"),
        (status = 502, description = "The target refused or could not be reached"),
    ),
)]
async fn restore_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RestoreInstance>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&body);
    let started =
        state.provisioner.restore_in_place(&user.caller(), &parse_id(&id)?, &body.backup, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::OK, instance)).await
}

#[utoipa::path(post, path = "/v1/instances/{id}/clone", tag = "backups",
    params(InstancePath, Change),
    request_body = CloneInstance,
    responses(
        (status = 201, description = "A new instance with a copy of the data and its own credentials", body = super::types::InstanceView),
        (status = 403, description = "Beyond the user's quota"),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running, or the name is taken"),
    ),
)]
async fn clone_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CloneInstance>,
) -> Result<Response, ApiError> {
    let idempotency = change.idempotency(&body);
    let started =
        state.provisioner.clone_instance(&user.caller(), &parse_id(&id)?, body.name, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::CREATED, instance)).await
}

#[utoipa::path(get, path = "/v1/instances/{id}/export", tag = "backups",
    params(InstancePath),
    responses(
        (status = 200, description = "A consistent dump the engine's own client loads: SQL for MySQL and PostgreSQL, an RDB file for Redis. A dump that fails half way breaks the transfer", content_type = "application/octet-stream"),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running"),
    ),
)]
async fn export_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let export = state.provisioner.export(user.0.id, &parse_id(&id)?).await?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", export.file_name))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, Body::from_stream(export.bytes)).into_response())
}

#[utoipa::path(post, path = "/v1/instances/{id}/import", tag = "backups",
    params(InstancePath, Change),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A dump in the engine's own format (as `export` gives): it replaces the instance's data"),
    responses(
        (status = 200, description = "Loaded: the instance holds the dump's data", body = super::types::InstanceView),
        (status = 404, description = "No such instance of the caller's"),
        (status = 409, description = "The instance is not running"),
        (status = 413, description = "Larger than the configured import limit"),
        (status = 422, description = "An empty body, or a dump the server did not load (its message says why); the data is as it was"),
    ),
)]
async fn import_instance(
    State(state): State<AppState>,
    user: CurrentUser,
    change: Change,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    state.provisioner.get(user.0.id, &id).await?;
    let limit = state.provisioner.import_max_bytes();
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let upload =
        crate::backups::Spooled::from_stream(&state.config.data_dir, stream, limit).await.map_err(|e| match e {
            crate::backups::SpoolError::TooLarge(limit) => ApiError::UploadTooLarge(format!(
                "the dump is larger than the import limit of {limit} bytes (backups.import_max_bytes)"
            )),
            crate::backups::SpoolError::Read(e) => ApiError::BadRequest(format!("could not read the upload: {e}")),
            crate::backups::SpoolError::Io(e) => ApiError::Internal(e.into()),
        })?;
    if upload.is_empty() {
        return Err(ApiError::Unprocessable(
            "the request has no dump: send the engine's own dump (as export gives it) as the body".into(),
        ));
    }
    let idempotency = change.idempotency(&upload.sha256());
    let started = state.provisioner.import(&user.caller(), &id, upload, idempotency.as_ref()).await;
    change.answer(&state, &user, started, |instance| instance_response(StatusCode::OK, instance)).await
}
