//! dbroker's benchmark: `cargo bench --bench provisioning` (after `scripts/docker-up` and
//! `scripts/images`). It starts the real `dbroker` binary on a temporary data directory with the
//! offline catalogue, and measures from the outside, as a user would:
//!
//! - time to ready, per engine: from sending `POST /v1/instances` until this program's own client
//!   has logged in with the returned credentials and run a query (median and p95 of several runs);
//! - burst: 20 Redis creates at once: wall time, all ready, all on distinct ports;
//! - read API: requests per second and p99 latency of `GET /v1/instances` and
//!   `GET /v1/instances/{id}`, 16 connections, the user holding 20 of the 1,000 instance records
//!   in the store;
//! - the read path's floor: Debian's nginx serving byte-identical bodies of those two answers as
//!   static files, under the same load in the same run; dbroker's figure as a share of it is what
//!   the HTTP stack, the store and JSON cost above putting bytes on a socket;
//! - the metrics' cost: those two reads on two more dbroker processes on the same store, one with
//!   its metrics and one without (no listener, no request timing), in turns `METRICS_ROUNDS`
//!   times, who goes first alternating; the median of the rounds' ratios on/off is what timing
//!   every request costs (the issue allows 5 %);
//! - memory: dbroker's resident set, idle and with those 1,000 records;
//! - backups, when asked (`BENCH_BACKUPS=1`, or alone with `BENCH_ONLY=backups`; see
//!   `backups.rs`): each engine's dump tool, dbroker's backup and its restore on more than 256 MiB
//!   of data, and dbroker's resident memory meanwhile.
//!
//! The store is SQLite in each dbroker's data directory, or PostgreSQL with
//! `BENCH_DATABASE_URL=postgres://…` (`scripts/bench --database-url URL` sets it): the URL names a
//! database that role can connect to, and the role needs CREATEDB, for each dbroker (and its
//! siblings) runs on a database of its own, made fresh and dropped at the end. Each store's master
//! key is a key file, given as replicas are given theirs.
//!
//! Results go to `bench-results/latest.md` and `bench-results/latest.json` (`latest-postgres.*` on
//! PostgreSQL, so that the two sit side by side), which say which store. `BENCH_RUNS` sets the
//! number of runs per engine and of rounds of each read load (default 7). `BENCH_ONLY=reads`
//! measures the read API and its floor only (no creates, no pool), to compare changes on the read
//! path quickly. Timings are never asserted anywhere: this is how speed is judged.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection};

mod backups;

