//! What each database engine needs, one file per engine: its container (port, data path,
//! environment and arguments), its connection URI, its memory bounds, and a readiness probe that
//! logs in with a real client. [`Engine`] dispatches with `match`, so a new engine is one file and
//! the arms the compiler points to.

mod mysql;
mod redis;

use std::time::Duration;

pub use crate::model::Engine;
use crate::model::{Charset, Collation, MemoryMb};
use crate::secrets::Secret;

/// The settings of one instance that shape its container.
pub struct Settings<'a> {
    pub password: &'a Secret,
    pub memory: MemoryMb,
    pub charset: Option<&'a Charset>,
    pub collation: Option<&'a Collation>,
}

/// A container's environment and the arguments after its image.
pub struct Launch {
    pub env: Vec<String>,
    pub args: Vec<String>,
}

/// The smallest, largest and default memory cap of an engine's instances, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBounds {
    pub min: MemoryMb,
    pub max: MemoryMb,
    pub default: MemoryMb,
}

/// How long one login attempt of a readiness probe may take before it counts as failed.
pub const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn container_port(engine: Engine) -> u16 {
    match engine {
        Engine::Mysql => mysql::PORT,
        Engine::Redis => redis::PORT,
    }
}

pub fn data_path(engine: Engine) -> &'static str {
    match engine {
        Engine::Mysql => mysql::DATA_PATH,
        Engine::Redis => redis::DATA_PATH,
    }
}

/// The user a client logs in as, for engines that have users.
pub fn username(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Mysql => Some(mysql::USER),
        Engine::Redis => None,
    }
}

pub fn memory_bounds(engine: Engine) -> MemoryBounds {
    match engine {
        Engine::Mysql => mysql::MEMORY,
        Engine::Redis => redis::MEMORY,
    }
}

pub fn launch(engine: Engine, settings: &Settings) -> Launch {
    match engine {
        Engine::Mysql => mysql::launch(settings),
        Engine::Redis => redis::launch(settings),
    }
}

pub fn uri(engine: Engine, host: &str, port: u16, password: &Secret) -> String {
    match engine {
        Engine::Mysql => mysql::uri(host, port, password),
        Engine::Redis => redis::uri(host, port, password),
    }
}

/// Logs in at `host:port` with `password` and runs a query. `Err` says why it did not work.
pub async fn probe(engine: Engine, host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let attempt = async {
        match engine {
            Engine::Mysql => mysql::probe(host, port, password).await,
            Engine::Redis => redis::probe(host, port, password).await,
        }
    };
    tokio::time::timeout(PROBE_ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_ATTEMPT_TIMEOUT:?}")))
}
