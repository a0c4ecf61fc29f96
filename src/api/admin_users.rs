//! `/v1/admin/users`, for admins only: add a user (their token shown once), list them, disable
//! and enable them, rotate a token (the new one shown once), set their quota, remove them. The
//! same service as `dbroker user ...` (see `provision::users`). Every change forgets the user's
//! tokens in this process's authentication cache, so that the next request with one sees it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use serde::{Deserialize, Deserializer, Serialize};

use super::admin::Admin;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::UserName;
use crate::provision::{NewUser, ProvisionError, WithToken};
use crate::store::{LimitChange, Quota, QuotaChange, QuotaOverride, Usage, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", post(add_user).get(list_users))
        .route("/v1/admin/users/{name}", axum::routing::delete(remove_user))
        .route("/v1/admin/users/{name}/disable", post(disable_user))
        .route("/v1/admin/users/{name}/enable", post(enable_user))
        .route("/v1/admin/users/{name}/rotate-token", post(rotate_token))
        .route("/v1/admin/users/{name}/quota", patch(change_quota))
}

/// `POST /v1/admin/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddUser {
    name: UserName,
    #[serde(default)]
    admin: bool,
    /// Their own quota; a limit left out is the configuration's default.
    #[serde(default)]
    quota: QuotaOverride,
}

/// `PATCH /v1/admin/users/{name}/quota`: a number sets the user's own limit, `null` puts the
/// configuration's default back, a limit left out stays as it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeQuota {
    #[serde(default, deserialize_with = "present")]
    instances: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    memory_mb: Option<Option<u64>>,
}

/// A field that is there, `null` or not: `Some(None)` for `null`, told apart from a field left
/// out (`None`, by `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::deserialize(d).map(Some)
}

fn limit_change<T>(field: Option<Option<T>>) -> LimitChange<T> {
    match field {
        None => LimitChange::Keep,
        Some(None) => LimitChange::Default,
        Some(Some(value)) => LimitChange::Set(value),
    }
}

/// A user as admins see them: never their token (only its hash is kept).
#[derive(Serialize)]
struct UserView {
    name: String,
    admin: bool,
    /// A demo user (`--demo-users`), whose token is their name.
    demo: bool,
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_at: Option<String>,
    created_at: String,
    /// Their own quota: a limit is `null` where it is the configuration's default.
    quota: QuotaOverride,
    /// What they hold, as their quota counts it (in the list only).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
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

/// A user and their new token: the only answer that ever holds it.
#[derive(Serialize)]
struct UserWithToken {
    #[serde(flatten)]
    user: UserView,
    token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

/// The answer that shows a token once, which no cache between dbroker and the admin may keep.
fn token_response(status: StatusCode, shown: WithToken) -> Response {
    let warning = shown.was_demo.then_some(
        "this demo user is a real user now, with a token of their own: take them out of --demo-users, or \
         dbroker refuses to start",
    );
    let body = UserWithToken { user: UserView::of(shown.user, None), token: shown.token.expose().to_string(), warning };
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

/// An admin may not lock themself out over HTTP: another admin, or `dbroker user` on the host, may.
fn not_yourself(admin: &Admin, name: &UserName, what: &str) -> Result<(), ApiError> {
    if admin.0.0.name == name.as_str() {
        return Err(ProvisionError::Conflict(format!(
            "you cannot {what} yourself: another admin can, or `dbroker user {what} {name}` on dbroker's host"
        ))
        .into());
    }
    Ok(())
}

async fn add_user(
    State(state): State<AppState>,
    _admin: Admin,
    JsonBody(body): JsonBody<AddUser>,
) -> Result<Response, ApiError> {
    let added = state.users.add(NewUser { name: body.name, admin: body.admin, quota: body.quota }).await?;
    Ok(token_response(StatusCode::CREATED, added))
}

/// `GET /v1/admin/users`: every user by name, with what they hold and the default quota.
async fn list_users(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let users = state.users.list().await?;
    #[derive(Serialize)]
    struct Users {
        users: Vec<UserView>,
        /// The configuration's quota, which every limit that is `null` in a user's is.
        default_quota: Quota,
    }
    let users = users.into_iter().map(|listed| UserView::of(listed.user, Some(listed.usage))).collect();
    let default_quota = Quota { instances: state.config.quotas.instances, memory_mb: state.config.quotas.memory_mb };
    Ok(axum::Json(Users { users, default_quota }).into_response())
}

async fn disable_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = user_name(&name)?;
    not_yourself(&admin, &name, "disable")?;
    let user = state.users.disable(&name).await?;
    state.auth_cache.forget_user(user.id);
    Ok(user_response(user))
}

async fn enable_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let user = state.users.enable(&user_name(&name)?).await?;
    state.auth_cache.forget_user(user.id);
    Ok(user_response(user))
}

async fn rotate_token(
    State(state): State<AppState>,
    _admin: Admin,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rotated = state.users.rotate_token(&user_name(&name)?).await?;
    state.auth_cache.forget_user(rotated.user.id);
    Ok(token_response(StatusCode::OK, rotated))
}

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

/// `DELETE /v1/admin/users/{name}`: 409 while they own instances, which it never deletes.
async fn remove_user(
    State(state): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = user_name(&name)?;
    not_yourself(&admin, &name, "remove")?;
    let user = state.users.remove(&name).await?;
    state.auth_cache.forget_user(user.id);
    Ok(StatusCode::NO_CONTENT)
}
