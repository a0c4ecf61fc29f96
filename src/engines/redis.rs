//! Redis, on the official `redis` image or anything with its run-time contract: arguments go to
//! `redis-server`, data in `/data`, which the image's entrypoint hands to the redis user.

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::time::Instant;

use super::dump::{ContentDigest, Dump, DumpError, LoadError, READ_AHEAD_BYTES};
use super::{ConfigFile, Launch, Launched, MemoryBounds, Profile, Recovered, ServerStats, Settings};
use crate::model::{EngineSettings, MemoryMb};
use crate::runtime::{Exec, Runtime, RuntimeError};
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
         appendonly yes\n\
         # DEBUG from inside the container only (dbroker's DIGEST and RELOAD for backups, see\n\
         # engines::dump); clients reach the server through Docker's port, never as local.\n\
         enable-debug-command local\n",
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
    client.get_multiplexed_async_connection_with_config(&connection_config()).await.map_err(|e| e.to_string())
}

/// The crate's default waits half a second for an answer, which a `CONFIG REWRITE` (a file
/// written and synced) can exceed on a busy host: a rotation would then fail for no fault of
/// the server. Callers that poll (readiness) bound the whole wait themselves.
fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)))
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

/// How long Redis's snapshot (`BGSAVE`), its append-only file's rewrite after a load, and a
/// snapshot or rewrite that was already running when one was asked for, may take together.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(600);
const SNAPSHOT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Exit code of `STREAM_SCRIPT` when another snapshot replaced the one it was to stream.
const REPLACED_EXIT_CODE: i64 = 75;

/// `redis-cli` inside the container, logged in with `REDISCLI_AUTH`, which this constant script
/// sets from the configuration file's `requirepass` (its path the first argument; `CONFIG
/// REWRITE` writes the value quoted, dbroker's first write does not). The file is Redis's own
/// after its first start and follows every rotation at once. It connects to 127.0.0.1 inside the
/// container: the local connection `enable-debug-command local` lets run `DEBUG`, which no client
/// from outside (through Docker's port) may.
const CLI_SCRIPT: &str = r#"REDISCLI_AUTH=$(sed -n 's/^requirepass "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$1") || exit 1
export REDISCLI_AUTH
shift
exec redis-cli "$@""#;

