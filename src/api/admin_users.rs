//! `/v1/admin/users`, for admins only: add a user (their token shown once), list them, disable
//! and enable them, rotate a token (the new one shown once), set their quota, remove them. The
//! same service as `dbroker user ...` (see `provision::users`). Every change forgets the user's
//! tokens in this process's authentication cache, so that the next request with one sees it.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::admin::Admin;
use super::json::JsonBody;
use super::types::{AddUser, ChangeQuota, Quota, UserView, UserWithToken, Users};
use super::{ApiError, AppState};
use crate::model::UserName;
use crate::provision::{NewUser, ProvisionError, WithToken};
use crate::store::{LimitChange, QuotaChange, Usage, User};

/// The routes and their descriptions (see each handler's `utoipa::path`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add_user, list_users))
        .routes(routes!(remove_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(rotate_token))
        .routes(routes!(change_quota))
}

fn limit_change<T>(field: Option<Option<T>>) -> LimitChange<T> {
    match field {
        None => LimitChange::Keep,
        Some(None) => LimitChange::Default,
        Some(Some(value)) => LimitChange::Set(value),
    }
}

impl UserView {
    fn of(user: User, usage: Option<Usage>) -> Self {
        UserView {
            admin: user.is_admin,
            demo: user.is_demo,
            disabled: user.is_disabled(),
            disabled_at: user.disabled_at,
            created_at: user.created_at,
            quota: user.quota,
            usage,
            name: user.name,
        }
    }
}

/// The answer that shows a token once, which no cache between dbroker and the admin may keep.
fn token_response(status: StatusCode, shown: WithToken) -> Response {
    let warning = shown.was_demo.then_some(
        "this demo user is a real user now, with a token of their own: take them out of --demo-users, or \
         dbroker refuses to start",
    );
    let body = UserWithToken {
        user: UserView::of(shown.user, None),
        token: shown.token.expose().to_string(),
        warning: warning.map(String::from),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn user_response(user: User) -> Response {
    axum::Json(UserView::of(user, None)).into_response()
}

/// A name in the path that no user can have is simply not found, as a valid one no user has.
fn user_name(name: &str) -> Result<UserName, ApiError> {
    name.parse().map_err(|_| ApiError::NotFound(format!("no user named {name:?}")))
}

/// An admin may not lock themself out over HTTP: another admin, or `dbroker user COMMAND` on the
/// host, may. Rotating their own token counts: the old token is refused at once and the new one
/// is in that one answer, so an answer lost on the way (a timeout, a proxy) would lock them out.
fn not_yourself(admin: &Admin, name: &UserName, what: &str, command: &str) -> Result<(), ApiError> {
    if admin.0.0.name == name.as_str() {
        return Err(ProvisionError::Conflict(format!(
            "you cannot {what} over HTTP: another admin can, or `dbroker user {command} {name}` on dbroker's host"
        ))
        .into());
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/admin/users", tag = "users",
    request_body = AddUser,
    responses(
        (status = 201, description = "Added; the answer holds their token, once", body = UserWithToken,
            headers(("Cache-Control" = String, description = "`no-store`: the token is shown once"))),
        (status = 409, description = "The name is in use"),
    ),
)]
async fn add_user(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<AddUser>,
) -> Result<Response, ApiError> {
    let added = state.users.add(NewUser { name: body.name, admin: body.admin, quota: body.quota }).await?;
    Ok(token_response(StatusCode::CREATED, added))
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "users",
    responses((status = 200, description = "Every user, by name", body = Users)),
)]
/// `GET /v1/admin/users`: every user by name, with what they hold and the default quota.
async fn list_users(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let users = state.users.list().await?;
    let users = users.into_iter().map(|listed| UserView::of(listed.user, Some(listed.usage))).collect();
    let default_quota = Quota { instances: state.config.quotas.instances, memory_mb: state.config.quotas.memory_mb };
    Ok(axum::Json(Users { users, default_quota }).into_response())
}

#[utoipa::path(post, path = "/v1/admin/users/{name}/disable", tag = "users",
    params(("name" = UserName, Path, description = "The user's name; one that no user has is 404")),
    responses(
        (status = 200, description = "Disabled: their token is refused at once", body = UserView),
        (status = 404, description = "No such user"),
        (status = 409, description = "Admins cannot disable themselves over HTTP"),
    ),
)]
async fn disable_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = user_name(&name)?;
    not_yourself(&admin, &name, "disable yourself", "disable")?;
    let user = state.users.disable(&name).await?;
    state.auth_cache.forget_user(user.id);
    Ok(user_response(user))
}

#[utoipa::path(post, path = "/v1/admin/users/{name}/enable", tag = "users",
    params(("name" = UserName, Path, description = "The user's name; one that no user has is 404")),
    responses(
        (status = 200, description = "Enabled: the same token works again", body = UserView),
        (status = 404, description = "No such user"),
    ),
)]
async fn enable_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let user = state.users.enable(&user_name(&name)?).await?;
    state.auth_cache.forget_user(user.id);
    Ok(user_response(user))
}

#[utoipa::path(post, path = "/v1/admin/users/{name}/rotate-token", tag = "users",
    params(("name" = UserName, Path, description = "The user's name; one that no user has is 404")),
    responses(
        (status = 200, description = "A new token, shown once; the old one is refused at once", body = UserWithToken,
            headers(("Cache-Control" = String, description = "`no-store`: the token is shown once"))),
        (status = 404, description = "No such user"),
        (status = 409, description = "Admins cannot rotate their own token over HTTP"),
    ),
)]
async fn rotate_token(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = user_name(&name)?;
    not_yourself(&admin, &name, "rotate your own token", "rotate-token")?;
    let rotated = state.users.rotate_token(&name).await?;
    state.auth_cache.forget_user(rotated.user.id);
    Ok(token_response(StatusCode::OK, rotated))
}

#[utoipa::path(patch, path = "/v1/admin/users/{name}/quota", tag = "users",
    params(("name" = UserName, Path, description = "The user's name; one that no user has is 404")),
    request_body = ChangeQuota,
    responses(
        (status = 200, description = "Their quota changed", body = UserView),
        (status = 404, description = "No such user"),
    ),
)]
async fn change_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ChangeQuota>,
) -> Result<Response, ApiError> {
    let name = user_name(&name)?;
    if body.instances.is_none() && body.memory_mb.is_none() {
        return Err(ApiError::Unprocessable(
            "give instances, memory_mb or both: a number sets the user's own limit, null puts the default back".into(),
        ));
    }
    let change = QuotaChange { instances: limit_change(body.instances), memory_mb: limit_change(body.memory_mb) };
    let user = state.users.change_quota(&name, change).await?;
    state.auth_cache.forget_user(user.id);
    Ok(user_response(user))
}

#[utoipa::path(delete, path = "/v1/admin/users/{name}", tag = "users",
    params(("name" = UserName, Path, description = "The user's name; one that no user has is 404")),
    responses(
        (status = 204, description = "Removed, with their operations"),
        (status = 404, description = "No such user"),
        (status = 409, description = "They own instances (failed ones too), or it is the caller"),
    ),
)]
/// `DELETE /v1/admin/users/{name}`: 409 while they own instances, which it never deletes.
async fn remove_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = user_name(&name)?;
    not_yourself(&admin, &name, "remove yourself", "remove")?;
    let user = state.users.remove(&name).await?;
    state.auth_cache.forget_user(user.id);
    Ok(StatusCode::NO_CONTENT)
}
