//! Redis, on the official `redis` image or anything with its run-time contract: arguments go to
//! `redis-server`, data in `/data`, which the image's entrypoint hands to the redis user.

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{ConfigFile, Launch, Launched, MemoryBounds, Profile, Recovered, ServerStats, Settings};
use crate::model::{EngineSettings, MemoryMb};
use crate::secrets::Secret;

pub const PROFILE: Profile = Profile {
    port: 6379,
    data_path: "/data",
    user: None,
    memory: MemoryBounds { min: MemoryMb(16), max: MemoryMb(65536), default: MemoryMb(500) },
    options: &[],
    config_path: CONFIG_PATH,
    server_rewrites_config: true,
    default_database: None,
    // `gosu redis` only. The entrypoint also hands whatever in /data is not the redis user's to it
    // (CHOWN), but on dbroker's volumes there is never any such file: Redis writes all of them,
    // and dbroker's configuration file lives outside /data.
    capabilities: &["SETGID", "SETUID"],
};

/// Redis's own limit, as a share of the container's: the rest is for the server itself, client
/// buffers and the append-only file rewrite, so Redis refuses writes before the kernel kills it.
const MAXMEMORY_PERCENT: u32 = 75;

/// The configuration file. The password and memory limit live in a file that dbroker rewrites on
/// rotate and resize, not in the container's arguments, which cannot change: a restart by
/// Docker's policy must not bring an old password back. (It also keeps the password out of
/// `docker inspect`.) dbroker writes it before the first start; after that Redis rewrites it
/// itself (`CONFIG REWRITE`) whenever dbroker changes a setting live, which takes a millisecond
/// where a write through Docker takes fifty. It sits in the container's own filesystem, not the
/// volume: Docker writes into a created container's volume only once it has started; `spec_for`
/// writes it again whenever a container is recreated. Its directory is writable by everyone in
/// the container (where only Redis runs), because the redis user's uid differs from image to
/// image, and `CONFIG REWRITE` replaces the file through a temporary one beside it.
const CONFIG_DIR: &str = "/etc/dbroker";
const CONFIG_FILE: &str = "redis.conf";
const CONFIG_PATH: &str = "/etc/dbroker/redis.conf";

pub fn launch(settings: &Settings) -> Launch {
    let contents = format!(
        "# Written by dbroker from the instance's record; changes here are overwritten.\n\
         requirepass {password}\n\
         maxmemory {maxmemory}mb\n\
         # Refuse writes at the limit rather than drop a user's keys.\n\
         maxmemory-policy noeviction\n\
         # Every write reaches the volume, so the data survives a restart.\n\
         appendonly yes\n",
        password = settings.password.expose(),
        maxmemory = maxmemory_mb(settings.memory),
    );
    Launch {
        env: Vec::new(),
        args: vec!["redis-server".into(), CONFIG_PATH.into()],
        config_file: ConfigFile { dir: CONFIG_DIR, name: CONFIG_FILE, contents },
    }
}

/// The inverse of `launch`: the password from the configuration file, which Redis itself keeps
/// up to date on every rotation.
pub fn recover(launched: &Launched) -> Option<Recovered> {
    let password = launched.config_file?.lines().find_map(|line| line.strip_prefix("requirepass "))?;
    let password = password.trim().trim_matches('"').to_string();
    Some(Recovered { password: Secret::new(password), settings: EngineSettings::Redis })
}

fn maxmemory_mb(memory: MemoryMb) -> u32 {
    memory.0 * MAXMEMORY_PERCENT / 100
}

pub fn uri(host: &str, port: u16, password: &Secret) -> String {
    format!("redis://:{}@{host}:{port}/0", password.expose())
}

async fn connect(host: &str, port: u16, password: &Secret) -> Result<MultiplexedConnection, String> {
    let info = ConnectionAddr::Tcp(host.to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(RedisConnectionInfo::default().set_password(password.expose()));
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())
}