const USER: &str = "bench";
const BURST: usize = 20;
const READ_CONNECTIONS: usize = 16;
const READ_DURATION: Duration = Duration::from_secs(5);
const RECORDS: usize = 1000;
/// Of the records, how many are the bench user's: what `GET /v1/instances` lists.
const OWN_RECORDS: usize = 20;
/// How many times each read is measured with metrics on and off, alternately: the machine is
/// shared and noisy, and each round's pair of runs shares whatever else runs then.
const METRICS_ROUNDS: usize = 5;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let (reads_only, backups_only) = (only == "reads", only == "backups");
    let backups = if reads_only { None } else { backups::Mode::from_env(backups_only) };
    let backend = Backend::from_env();
    let prefix = format!("dbroker-bench-{}", std::process::id());
    if backups_only {
        let mut report = Report { store: backend.describe().await, ..Report::default() };
        report.backups = backups::measure(&backend, &prefix, runs, backups.unwrap_or(backups::Mode::Full)).await;
        report.write(runs, &backend);
        return;
    }
    let data_dir = tempfile::tempdir().expect("a temporary data directory");
    let store = backend.store(data_dir.path(), "reads").await;
    let dbroker = Dbroker::start(&store, data_dir.path(), &prefix, Metrics::On);
    dbroker.wait_until_up().await;
    let mut report =
        Report { store: backend.describe().await, memory_idle_kib: dbroker.rss_kib(), ..Report::default() };
    if !reads_only {
        dbroker.measure_creates(runs, &mut report).await;
    }

    // 1,000 records, written straight to the store: the read API's cost is the store's and the
    // HTTP layer's, not Docker's. The bench user has 20 of them, the rest are other users'.
    let own = dbroker.fill_store(&store).await;
    report.memory_records_kib = dbroker.rss_kib();
    let routes = [
        ("GET /v1/instances", "/v1/instances".to_string(), "list.json"),
        ("GET /v1/instances/{id}", format!("/v1/instances/{own}"), "detail.json"),
    ];
    let mut bodies = Vec::new();
    for (_, path, file) in &routes {
        bodies.push((*file, dbroker.body(path).await));
    }
    let floor = StaticFloor::start(&bodies);
    // Each round loads dbroker and then the floor, so that whatever else this machine runs
    // weighs on both alike; the medians of the rounds are reported.
    for (route, path, file) in &routes {
        let mut served = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            served.push(dbroker.load(path.clone()).await);
            floors.extend(floor.as_ref().and_then(|f| wrk(&format!("{}/{file}", f.base), None)));
        }
        eprintln!("{route}: {served:?}\n  the floor: {floors:?}");
        report.reads.push(Reads::of(route, served, floors));
    }
    report.memory_after_load_kib = dbroker.rss_kib();
    drop(floor);

    // What the metrics cost: two more processes on the store, alike but for their metrics (the
    // first has served creates and leads: it is not their equal). Started while the first leads
    // the repairs (it holds the lease), so that neither runs a pass.
    let (with, without) = (
        Dbroker::start(&store, data_dir.path(), &prefix, Metrics::On),
        Dbroker::start(&store, data_dir.path(), &prefix, Metrics::Off),
    );
    with.wait_until_up().await;
    without.wait_until_up().await;
    for (_, path, _) in &routes {
        report.metrics_cost.push(on_and_off(&with, &without, path.clone()).await);
    }
    eprintln!("metrics on and off: {:?}", report.metrics_cost);
    drop((with, without));

    drop(dbroker);
    drop(store);
    cleanup(&prefix).await;
    if reads_only {
        report.write(runs, &backend);
        return;
    }

    // The same creates served from a warm pool of 2 per engine, on a dbroker of its own.
    let pool_dir = tempfile::tempdir().expect("a temporary data directory");
    let pool_store = backend.store(pool_dir.path(), "pool").await;
    let pool_config = pool_dir.path().join("pool.toml");
    std::fs::write(&pool_config, POOL_CATALOGUE).unwrap();
    let pooled = Dbroker::start_with(&pool_store, pool_dir.path(), &prefix, &pool_config, "30", Metrics::On);
    pooled.wait_until_up().await;
    for engine in ["redis", "postgres", "mysql"] {
        let times = pooled.time_to_ready(engine, runs, Some(&pool_store)).await;
        eprintln!("{engine} from the pool: time to ready {}", summary(&times));
        report.time_to_ready.push((format!("{engine}, warm pool"), times));
    }
    drop(pooled);
    drop(pool_store);
    cleanup(&prefix).await;
    if let Some(mode) = backups {
        report.backups = backups::measure(&backend, &prefix, runs, mode).await;
    }
    report.write(runs, &backend);
}

/// The store the measured dbrokers run on.
enum Backend {
    /// `dbroker.db` in each one's data directory: the embedded default.
    Sqlite,
    /// `BENCH_DATABASE_URL`: a PostgreSQL server, on which the bench makes a database for each
    /// store. The URL may hold a password: it is never printed.
    Postgres { server: String },
}

impl Backend {
    fn from_env() -> Backend {
        match std::env::var("BENCH_DATABASE_URL") {
            Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Backend::Postgres { server: url }
            }
            Ok(url) if !url.is_empty() => panic!("BENCH_DATABASE_URL is not a postgres:// URL"),
            _ => Backend::Sqlite,
        }
    }

    /// A fresh, empty store for the dbrokers of one phase, which keep their caches in `data_dir`.
    async fn store(&self, data_dir: &Path, phase: &str) -> BenchStore {
        let (url, database) = match self {
            Backend::Sqlite => (dbroker::store::DatabaseUrl::in_data_dir(data_dir).to_string(), None),
            Backend::Postgres { server } => {
                let database = FreshDatabase::create(server, phase).await;
                (database.url.clone(), Some(database))
            }
        };
        let keys = tempfile::tempdir().expect("a directory for the master key");
        let key_file = keys.path().join("master.key");
        std::fs::write(&key_file, hex::encode(rand::random::<[u8; 32]>())).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        BenchStore { url, key_file, _keys: keys, _database: database }
    }

    /// Which store, for the results: PostgreSQL with its server's version, never its URL.
    async fn describe(&self) -> String {
        match self {
            Backend::Sqlite => "SQLite (`dbroker.db` in the data directory)".into(),
            Backend::Postgres { server } => {
                let mut connection = sqlx::PgConnection::connect(server).await.expect("BENCH_DATABASE_URL answers");
                let version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
                    .fetch_one(&mut connection)
                    .await
                    .unwrap();
                format!("PostgreSQL {version}")
            }
        }
    }

    /// The results' file name, without extension.
    fn results_name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "latest",
            Backend::Postgres { .. } => "latest-postgres",
        }
    }
}

