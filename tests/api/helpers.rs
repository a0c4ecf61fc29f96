//! What the tests share: the Docker engine, the images to use, polling with a deadline, and guards
//! that remove what a test created even when it panics.

use std::future::Future;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions,
};

/// The engine the tests drive: `DOCKER_HOST` or the local socket, at an API version it speaks.
pub async fn docker() -> Docker {
    Docker::connect_with_defaults()
        .expect("a Docker client (is DOCKER_HOST well-formed?)")
        .negotiate_version()
        .await
        .expect("a Docker engine answers (run the tests with scripts/test)")
}

/// The image the tests use for an engine: `DBROKER_<ENGINE>_IMAGE` as `scripts/test` exports it,
/// else the offline image `scripts/images` builds.
pub fn image(engine: &str) -> String {
    std::env::var(format!("DBROKER_{}_IMAGE", engine.to_uppercase())).unwrap_or_else(|_| {
        match engine {
            "mysql" => "dbroker-local/mysql:10.11",
            "redis" => "dbroker-local/redis:7.0",
            "postgres" => "dbroker-local/postgres:15",
            other => panic!("no offline image for {other}"),
        }
        .to_string()
    })
}

/// The catalogue of `dbroker.offline.toml`, with each default version's image taken from
/// `DBROKER_<ENGINE>_IMAGE` when `scripts/test` sets it.
pub fn offline_catalogue() -> Catalogue {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.offline.toml");
    let (_, mut catalogue) = FileConfig::load(std::path::Path::new(path)).expect("dbroker.offline.toml loads");
    for engine in Engine::ALL {
        catalogue.set_default_image(engine, image(engine.as_str()));
    }
    catalogue
}

/// Polls `attempt` until it returns `Some`, or panics with `what` once `deadline` has passed.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes a container and its anonymous volumes when dropped, so a failing test leaves nothing.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        block_on_fresh_runtime(async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            let _ = docker().await.remove_container(&name, Some(options)).await;
        });
    }
}

/// Runs cleanup from `Drop`, which may run inside a test's runtime where blocking is not allowed:
/// a thread of its own with a runtime of its own.
pub fn block_on_fresh_runtime<F: Future<Output = ()> + Send + 'static>(cleanup: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleanup")
            .block_on(cleanup)
    })
    .join()
    .expect("cleanup thread");
}

/// A name no other test run uses, for containers and volumes.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

// ---------------------------------------------------------------------------------------------
// The store a test's dbroker runs on: SQLite or PostgreSQL, as `DBROKER_TEST_BACKEND` says.

/// Which store every test app and `dbroker serve` process of the test run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The data directory's `dbroker.db`, as a single host runs it.
    Sqlite,
    /// A database of the test's own on `DBROKER_TEST_POSTGRES_URL`'s server (see `TestDatabase`).
    Postgres,
}

impl Backend {
    /// `DBROKER_TEST_BACKEND`: `sqlite` (or unset) or `postgres`, as `scripts/test` runs the suite.
    pub fn of_this_run() -> Backend {
        match std::env::var("DBROKER_TEST_BACKEND").as_deref() {
            Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
            Ok("postgres") => Backend::Postgres,
            Ok(other) => panic!("DBROKER_TEST_BACKEND={other}: it is sqlite or postgres"),
        }
    }
}

/// A test's data directory, store and master key. On PostgreSQL the store is a database of its
/// own, dropped with the `TestStore`; share one between processes (`Arc`) to have them share it.
pub struct TestStore {
    /// The store, as `Config.database_url` takes it.
    pub url: DatabaseUrl,
    data_dir: tempfile::TempDir,
    /// A key file of the store's own, outside every data directory, as replicas are given theirs.
    key_file: std::path::PathBuf,
    _key_dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

impl TestStore {
    /// A store on this run's backend.
    pub async fn new() -> TestStore {
        TestStore::on(Backend::of_this_run()).await
    }

