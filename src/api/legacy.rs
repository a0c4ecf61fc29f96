//! The old tool's routes, unchanged for its clients: `POST /mysql`, `POST /redis`,
//! `GET /list/<dockerType>`, `GET /detail/<dockerId>`, in the `{"code","msg","data"}` envelope;
//! and, in the same style, `POST /postgres` and type 3. An adapter over the same service as v1;
//! its own quirks (the `collection` field, `memory` as a string, type numbers) stay in this file.
//! `api::router` wraps its routes in `error::legacy_errors`, outside the rate limits, so that every
//! error, a 429 too, is answered in the envelope.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::auth::CurrentUser;
use super::error::envelope;
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::{Charset, Collation, DatabaseName, Engine, MemoryMb};
use crate::provision::{Instance, NewInstance};

/// The old tool's defaults for MySQL.
const DEFAULT_CHARSET: &str = "utf8";
const DEFAULT_COLLATION: &str = "utf8_general_ci";

/// The old tool's numbers for engines in `/list/<dockerType>` (3 is new, for PostgreSQL).
const DOCKER_TYPES: [(&str, Engine); 3] = [("1", Engine::Mysql), ("2", Engine::Redis), ("3", Engine::Postgres)];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mysql", post(create_mysql))
        .route("/redis", post(create_redis))
        .route("/postgres", post(create_postgres))
        .route("/list/{docker_type}", get(list_by_type))
        .route("/detail/{docker_id}", get(detail))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMysql {
    charset: Option<Charset>,
    /// The old tool's name (sic) for the collation.
    collection: Option<Collation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRedis {
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    memory: Option<MemoryMb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatePostgres {
    database: Option<DatabaseName>,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    memory: Option<MemoryMb>,
}

/// Old clients send `memory` as `500` or as `"500"`.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MemoryMb>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u32),
        Text(String),
    }
    match Option::<NumberOrString>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(MemoryMb(n))),
        Some(NumberOrString::Text(s)) => {
            s.trim().parse().map(|n| Some(MemoryMb(n))).map_err(|_| {
                serde::de::Error::custom(format!("memory must be a whole number of MB, like 500, not {s:?}"))
            })
        }
    }
}

async fn create_mysql(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateMysql>,
) -> Result<Response, ApiError> {
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

async fn create_redis(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateRedis>,
) -> Result<Response, ApiError> {
    create(state, user, NewInstance { memory: body.memory, ..NewInstance::of(Engine::Redis) }).await
}

async fn create_postgres(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreatePostgres>,
) -> Result<Response, ApiError> {
    let request = NewInstance { memory: body.memory, database: body.database, ..NewInstance::of(Engine::Postgres) };
    create(state, user, request).await
}

async fn create(state: AppState, user: CurrentUser, request: NewInstance) -> Result<Response, ApiError> {
    let instance = state.provisioner.create(&user.caller(), request, None).await?.outcome().await?;
    Ok(envelope(legacy_view(&instance)))
}

async fn list_by_type(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(docker_type): Path<String>,
) -> Result<Response, ApiError> {
    let engine = DOCKER_TYPES.iter().find(|(number, _)| *number == docker_type).map(|(_, e)| *e).ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown dockerType {docker_type:?}; use 1 for MySQL, 2 for Redis or 3 for PostgreSQL"
        ))
    })?;
    let instances = state.provisioner.list(user.0.id, Some(engine)).await?;
    Ok(envelope(Value::Array(instances.iter().map(legacy_view).collect())))
}

async fn detail(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(docker_id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state.provisioner.get(user.0.id, &super::v1::parse_id(&docker_id)?).await?;
    Ok(envelope(legacy_view(&instance)))
}

/// The old create answer's shape: `host`, `user` (engines with users), `pwd`, `port`, `dockerId`,
/// and `database` for PostgreSQL.
fn legacy_view(instance: &Instance) -> Value {
    let mut view = json!({
        "host": instance.host,
        "pwd": instance.password.as_ref().map(|p| p.expose()),
        "port": instance.record.port,
        "dockerId": instance.record.id,
    });
    if let Some(map) = view.as_object_mut() {
        if let Some(user) = &instance.record.username {
            map.insert("user".into(), json!(user));
        }
        if let Some(database) = &instance.record.database() {
            map.insert("database".into(), json!(database));
        }
    }
    view
}
