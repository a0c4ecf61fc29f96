//! The old tool's routes, unchanged for its clients: `POST /mysql`, `POST /redis`,
//! `GET /list/<dockerType>`, `GET /detail/<dockerId>`, in the `{"code","msg","data"}` envelope.
//! An adapter over the same service as v1; its own quirks (the `collection` field, `memory` as a
//! string, type numbers) stay in this file.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::auth::CurrentUser;
use super::error::{envelope, legacy_errors};
use super::json::JsonBody;
use super::{ApiError, AppState};
use crate::model::{Charset, Collation, Engine, MemoryMb};
use crate::provision::{Instance, NewInstance};

/// The old tool's defaults for MySQL.
const DEFAULT_CHARSET: &str = "utf8";
const DEFAULT_COLLATION: &str = "utf8_general_ci";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/mysql", post(create_mysql))
        .route("/redis", post(create_redis))
        .route("/list/{docker_type}", get(list_by_type))
        .route("/detail/{docker_id}", get(detail))
        .layer(axum::middleware::map_response(legacy_errors))
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
    let (charset, collation) = match (body.charset, body.collection) {
        (None, None) => (
            Some(parse_default(DEFAULT_CHARSET)),
            Some(parse_default(DEFAULT_COLLATION)),
        ),
        (None, Some(collation)) => (Some(parse_default(DEFAULT_CHARSET)), Some(collation)),
        (charset, collation) => (charset, collation),
    };
    let request = NewInstance {
        engine: Engine::Mysql,
        name: None,
        memory: None,
        charset,
        collation,
    };
    let instance = state.provisioner.create(&user.caller(), request).await?;
    Ok(envelope(legacy_view(&instance)))
}

fn parse_default<T: std::str::FromStr>(value: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    value.parse().expect("the old tool's defaults are valid")
}

async fn create_redis(
    State(state): State<AppState>,
    user: CurrentUser,
    JsonBody(body): JsonBody<CreateRedis>,
) -> Result<Response, ApiError> {
    let request = NewInstance {
        engine: Engine::Redis,
        name: None,
        memory: body.memory,
        charset: None,
        collation: None,
    };
    let instance = state.provisioner.create(&user.caller(), request).await?;
    Ok(envelope(legacy_view(&instance)))
}

async fn list_by_type(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(docker_type): Path<String>,
) -> Result<Response, ApiError> {
    let engine = match docker_type.as_str() {
        "1" => Engine::Mysql,
        "2" => Engine::Redis,
        other => {
            return Err(ApiError::NotFound(format!(
                "unknown dockerType {other:?}; use 1 for MySQL or 2 for Redis"
            )));
        }
    };
    let instances = state.provisioner.list(user.0.id, Some(engine)).await?;
    Ok(envelope(Value::Array(instances.iter().map(legacy_view).collect())))
}

async fn detail(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(docker_id): Path<String>,
) -> Result<Response, ApiError> {
    let instance = state
        .provisioner
        .get(user.0.id, &super::v1::parse_id(&docker_id)?)
        .await?;
    Ok(envelope(legacy_view(&instance)))
}

/// The old create answer's shape: `host`, `user` (MySQL only), `pwd`, `port`, `dockerId`.
fn legacy_view(instance: &Instance) -> Value {
    let mut view = json!({
        "host": instance.host,
        "pwd": instance.password.expose(),
        "port": instance.record.port,
        "dockerId": instance.record.id,
    });
    if let (Some(user), Some(map)) = (&instance.record.username, view.as_object_mut()) {
        map.insert("user".into(), json!(user));
    }
    view
}
