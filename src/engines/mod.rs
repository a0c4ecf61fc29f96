//! What each database engine needs, one file per engine: its container (port, data path,
//! environment, arguments and the file that holds its password), its connection URI, its memory
//! bounds, a readiness probe that logs in with a real client, the figures its server reports
//! of itself, and the dump, load and content digest of its data (see `dump`). [`Engine`]
//! dispatches with `match`, so a new engine is one file and the arms the compiler points to.

mod dump;
mod mysql;
mod postgres;
mod redis;

use std::time::Duration;

pub use crate::model::Engine;
use crate::model::{DatabaseName, EngineSettings, Flavor, MemoryMb};
use crate::secrets::Secret;
pub use dump::{ContentDigest, Dump, DumpError, LoadError, content_digest, dump, load};
pub use redis::SNAPSHOT_DEADLINE as REDIS_SNAPSHOT_DEADLINE;

/// The settings of one instance that shape its container. Values come from a request's validated
/// fields or from the instance's record.
pub struct Settings<'a> {
    pub password: &'a Secret,
    pub memory: MemoryMb,
    /// What only this engine has (and which engine it is).
    pub instance: &'a EngineSettings,
    /// Where the data volume is mounted: the engine's own `data_path`, or, for an instance made
    /// from a template, `TEMPLATE_DATA_PATH`.
    pub data_path: &'a str,
}

/// A container's environment, the arguments after its image, and a configuration file that goes
/// into the container before it starts. The password is only ever in the file: a container's
/// environment, arguments and labels are what `docker inspect` shows to anyone who can reach the
/// engine, and what monitoring agents collect.
pub struct Launch {
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub config_file: ConfigFile,
}

/// A file in the instance's container (`/etc/dbroker/…`, in the container's own filesystem, not
/// the volume), written by dbroker from the instance's record before the server's first start:
/// Redis's configuration, or the password file the MySQL and PostgreSQL images read through their
/// `*_FILE` variables. It holds the current password, so it is also where an adopt finds it.
/// After a change, either the server rewrites it itself (Redis's `CONFIG REWRITE`) or dbroker does
/// (see `Profile::server_rewrites_config`).
pub struct ConfigFile {
    pub dir: &'static str,
    pub name: &'static str,
    pub contents: String,
}

impl ConfigFile {
    /// The modes of the file and its directory: readable by the server's user, whose uid differs
    /// from image to image, so by everyone in the container, where only the server runs; and
    /// writable by it too where the server rewrites the file through a temporary one beside it.
    pub fn modes(engine: Engine) -> (u32, u32) {
        if profile(engine).server_rewrites_config { (0o666, 0o777) } else { (0o644, 0o755) }
    }
}

/// Where the MySQL and PostgreSQL images find their password: `/etc/dbroker/password`, named by
/// `MYSQL_ROOT_PASSWORD_FILE` or `POSTGRES_PASSWORD_FILE`.
const PASSWORD_DIR: &str = "/etc/dbroker";
const PASSWORD_FILE: &str = "password";
const PASSWORD_PATH: &str = "/etc/dbroker/password";

/// The password file of an instance whose image reads it through a `*_FILE` variable.
fn password_file(password: &Secret) -> ConfigFile {
    ConfigFile { dir: PASSWORD_DIR, name: PASSWORD_FILE, contents: password.expose().to_string() }
}

/// The password in a password file (see `password_file`), or, for a container that an older
/// dbroker launched with its password in the environment, in the variable `env_var`.
fn recover_password(launched: &Launched, env_var: &str) -> Option<Secret> {
    let from_file = launched.config_file.map(str::trim).filter(|p| !p.is_empty());
    from_file.or_else(|| launched.env_var(env_var)).map(|p| Secret::new(p.to_string()))
}

/// Where a client reaches an instance, and how it logs in.
pub struct Endpoint<'a> {
    pub host: &'a str,
    pub port: u16,
    pub password: &'a Secret,
    /// PostgreSQL's database; other engines ignore it.
    pub database: Option<&'a str>,
}

impl Endpoint<'_> {
    fn database(&self) -> &str {
        self.database.unwrap_or(postgres::DEFAULT_DATABASE)
    }
}

