//! The benchmark's backups section (issue 14): for each engine, a database of more than 256 MiB
//! of random data, then, `runs` times in turn,
//!
//! 1. the engine's own dump tool writing it to a file inside the instance's container, as an
//!    operator would run it there (`mariadb-dump`, `pg_dump`, `redis-cli --rdb`): the rate to beat;
//! 2. dbroker's backup of it to a directory target (`POST /v1/instances/{id}/backups`: dump,
//!    zstd, age, written out), whose rate should be at least 0.8 of the dump tool's;
//! 3. a restore of that backup into a new instance (`POST /v1/instances` with `from_backup`),
//!    whose row or key count is checked before it counts;
//!
//! with dbroker's resident set sampled every `RSS_SAMPLE_INTERVAL` during 2 and 3: a backup
//! streams, so its memory must not grow with the database. Rates are of the database's size as
//! dbroker's stats report it (`GET /v1/instances/{id}/stats`). Each run does the three in turn,
//! so that each ratio of 2 to 1 is of two measures taken side by side on this shared machine.
//!
//! It takes minutes and about 1.5 GB of disk at once (a database, its dump or backup, and the
//! restored copy), so it runs only when asked: `BENCH_BACKUPS=1` adds it to a full run,
//! `BENCH_ONLY=backups` runs it alone. `BENCH_BACKUPS=native` measures the fill and the dump tools
//! only, on a dbroker with no `[backups]` section (which one built before backups refuses): a
//! minute at `BENCH_RUNS=3` on this machine (Redis, PostgreSQL and MySQL filled in 1, 11 and 17 s,
//! dumped in 2.9, 1.4 and 3.4 s). The restores are most of the rest, loading MySQL's SQL the
//! slowest of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use crate::{Backend, Dbroker, Metrics, USER, cleanup, percentile, rss_kib};

/// The rows of each SQL engine's table, each with `PAYLOAD_MD5S` MD5 digests in hex (32 random
/// hex characters each, which zstd cannot squeeze below about half): 288 MB of payload.
const SQL_ROWS: u64 = 1_000_000;
const PAYLOAD_MD5S: usize = 9;
/// Rows per `INSERT ... SELECT`: ten statements, not one, so that no transaction holds all of it.
/// MySQL's batch is five copies of the ten digits (10⁵ rows).
const SQL_BATCH_ROWS: u64 = 100_000;
const _: () = assert!(SQL_ROWS % SQL_BATCH_ROWS == 0, "whole batches");
/// Redis's keys, each a `REDIS_VALUE_BYTES` random value: 288 MB, like the SQL engines'.
const REDIS_KEYS: u64 = 4_400;
const REDIS_VALUE_BYTES: usize = 64 * 1024;
/// SETs per pipeline: 4 MiB a round trip.
const REDIS_PIPELINE: u64 = 64;
/// How often dbroker's resident set is read while it backs up or restores.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// The directory target's name in the configuration.
const TARGET: &str = "bench";

/// What `BENCH_BACKUPS` (and `BENCH_ONLY=backups`) ask this section to measure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// The dump tools, dbroker's backups and its restores.
    Full,
    /// The fill and the dump tools only, on a dbroker without backups.
    DumpToolsOnly,
}