/// Where one phase's dbrokers keep their records, and the key file they are encrypted with.
struct BenchStore {
    /// `DBROKER_DATABASE_URL` for them; it may hold a password, so it is never printed.
    url: String,
    key_file: PathBuf,
    _keys: tempfile::TempDir,
    _database: Option<FreshDatabase>,
}

impl BenchStore {
    /// The store as the bench itself opens it, to write records and watch the pool.
    async fn open(&self) -> (dbroker::store::Store, dbroker::secrets::MasterKey) {
        let url = self.url.parse().expect("the bench's own database URL");
        let store = dbroker::store::Store::open(&url).await.expect("the store opens");
        let source = dbroker::secrets::KeySource::File(self.key_file.clone());
        (store, dbroker::secrets::MasterKey::load(&source, Path::new(""), false).expect("the key file reads"))
    }
}

/// A database made on a PostgreSQL server for one phase of the bench, dropped with this value,
/// whatever connections the dbrokers left.
struct FreshDatabase {
    server: String,
    name: String,
    /// The server's URL with this database in its path.
    url: String,
}

impl FreshDatabase {
    async fn create(server: &str, phase: &str) -> FreshDatabase {
        let name = format!("dbroker_bench_{}_{phase}", std::process::id());
        let mut connection = sqlx::PgConnection::connect(server).await.expect("BENCH_DATABASE_URL answers");
        sqlx::query(drop_database(&name)).execute(&mut connection).await.unwrap();
        // The bench's own name, never an input: quoted all the same.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("the role of BENCH_DATABASE_URL may create databases (CREATEDB)");
        let mut url = url::Url::parse(server).expect("BENCH_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        FreshDatabase { server: server.to_string(), name, url: url.into() }
    }
}

/// Drops the bench's database `name` (its own name, never an input), closing whatever
/// connections a dbroker left on it.
fn drop_database(name: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop may run on the bench's runtime, which must not block: a thread and runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async move {
                let mut connection = sqlx::PgConnection::connect(&server).await?;
                sqlx::query(drop_database(&name)).execute(&mut connection).await
            })
        });
        if let Ok(Err(error)) = dropped.join() {
            eprintln!("could not drop the bench's database {}: {error}", self.name);
        }
    }
}