/// The smallest, largest and default memory cap of an engine's instances, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBounds {
    pub min: MemoryMb,
    pub max: MemoryMb,
    pub default: MemoryMb,
}

/// What an engine is, as data: each engine file has one `PROFILE`.
#[derive(Debug)]
pub struct Profile {
    /// The port its server listens on inside the container.
    pub port: u16,
    /// Where its data lives in the container: where the data volume is mounted.
    pub data_path: &'static str,
    /// The user a client logs in as, for engines that have users.
    pub user: Option<&'static str>,
    /// The built-in memory bounds; a configuration file may set others.
    pub memory: MemoryBounds,
    /// The options it takes beyond engine, name, version and memory, as the request names them.
    pub options: &'static [&'static str],
    /// The configuration file dbroker writes into its container (see `ConfigFile`): its path.
    pub config_path: &'static str,
    /// Whether the server keeps that file up to date itself when dbroker changes a setting live;
    /// if not, dbroker writes it again after a rotation.
    pub server_rewrites_config: bool,
    /// The database a fresh cluster holds (so does a data-directory template), where it has any.
    pub default_database: Option<&'static str>,
    /// The Linux capabilities its container keeps; all others are dropped. The server itself runs
    /// as an unprivileged user and needs none: these are for the image's entrypoint, which starts
    /// as root to prepare the data directory and then switches to that user with `gosu` (the
    /// official images and the offline ones alike). Found by experiment on the offline images (a
    /// first start that initialises the data directory, a template's copy, a restart, a stop and
    /// a start), and checked against what the official entrypoints do as root.
    pub capabilities: &'static [&'static str],
}

pub fn profile(engine: Engine) -> &'static Profile {
    match engine {
        Engine::Mysql => &mysql::PROFILE,
        Engine::Redis => &redis::PROFILE,
        Engine::Postgres => &postgres::PROFILE,
    }
}

/// How long one login attempt of a readiness probe may take before it counts as failed.
pub const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// An engine's own settings when the request asks for nothing: MySQL's server defaults, and
/// PostgreSQL's database `app`.
pub fn default_settings(engine: Engine) -> EngineSettings {
    match engine {
        Engine::Mysql => EngineSettings::Mysql { charset: None, collation: None },
        Engine::Redis => EngineSettings::Redis,
        Engine::Postgres => EngineSettings::Postgres { database: postgres::default_database() },
    }
}

/// Where a data-directory template keeps its data: a path no official image declares a VOLUME
/// (what lies under one is not committed to an image), and where an instance made from the
/// template mounts its volume, so that Docker copies the template into the new volume.
pub const TEMPLATE_DATA_PATH: &str = "/var/lib/dbroker-template";

/// Whether instances may be copies of a data-directory template: only where no copy would share
/// another's identity or secrets. MariaDB keeps neither in its data directory; PostgreSQL's are
/// replaced in each copy (`identity_edit`). Oracle's MySQL writes a server UUID (`auto.cnf`) and
/// TLS keys there, which a copy would have to lose before its first start (not done yet), so its
/// instances initialise their own. Redis needs no initialisation. `flavor` is the MySQL image's
/// (see `provision::image_facts`); `None` for the other engines, which have one server each.
pub fn uses_templates(engine: Engine, flavor: Option<Flavor>) -> bool {
    match engine {
        Engine::Mysql => flavor == Some(Flavor::Mariadb),
        Engine::Postgres => true,
        Engine::Redis => false,
    }
}

/// What gives a fresh copy of a template an identity of its own before its server first starts:
/// `paths` (files or directories) under the container's directory `base`, and `edit`, which gets
/// each regular file among them (its path relative to `base`) with its first `head_len` bytes.
pub struct IdentityEdit {
    pub base: String,
    pub paths: &'static [&'static str],
    pub head_len: usize,
    pub edit: Box<dyn FnMut(&std::path::Path, &mut [u8]) -> Result<(), String> + Send>,
}

/// The identity edit for a copy of a template mounted at `data_path`, where the engine keeps an
/// identity in its data directory. MariaDB keeps none; PostgreSQL keeps a system identifier and a
/// secret nonce (see `postgres::identity_edit`).
pub fn identity_edit(engine: Engine, data_path: &str) -> Option<IdentityEdit> {
    match engine {
        Engine::Postgres => Some(postgres::identity_edit(data_path)),
        Engine::Mysql | Engine::Redis => None,
    }
}