/// A real connection: AUTH with the password, then PING.
pub async fn probe(host: &str, port: u16, password: &Secret) -> Result<(), String> {
    let mut conn = connect(host, port, password).await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    if pong == "PONG" { Ok(()) } else { Err(format!("PING answered {pong:?}")) }
}

/// The running server takes the new password at once, and writes it to its file for its next start.
pub async fn rotate_password(host: &str, port: u16, old: &Secret, new: &Secret) -> Result<(), String> {
    config_set(host, port, old, "requirepass", new.expose()).await
}

/// Whether the data the running server holds fits a limit of `memory`: Redis refuses every
/// write once it uses more than `maxmemory`, so a cap below what it holds would lock its owner
/// out of writing. `Err` says how much it uses.
pub async fn check_fits(host: &str, port: u16, password: &Secret, memory: MemoryMb) -> Result<(), String> {
    let mut conn = connect(host, port, password).await?;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let used = info_number(&info, "used_memory").ok_or_else(|| "cannot read its memory use".to_string())?;
    let limit = u64::from(maxmemory_mb(memory)) * 1024 * 1024;
    if used > limit {
        return Err(format!(
            "it holds {} MiB of data, more than the {} MiB Redis may use under a {} MiB cap; delete keys first",
            used.div_ceil(1024 * 1024),
            maxmemory_mb(memory),
            memory.0
        ));
    }
    Ok(())
}

/// A number of `INFO`'s answer, such as `used_memory` (in bytes: what Redis compares with
/// `maxmemory`) or `connected_clients`.
fn info_number(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// The keys of every database in `INFO`'s keyspace section (`db0:keys=3,expires=0,avg_ttl=0`).
fn keys_in_keyspace(info: &str) -> u64 {
    info.lines()
        .filter(|line| line.starts_with("db"))
        .filter_map(|line| {
            line.split_once(':')?.1.split(',').find_map(|field| field.strip_prefix("keys="))?.parse::<u64>().ok()
        })
        .sum()
}

/// Memory used, keys and clients from one `INFO` (its default sections hold all three, in every
/// version; naming several sections needs Redis 7).
pub async fn stats(host: &str, port: u16, password: &Secret) -> Result<ServerStats, String> {
    let mut conn = connect(host, port, password).await?;
    let info: String = redis::cmd("INFO").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    let number = |name| info_number(&info, name).ok_or_else(|| format!("INFO has no {name}"));
    Ok(ServerStats::Redis {
        used_memory_bytes: number("used_memory")?,
        keys: keys_in_keyspace(&info),
        // This connection is one of them.
        connected_clients: number("connected_clients")?.saturating_sub(1),
    })
}

pub async fn apply_memory(host: &str, port: u16, password: &Secret, memory: MemoryMb) -> Result<(), String> {
    config_set(host, port, password, "maxmemory", &format!("{}mb", maxmemory_mb(memory))).await
}

/// `CONFIG SET` then `CONFIG REWRITE`, on one connection: the connection stays authenticated
/// after a new `requirepass`, so the rewrite goes through.
async fn config_set(host: &str, port: u16, password: &Secret, key: &str, value: &str) -> Result<(), String> {
    let mut conn = connect(host, port, password).await?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("CONFIG").arg("REWRITE").query_async::<()>(&mut conn).await.map_err(|e| format!("CONFIG REWRITE: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_its_numbers_and_the_keys_of_every_database() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n# Clients\r\nconnected_clients:3\r\n\
                    # Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=0\r\ndb3:keys=2,expires=0,avg_ttl=0\r\n";

        assert_eq!(info_number(info, "used_memory"), Some(1_048_576));
        assert_eq!(info_number(info, "connected_clients"), Some(3));
        assert_eq!(keys_in_keyspace(info), 7);
        assert_eq!(keys_in_keyspace("# Keyspace\r\n"), 0, "an empty server lists no database");
    }
}