    pub async fn on(backend: Backend) -> TestStore {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let (url, database) = match backend {
            Backend::Sqlite => (DatabaseUrl::in_data_dir(data_dir.path()), None),
            Backend::Postgres => {
                let database = TestDatabase::create().await;
                (DatabaseUrl::Postgres(database.url.clone()), Some(database))
            }
        };
        let key_dir = tempfile::tempdir().expect("a temporary directory for the key");
        let key_file =
            crate::master_key::key_file(key_dir.path(), "master.key", &hex::encode(rand::random::<[u8; 32]>()));
        TestStore { url, data_dir, key_file, _key_dir: key_dir, _database: database }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Where a dbroker with this store's data directory gets its master key: on SQLite the data
    /// directory's `master.key`, made on the first start, as a single host has it; on PostgreSQL,
    /// which refuses to start without one given, the store's key file.
    pub fn master_key(&self) -> KeySource {
        match self.url {
            DatabaseUrl::Sqlite(_) => KeySource::DataDir,
            DatabaseUrl::Postgres(_) => KeySource::File(self.key_file.clone()),
        }
    }

    /// The store's URL whole, password and all, for `DBROKER_DATABASE_URL` (`DatabaseUrl` prints a
    /// PostgreSQL URL's password redacted).
    pub fn url_for_env(&self) -> String {
        match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }

    /// Whether `text` is anywhere in the store as it is: in its files' bytes on SQLite (the
    /// journal too), in any table's rows on PostgreSQL.
    pub async fn holds_in_clear(&self, text: &str) -> bool {
        match &self.url {
            DatabaseUrl::Sqlite(path) => ["", "-wal"].iter().any(|suffix| {
                let bytes = std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default();
                bytes.windows(text.len()).any(|w| w == text.as_bytes())
            }),
            DatabaseUrl::Postgres(url) => {
                let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT quote_ident(table_name::text) FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&mut db)
                .await
                .unwrap();
                let mut found = false;
                for table in tables {
                    // The table names are the schema's own, quoted by the server.
                    let query = format!("SELECT EXISTS (SELECT FROM {table} t WHERE strpos(t::text, $1) > 0)");
                    found |= sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(query))
                        .bind(text)
                        .fetch_one(&mut db)
                        .await
                        .unwrap();
                }
                sqlx::Connection::close(db).await.ok();
                found
            }
        }
    }

    /// `dbroker serve` (see `dbroker_serve`) on this store and its data directory, with the
    /// master key of `master_key`.
    pub fn serve(&self, prefix: &str, demo_user: &str, first_port: u16) -> (tokio::process::Command, String) {
        let (mut command, base) = dbroker_serve(self.data_dir(), prefix, demo_user, first_port);
        command.env("DBROKER_DATABASE_URL", self.url_for_env());
        if let KeySource::File(key_file) = self.master_key() {
            command.env("DBROKER_MASTER_KEY_FILE", key_file);
        }
        (command, base)
    }

    /// `dbroker serve` on this store with a data directory of its own, as a replica on another
    /// host would be: given the store's key file on either backend, as replicas share one key.
    pub fn serve_in(
        &self,
        data_dir: &std::path::Path,
        prefix: &str,
        demo_user: &str,
        first_port: u16,
    ) -> (tokio::process::Command, String) {
        let (mut command, base) = dbroker_serve(data_dir, prefix, demo_user, first_port);
        command.env("DBROKER_DATABASE_URL", self.url_for_env()).env("DBROKER_MASTER_KEY_FILE", &self.key_file);
        (command, base)
    }
}

/// A PostgreSQL database of one test's own on `DBROKER_TEST_POSTGRES_URL`'s server (which
/// `scripts/postgres-up` runs), created empty and dropped when this is dropped, even when the
/// test panicked: `WITH (FORCE)`, since a dbroker killed with SIGKILL may not have hung up yet.
pub struct TestDatabase {
    pub name: String,
    /// The database's URL, with the admin's credentials.
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        // Underscores: a name that needs no quoting anywhere (psql, logs, URLs).
        let name = unique_name("dbt").replace('-', "_");
        let mut admin = postgres_admin().await;
        // The name is the test's own, never input: an identifier cannot be a bound parameter.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        sqlx::Connection::close(admin).await.ok();
        let mut url = reqwest::Url::parse(&postgres_admin_url()).expect("DBROKER_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        TestDatabase { name, url: url.to_string() }
    }