/// What a container shows of how it was launched: its environment, its arguments and the
/// configuration file dbroker wrote into it (see `config_path`).
pub struct Launched<'a> {
    pub env: &'a [String],
    pub args: &'a [String],
    pub config_file: Option<&'a str>,
}

impl Launched<'_> {
    fn env_var(&self, name: &str) -> Option<&str> {
        self.env.iter().find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
    }

    fn arg(&self, prefix: &str) -> Option<&str> {
        self.args.iter().find_map(|a| a.strip_prefix(prefix))
    }
}

/// The settings of an instance read back from its container, for adopting it.
pub struct Recovered {
    pub password: Secret,
    pub settings: EngineSettings,
}

/// The inverse of `launch`: an instance's credentials and settings read back from its container;
/// `None` if they are not there.
pub fn recover(engine: Engine, launched: &Launched) -> Option<Recovered> {
    match engine {
        Engine::Mysql => mysql::recover(launched),
        Engine::Redis => redis::recover(launched),
        Engine::Postgres => postgres::recover(launched),
    }
}

pub fn launch(engine: Engine, settings: &Settings) -> Launch {
    match engine {
        Engine::Mysql => mysql::launch(settings),
        Engine::Redis => redis::launch(settings),
        Engine::Postgres => postgres::launch(settings),
    }
}

pub fn uri(engine: Engine, endpoint: &Endpoint) -> String {
    let Endpoint { host, port, password, .. } = *endpoint;
    match engine {
        Engine::Mysql => mysql::uri(host, port, password),
        Engine::Redis => redis::uri(host, port, password),
        Engine::Postgres => postgres::uri(host, port, password, endpoint.database()),
    }
}

/// Logs in and runs a query. `Err` says why it did not work.
pub async fn probe(engine: Engine, endpoint: &Endpoint<'_>) -> Result<(), String> {
    let Endpoint { host, port, password, .. } = *endpoint;
    with_timeout(async {
        match engine {
            Engine::Mysql => mysql::probe(host, port, password).await,
            Engine::Redis => redis::probe(host, port, password).await,
            Engine::Postgres => postgres::probe(host, port, password, endpoint.database()).await,
        }
    })
    .await
}

/// Where each MySQL server is in its images: which one an image has says which it runs.
pub const MYSQL_SERVER_PATHS: [(Flavor, &str); 2] =
    [(Flavor::Mariadb, mysql::MARIADB_SERVER_PATH), (Flavor::Mysql, mysql::MYSQL_SERVER_PATH)];

/// The collations a MySQL server has, each with its character set, as it lists them itself.
pub async fn mysql_collations(endpoint: &Endpoint<'_>) -> Result<Vec<(String, String)>, String> {
    let Endpoint { host, port, password, .. } = *endpoint;
    with_timeout(mysql::collations(host, port, password)).await
}

/// Changes the password on the running server: the new one works at once, the old one is refused.
pub async fn rotate_password(engine: Engine, endpoint: &Endpoint<'_>, new: &Secret) -> Result<(), String> {
    let Endpoint { host, port, password: old, .. } = *endpoint;
    with_timeout(async {
        match engine {
            Engine::Mysql => mysql::rotate_password(host, port, old, new).await,
            Engine::Redis => redis::rotate_password(host, port, old, new).await,
            Engine::Postgres => postgres::rotate_password(host, port, old, new, endpoint.database()).await,
        }
    })
    .await
}

/// Empties the instance's data, keeping its server, credentials and settings: what an in-place
/// restore or an import starts from. MySQL: every user database is dropped; PostgreSQL: the
/// instance's database is made again, empty; Redis: nothing to do, as its load replaces the
/// whole dataset.
pub async fn wipe(engine: Engine, endpoint: &Endpoint<'_>) -> Result<(), String> {
    let Endpoint { host, port, password, .. } = *endpoint;
    match engine {
        Engine::Mysql => mysql::wipe(host, port, password).await,
        Engine::Postgres => postgres::wipe(host, port, password, endpoint.database()).await,
        Engine::Redis => Ok(()),
    }
}