/// `path` loaded on `on` and `off` in turn, `METRICS_ROUNDS` times.
async fn on_and_off(on: &Dbroker, off: &Dbroker, path: String) -> MetricsCost {
    let (mut ons, mut offs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..METRICS_ROUNDS {
        // Each goes first every other round: neither side always follows a rest.
        let (with, without) = if round % 2 == 0 {
            let with = on.load(path.clone()).await;
            (with, off.load(path.clone()).await)
        } else {
            let without = off.load(path.clone()).await;
            (on.load(path.clone()).await, without)
        };
        ratios.push(with.requests_per_second / without.requests_per_second);
        ons.push(with);
        offs.push(without);
    }
    let median = |mut runs: Vec<ReadResult>| {
        runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
        runs.swap_remove(runs.len() / 2)
    };
    let on_share = {
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    MetricsCost { on: median(ons), off: median(offs), on_share, ratios }
}

/// One read with metrics on and off: the median run of each, and the rounds' ratios.
#[derive(Debug)]
struct MetricsCost {
    on: ReadResult,
    off: ReadResult,
    /// The median of the rounds' ratios, requests/s with metrics over without.
    on_share: f64,
    /// Round by round, in the order they ran.
    ratios: Vec<f64>,
}

/// The offline catalogue with a warm pool of 2 for every engine.
const POOL_CATALOGUE: &str = r#"
[engines.mysql]
default_version = "10.11"
versions = { "10.11" = { image = "dbroker-local/mysql:10.11", pool = 2 } }
[engines.redis]
default_version = "7.0"
versions = { "7.0" = { image = "dbroker-local/redis:7.0", pool = 2 } }
[engines.postgres]
default_version = "15"
versions = { "15" = { image = "dbroker-local/postgres:15", pool = 2 } }
"#;

/// Whether a dbroker serves `/metrics` (on a port of its own) and so times every request.
#[derive(Clone, Copy, PartialEq)]
enum Metrics {
    On,
    Off,
}

/// The dbroker under test, a process of its own.
struct Dbroker {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
}

impl Dbroker {
    fn start(store: &BenchStore, data_dir: &Path, prefix: &str, metrics: Metrics) -> Dbroker {
        let config = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.offline.toml"));
        // The 1,000 records have no containers: no repair pass may run during the bench.
        Self::start_with(store, data_dir, prefix, config, "86400", metrics)
    }

    fn start_with(
        store: &BenchStore,
        data_dir: &Path,
        prefix: &str,
        config: &Path,
        reconcile_interval: &str,
        metrics: Metrics,
    ) -> Dbroker {
        let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let metrics_listen = match metrics {
            Metrics::On => TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string(),
            Metrics::Off => "off".to_string(),
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_dbroker"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("DBROKER_LISTEN", listen.to_string())
            .env("DBROKER_METRICS_LISTEN", metrics_listen)
            .env("DBROKER_DATA_DIR", data_dir)
            // In the environment, not the command line: a PostgreSQL URL may hold a password.
            .env("DBROKER_DATABASE_URL", &store.url)
            .env("DBROKER_MASTER_KEY_FILE", &store.key_file)
            .env_remove("DBROKER_MASTER_KEY")
            .env("DBROKER_DEMO_USERS", USER)
            .env("DBROKER_INSTANCE_PREFIX", prefix)
            .env("DBROKER_PORT_RANGE", "31000-31999")
            .env("DBROKER_RECONCILE_INTERVAL", reconcile_interval)
            // The burst is one user's: more than a user's default quota of instances.
            .env("DBROKER_QUOTA_INSTANCES", "1000")
            // One user floods on purpose: limits far out of its way, but still checked, so that
            // their cost is in what is measured.
            .env("DBROKER_READS_PER_SECOND", "1000000")
            .env("DBROKER_READ_BURST", "1000000")
            .env("DBROKER_CHANGES_PER_SECOND", "1000")
            .env("DBROKER_CHANGE_BURST", "1000")
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the dbroker binary starts");
        let client = reqwest::Client::builder().pool_max_idle_per_host(READ_CONNECTIONS).build().unwrap();
        Dbroker { child, base: format!("http://{listen}"), client }
    }

    async fn wait_until_up(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        while self.client.get(format!("{}/healthz", self.base)).send().await.is_err() {
            assert!(Instant::now() < end, "dbroker did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Time to ready per engine, `runs` times each, and the burst of creates.
    async fn measure_creates(&self, runs: usize, report: &mut Report) {
        for engine in ["redis", "postgres", "mysql"] {
            let times = self.time_to_ready(engine, runs, None).await;
            eprintln!("{engine}: time to ready {}", summary(&times));
            report.time_to_ready.push((engine.to_string(), times));
        }

        let started = Instant::now();
        let creates = (0..BURST).map(|_| self.create(json!({"engine": "redis", "memory_mb": 32})));
        let burst = futures_util::future::join_all(creates).await;
        let ports: HashSet<u64> = burst.iter().map(|i| i["connection"]["port"].as_u64().unwrap()).collect();
        futures_util::future::join_all(burst.iter().map(|i| login_and_query("redis", i))).await;
        report.burst_wall = started.elapsed();
        report.burst_distinct_ports = ports.len();
        eprintln!("burst of {BURST} Redis creates: {:?}, {} distinct ports", report.burst_wall, ports.len());
        for instance in &burst {
            self.delete(instance).await;
        }
    }

    async fn create(&self, body: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/instances", self.base))
            .header("Authorization", USER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create failed");
        response.json().await.unwrap()
    }

    /// `runs` times: create an instance of `engine`, log in and query, delete it; the time from
    /// the request until the query answered. With `pool_dir`, each run first waits for a full
    /// warm pool of `pool_store`, so that every create is served from it.
    async fn time_to_ready(&self, engine: &str, runs: usize, pool_store: Option<&BenchStore>) -> Vec<Duration> {
        let mut times = Vec::new();
        for _ in 0..runs {
            if let Some(pool_store) = pool_store {
                self.wait_for_pool(pool_store, engine, 2).await;
            }
            let started = Instant::now();
            let instance = self.create(json!({"engine": engine})).await;
            login_and_query(engine, &instance).await;
            times.push(started.elapsed());
            self.delete(&instance).await;
        }
        times
    }

    async fn delete(&self, instance: &Value) {
        let id = instance["id"].as_str().unwrap();
        self.client
            .delete(format!("{}/v1/instances/{id}", self.base))
            .header("Authorization", USER)
            .send()
            .await
            .unwrap();
    }

    /// Waits until the warm pool holds `count` running members of `engine`.
    async fn wait_for_pool(&self, store: &BenchStore, engine: &str, count: usize) {
        let (store, _) = store.open().await;
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let members = store.pool_members().await.unwrap();
            let running = members
                .iter()
                .filter(|m| m.engine().as_str() == engine && m.status == dbroker::model::Status::Running)
                .count();
            if running >= count {
                return;
            }
            assert!(Instant::now() < end, "the pool did not fill");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// dbroker's resident set size, in KiB.
    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// Writes `RECORDS` instance records, `OWN_RECORDS` of them the bench user's, the rest 100
    /// other users'; returns the id of one of the bench user's.
    async fn fill_store(&self, store: &BenchStore) -> String {
        let (store, key) = store.open().await;
        let bench = store.user_by_name(USER).await.unwrap().unwrap();
        let mut owners = Vec::new();
        for n in 0..100 {
            let name = format!("other{n}").parse().unwrap();
            owners.push(store.add_user(&name, &format!("token-{n}"), false).await.unwrap().id);
        }
        let mut own = String::new();
        for n in 0..RECORDS {
            let id = dbroker::model::InstanceId::random();
            let owner = if n < OWN_RECORDS { bench.id } else { owners[n % owners.len()] };
            let password = key.encrypt(&dbroker::secrets::Secret::generate_password());
            store
                .insert_instance(&dbroker::store::NewInstanceRecord {
                    id: &id,
                    node_id: dbroker::store::Node::LOCAL,
                    owner_id: Some(owner),
                    name: &format!("redis-{id}").parse().unwrap(),
                    settings: &dbroker::model::EngineSettings::Redis,
                    version: "7.0",
                    image: "dbroker-local/redis:7.0",
                    memory_mb: dbroker::model::MemoryMb(64),
                    port: 40000 + n as u16,
                    username: None,
                    password_enc: &password,
                    status: dbroker::model::Status::Running,
                    template_image: None,
                })
                .await
                .unwrap();
            if n == 0 {
                own = id.to_string();
            }
        }
        own
    }

    /// `READ_CONNECTIONS` connections asking for `path` as fast as they can for `READ_DURATION`:
    /// with `wrk` if it is installed (a C load generator, which leaves dbroker most of the two
    /// cores), else with this program's own client.
    async fn load(&self, path: String) -> ReadResult {
        match self.load_with_wrk(&path) {
            Some(result) => result,
            None => self.load_in_process(path).await,
        }
    }

    fn load_with_wrk(&self, path: &str) -> Option<ReadResult> {
        wrk(&format!("{}{path}", self.base), Some(USER))
    }

    /// The body of the answer to `GET path`, byte for byte.
    async fn body(&self, path: &str) -> Vec<u8> {
        let response = self.client.get(format!("{}{path}", self.base)).header("Authorization", USER).send().await;
        response.unwrap().bytes().await.unwrap().to_vec()
    }

    async fn load_in_process(&self, path: String) -> ReadResult {
        let url = Arc::new(format!("{}{path}", self.base));
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..READ_CONNECTIONS)
            .map(|_| {
                let (client, url, stop) = (self.client.clone(), url.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let response = client.get(url.as_str()).header("Authorization", USER).send().await.unwrap();
                        assert!(response.status().is_success());
                        response.bytes().await.unwrap();
                        latencies.push(started.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        tokio::time::sleep(READ_DURATION).await;
        stop.store(true, Ordering::Relaxed);
        let mut latencies: Vec<Duration> = Vec::new();
        for worker in workers {
            latencies.extend(worker.await.unwrap());
        }
        latencies.sort();
        ReadResult {
            requests_per_second: latencies.len() as f64 / READ_DURATION.as_secs_f64(),
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            client: "in-process reqwest",
        }
    }
}

impl Drop for Dbroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Logs in with the instance's own credentials and runs a query, with a real client.
async fn login_and_query(engine: &str, instance: &Value) {
    let port = instance["connection"]["port"].as_u64().unwrap() as u16;
    let password = instance["connection"]["password"].as_str().unwrap();
    match engine {
        "redis" => {
            let info =
                redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp("127.0.0.1".into(), port))
                    .unwrap()
                    .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password));
            let mut conn = redis::Client::open(info).unwrap().get_multiplexed_async_connection().await.unwrap();
            let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        }
        "mysql" => {
            let options = sqlx::mysql::MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("root")
                .password(password);
            let mut conn = options.connect().await.unwrap();
            sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
            conn.close().await.ok();
        }
        "postgres" => {
            let options = sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("postgres")
                .password(password)
                .database(instance["database"].as_str().unwrap());
            let mut conn = options.connect().await.unwrap();
            sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
            conn.close().await.ok();
        }
        other => unreachable!("{other}"),
    }
}

/// The resident set size of the process `pid`, in KiB; 0 once it is gone.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_default()
}

/// Removes whatever the bench left (a failed run, say).
async fn cleanup(prefix: &str) {
    let docker = bollard::Docker::connect_with_defaults().unwrap().negotiate_version().await.unwrap();
    let filters = std::collections::HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])]);
    let options =
        bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    for c in docker.list_containers(Some(options)).await.unwrap_or_default() {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        let _ = docker.remove_container(c.id.as_deref().unwrap_or_default(), Some(options)).await;
    }
    let options = bollard::query_parameters::ListVolumesOptionsBuilder::default().filters(&filters).build();
    for v in docker.list_volumes(Some(options)).await.ok().and_then(|v| v.volumes).unwrap_or_default() {
        let _ = docker.remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await;
    }
    // The network dbroker made for its containers, once they are gone.
    let options = bollard::query_parameters::ListNetworksOptionsBuilder::default().filters(&filters).build();
    for n in docker.list_networks(Some(options)).await.unwrap_or_default() {
        let _ = docker.remove_network(n.id.as_deref().unwrap_or_default()).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(times: &[Duration]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort();
    format!(
        "median {:.3} s, p95 {:.3} s",
        percentile(&sorted, 50.0).as_secs_f64(),
        percentile(&sorted, 95.0).as_secs_f64()
    )
}

#[derive(Debug, Default)]
struct ReadResult {
    requests_per_second: f64,
    p50: Duration,
    p99: Duration,
    /// What generated the load.
    client: &'static str,
}

/// One route's rounds of load, on dbroker and on the static floor.
struct Reads {
    route: String,
    /// The round of median requests per second.
    median: ReadResult,
    /// dbroker's requests per second as a share of the floor's in each round; empty without nginx.
    shares: Vec<f64>,
    floor_median: Option<ReadResult>,
}

impl Reads {
    fn of(route: &str, mut served: Vec<ReadResult>, mut floors: Vec<ReadResult>) -> Reads {
        let shares: Vec<f64> = if floors.len() == served.len() {
            served.iter().zip(&floors).map(|(s, f)| s.requests_per_second / f.requests_per_second).collect()
        } else {
            Vec::new()
        };
        let by_rate = |a: &ReadResult, b: &ReadResult| a.requests_per_second.total_cmp(&b.requests_per_second);
        served.sort_by(by_rate);
        floors.sort_by(by_rate);
        let median = |mut v: Vec<ReadResult>| (!v.is_empty()).then(|| v.swap_remove(v.len() / 2));
        Reads {
            route: route.to_string(),
            median: median(served).unwrap_or_default(),
            shares,
            floor_median: median(floors),
        }
    }

    fn median_share(&self) -> Option<f64> {
        let mut shares = self.shares.clone();
        shares.sort_by(f64::total_cmp);
        shares.get(shares.len() / 2).copied()
    }
}

#[derive(Default)]
struct Report {
    /// Which store, as `Backend::describe` says.
    store: String,
    time_to_ready: Vec<(String, Vec<Duration>)>,
    burst_wall: Duration,
    burst_distinct_ports: usize,
    reads: Vec<Reads>,
    /// The same loads on two more dbrokers, with metrics on and off, in the order of `reads`.
    metrics_cost: Vec<MetricsCost>,
    memory_idle_kib: u64,
    memory_records_kib: u64,
    memory_after_load_kib: u64,
    /// Empty unless asked for (see `backups`).
    backups: Vec<backups::EngineBackups>,
}

impl Report {
    fn write(&self, runs: usize, backend: &Backend) {
        let machine = machine();
        let store = &self.store;
        let mut md = format!(
            "Machine: {machine}. Store: {store}. {runs} runs per engine and rounds per read load; offline images \
             (`dbroker.offline.toml`).\n\n"
        );
        // `BENCH_ONLY` leaves some sections out: their tables too.
        if !self.time_to_ready.is_empty() {
            md.push_str("| measure | median | p95 |\n|---|---|---|\n");
        }
        let mut json_ready = serde_json::Map::new();
        for (engine, times) in &self.time_to_ready {
            let mut sorted = times.clone();
            sorted.sort();
            let (median, p95) = (percentile(&sorted, 50.0), percentile(&sorted, 95.0));
            md.push_str(&format!(
                "| time to ready, {engine} | {:.3} s | {:.3} s |\n",
                median.as_secs_f64(),
                p95.as_secs_f64()
            ));
            json_ready.insert(
                engine.clone(),
                json!({"median_s": median.as_secs_f64(), "p95_s": p95.as_secs_f64(),
                "runs_s": times.iter().map(Duration::as_secs_f64).collect::<Vec<_>>()}),
            );
        }
        let reads_measured = self.memory_idle_kib > 0;
        if reads_measured {
            md.push_str("\n| measure | value |\n|---|---|\n");
        }
        if self.burst_distinct_ports > 0 {
            md.push_str(&format!(
                "| burst of {BURST} Redis creates, wall | {:.3} s ({} distinct ports, all ready) |\n",
                self.burst_wall.as_secs_f64(),
                self.burst_distinct_ports
            ));
        }
        let mut json_reads = serde_json::Map::new();
        for reads in &self.reads {
            let (Some(floor), Some(share)) = (&reads.floor_median, reads.median_share()) else { continue };
            let rounds: Vec<String> = reads.shares.iter().map(|s| format!("{s:.2}")).collect();
            md.push_str(&format!(
                "| {}: the floor, static nginx with the same body | {:.0} requests/s; dbroker {share:.2}× of it \
                 (median of {} rounds: {}) |\n",
                reads.route,
                floor.requests_per_second,
                rounds.len(),
                rounds.join(", ")
            ));
            json_reads.insert(
                format!("{} (floor)", reads.route),
                json!({"requests_per_second": floor.requests_per_second, "dbroker_share": share,
                "dbroker_share_rounds": reads.shares}),
            );
        }
        for (Reads { route, .. }, cost) in self.reads.iter().zip(&self.metrics_cost) {
            let rounds: Vec<String> = cost.ratios.iter().map(|r| format!("{r:.3}")).collect();
            md.push_str(&format!(
                "| {route}: metrics on / off, {METRICS_ROUNDS} rounds | {:.0} / {:.0} requests/s; on {:.3}× of off (rounds: {}) |\n",
                cost.on.requests_per_second,
                cost.off.requests_per_second,
                cost.on_share,
                rounds.join(", ")
            ));
            json_reads.insert(
                format!("{route} (metrics on / off)"),
                json!({"on_requests_per_second": cost.on.requests_per_second,
                "off_requests_per_second": cost.off.requests_per_second,
                "on_share": cost.on_share, "rounds_on_share": cost.ratios}),
            );
        }
        for Reads { route, median: r, .. } in &self.reads {
            md.push_str(&format!(
                "| {route}, {READ_CONNECTIONS} connections ({}) | {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms |\n",
                r.client,
                r.requests_per_second,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3
            ));
            json_reads.insert(
                route.clone(),
                json!({"requests_per_second": r.requests_per_second,
                "p50_ms": r.p50.as_secs_f64() * 1e3, "p99_ms": r.p99.as_secs_f64() * 1e3}),
            );
        }
        if reads_measured {
            md.push_str(&format!(
                "| resident memory, idle | {:.1} MB |\n| resident memory, {RECORDS} records | {:.1} MB |\n\
                 | resident memory, after the read load | {:.1} MB |\n",
                self.memory_idle_kib as f64 / 1024.0,
                self.memory_records_kib as f64 / 1024.0,
                self.memory_after_load_kib as f64 / 1024.0
            ));
        }
        if !self.backups.is_empty() {
            md.push_str(&backups::markdown(&self.backups, runs));
        }
        let report = json!({
            "machine": machine,
            "store": store,
            "runs": runs,
            "time_to_ready": json_ready,
            "burst": {"creates": BURST, "wall_s": self.burst_wall.as_secs_f64(), "distinct_ports": self.burst_distinct_ports},
            "reads": json_reads,
            "memory_kib": {"idle": self.memory_idle_kib, "records": self.memory_records_kib, "after_load": self.memory_after_load_kib},
            "backups": backups::json(&self.backups),
        });
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench-results"));
        std::fs::create_dir_all(&dir).unwrap();
        let name = backend.results_name();
        std::fs::write(dir.join(format!("{name}.md")), &md).unwrap();
        std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("{md}");
    }
}

/// The machine, in a line: CPU model and count, memory, kernel.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{} × {}, {mem_gib:.0} GiB", cpus, model.unwrap_or("unknown CPU"))
}

/// `wrk` with `READ_CONNECTIONS` connections asking for `url` for `READ_DURATION`, with an
/// `Authorization` header if given; `None` if wrk is not installed or said nothing readable.
fn wrk(url: &str, authorization: Option<&str>) -> Option<ReadResult> {
    let mut command = std::process::Command::new("wrk");
    command.args(["-t2", &format!("-c{READ_CONNECTIONS}"), &format!("-d{}s", READ_DURATION.as_secs()), "--latency"]);
    if let Some(authorization) = authorization {
        command.args(["-H", &format!("Authorization: {authorization}")]);
    }
    let output = command.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()));
    let duration = |value: String| -> Option<Duration> {
        let (number, scale) = if let Some(us) = value.strip_suffix("us") {
            (us, 1e-6)
        } else if let Some(ms) = value.strip_suffix("ms") {
            (ms, 1e-3)
        } else {
            (value.strip_suffix('s')?, 1.0)
        };
        Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
    };
    Some(ReadResult {
        requests_per_second: field("Requests/sec:")?.parse().ok()?,
        p50: duration(field("50%")?)?,
        p99: duration(field("99%")?)?,
        client: "wrk",
    })
}

/// Debian's nginx serving `bodies` as static files on a loopback port of its own, as fast as a
/// server can answer with those bytes on this machine: the read path's floor. Stopped when dropped.
struct StaticFloor {
    base: String,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl StaticFloor {
    /// `None` if nginx is not installed (`scripts/bench` installs it) or does not start.
    fn start(bodies: &[(&str, Vec<u8>)]) -> Option<StaticFloor> {
        let dir = tempfile::tempdir().ok()?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www).ok()?;
        for (file, body) in bodies {
            std::fs::write(www.join(file), body).ok()?;
        }
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let root = dir.path().display();
        // As many workers as dbroker has threads (one per core), keep-alive without end, no log.
        let config = format!(
            "worker_processes auto;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; default_type application/json; keepalive_requests 1000000;\n\
             client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp; fastcgi_temp_path {root}/tmp;\n\
             uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; root {root}/www; }} }}\n"
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).ok()?;
        let server = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let floor = StaticFloor { base: format!("http://127.0.0.1:{port}"), server, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(floor)
    }
}

impl Drop for StaticFloor {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers and exits.
        let _ = std::process::Command::new("kill").arg(self.server.id().to_string()).status();
        let _ = self.server.wait();
    }
}