    /// Whether a database of this name is on the server.
    pub async fn exists(name: &str) -> bool {
        let mut admin = postgres_admin().await;
        let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        sqlx::Connection::close(admin).await.ok();
        found
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_fresh_runtime(async move {
            let mut admin = postgres_admin().await;
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut admin)
                .await;
            if let Err(e) = dropped {
                eprintln!("the test database {name} is left behind: {e}");
            }
        });
    }
}

/// The admin URL `scripts/postgres-up` printed: a role that may create databases.
fn postgres_admin_url() -> String {
    std::env::var("DBROKER_TEST_POSTGRES_URL")
        .expect("DBROKER_TEST_POSTGRES_URL names a PostgreSQL server (run the tests with scripts/test)")
}

async fn postgres_admin() -> sqlx::PgConnection {
    let url = postgres_admin_url();
    <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL server of DBROKER_TEST_POSTGRES_URL answers: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A dbroker of the test's own.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use dbroker::app::App;
use dbroker::config::{Catalogue, Config, FileConfig, PortRange};
use dbroker::model::Engine;
use dbroker::secrets::KeySource;
use dbroker::store::DatabaseUrl;
use reqwest::StatusCode;
use serde_json::Value;

/// Demo users every test app has; their token is their name.
pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";

/// How long a create may take in a test: MariaDB's first start is the slow one.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Test apps repair drift quickly, so tests of self-healing wait little.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Ports for one test app. Each live app holds a block of its own, so tests run in parallel and a
/// test may count on its range's first port; blocks of different test processes may overlap, which
/// dbroker handles like any busy port.
const PORTS_PER_APP: u16 = 30;
const BLOCKS: u16 = 1000 / PORTS_PER_APP;
static BLOCKS_IN_USE: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
/// Where the search for a free block starts: the one released last is taken again last, as Docker's
/// proxy may hold its ports a moment after its containers are gone.
static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// A port block held until the app that made containers on it has removed them (it is dropped after
/// the app's `PrefixGuard`). A block is never handed to two live apps: before, blocks were dealt
/// round-robin and a long test still held its ports when its block came round again.
struct PortBlock(u16);

impl PortBlock {
    fn take() -> PortBlock {
        let mut in_use = BLOCKS_IN_USE.lock().unwrap();
        let start = NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
        let block = (0..BLOCKS)
            .map(|offset| (start + offset) % BLOCKS)
            .find(|block| !in_use.contains(block))
            .expect("a free port block: more test apps are alive at once than there are blocks");
        in_use.insert(block);
        PortBlock(block)
    }

    fn range(&self) -> PortRange {
        let base = 21000 + (std::process::id() % 8) as u16 * 1000;
        let first = base + self.0 * PORTS_PER_APP;
        PortRange { first, last: first + PORTS_PER_APP - 1 }
    }
}

impl Drop for PortBlock {
    fn drop(&mut self) {
        BLOCKS_IN_USE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.0);
    }
}