/// Streams the snapshot file `$2` once it is open and the server's count of snapshots started is
/// still `$3`, the dump's own: a later snapshot, renamed over the file before it was opened,
/// would hold other data than the digest's. Opened first, checked second: a snapshot renamed
/// over the file after it is open leaves the open file as it was.
const STREAM_SCRIPT: &str = r#"exec 3<"$2" || exit 1
REDISCLI_AUTH=$(sed -n 's/^requirepass "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$1") || exit 1
export REDISCLI_AUTH
saves=$(redis-cli INFO persistence | tr -d '\r' | sed -n 's/^rdb_saves://p')
[ "$saves" = "$3" ] || { echo "another snapshot took the dump's place" >&2; exit 75; }
exec cat <&3"#;

/// Takes a load's RDB from stdin into the file `$1` and has Redis's own checker read it whole
/// (its format version, every key, the checksum at its end): a file that fails is removed, the
/// checker's findings on stderr, and the server is never touched.
const RECEIVE_SCRIPT: &str = r#"cat >"$1" || { rm -f "$1"; exit 1; }
if ! redis-check-rdb "$1" >&2; then rm -f "$1"; exit 1; fi"#;

/// The user Redis's files belong to, which the load's files must be written as.
const OS_USER: &str = "redis";

fn cli_command(args: &[&str]) -> Exec {
    let mut argv = vec!["sh", "-c", CLI_SCRIPT, "sh", CONFIG_PATH];
    argv.extend(args);
    Exec::new(argv)
}

/// What `redis-cli` prints for an error reply (on stdout, exiting 0 all the same).
fn error_reply(output: &str) -> Option<&str> {
    const ERRORS: [&str; 8] = ["ERR", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING", "BUSY", "MISCONF", "AUTH failed"];
    output.lines().find(|line| ERRORS.iter().any(|e| line.starts_with(e)))
}

/// The most a `redis-cli` answer may be: an `INFO` section or a digest, never data.
const CLI_OUTPUT_LIMIT: u64 = 1024 * 1024;

/// Runs `redis-cli` with `args` and returns what it printed; `Err` with the server's message for
/// an error reply.
async fn cli(runtime: &Runtime, container: &str, args: &[&str]) -> Result<String, DumpError> {
    let output = cli_output(runtime, container, cli_command(args)).await?;
    match error_reply(&output) {
        Some(error) => Err(refused(error)),
        None => Ok(output),
    }
}

/// What `redis-cli` printed, error replies and all.
async fn cli_output(runtime: &Runtime, container: &str, command: Exec) -> Result<String, DumpError> {
    let mut execution = runtime.exec(container, command).await?;
    let mut output = String::new();
    let read = (&mut execution).take(CLI_OUTPUT_LIMIT).read_to_string(&mut output).await;
    read.map_err(|e| DumpError::Runtime(RuntimeError::Unreachable(e.to_string())))?;
    execution.finish().await?;
    Ok(output)
}

fn refused(error: &str) -> DumpError {
    if error.contains("DEBUG command not allowed") {
        return DumpError::Failed(format!(
            "Redis answered {error} (a container made before dbroker's backups lacks \
             `enable-debug-command local` in its redis.conf: recreated from its record, it has it)"
        ));
    }
    DumpError::Failed(format!("Redis answered {error}"))
}

/// What a snapshot's session (see `SNAPSHOT_SESSION`) came to: the digest and the snapshot's
/// number when the snapshot forked at the digest's instant, `None` when it did not (another
/// child ran by then: Redis refuses a `BGSAVE` then, or schedules it for later), to try again.
fn snapshot_taken(answer: &str) -> Result<Option<(ContentDigest, u64)>, DumpError> {
    let busy = |line: &str| line.contains("BGSAVE") || line.contains("Background save");
    if let Some(error) = answer.lines().filter(|line| error_reply(line).is_some()).find(|line| !busy(line)) {
        return Err(refused(error));
    }
    if !answer.lines().any(|line| line == "Background saving started") {
        return Ok(None);
    }
    let digest = answer.lines().find(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some(digest) = digest.map(|d| ContentDigest(format!("redis:{d}"))) else {
        return Err(DumpError::Failed(format!("DEBUG DIGEST gave no digest: {answer}")));
    };
    Ok(Some((digest, persistence_number(answer, "rdb_saves")?)))
}

/// A field of `INFO persistence` as a number.
fn persistence_number(info: &str, name: &str) -> Result<u64, DumpError> {
    info_number(info, name).ok_or_else(|| DumpError::Failed(format!("INFO persistence has no {name}")))
}

/// Polls `INFO persistence` until `done` says so (or `Err` to stop), within the deadline.
async fn wait_for_persistence<T>(
    runtime: &Runtime,
    container: &str,
    deadline: Instant,
    mut done: impl FnMut(&str) -> Result<Option<T>, DumpError>,
) -> Result<T, DumpError> {
    loop {
        let info = cli(runtime, container, &["INFO", "persistence"]).await?;
        if let Some(value) = done(&info)? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(DumpError::Deadline(SNAPSHOT_DEADLINE));
        }
        tokio::time::sleep(SNAPSHOT_POLL_INTERVAL).await;
    }
}

/// Whether the server runs no child: no snapshot, append-only rewrite or module fork, nor one due
/// to start. Only then does a `BGSAVE` fork at once, and a `DEBUG RELOAD` find no snapshot about
/// to land on its file.
fn no_child(info: &str) -> Result<bool, DumpError> {
    let busy =
        ["rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled", "module_fork_in_progress"];
    for field in busy {
        if persistence_number(info, field)? != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The commands of a snapshot, on one connection: writers paused (readers are not), the digest of
/// what the server holds, the snapshot forked from exactly that, its number, writers let go. In a
/// `MULTI` Redis would only schedule the `BGSAVE`, for later, after other writes: hence the pause.
/// It lasts as long as the digest takes (a second for millions of keys), and ends by itself after
/// 30 s even if dbroker dies half way.
const SNAPSHOT_SESSION: &str =
    concat!("CLIENT PAUSE 30000 WRITE\n", "DEBUG DIGEST\n", "BGSAVE\n", "INFO persistence\n", "CLIENT UNPAUSE\n");

/// Redis's dump: an RDB snapshot the server makes itself, streamed out of the container, with the
/// digest of the data at the instant it forked (see `SNAPSHOT_SESSION`). Tried again when another
/// snapshot gets in the way (a save point, a client's `BGSAVE`), within `SNAPSHOT_DEADLINE`.
pub(super) async fn dump(runtime: &Runtime, container: &str) -> Result<Dump, DumpError> {
    let deadline = Instant::now() + SNAPSHOT_DEADLINE;
    let file = snapshot_file(runtime, container).await?;
    loop {
        wait_for_persistence(runtime, container, deadline, |info| Ok(no_child(info)?.then_some(()))).await?;
        let session = cli_command(&[]).with_stdin(SNAPSHOT_SESSION.as_bytes());
        let answer = cli_output(runtime, container, session).await?;
        let Some((digest, ours)) = snapshot_taken(&answer.replace('\r', ""))? else { continue };
        let completed = wait_for_persistence(runtime, container, deadline, |info| {
            let saves = persistence_number(info, "rdb_saves")?;
            if saves == ours && persistence_number(info, "rdb_bgsave_in_progress")? == 0 {
                return match info.lines().any(|l| l.trim() == "rdb_last_bgsave_status:ok") {
                    true => Ok(Some(true)),
                    false => Err(DumpError::Failed("the server's snapshot failed (see its log)".into())),
                };
            }
            Ok((saves != ours).then_some(false))
        })
        .await?;
        if !completed {
            continue;
        }
        let ours = ours.to_string();
        let argv = ["sh", "-c", STREAM_SCRIPT, "sh", CONFIG_PATH, file.as_str(), ours.as_str()];
        let mut stream = BufReader::with_capacity(READ_AHEAD_BYTES, runtime.exec(container, Exec::new(argv)).await?);
        // The script writes nothing before its check: a first byte says it passed.
        let started = !stream
            .fill_buf()
            .await
            .map_err(|e| DumpError::Runtime(RuntimeError::Unreachable(e.to_string())))?
            .is_empty();
        if started {
            return Ok(Dump::with_digest(stream, digest));
        }
        match stream.into_inner().finish().await {
            Err(RuntimeError::ExecFailed { code: REPLACED_EXIT_CODE, .. }) => continue,
            Err(other) => return Err(other.into()),
            Ok(()) => return Err(DumpError::Failed(format!("the snapshot {file} is empty"))),
        }
    }
}

/// Where the server writes its snapshot: `dir` and `dbfilename` of its configuration.
async fn snapshot_file(runtime: &Runtime, container: &str) -> Result<String, DumpError> {
    let dir = config_value(runtime, container, "dir").await?;
    let name = config_value(runtime, container, "dbfilename").await?;
    Ok(format!("{}/{name}", dir.trim_end_matches('/')))
}

/// One setting, as `CONFIG GET` gives it (its name on one line, its value on the next).
async fn config_value(runtime: &Runtime, container: &str, name: &str) -> Result<String, DumpError> {
    let answer = cli(runtime, container, &["CONFIG", "GET", name]).await?;
    let mut lines = answer.lines();
    match (lines.next(), lines.next()) {
        (Some(key), Some(value)) if key == name => Ok(value.to_string()),
        _ => Err(DumpError::Failed(format!("CONFIG GET {name} answered {answer:?}"))),
    }
}

/// `DEBUG DIGEST` of what the server holds now.
pub(super) async fn digest(runtime: &Runtime, container: &str) -> Result<ContentDigest, DumpError> {
    let answer = cli(runtime, container, &["DEBUG", "DIGEST"]).await?;
    match answer.trim() {
        d if d.len() == 40 && d.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(ContentDigest(format!("redis:{d}"))),
        other => Err(DumpError::Failed(format!("DEBUG DIGEST answered {other:?}"))),
    }
}

/// Replaces the running server's data with an RDB from `input`, without a restart:
/// 1. the RDB goes into a file beside the server's snapshot and Redis's own checker reads it
///    whole; one that fails is removed and the server never touched (the checker's message is
///    the error);
/// 2. automatic snapshots are held off (`save ""`) and any running child is waited for, so no
///    snapshot lands on the server's snapshot file, which the checked file then replaces;
/// 3. `DEBUG RELOAD NOSAVE` empties the server and loads that file (the server answers no one
///    meanwhile);
/// 4. the append-only file, which the server starts from and which still holds the old data, is
///    rewritten from what the server now holds (`BGREWRITEAOF`), and waited for: only then does
///    the loaded data survive a restart;
/// 5. the snapshot settings are put back as they were.
pub(super) async fn load(
    runtime: &Runtime,
    container: &str,
    input: impl AsyncRead + Send + Unpin + 'static,
) -> Result<(), LoadError> {
    let deadline = Instant::now() + SNAPSHOT_DEADLINE;
    let snapshot = snapshot_file(runtime, container).await?;
    let received = format!("{snapshot}.dbroker-load");
    let receive = Exec::new(["sh", "-c", RECEIVE_SCRIPT, "sh", received.as_str()]).as_user(OS_USER).with_stdin(input);
    runtime.exec(container, receive).await?.finish().await.map_err(|error| match error {
        RuntimeError::ExecFailed { stderr, .. } => LoadError::Rejected(checker_findings(&stderr)),
        other => other.into(),
    })?;
    let save = config_value(runtime, container, "save").await?;
    cli(runtime, container, &["CONFIG", "SET", "save", ""]).await?;
    let loaded = reload_from(runtime, container, &received, &snapshot, deadline).await;
    // Put back whatever happened; the file is gone if it was moved, and removed if not.
    let restored = cli(runtime, container, &["CONFIG", "SET", "save", save.as_str()]).await;
    let _ = runtime.exec(container, Exec::new(["rm", "-f", received.as_str()]).as_user(OS_USER)).await?.finish().await;
    loaded?;
    restored?;
    Ok(())
}

async fn reload_from(
    runtime: &Runtime,
    container: &str,
    received: &str,
    snapshot: &str,
    deadline: Instant,
) -> Result<(), DumpError> {
    wait_for_persistence(runtime, container, deadline, |info| Ok(no_child(info)?.then_some(()))).await?;
    runtime.exec(container, Exec::new(["mv", received, snapshot]).as_user(OS_USER)).await?.finish().await?;
    cli(runtime, container, &["DEBUG", "RELOAD", "NOSAVE"]).await?;
    let info = cli(runtime, container, &["INFO", "persistence"]).await?;
    let rewrites_before = persistence_number(&info, "aof_rewrites")?;
    cli(runtime, container, &["BGREWRITEAOF"]).await?;
    wait_for_persistence(runtime, container, deadline, |info| {
        let done = persistence_number(info, "aof_rewrites")? > rewrites_before && no_child(info)?;
        match (done, info.lines().any(|l| l.trim() == "aof_last_bgrewrite_status:ok")) {
            (true, true) => Ok(Some(())),
            (true, false) => Err(DumpError::Failed("rewriting the append-only file failed (see its log)".into())),
            (false, _) => Ok(None),
        }
    })
    .await
}

/// What a person needs of `redis-check-rdb`'s report: from its error on, without its counts
/// (before the error it lists what it read, fine).
fn checker_findings(report: &str) -> String {
    let from_error = report.find("--- RDB ERROR DETECTED ---").map_or(report, |at| &report[at..]);
    let findings: Vec<&str> = from_error.lines().filter(|line| !line.starts_with("[info]")).collect();
    findings.join("\n").trim().to_string()
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

    #[test]
    fn the_checkers_findings_are_its_error_without_what_it_read_before() {
        let report = "[offset 0] Checking RDB file /data/dump.rdb.dbroker-load\n\
                      --- RDB ERROR DETECTED ---\n\
                      [offset 9] Wrong signature trying to load DB from file\n\
                      [additional info] While doing: start\n\
                      [info] 0 keys read\n[info] 0 expires\n";

        assert_eq!(
            checker_findings(report),
            "--- RDB ERROR DETECTED ---\n[offset 9] Wrong signature trying to load DB from file\n\
             [additional info] While doing: start"
        );
    }

    #[test]
    fn a_snapshot_counts_only_when_it_forked_at_the_digests_instant() {
        let digest = "7dff4aa4711992a6870417c26949f355d23a7cac";
        let session = |bgsave: &str| format!("OK\n{digest}\n{bgsave}\n# Persistence\nrdb_saves:7\nOK\n");

        let (taken, saves) = snapshot_taken(&session("Background saving started")).unwrap().expect("taken");
        assert_eq!((taken.0.as_str(), saves), (format!("redis:{digest}").as_str(), 7));
        for later in [
            "Background saving scheduled",
            "ERR Background save already in progress",
            "ERR Another child process is active (AOF?): can't BGSAVE right now. Use BGSAVE SCHEDULE in order to schedule a BGSAVE whenever possible.",
        ] {
            assert!(snapshot_taken(&session(later)).unwrap().is_none(), "{later}: tried again");
        }
        let refused = "OK\nERR DEBUG command not allowed. If the enable-debug-command option is set\n\nBackground saving started\n";
        assert!(
            matches!(snapshot_taken(refused), Err(DumpError::Failed(m)) if m.contains("enable-debug-command local"))
        );
    }

    #[test]
    fn redis_clis_error_replies_are_found_among_its_answers() {
        assert_eq!(error_reply("OK\nERR unknown command 'X'\n\nOK\n"), Some("ERR unknown command 'X'"));
        assert_eq!(error_reply("NOAUTH Authentication required.\n"), Some("NOAUTH Authentication required."));
        assert_eq!(error_reply("OK\n7dff4aa4711992a6870417c26949f355d23a7cac\nBackground saving started\n"), None);
    }
}
