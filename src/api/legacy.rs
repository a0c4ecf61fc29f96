//! The old tool's routes, unchanged for its clients: `POST /mysql`, `POST /redis`,
//! `GET /list/<dockerType>`, `GET /detail/<dockerId>`, in the `{"code","msg","data"}` envelope;
//! and, in the same style, `POST /postgres` and type 3. An adapter over the same service as v1;
//! its own quirks (the `collection` field, `memory` as a string, type numbers) stay in this file.
//! `api::router` wraps its routes in `error::legacy_errors`, outside the rate limits, so that every
//! error, a 429 too, is answered in the envelope.

use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::CurrentUser;
use super::json::JsonBody;
use super::types::{CreateMysql, CreatePostgres, CreateRedis, Envelope, LegacyInstance};
use super::{ApiError, AppState};
use crate::model::Engine;
use crate::provision::{Instance, NewInstance};

/// The old tool's defaults for MySQL.
const DEFAULT_CHARSET: &str = "utf8";
const DEFAULT_COLLATION: &str = "utf8_general_ci";

/// The old tool's numbers for engines in `/list/<dockerType>` (3 is new, for PostgreSQL).
const DOCKER_TYPES: [(&str, Engine); 3] = [("1", Engine::Mysql), ("2", Engine::Redis), ("3", Engine::Postgres)];

/// The routes and their descriptions (see each handler's `utoipa::path`); their errors are
/// described as the envelope by `openapi`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_mysql))
        .routes(routes!(create_redis))
        .routes(routes!(create_postgres))
        .routes(routes!(list_by_type))
        .routes(routes!(detail))
}

/// What a create and a detail answer.
type Answer = Result<Json<Envelope<LegacyInstance>>, ApiError>;

#[utoipa::path(post, path = "/mysql", tag = "legacy",
    request_body = CreateMysql,
    responses(
        (status = 200, description = "Created, once the database accepts the returned credentials", body = Envelope<LegacyInstance>),
        (status = 403, description = "Beyond the user's quota"),
        (status = 502, description = "The database did not become ready"),
        (status = 503, description = "No free port, the Docker engine unreachable, the image missing, or the host's memory budget passed"),
    ),
)]
/// The old tool's MySQL create.
async fn create_mysql(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateMysql>,
) -> Answer {
    // The old defaults apply when nothing is asked; a charset alone gets its server default collation.
    let default_charset = || DEFAULT_CHARSET.parse().ok();
    let (charset, collation) = match (body.charset, body.collection) {
        (None, None) => (default_charset(), DEFAULT_COLLATION.parse().ok()),
        (None, Some(collation)) => (default_charset(), Some(collation)),
        (charset, collation) => (charset, collation),
    };
    let request = NewInstance { charset, collation, ..NewInstance::of(Engine::Mysql) };
    create(state, user, request).await
}

#[utoipa::path(post, path = "/redis", tag = "legacy",
    request_body = CreateRedis,
    responses(
        (status = 200, description = "Created, once the database accepts the returned credentials", body = Envelope<LegacyInstance>),
        (status = 403, description = "Beyond the user's quota"),
        (status = 502, description = "The database did not become ready"),
        (status = 503, description = "No free port, the Docker engine unreachable, the image missing, or the host's memory budget passed"),
    ),
)]
async fn create_redis(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateRedis>,
) -> Answer {
    create(state, user, NewInstance { memory: body.memory, ..NewInstance::of(Engine::Redis) }).await
}

#[utoipa::path(post, path = "/postgres", tag = "legacy",
    request_body = CreatePostgres,
    responses(
        (status = 200, description = "Created, once the database accepts the returned credentials", body = Envelope<LegacyInstance>),
        (status = 403, description = "Beyond the user's quota"),
        (status = 502, description = "The database did not become ready"),
        (status = 503, description = "No free port, the Docker engine unreachable, the image missing, or the host's memory budget passed"),
    ),
)]
async fn create_postgres(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreatePostgres>,
) -> Answer {
    let request = NewInstance { memory: body.memory, database: body.database, ..NewInstance::of(Engine::Postgres) };
    create(state, user, request).await
}

async fn create(state: AppState, user: CurrentUser, request: NewInstance) -> Answer {
    let instance = state.provisioner.create(&user.caller(), request, None).await?.outcome().await?;
    Ok(Json(Envelope::success(legacy_view(&instance))))
}

#[utoipa::path(get, path = "/list/{docker_type}", tag = "legacy",
    params(("docker_type" = String, Path, description = "1 for MySQL, 2 for Redis, 3 for PostgreSQL; another is 404")),
    responses(
        (status = 200, description = "The caller's instances of that engine", body = Envelope<Vec<LegacyInstance>>),
        (status = 404, description = "An unknown dockerType"),
    ),
)]
async fn list_by_type(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(docker_type): Path<String>,
) -> Result<Json<Envelope<Vec<LegacyInstance>>>, ApiError> {
    let engine = DOCKER_TYPES.iter().find(|(number, _)| *number == docker_type).map(|(_, e)| *e).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown dockerType {docker_type:?}; use 1 for MySQL, 2 for Redis or 3 for PostgreSQL"
        ))
    })?;
    let instances = state.provisioner.list(user.0.id, Some(engine)).await?;
    Ok(Json(Envelope::success(instances.iter().map(legacy_view).collect())))
}

#[utoipa::path(get, path = "/detail/{docker_id}", tag = "legacy",
    params(("docker_id" = crate::model::InstanceId, Path, description = "The instance's id; another user's, or one that cannot exist, is 404")),
    responses(
        (status = 200, description = "The instance", body = Envelope<LegacyInstance>),
        (status = 404, description = "No such instance of the caller's"),
    ),
)]
async fn detail(State(state): State<AppState>, user: CurrentUser, Path(docker_id): Path<String>) -> Answer {
    let instance = state.provisioner.get(user.0.id, &super::v1::parse_id(&docker_id)?).await?;
    Ok(Json(Envelope::success(legacy_view(&instance))))
}

/// The old create answer's shape: `host`, `user` (engines with users), `pwd`, `port`, `dockerId`,
/// and `database` for PostgreSQL.
fn legacy_view(instance: &Instance) -> LegacyInstance {
    LegacyInstance {
        host: instance.host.clone(),
        user: instance.record.username.clone(),
        pwd: instance.password.as_ref().map(|p| p.expose().to_string()),
        port: instance.record.port,
        docker_id: instance.record.id.clone(),
        database: instance.record.settings.database().cloned(),
    }
}