/// A dbroker built through the same path as `main`, on port 0, with a temporary data directory, a
/// unique instance prefix and a port block of its own. Dropping it removes every container and
/// volume it made, even when the test panicked.
pub struct TestApp {
    pub address: String,
    /// Where `/metrics` is served (its own listener, on an ephemeral loopback port).
    pub metrics_address: String,
    pub config: Config,
    pub client: reqwest::Client,
    /// The data directory and the store, shared with siblings; the last of them to go removes it.
    pub store: Arc<TestStore>,
    /// `None` for a sibling: the app that made the data directory cleans up, once, after the
    /// sibling has stopped (a sibling cleaning up while the other still ran would race its repairs).
    _cleanup: Option<PrefixGuard>,
    /// `None` for a sibling, which shares its app's block; after `_cleanup`, so dropped after it.
    _ports: Option<PortBlock>,
    server: Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns an app after `adjust` has changed its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_on(Backend::of_this_run(), adjust).await
    }

    /// Spawns an app on `backend` whatever the run's, for what only one backend has.
    pub async fn spawn_on(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        init_test_logging();
        let store = Arc::new(TestStore::on(backend).await);
        let ports = PortBlock::take();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: store.data_dir().to_path_buf(),
            database_url: store.url.clone(),
            advertise_host: "127.0.0.1".into(),
            publish_ip: "127.0.0.1".parse().unwrap(),
            port_range: ports.range(),
            catalogue: offline_catalogue(),
            ready_timeout: READY_TIMEOUT,
            demo_users: vec![ALICE.parse().unwrap(), BOB.parse().unwrap()],
            instance_prefix: unique_name("dbt"),
            master_key: store.master_key(),
            reconcile_interval: RECONCILE_INTERVAL,
            docker_host: None,
            operation_lease: Duration::from_secs(2),
            history_retention: Duration::from_secs(90 * 86_400),
            quotas: Default::default(),
            rate_limits: Default::default(),
            backups: None,
            console: true,
        };
        adjust(&mut config);
        let mut app = TestApp {
            address: String::new(),
            metrics_address: String::new(),
            _cleanup: Some(PrefixGuard(config.instance_prefix.clone())),
            _ports: Some(ports),
            config,
            client: reqwest::Client::new(),
            store,
            server: None,
        };
        app.start().await;
        app
    }

    /// Runs dbroker on a thread and runtime of its own, as a process would: dropping the app can
    /// then stop it and wait for everything it started (a pool refill, say) before cleaning up,
    /// even while the test's own runtime is blocked in `Drop`.
    async fn start(&mut self) {
        let config = self.config.clone();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel::<(u16, Option<u16>)>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let app = App::build(config).await.expect("the app builds");
                let _ = port_tx.send((app.port(), app.metrics_port()));
                app.run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the app runs");
            });
        });
        let (port, metrics_port) = port_rx.await.expect("the app starts");
        self.address = format!("http://127.0.0.1:{port}");
        self.metrics_address = metrics_port.map(|port| format!("http://127.0.0.1:{port}")).unwrap_or_default();
        self.server = Some((stop, server));
    }

    /// A second dbroker on the same data directory, store and configuration, as two processes would be.
    pub async fn spawn_sibling(&self) -> TestApp {
        let mut sibling = TestApp {
            address: String::new(),
            metrics_address: String::new(),
            _cleanup: None,
            _ports: None,
            config: self.config.clone(),
            client: reqwest::Client::new(),
            store: self.store.clone(),
            server: None,
        };
        sibling.start().await;
        sibling
    }

    /// Stops dbroker gracefully and starts a new one on the same data directory and configuration.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub async fn stop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            tokio::task::spawn_blocking(move || server.join()).await.unwrap().expect("the app stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self.client.post(self.url(path)).header("Authorization", token).json(&body).send().await;
        read(response.expect("POST")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        read(self.client.get(self.url(path)).header("Authorization", token).send().await.expect("GET")).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        read(self.client.delete(self.url(path)).header("Authorization", token).send().await.expect("DELETE")).await
    }

    /// Creates an instance through v1 and insists on success.
    pub async fn create(&self, token: &str, body: Value) -> Value {
        let (status, instance) = self.post("/v1/instances", &format!("Bearer {token}"), body).await;
        assert_eq!(status, StatusCode::CREATED, "create failed: {instance}");
        instance
    }

    /// The names of this app's containers that exist (running or not).
    pub async fn containers(&self) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("dbroker.prefix={}", self.config.instance_prefix)])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let containers = docker().await.list_containers(Some(options)).await.expect("list containers");
        containers.into_iter().flat_map(|c| c.names.unwrap_or_default()).collect()
    }

    /// The names of this app's volumes.
    pub async fn volumes(&self) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("dbroker.prefix={}", self.config.instance_prefix)])]);
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let volumes = docker().await.list_volumes(Some(options)).await.expect("list volumes");
        volumes.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect()
    }

    /// The container name of an instance.
    pub fn container_of(&self, instance: &Value) -> String {
        format!("{}-{}", self.config.instance_prefix, instance["id"].as_str().expect("an id"))
    }
}

impl Drop for TestApp {
    /// Stops dbroker and waits for what it still runs (creates, a pool refill) before the
    /// `PrefixGuard` removes what it made: nothing can appear after the cleanup.
    fn drop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            let _ = server.join();
        }
    }
}

/// Removes every container and volume labelled with its instance prefix when dropped.
pub struct PrefixGuard(pub String);

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        block_on_fresh_runtime(async move { remove_everything_labelled(&prefix).await });
    }
}