impl Mode {
    /// `BENCH_BACKUPS=1`: everything; `BENCH_BACKUPS=native`: the dump tools only. Unset, the
    /// section runs only if `only` (`BENCH_ONLY=backups`), in full.
    pub(crate) fn from_env(only: bool) -> Option<Mode> {
        match std::env::var("BENCH_BACKUPS").as_deref() {
            Ok("1") => Some(Mode::Full),
            Ok("native") => Some(Mode::DumpToolsOnly),
            Ok("" | "0") | Err(_) => only.then_some(Mode::Full),
            Ok(other) => panic!("BENCH_BACKUPS is 1 or native, not {other:?}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Redis,
    Postgres,
    Mysql,
}

impl Engine {
    const ALL: [Engine; 3] = [Engine::Redis, Engine::Postgres, Engine::Mysql];

    fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    /// Each instance's memory cap, in MiB: the engines' defaults, but for Redis, which holds all
    /// its data in memory, each 64 KiB value in an 80 KiB block of its allocator (about 345 MiB
    /// in all): 768 MiB gives it a `maxmemory` (75 % of the cap) of 576 MiB.
    fn memory_mb(self) -> u32 {
        match self {
            Engine::Redis => 768,
            Engine::Postgres => 512,
            Engine::Mysql => 1024,
        }
    }

    /// The engine's own dump tool, as an operator runs it in the container, writing to
    /// `/tmp/bench-dump` (the container's own filesystem, not its volume). A fixed script: the
    /// password is read from the file dbroker wrote into the container and reaches the tool
    /// through the environment of that one process (`MYSQL_PWD`, `PGPASSWORD`, `REDISCLI_AUTH`),
    /// never its arguments, which every user of the host sees in `ps`, nor the container's own
    /// environment, which `docker inspect` shows.
    fn dump_script(self) -> &'static str {
        match self {
            Engine::Mysql => {
                "export MYSQL_PWD=\"$(cat /etc/dbroker/password)\"; \
                 exec mariadb-dump -uroot --single-transaction --all-databases > /tmp/bench-dump"
            }
            Engine::Postgres => {
                "export PGPASSWORD=\"$(cat /etc/dbroker/password)\"; \
                 exec pg_dump -h 127.0.0.1 -U postgres -d app > /tmp/bench-dump"
            }
            // Redis keeps its password in its configuration file (see src/engines/redis.rs),
            // quoted once it has rewritten the file itself. `--rdb` is a replica's sync, which the
            // server starts only after `repl-diskless-sync-delay` (5 s by default) in case more
            // replicas come: measured as it comes, the tool would be 5 s of waiting and then the
            // work. The work is the rate to beat, so the delay is 0 for this one dump and set back
            // after it, before dbroker's backup of the same server.
            Engine::Redis => {
                "export REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' /etc/dbroker/redis.conf | tr -d '\"')\"; \
                 delay=$(redis-cli --raw CONFIG GET repl-diskless-sync-delay | tail -n 1); \
                 redis-cli CONFIG SET repl-diskless-sync-delay 0 > /dev/null || exit 1; \
                 redis-cli --rdb /tmp/bench-dump; status=$?; \
                 redis-cli CONFIG SET repl-diskless-sync-delay \"$delay\" > /dev/null || exit 1; \
                 exit $status"
            }
        }
    }
}

/// One engine's figures.
pub(crate) struct EngineBackups {
    engine: &'static str,
    /// Rows (Redis: keys) the bench wrote, and their payload in bytes.
    rows: u64,
    payload_bytes: u64,
    /// How long writing them took.
    fill: Duration,
    /// The database's size as dbroker's stats report it: MySQL's tables and indexes, PostgreSQL's
    /// `pg_database_size`, Redis's `used_memory`. The rates are of this.
    data_bytes: u64,
    /// The dump tool's file, and its runs.
    dump_bytes: u64,
    dump_tool: Vec<Duration>,
    /// dbroker's stored object (`size_bytes`), and its backups' runs; empty with `DumpToolsOnly`.
    object_bytes: u64,
    backups: Vec<Duration>,
    restores: Vec<Duration>,
    backup_memory: Vec<Resident>,
    restore_memory: Vec<Resident>,
}

/// dbroker's resident set while one request ran: just before it, and the largest sample.
#[derive(Clone, Copy, Debug)]
struct Resident {
    before_kib: u64,
    peak_kib: u64,
}

/// The section on a dbroker of its own, on a fresh store of `backend`, its containers named
/// with `prefix`; everything it makes is removed when it ends, also by a panic.
pub(crate) async fn measure(backend: &Backend, prefix: &str, runs: usize, mode: Mode) -> Vec<EngineBackups> {
    // Declared first, so dropped last: after dbroker has stopped, nothing recreates what it removes.
    let _cleanup = Cleanup(prefix.to_string());
    let data_dir = tempfile::tempdir().expect("a temporary data directory");
    let store = backend.store(data_dir.path(), "backups").await;
    let setup = BackupSetup::write(mode);
    let dbroker = Dbroker::start_with(&store, data_dir.path(), prefix, &setup.config, "86400", Metrics::On);
    dbroker.wait_until_up().await;
    let docker = Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
    let mut results = Vec::new();
    for engine in Engine::ALL {
        results.push(measure_engine(&dbroker, &docker, prefix, engine, runs, mode).await);
    }
    results
}

async fn measure_engine(
    dbroker: &Dbroker,
    docker: &Docker,
    prefix: &str,
    engine: Engine,
    runs: usize,
    mode: Mode,
) -> EngineBackups {
    let name = engine.name();
    let source = post(dbroker, "/v1/instances", json!({"engine": name, "memory_mb": engine.memory_mb()})).await;
    let id = source["id"].as_str().unwrap();
    let container = format!("{prefix}-{id}");
    let filling = Instant::now();
    let (rows, payload_bytes) = fill(engine, &source).await;
    let fill = filling.elapsed();
    // The same count that accepts a restore, first on the data it restores.
    assert_eq!(count(engine, &source).await, rows, "the {name} instance holds every row it was filled with");
    let data_bytes = data_size(dbroker, engine, id).await;
    eprintln!("{name}: {rows} rows or keys, {} in {:.1} s", mib(data_bytes), fill.as_secs_f64());

    let mut figures = EngineBackups {
        engine: name,
        rows,
        payload_bytes,
        fill,
        data_bytes,
        dump_bytes: 0,
        dump_tool: Vec::new(),
        object_bytes: 0,
        backups: Vec::new(),
        restores: Vec::new(),
        backup_memory: Vec::new(),
        restore_memory: Vec::new(),
    };
    for run in 0..runs {
        let dumping = Instant::now();
        run_in(docker, &container, engine.dump_script()).await;
        figures.dump_tool.push(dumping.elapsed());
        // Untimed: the file's size, and it is removed before the backup, which would share the disk.
        let size = run_in(docker, &container, "stat -c %s /tmp/bench-dump && rm -f /tmp/bench-dump").await;
        figures.dump_bytes = size.trim().parse().unwrap_or_else(|_| panic!("the dump's size: {size:?}"));
        eprintln!("{name}, run {run}: the dump tool {:.2} s", figures.dump_tool[run].as_secs_f64());
        if mode == Mode::DumpToolsOnly {
            continue;
        }

        let ((backup, took), memory) = sampling(dbroker, timed(post_backup(dbroker, id))).await;
        assert_eq!(backup["state"], "succeeded", "the backup answered {backup}");
        figures.object_bytes = backup["size_bytes"].as_u64().expect("the backup's size_bytes");
        figures.backups.push(took);
        figures.backup_memory.push(memory);
        let backup_id = backup["id"].as_str().expect("the backup's id").to_string();

        let restore = json!({"engine": name, "memory_mb": engine.memory_mb(), "from_backup": backup_id});
        let ((restored, took), memory) = sampling(dbroker, timed(post(dbroker, "/v1/instances", restore))).await;
        // A restore counts once it is seen to hold every row.
        assert_eq!(count(engine, &restored).await, rows, "the instance restored from {backup_id} holds every row");
        figures.restores.push(took);
        figures.restore_memory.push(memory);
        eprintln!(
            "{name}, run {run}: backup {:.2} s, restore {:.2} s",
            figures.backups[run].as_secs_f64(),
            took.as_secs_f64()
        );
        dbroker.delete(&restored).await;
        // The disk is shared: each backup goes once measured (the target's directory goes at the
        // end whatever happens).
        let deleted = dbroker
            .client
            .delete(format!("{}/v1/backups/{backup_id}", dbroker.base))
            .header("Authorization", USER)
            .send()
            .await;
        if !deleted.as_ref().is_ok_and(|r| r.status().is_success()) {
            eprintln!("{name}: the backup {backup_id} was not deleted: {deleted:?}");
        }
    }
    dbroker.delete(&source).await;
    figures
}

/// The configuration the section's dbroker starts with: the offline catalogue and, for `Full`,
/// a `[backups]` section with a directory target in a temporary directory and an age key pair
/// made for this run. Removed when dropped.
struct BackupSetup {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl BackupSetup {
    fn write(mode: Mode) -> BackupSetup {
        let dir = tempfile::tempdir().expect("a directory for the backups' configuration");
        let catalogue = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.offline.toml"));
        let mut config = std::fs::read_to_string(catalogue).expect("the offline catalogue");
        if mode == Mode::Full {
            let identity = age::x25519::Identity::generate();
            let identity_file = dir.path().join("backup.key");
            let objects = dir.path().join("objects");
            std::fs::create_dir(&objects).unwrap();
            // The private key, as `age-keygen` writes it: only its owner may read it.
            write_private(
                &identity_file,
                &format!("{}\n", age::secrecy::ExposeSecret::expose_secret(&identity.to_string())),
            );
            config.push_str(&format!(
                "\n[backups]\ndefault_target = \"{TARGET}\"\nrecipient = \"{}\"\nidentity_file = \"{}\"\n\n\
                 [backups.targets.{TARGET}]\nkind = \"dir\"\npath = \"{}\"\n",
                identity.to_public(),
                identity_file.display(),
                objects.display()
            ));
        }
        let path = dir.path().join("dbroker.toml");
        std::fs::write(&path, config).unwrap();
        BackupSetup { config: path, _dir: dir }
    }
}

fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    file.write_all(contents.as_bytes()).unwrap();
}

/// `POST path` as the bench user, which must answer 201; its JSON.
async fn post(dbroker: &Dbroker, path: &str, body: Value) -> Value {
    let response = dbroker
        .client
        .post(format!("{}{path}", dbroker.base))
        .header("Authorization", USER)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 201, "POST {path} answered {text}");
    serde_json::from_str(&text).unwrap()
}

/// A backup of the instance `id` to the directory target, answered once it is complete there.
async fn post_backup(dbroker: &Dbroker, id: &str) -> Value {
    post(dbroker, &format!("/v1/instances/{id}/backups"), json!({"target": TARGET})).await
}

async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = work.await;
    (out, started.elapsed())
}

