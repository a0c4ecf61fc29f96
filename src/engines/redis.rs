//! Redis, on the official `redis` image or anything with its run-time contract: arguments go to
//! `redis-server`, data in `/data`.

use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{Launch, MemoryBounds, Settings};
use crate::model::MemoryMb;
use crate::secrets::Secret;

pub const PORT: u16 = 6379;
pub const DATA_PATH: &str = "/data";
pub const MEMORY: MemoryBounds = MemoryBounds {
    min: MemoryMb(16),
    max: MemoryMb(65536),
    default: MemoryMb(500),
};

/// Redis's own limit, as a share of the container's: the rest is for the server itself, client
/// buffers and the append-only file rewrite, so Redis refuses writes before the kernel kills it.
const MAXMEMORY_PERCENT: u32 = 75;

pub fn launch(settings: &Settings) -> Launch {
    let maxmemory_mb = settings.memory.0 * MAXMEMORY_PERCENT / 100;
    let args = [
        "redis-server",
        "--requirepass",
        settings.password.expose(),
        "--maxmemory",
        &format!("{maxmemory_mb}mb"),
        // Refuse writes at the limit rather than drop a user's keys.
        "--maxmemory-policy",
        "noeviction",
        // Every write reaches the volume, so the data survives a restart.
        "--appendonly",
        "yes",
    ];
    Launch {
        env: Vec::new(),
        args: args.map(str::to_string).to_vec(),
    }
}

pub fn uri(host: &str, port: u16, password: &Secret) -> String {
    format!("redis://:{}@{host}:{port}/0", password.expose())
}

/// A real connection: AUTH with the password, then PING.
pub async fn probe(host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let info = ConnectionAddr::Tcp(host.to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(RedisConnectionInfo::default().set_password(password.expose()));
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if pong == "PONG" {
        Ok(())
    } else {
        Err(format!("PING answered {pong:?}"))
    }
}