/// Removes every container, then every volume and network, that carries `dbroker.prefix=<prefix>`.
async fn remove_everything_labelled(prefix: &str) {
    let docker = docker().await;
    let filters = HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    for container in docker.list_containers(Some(options)).await.unwrap_or_default() {
        if let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            let _ = docker.remove_container(&id, Some(options)).await;
        }
    }
    // By label and by name: a volume Docker made by itself for a container whose labelled volume
    // had just been removed carries no label, only its name.
    let by_name = HashMap::from([("name", vec![format!("{prefix}-")])]);
    for filters in [filters, by_name] {
        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let volumes = docker.list_volumes(Some(options)).await.map(|v| v.volumes.unwrap_or_default());
        for volume in volumes.unwrap_or_default() {
            let _ = docker.remove_volume(&volume.name, None::<RemoveVolumeOptions>).await;
        }
    }
    // dbroker keeps its network when it stops (it is `PREFIX-net`): the test's prefix is gone now.
    remove_networks(HashMap::from([("label", vec![format!("dbroker.prefix={prefix}")])])).await;
}

/// Removes every network `filters` matches (those without containers: the rest stay).
pub async fn remove_networks(filters: HashMap<&str, Vec<String>>) {
    let docker = docker().await;
    let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
    for network in docker.list_networks(Some(options)).await.unwrap_or_default() {
        if let Some(id) = network.id {
            let _ = docker.remove_network(&id).await;
        }
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

/// Logs stay silent unless `TEST_LOG=1`.
fn init_test_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter(dbroker::app::log_filter()).with_test_writer().init();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Real clients for the connection details an instance comes with.

/// A Redis connection authenticated with `password`, or the error the server gave. It waits up
/// to 30 s for an answer, not the crate's half second: the tests' 4 MiB pipelines take longer
/// on a loaded machine.
pub async fn redis_connect(port: u16, password: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp("127.0.0.1".into(), port))?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_password(password));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await
}

/// A connection to a Redis that has loaded its data, or None while it has not: a Redis accepts
/// connections before, and answers LOADING to everything but a few commands until it is done.
pub async fn redis_loaded(port: u16, password: &str) -> Option<redis::aio::MultiplexedConnection> {
    let mut conn = redis_connect(port, password).await.ok()?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
    (pong == "PONG").then_some(conn)
}

/// A PostgreSQL connection as `postgres` with `password` to `database`, or the error the server gave.
pub async fn postgres_connect(port: u16, password: &str, database: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .password(password)
        .database(database)
        .connect()
        .await
}

/// The databases of a PostgreSQL cluster, other than its templates, by name.
pub async fn postgres_databases(conn: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE NOT datistemplate ORDER BY datname")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// A MySQL connection as `user` with `password`, or the error the server gave.
pub async fn mysql_connect(port: u16, user: &str, password: &str) -> Result<sqlx::MySqlConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password)
        .connect()
        .await
}

/// The port and password of an instance as v1 returns it.
pub fn port_and_password(instance: &Value) -> (u16, String) {
    let port = instance["connection"]["port"].as_u64().expect("a port") as u16;
    let password = instance["connection"]["password"].as_str().expect("a password").to_string();
    (port, password)
}

// ---------------------------------------------------------------------------------------------
// Helpers for lifecycle and self-healing tests.

impl TestApp {
    /// Adds an admin straight to the store (as `dbroker user add --admin` does) and returns the token.
    pub async fn add_admin(&self, name: &str) -> String {
        let store = dbroker::store::Store::open(&self.config.database_url).await.expect("the store opens");
        let token = format!("admin-token-{}", unique_name(name));
        store.add_user(&name.parse().unwrap(), &token, true).await.expect("an admin");
        token
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let response = self.client.patch(self.url(path)).header("Authorization", token).json(&body).send().await;
        read(response.expect("PATCH")).await
    }