/// `work`'s output, and dbroker's resident set while it ran, read every `RSS_SAMPLE_INTERVAL` on
/// a thread of its own (a busy runtime delays no sample).
async fn sampling<T>(dbroker: &Dbroker, work: impl Future<Output = T>) -> (T, Resident) {
    let pid = dbroker.child.id();
    let before_kib = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                // An interval between samples, not a wait for anything.
                std::thread::sleep(RSS_SAMPLE_INTERVAL);
            }
            peak.max(rss_kib(pid))
        }
    });
    let out = work.await;
    stop.store(true, Ordering::Relaxed);
    let peak_kib = sampler.await.unwrap().max(before_kib);
    (out, Resident { before_kib, peak_kib })
}

/// Runs `script` with `sh -c` in `container` to its end, as the container's user; what it wrote
/// to its standard output. Panics, with what it wrote, if it fails.
async fn run_in(docker: &Docker, container: &str, script: &str) -> String {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    let exec = CreateExecOptions {
        cmd: Some(vec!["sh", "-c", script]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec = docker.create_exec(container, exec).await.unwrap();
    let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await.unwrap() else {
        panic!("not attached");
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(chunk) = futures_util::StreamExt::next(&mut output).await {
        match chunk.unwrap() {
            bollard::container::LogOutput::StdOut { message } => stdout.push_str(&String::from_utf8_lossy(&message)),
            other => stderr.push_str(&other.to_string()),
        }
    }
    let code = docker.inspect_exec(&exec.id).await.unwrap().exit_code;
    assert_eq!(code, Some(0), "{script:?} in {container} failed: {stderr}");
    stdout
}

/// Fills the instance with the bench's data; the rows (keys) and their payload in bytes.
async fn fill(engine: Engine, instance: &Value) -> (u64, u64) {
    match engine {
        Engine::Mysql => {
            let mut conn = mysql(instance).await;
            for statement in [
                "CREATE DATABASE bench",
                "CREATE TABLE bench.digits (d TINYINT PRIMARY KEY)",
                "INSERT INTO bench.digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)",
                "CREATE TABLE bench.filler (id BIGINT PRIMARY KEY, payload VARCHAR(300) NOT NULL)",
            ] {
                sqlx::query(statement).execute(&mut conn).await.unwrap();
            }
            // Five copies of the ten digits make each batch's 100,000 ids; the batch's number
            // makes the sixth digit. The SQL is the bench's own constants.
            let insert = format!(
                "INSERT INTO bench.filler SELECT ? * {SQL_BATCH_ROWS} + a.d * 10000 + b.d * 1000 + c.d * 100 \
                 + d.d * 10 + e.d, CONCAT({}) FROM bench.digits a, bench.digits b, bench.digits c, \
                 bench.digits d, bench.digits e",
                vec!["MD5(RAND())"; PAYLOAD_MD5S].join(", ")
            );
            for batch in 0..SQL_ROWS / SQL_BATCH_ROWS {
                sqlx::query(AssertSqlSafe(insert.clone())).bind(batch).execute(&mut conn).await.unwrap();
            }
            // InnoDB's size figures are estimates, refreshed now rather than in the background.
            sqlx::query("ANALYZE TABLE bench.filler").execute(&mut conn).await.unwrap();
            conn.close().await.ok();
            (SQL_ROWS, SQL_ROWS * 32 * PAYLOAD_MD5S as u64)
        }
        Engine::Postgres => {
            let mut conn = postgres(instance).await;
            sqlx::query("CREATE TABLE filler (id bigint PRIMARY KEY, payload text NOT NULL)")
                .execute(&mut conn)
                .await
                .unwrap();
            let insert = format!(
                "INSERT INTO filler SELECT g, {} FROM generate_series($1::bigint, $2::bigint) g",
                vec!["md5(random()::text)"; PAYLOAD_MD5S].join(" || ")
            );
            for batch in 0..SQL_ROWS / SQL_BATCH_ROWS {
                let first = batch * SQL_BATCH_ROWS;
                let (first, last) = (first as i64, (first + SQL_BATCH_ROWS - 1) as i64);
                sqlx::query(AssertSqlSafe(insert.clone())).bind(first).bind(last).execute(&mut conn).await.unwrap();
            }
            sqlx::query("ANALYZE filler").execute(&mut conn).await.unwrap();
            conn.close().await.ok();
            (SQL_ROWS, SQL_ROWS * 32 * PAYLOAD_MD5S as u64)
        }
        Engine::Redis => {
            let mut conn = redis(instance).await;
            let mut value = vec![0u8; REDIS_VALUE_BYTES];
            let mut first = 0;
            while first < REDIS_KEYS {
                // The last pipeline may be shorter.
                let end = (first + REDIS_PIPELINE).min(REDIS_KEYS);
                let mut pipe = redis::pipe();
                for key in first..end {
                    rand::fill(&mut value[..]);
                    pipe.cmd("SET").arg(format!("filler:{key}")).arg(&value).ignore();
                }
                let () = pipe.query_async(&mut conn).await.unwrap();
                first = end;
            }
            (REDIS_KEYS, REDIS_KEYS * REDIS_VALUE_BYTES as u64)
        }
    }
}

/// The rows (keys) an instance holds, as the bench's own client reads them.
async fn count(engine: Engine, instance: &Value) -> u64 {
    match engine {
        Engine::Mysql => {
            let mut conn = mysql(instance).await;
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench.filler").fetch_one(&mut conn).await.unwrap();
            conn.close().await.ok();
            rows as u64
        }
        Engine::Postgres => {
            let mut conn = postgres(instance).await;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM filler").fetch_one(&mut conn).await.unwrap();
            conn.close().await.ok();
            rows as u64
        }
        Engine::Redis => {
            let mut conn = redis(instance).await;
            redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
        }
    }
}

/// The database's size in bytes as dbroker's stats report it (see `EngineBackups::data_bytes`).
async fn data_size(dbroker: &Dbroker, engine: Engine, id: &str) -> u64 {
    let response = dbroker
        .client
        .get(format!("{}/v1/instances/{id}/stats", dbroker.base))
        .header("Authorization", USER)
        .send()
        .await
        .unwrap();
    let stats: Value = response.json().await.unwrap();
    let server = &stats["server"];
    let bytes = match engine {
        Engine::Mysql => server["databases"].as_array().map(|d| d.iter().filter_map(|d| d["bytes"].as_u64()).sum()),
        Engine::Postgres => server["database"]["bytes"].as_u64(),
        Engine::Redis => server["used_memory_bytes"].as_u64(),
    };
    bytes.unwrap_or_else(|| panic!("no database size in the stats: {stats}"))
}

fn port_and_password(instance: &Value) -> (u16, &str) {
    let port = instance["connection"]["port"].as_u64().expect("a port") as u16;
    (port, instance["connection"]["password"].as_str().expect("a password"))
}

async fn mysql(instance: &Value) -> sqlx::MySqlConnection {
    let (port, password) = port_and_password(instance);
    let options = sqlx::mysql::MySqlConnectOptions::new().host("127.0.0.1").port(port).username("root");
    options.password(password).disable_statement_logging().connect().await.unwrap()
}

async fn postgres(instance: &Value) -> sqlx::PgConnection {
    let (port, password) = port_and_password(instance);
    let options = sqlx::postgres::PgConnectOptions::new().host("127.0.0.1").port(port).username("postgres");
    let options = options.password(password).database(instance["database"].as_str().expect("a database"));
    options.disable_statement_logging().connect().await.unwrap()
}

async fn redis(instance: &Value) -> redis::aio::MultiplexedConnection {
    let (port, password) = port_and_password(instance);
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp("127.0.0.1".into(), port))
        .unwrap()
        .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password));
    redis::Client::open(info).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Removes every container, volume and network of the prefix when dropped, also when the
/// section panics.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop may run on the bench's runtime, which must not block: a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(cleanup(&prefix))
        })
        .join();
    }
}