/// The file extension of the engine's dumps: `sql` (MySQL, PostgreSQL), `rdb` (Redis).
pub fn dump_extension(engine: Engine) -> &'static str {
    match engine {
        Engine::Mysql | Engine::Postgres => "sql",
        Engine::Redis => "rdb",
    }
}

/// Renames the endpoint's database to `new` on the running server, for engines that have
/// databases (PostgreSQL): an instance started with the default database gets the one asked for,
/// and no other besides.
pub async fn rename_database(engine: Engine, endpoint: &Endpoint<'_>, new: &DatabaseName) -> Result<(), String> {
    match engine {
        Engine::Postgres => {
            let Endpoint { host, port, password, .. } = *endpoint;
            with_timeout(postgres::rename_database(host, port, password, endpoint.database(), new)).await
        }
        Engine::Mysql | Engine::Redis => Err(format!("{engine} instances have no database to rename")),
    }
}

/// Whether what the running server holds fits a new, smaller memory cap, for engines that keep a
/// limit of their own (Redis refuses writes past it). `Err` says how much it holds.
pub async fn check_fits(engine: Engine, endpoint: &Endpoint<'_>, memory: MemoryMb) -> Result<(), String> {
    match engine {
        Engine::Mysql | Engine::Postgres => Ok(()),
        Engine::Redis => with_timeout(redis::check_fits(endpoint.host, endpoint.port, endpoint.password, memory)).await,
    }
}

/// Tells the running server about a new memory cap, for engines that keep a limit of their own.
pub async fn apply_memory(engine: Engine, endpoint: &Endpoint<'_>, memory: MemoryMb) -> Result<(), String> {
    match engine {
        Engine::Mysql | Engine::Postgres => Ok(()),
        Engine::Redis => {
            with_timeout(redis::apply_memory(endpoint.host, endpoint.port, endpoint.password, memory)).await
        }
    }
}

/// What a DBA looks at first, as the running server reports it. Connections and clients leave out
/// the one dbroker reads these figures with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStats {
    Mysql {
        /// `Threads_connected`.
        connections: u64,
        /// Every database but the server's own (`mysql`, `sys`, the two schemas of tables about
        /// the server), with the size of its tables and their indexes.
        databases: Vec<DatabaseSize>,
    },
    Redis {
        /// `used_memory` of `INFO`: what Redis compares with its `maxmemory`.
        used_memory_bytes: u64,
        /// Keys in all its databases (`INFO keyspace`).
        keys: u64,
        connected_clients: u64,
    },
    Postgres {
        /// Client backends in `pg_stat_activity`, on every database of the cluster.
        connections: u64,
        /// The instance's database (`pg_database_size`).
        database: DatabaseSize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSize {
    pub name: String,
    pub bytes: u64,
}

/// The running server's own figures (see `ServerStats`), read over one login; `Err` says why
/// there are none, such as no answer within `PROBE_ATTEMPT_TIMEOUT`.
pub async fn server_stats(engine: Engine, endpoint: &Endpoint<'_>) -> Result<ServerStats, String> {
    let Endpoint { host, port, password, .. } = *endpoint;
    with_timeout(async {
        match engine {
            Engine::Mysql => mysql::stats(host, port, password).await,
            Engine::Redis => redis::stats(host, port, password).await,
            Engine::Postgres => postgres::stats(host, port, password, endpoint.database()).await,
        }
    })
    .await
}

/// How long a server that has just loaded a dump may take to answer again.
pub const LOAD_READY_DEADLINE: Duration = Duration::from_secs(120);
const LOAD_READY_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls the readiness probe until the server answers, or `LOAD_READY_DEADLINE` has passed;
/// `Err` is the last probe's reason.
async fn wait_answers(engine: Engine, endpoint: &Endpoint<'_>) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + LOAD_READY_DEADLINE;
    loop {
        match probe(engine, endpoint).await {
            Ok(()) => return Ok(()),
            Err(reason) if tokio::time::Instant::now() >= deadline => return Err(reason),
            Err(_) => tokio::time::sleep(LOAD_READY_POLL_INTERVAL).await,
        }
    }
}

async fn with_timeout<T>(attempt: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(PROBE_ATTEMPT_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_ATTEMPT_TIMEOUT:?}")))
}