    /// `GET /v1/instances/{id}` as `token`, insisting on success.
    /// Deletes the records of `instances` from the store behind dbroker's back, as a store restored
    /// from an older backup would have lost them; their containers stay.
    pub async fn lose_records(&self, instances: &[&Value]) {
        use sqlx::Connection;
        let ids: Vec<&str> = instances.iter().map(|i| i["id"].as_str().unwrap()).collect();
        match &self.store.url {
            DatabaseUrl::Sqlite(path) => {
                let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
                for id in ids {
                    sqlx::query("DELETE FROM instances WHERE id = ?").bind(id).execute(&mut db).await.unwrap();
                }
                db.close().await.ok();
            }
            DatabaseUrl::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                for id in ids {
                    sqlx::query("DELETE FROM instances WHERE id = $1").bind(id).execute(&mut db).await.unwrap();
                }
                db.close().await.ok();
            }
        }
    }

    pub async fn detail(&self, token: &str, instance: &Value) -> Value {
        let (status, body) = self.get(&format!("/v1/instances/{}", instance["id"].as_str().unwrap()), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The kinds of the instance's events, oldest first.
    pub async fn event_kinds(&self, token: &str, instance: &Value) -> Vec<String> {
        let (status, body) =
            self.get(&format!("/v1/instances/{}/events", instance["id"].as_str().unwrap()), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
    }
}

/// A Unix socket that forwards to the real Docker engine and can be taken down and brought back,
/// to make the engine unreachable for real and then reachable again.
pub struct DockerProxy {
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    forwarding: Option<tokio::task::JoinHandle<()>>,
}

impl DockerProxy {
    pub fn new() -> DockerProxy {
        let dir = tempfile::tempdir().unwrap();
        DockerProxy { path: dir.path().join("docker.sock"), _dir: dir, forwarding: None }
    }

    /// The `DOCKER_HOST` value that reaches the engine through this proxy.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    pub fn up(&mut self) {
        let listener = tokio::net::UnixListener::bind(&self.path).expect("the proxy socket binds");
        let engine = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
            .unwrap_or_else(|| "/var/run/docker.sock".into());
        self.forwarding = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let engine = engine.clone();
                connections.spawn(async move {
                    if let Ok(mut upstream) = tokio::net::UnixStream::connect(&engine).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        }));
    }

    /// Closes the socket and every connection through it: the engine is unreachable.
    pub fn down(&mut self) {
        if let Some(forwarding) = self.forwarding.take() {
            forwarding.abort(); // drops the listener and, with the JoinSet, every connection
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Kills the server process of a container from the host with SIGKILL, as the kernel's OOM
/// killer or a crash would end it.
pub async fn kill_server_process(container: &str) {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    let pid = inspect.state.and_then(|s| s.pid).expect("a running container has a pid");
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// A container's memory cap in bytes, as Docker holds it; checks on the way that swap is off
/// (memory-swap equal to memory), as for every instance.
pub async fn memory_cap(container: &str) -> Option<i64> {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    let host = inspect.host_config.unwrap_or_default();
    assert_eq!(host.memory_swap, host.memory, "swap is off");
    host.memory
}

/// Everything `docker inspect` shows of a container, as JSON: environment, command, labels and all.
pub async fn inspect_json(container: &str) -> String {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    serde_json::to_string(&inspect).unwrap()
}

/// Asserts that `docker inspect` of `container` holds none of `secrets` anywhere.
pub async fn assert_inspect_holds_none_of(container: &str, secrets: &[&str]) {
    let shown = inspect_json(container).await;
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!shown.contains(secret), "docker inspect of {container} shows a password: {shown}");
    }
}

/// A file of a container, running or not; `None` if it has no such file.
pub async fn container_file(container: &str, path: &str) -> Option<String> {
    use futures_util::TryStreamExt;
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(path).build();
    let chunks: Vec<_> = docker().await.download_from_container(container, Some(options)).try_collect().await.ok()?;
    let tarball = chunks.concat();
    let mut archive = tar::Archive::new(tarball.as_slice());
    let mut entry = archive.entries().unwrap().next()?.unwrap();
    let mut contents = String::new();
    std::io::Read::read_to_string(&mut entry, &mut contents).unwrap();
    Some(contents)
}

/// A file of an image, read through a container that is created for it and never started.
pub async fn image_file(image: &str, path: &str) -> Option<String> {
    let name = unique_name("dbt-image-file");
    let _guard = ContainerGuard(name.clone());
    let body = bollard::models::ContainerCreateBody { image: Some(image.to_string()), ..Default::default() };
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&name).build();
    docker().await.create_container(Some(options), body).await.unwrap();
    container_file(&name, path).await
}

/// The password of the data-directory template an instance's container was made from: in the
/// template's password file, as dbroker reads it.
pub async fn template_password(container: &str) -> String {
    let inspect = docker().await.inspect_container(container, None::<InspectContainerOptions>).await.unwrap();
    let labels = inspect.config.unwrap().labels.unwrap_or_default();
    assert!(labels.contains_key("dbroker.template-of"), "made from a template");
    image_file(&inspect.image.unwrap(), "/etc/dbroker/password").await.expect("a template has a password file")
}

/// Writes a row into a new database of a MySQL instance, to find it again after some ordeal.
pub async fn write_mysql_row(port: u16, password: &str) {
    let mut conn = mysql_connect(port, "root", password).await.unwrap();
    for statement in ["CREATE DATABASE keep", "CREATE TABLE keep.t (v TEXT)", "INSERT INTO keep.t VALUES ('row')"] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    sqlx::Connection::close(conn).await.ok();
}

// ---------------------------------------------------------------------------------------------
// dbroker as a process of its own, for what only a real process shows (signals, logs, crashes).

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `dbroker serve` on `data_dir` with `demo_user`, this test's `prefix`, ten ports from
/// `first_port` and the offline MySQL image, its log discarded: returns the command (to add to
/// and spawn; killed when dropped) and its API's base URL.
pub fn dbroker_serve(
    data_dir: &std::path::Path,
    prefix: &str,
    demo_user: &str,
    first_port: u16,
) -> (tokio::process::Command, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dbroker"));
    command
        .arg("serve")
        .env("DBROKER_LISTEN", &listen)
        // Its own port, not the default's: tests run in parallel.
        .env("DBROKER_METRICS_LISTEN", "127.0.0.1:0")
        .env("DBROKER_DATA_DIR", data_dir)
        .env("DBROKER_DEMO_USERS", demo_user)
        .env("DBROKER_INSTANCE_PREFIX", prefix)
        .env("DBROKER_PORT_RANGE", format!("{first_port}-{}", first_port + 9))
        .env("DBROKER_MYSQL_IMAGE", image("mysql"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    (command, format!("http://{listen}"))
}

/// Waits until the dbroker at `base` answers.
pub async fn wait_for_api(base: &str) {
    let client = reqwest::Client::new();
    wait_until("dbroker to listen", Duration::from_secs(30), || async {
        client.get(format!("{base}/healthz")).send().await.ok()
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Operations: changes answered at once with `Prefer: respond-async`, and followed to their end.

/// How long a test waits for an operation to end: MariaDB's first start is the slow one.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(150);

impl TestApp {
    /// A second deployment on this app's Docker engine with this app's instance prefix, but a store
    /// (so a deployment id) and a data directory of its own. This app cleans up the prefix, once,
    /// after both have stopped: declare the second after this one, so it is dropped first.
    pub async fn spawn_sharing_prefix(&self) -> TestApp {
        let prefix = self.config.instance_prefix.clone();
        let mut second = TestApp::spawn_with(|c| c.instance_prefix = prefix).await;
        // Forgotten, not dropped: dropping the guard would remove this app's containers now.
        // Forgotten with it, the port block, whose containers outlive the second app too.
        std::mem::forget(second._cleanup.take());
        std::mem::forget(second._ports.take());
        second
    }

    /// Any request as `token`, with `headers` besides and an optional JSON body: the status, the
    /// `Location` header if any, and the body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self.client.request(method, self.url(path)).header("Authorization", token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let location = response.headers().get("location").map(|l| l.to_str().expect("a Location as text").to_string());
        let (status, body) = read(response).await;
        (status, location, body)
    }

    /// A change asked with `Prefer: respond-async`, insisting on 202 with a `Location` that names
    /// the operation of the body; returns the operation.
    pub async fn send_async(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        let (status, location, operation) = self.send(method, path, token, &[("Prefer", "respond-async")], body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{what} with Prefer: respond-async: {operation}");
        let id = operation["id"].as_str().unwrap_or_else(|| panic!("{what}: no operation id in {operation}"));
        assert_eq!(location, Some(format!("/v1/operations/{id}")), "{what}: the Location names the operation");
        operation
    }

    /// Polls `GET /v1/operations/{id}` as `token` until the operation has ended (succeeded or
    /// failed), and returns it.
    pub async fn operation_outcome(&self, token: &str, operation_id: &str) -> Value {
        wait_until(&format!("operation {operation_id} to end"), OPERATION_DEADLINE, || async {
            let (status, operation) = self.get(&format!("/v1/operations/{operation_id}"), token).await;
            assert_eq!(status, StatusCode::OK, "GET /v1/operations/{operation_id}: {operation}");
            matches!(operation["state"].as_str(), Some("succeeded" | "failed")).then_some(operation)
        })
        .await
    }

    /// An instance's operations as `token` sees them, newest first (one page of the most there is).
    pub async fn operations(&self, token: &str, instance_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/instances/{instance_id}/operations?limit=100"), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["operations"].as_array().unwrap_or_else(|| panic!("a list of operations: {body}")).clone()
    }

    /// Waits until no operation is pending or running on the instance, and returns the instance
    /// as `token` then sees it.
    pub async fn settled(&self, token: &str, instance_id: &str) -> Value {
        wait_until(&format!("instance {instance_id} to have no running operation"), OPERATION_DEADLINE, || async {
            let (status, instance) = self.get(&format!("/v1/instances/{instance_id}"), token).await;
            assert_eq!(status, StatusCode::OK, "{instance}");
            instance.get("running_operation").is_none_or(Value::is_null).then_some(instance)
        })
        .await
    }
}

/// The names of an operation's steps, in the order they were done.
pub fn step_names(operation: &Value) -> Vec<String> {
    let steps = operation["steps"].as_array().unwrap_or_else(|| panic!("steps in {operation}"));
    steps
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_else(|| panic!("a step name in {operation}")).to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Users: restarts with other demo users, and `dbroker user ...` beside a running dbroker.

/// How long a change to a user may take to reach a running dbroker: `AUTH_CACHE_TTL` (a second),
/// with room for a busy machine.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(30);

impl TestApp {
    /// Stops dbroker gracefully, lets `adjust` change its configuration, and starts it again on the
    /// same data directory, as an operator restarting it with other flags would.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        adjust(&mut self.config);
        self.start().await;
    }

    /// The real `dbroker user ARGS --data-dir DIR` on this app's data directory and store, run to its end.
    pub fn dbroker_user(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbroker"))
            .arg("user")
            .args(args)
            .arg("--data-dir")
            .arg(&self.config.data_dir)
            .env("DBROKER_DATABASE_URL", self.store.url_for_env())
            .output()
            .expect("dbroker runs")
    }

    /// Polls `GET /v1/instances` as `token` until it answers `expected`, within `AUTH_DEADLINE`,
    /// and returns the body.
    pub async fn wait_for_token(&self, token: &str, expected: StatusCode) -> Value {
        // The token itself stays out of the message: it is a secret.
        wait_until(&format!("a token to get {expected}"), AUTH_DEADLINE, || async {
            let (status, body) = self.get("/v1/instances", &format!("Bearer {token}")).await;
            (status == expected).then_some(body)
        })
        .await
    }
}

/// What a `dbroker user ...` printed on stdout (a token, a listing), trimmed; insists it succeeded.
pub fn succeeded(output: &std::process::Output) -> String {
    assert!(output.status.success(), "dbroker user failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs `command` in `container` with `input` on its standard input (through the Docker CLI's
/// `exec -i`), insisting that it succeeds; its output is in the panic if not.
pub async fn exec_with_stdin(container: &str, command: &[&str], input: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("docker")
        .args(["exec", "-i", container])
        .args(command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("docker exec starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeding = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let output = child.wait_with_output().await.expect("docker exec ends");
    feeding.await.ok();
    assert!(
        output.status.success(),
        "{command:?} in {container} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Rotates the instance's password through v1 as the demo user, insisting on success; the
/// instance as the rotation left it.
pub async fn rotate(app: &TestApp, instance: &Value) -> Value {
    let path = format!("/v1/instances/{}/rotate-password", instance["id"].as_str().unwrap());
    let (status, body) = app.post(&path, ALICE, serde_json::json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}