fn median(runs: &[Duration]) -> Duration {
    let mut sorted = runs.to_vec();
    sorted.sort();
    percentile(&sorted, 50.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// MiB of `bytes` a second, in `took`.
fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

impl EngineBackups {
    /// What `rows` counts.
    fn unit(&self) -> &'static str {
        if self.engine == "redis" { "keys" } else { "rows" }
    }

    /// Each run's dump tool time over its backup's: the backup's rate as a share of the tool's.
    fn shares(&self) -> Vec<f64> {
        self.dump_tool
            .iter()
            .zip(&self.backups)
            .map(|(tool, backup)| tool.as_secs_f64() / backup.as_secs_f64())
            .collect()
    }

    fn median_share(&self) -> Option<f64> {
        let mut shares = self.shares();
        shares.sort_by(f64::total_cmp);
        shares.get(shares.len() / 2).copied()
    }
}

/// The widest resident set of the runs, with the one before the first.
fn memory_cell(samples: &[Resident]) -> String {
    match (samples.first(), samples.iter().map(|r| r.peak_kib).max()) {
        (Some(first), Some(peak)) => {
            format!("{:.1} MB before, {:.1} MB peak", first.before_kib as f64 / 1024.0, peak as f64 / 1024.0)
        }
        _ => "not measured".into(),
    }
}

/// The section's table, for `latest.md`.
pub(crate) fn markdown(results: &[EngineBackups], runs: usize) -> String {
    let mut md = format!(
        "\nBackups: each SQL engine's table of {SQL_ROWS} rows of {} random hex characters, Redis's \
         {REDIS_KEYS} keys of {} KiB random values; data as dbroker's stats report it; medians of {runs} \
         runs, each the engine's dump tool, dbroker's backup and a restore, in turn. Redis's tool, \
         `redis-cli --rdb`, without the 5 s the server waits before a replica's sync \
         (`repl-diskless-sync-delay`).\n\n\
         | engine | data | dump tool, to a file in the container | dbroker backup, to a directory \
         (zstd, age) | backup / dump tool | restore into a new instance | dbroker's resident memory, backup \
         | the same, restore |\n|---|---|---|---|---|---|---|---|\n",
        32 * PAYLOAD_MD5S,
        REDIS_VALUE_BYTES / 1024
    );
    for r in results {
        let dump = median(&r.dump_tool);
        let data = format!(
            "{} ({} {} of {} payload, filled in {:.1} s)",
            mib(r.data_bytes),
            r.rows,
            r.unit(),
            mib(r.payload_bytes),
            r.fill.as_secs_f64()
        );
        let dump_cell =
            format!("{:.2} s, {:.1} MiB/s ({} file)", dump.as_secs_f64(), rate(r.data_bytes, dump), mib(r.dump_bytes));
        let (backup_cell, share_cell, restore_cell) = if r.backups.is_empty() {
            let not = "not measured (`BENCH_BACKUPS=native`)".to_string();
            (not.clone(), not.clone(), not)
        } else {
            let (backup, restore) = (median(&r.backups), median(&r.restores));
            let rounds: Vec<String> = r.shares().iter().map(|s| format!("{s:.2}")).collect();
            (
                format!(
                    "{:.2} s, {:.1} MiB/s ({} object)",
                    backup.as_secs_f64(),
                    rate(r.data_bytes, backup),
                    mib(r.object_bytes)
                ),
                format!("{:.2}× (rounds: {}; target 0.8)", r.median_share().unwrap_or_default(), rounds.join(", ")),
                format!("{:.2} s, {:.1} MiB/s", restore.as_secs_f64(), rate(r.data_bytes, restore)),
            )
        };
        md.push_str(&format!(
            "| {} | {data} | {dump_cell} | {backup_cell} | {share_cell} | {restore_cell} | {} | {} |\n",
            r.engine,
            memory_cell(&r.backup_memory),
            memory_cell(&r.restore_memory)
        ));
    }
    md
}

/// The section's figures, for `latest.json`: by engine.
pub(crate) fn json(results: &[EngineBackups]) -> Value {
    let seconds = |runs: &[Duration]| runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let memory = |samples: &[Resident]| {
        samples.iter().map(|r| json!({"before_kib": r.before_kib, "peak_kib": r.peak_kib})).collect::<Vec<_>>()
    };
    let mut engines = serde_json::Map::new();
    for r in results {
        let dump = median(&r.dump_tool);
        let mut figures = json!({
            r.unit(): r.rows,
            "payload_bytes": r.payload_bytes,
            "data_bytes": r.data_bytes,
            "fill_s": r.fill.as_secs_f64(),
            "dump_tool": {"median_s": dump.as_secs_f64(), "mib_per_s": rate(r.data_bytes, dump),
                "runs_s": seconds(&r.dump_tool), "file_bytes": r.dump_bytes},
        });
        if !r.backups.is_empty() {
            let (backup, restore) = (median(&r.backups), median(&r.restores));
            figures["backup"] = json!({"median_s": backup.as_secs_f64(), "mib_per_s": rate(r.data_bytes, backup),
                "runs_s": seconds(&r.backups), "object_bytes": r.object_bytes,
                "share_of_dump_tool": r.median_share(), "rounds_share_of_dump_tool": r.shares(),
                "memory": memory(&r.backup_memory)});
            figures["restore"] = json!({"median_s": restore.as_secs_f64(), "mib_per_s": rate(r.data_bytes, restore),
                "runs_s": seconds(&r.restores), "memory": memory(&r.restore_memory)});
        }
        engines.insert(r.engine.to_string(), figures);
    }
    Value::Object(engines)
}
