//! Typed configuration, parsed once into values the rest of dbroker can trust: the command line
//! and environment (see `cli`), an optional TOML file, and built-in defaults, in that order of
//! precedence. The engine catalogue (versions, images, memory bounds) lives here too.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backups::{BackupSettings, FileBackups};
use crate::engines::{self, MemoryBounds};
use crate::model::{Engine, Flavor, Invalid, UserName, VersionName};
use crate::secrets::KeySource;
use crate::store::DatabaseUrl;

/// An inclusive range of host ports that instances are published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range; write it as FIRST-LAST, for example 20000-29999");
        let (first, last) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(format!("port range {s:?} must satisfy 1 <= FIRST <= LAST"));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Where `/metrics` is served: an address, or `off` for nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|address| Self(Some(address)))
            .map_err(|_| format!("{s:?} is neither an address such as 127.0.0.1:9187 nor `off` (no metrics listener)"))
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One version of an engine: the image that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    pub image: String,
    /// Deprecated and ignored: which server a MySQL image runs is read from the image (see
    /// `provision::image_facts`). Still accepted, with a warning, so older files keep loading.
    #[serde(default, skip_serializing)]
    pub flavor: Option<Flavor>,
    /// How many instances of this version wait, started, for a create to claim them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pool: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one engine offers: its named versions, the default one, its memory bounds, and the CPU
/// its instances get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCatalogue {
    pub default_version: String,
    pub versions: BTreeMap<String, VersionSpec>,
    pub memory: MemoryBounds,
    /// Each instance's weight when the host's CPUs are contended (1024: equal to any other).
    pub cpu_shares: i64,
    /// The most CPU time each instance may take, in billionths of a CPU; `None` for no cap.
    pub nano_cpus: Option<i64>,
}

/// Every engine's versions and bounds. The built-in one names the official images; a
/// configuration file or the `--*-image` flags change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue(BTreeMap<Engine, EngineCatalogue>);

impl Catalogue {
    pub fn builtin() -> Self {
        let official = |engine: Engine, versions: &[&str]| EngineCatalogue {
            default_version: versions[0].to_string(),
            versions: versions
                .iter()
                .map(|v| {
                    let image = format!("{}:{v}", engine.as_str());
                    (v.to_string(), VersionSpec { image, flavor: None, pool: 0 })
                })
                .collect(),
            memory: engines::profile(engine).memory,
            cpu_shares: crate::runtime::EQUAL_CPU_SHARES,
            nano_cpus: None,
        };
        Catalogue(BTreeMap::from([
            (Engine::Mysql, official(Engine::Mysql, &["8.0", "8.4"])),
            (Engine::Redis, official(Engine::Redis, &["7.2", "6.2"])),
            (Engine::Postgres, official(Engine::Postgres, &["16", "15"])),
        ]))
    }

    pub fn engine(&self, engine: Engine) -> &EngineCatalogue {
        self.0.get(&engine).expect("the catalogue has every engine")
    }

    pub fn engines(&self) -> impl Iterator<Item = (Engine, &EngineCatalogue)> {
        self.0.iter().map(|(e, c)| (*e, c))
    }

    /// The version to run: the one asked for, or the engine's default. An unknown name is
    /// refused with the list of known ones.
    pub fn resolve(&self, engine: Engine, version: Option<&VersionName>) -> Result<(String, &VersionSpec), Invalid> {
        let catalogue = self.engine(engine);
        let name = version.map_or(catalogue.default_version.as_str(), |v| v.as_str());
        catalogue.versions.get(name).map(|spec| (name.to_string(), spec)).ok_or_else(|| {
            let known: Vec<&str> = catalogue.versions.keys().map(String::as_str).collect();
            Invalid(format!("{engine} has no version {name:?}; known versions are {}", known.join(", ")))
        })
    }

    /// Sets the image of an engine's default version (what `--mysql-image` and its kin do).
    pub fn set_default_image(&mut self, engine: Engine, image: String) {
        let catalogue = self.0.get_mut(&engine).expect("the catalogue has every engine");
        let default = catalogue.default_version.clone();
        catalogue
            .versions
            .entry(default)
            .or_insert(VersionSpec { image: String::new(), flavor: None, pool: 0 })
            .image = image;
    }

    /// The flag that sets an engine's default image, for error messages that say what to change.
    pub fn image_flag(engine: Engine) -> &'static str {
        match engine {
            Engine::Mysql => "--mysql-image (DBROKER_MYSQL_IMAGE) or the configuration file",
            Engine::Redis => "--redis-image (DBROKER_REDIS_IMAGE) or the configuration file",
            Engine::Postgres => "--postgres-image (DBROKER_POSTGRES_IMAGE) or the configuration file",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where Prometheus scrapes `/metrics`, apart from the API; `None`: nowhere, and requests are
    /// not timed either.
    pub metrics_listen: Option<SocketAddr>,
    /// Caches only when the store is PostgreSQL; else also the SQLite store and the master key.
    pub data_dir: PathBuf,
    /// The store: SQLite (by default `dbroker.db` in the data directory) or PostgreSQL.
    pub database_url: DatabaseUrl,
    /// The host put in connection details.
    pub advertise_host: String,
    /// The host address instance ports are published on.
    pub publish_ip: IpAddr,
    pub port_range: PortRange,
    pub catalogue: Catalogue,
    /// How long a create waits for the database to accept its credentials.
    pub ready_timeout: Duration,
    /// Users whose token is their name, as the old tool had: for trials only.
    pub demo_users: Vec<UserName>,
    /// Names this deployment's containers and volumes (`PREFIX-ID`) and labels them
    /// `dbroker.prefix=PREFIX`, so several deployments (or test runs) share one engine safely.
    pub instance_prefix: String,
    /// Where the AES-256 key of passwords at rest comes from.
    pub master_key: KeySource,
    /// How often the reconciler compares the store with Docker and repairs drift.
    pub reconcile_interval: Duration,
    /// How long an operation's lease holds: its process renews it every third of this while the
    /// operation runs; once it has expired (the process died), another process takes it over.
    pub operation_lease: Duration,
    /// How long instances' events and ended operations are kept (idempotency keys answer for at
    /// most as long).
    pub history_retention: Duration,
    /// The Docker engine (`unix://…`, `tcp://…`); `None` for `DOCKER_HOST` or the local socket.
    pub docker_host: Option<String>,
    pub quotas: Quotas,
    pub rate_limits: RateLimits,
    /// `[backups]`: targets, the encryption recipient and identity; `None`: backups are not
    /// configured.
    pub backups: Option<BackupSettings>,
    /// Whether the web console is served at `/` (see `console`); the API is served either way.
    pub console: bool,
}

/// `[quotas]`: what each user may hold unless `dbroker user quota` gives them their own, and the
/// share of the host's memory that all instances together may be capped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub instances: u32,
    /// The sum of a user's memory caps, MiB.
    pub memory_mb: u64,
    /// 1 to 100.
    pub host_memory_percent: u8,
    /// How many backups a user may keep (running and succeeded), and how many MiB they may take
    /// in all (file only: `backups`, `backup_mb`).
    pub backups: u32,
    pub backup_mb: u64,
}

impl Quotas {
    /// The default backup quota, for users without their own (see `Store::insert_backup`).
    pub fn backup_quota(&self) -> crate::store::BackupQuota {
        crate::store::BackupQuota { backups: self.backups, storage_mb: self.backup_mb }
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            instances: defaults::QUOTA_INSTANCES,
            memory_mb: defaults::QUOTA_MEMORY_MB,
            host_memory_percent: defaults::HOST_MEMORY_PERCENT,
            backups: defaults::QUOTA_BACKUPS,
            backup_mb: defaults::QUOTA_BACKUP_MB,
        }
    }
}

/// `[rate_limits]`: how fast each caller may send requests, reads (GET, HEAD) and changes (every
/// other method) counted apart; `None` turns that limit off. See `api::rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub reads: Option<Rate>,
    pub changes: Option<Rate>,
}

/// A sustained rate of requests, and how many may come at once (a full bucket) above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// A rate from its two settings, named for the error (`read` for `reads_per_second` and
    /// `read_burst`): 0 a second is no limit; a burst of 0 under a limit would refuse everything,
    /// so it is refused, saying how to turn the limit off instead.
    pub fn from_settings(what: &str, per_second: u32, burst: u32) -> Result<Option<Rate>, String> {
        let Some(per_second) = NonZeroU32::new(per_second) else { return Ok(None) };
        let burst = NonZeroU32::new(burst).ok_or_else(|| {
            format!(
                "{what}_burst (--{what}-burst, [rate_limits] in the file): 0 would refuse every request; give at \
                 least 1, or turn the limit off with {what}s_per_second = 0"
            )
        })?;
        Ok(Some(Rate { per_second, burst }))
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let rate = |per_second, burst| Rate::from_settings("", per_second, burst).expect("the defaults are valid");
        RateLimits {
            reads: rate(defaults::READS_PER_SECOND, defaults::READ_BURST),
            changes: rate(defaults::CHANGES_PER_SECOND, defaults::CHANGE_BURST),
        }
    }
}

/// Built-in defaults, where neither a flag, the environment nor the file says otherwise.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:5000";
    /// Loopback: the figures are for this host's Prometheus (or a tunnel), not for the API's users.
    pub const METRICS_LISTEN: &str = "127.0.0.1:9187";
    pub const DATA_DIR: &str = "./data";
    pub const ADVERTISE_HOST: &str = "127.0.0.1";
    pub const PUBLISH_IP: &str = "127.0.0.1";
    pub const PORT_RANGE: &str = "20000-29999";
    pub const READY_TIMEOUT_SECS: u64 = 120;
    pub const RECONCILE_INTERVAL_SECS: u64 = 30;
    pub const OPERATION_LEASE_SECS: u64 = 15;
    pub const HISTORY_RETENTION_DAYS: u64 = 90;
    pub const INSTANCE_PREFIX: &str = "dbroker";
    /// Ten instances, 8 GiB of caps: eight MySQLs at their default, or many small Redises.
    pub const QUOTA_INSTANCES: u32 = 10;
    pub const QUOTA_MEMORY_MB: u64 = 8192;
    /// What is left is for the host itself, the Docker engine and dbroker.
    pub const HOST_MEMORY_PERCENT: u8 = 90;
    /// A month of nightly backups of one instance, or a week of several; 20 GiB of them.
    pub const QUOTA_BACKUPS: u32 = 50;
    pub const QUOTA_BACKUP_MB: u64 = 20480;
    /// Per user (or address): far above what a person or a script polling an operation sends, far
    /// below what the read path serves (tens of thousands a second), so no one caller can take it.
    pub const READS_PER_SECOND: u32 = 50;
    pub const READ_BURST: u32 = 100;
    /// Each change is Docker work (a create starts a server): a few a second, and twenty at once,
    /// as many as the default quota of instances twice over.
    pub const CHANGES_PER_SECOND: u32 = 5;
    pub const CHANGE_BURST: u32 = 20;
}

/// The configuration file: every serve setting, and the engine catalogue. Every key is optional;
/// an unknown key is an error, so a typo is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<MetricsListen>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub advertise_host: Option<String>,
    pub publish_ip: Option<IpAddr>,
    pub port_range: Option<PortRange>,
    pub ready_timeout: Option<u64>,
    pub reconcile_interval: Option<u64>,
    pub operation_lease: Option<u64>,
    pub history_retention_days: Option<u64>,
    pub demo_users: Option<Vec<String>>,
    pub instance_prefix: Option<String>,
    #[serde(default)]
    pub quotas: FileQuotas,
    #[serde(default)]
    pub rate_limits: FileRateLimits,
    #[serde(default)]
    pub engines: BTreeMap<Engine, FileEngine>,
    pub backups: Option<FileBackups>,
    /// `console = false`: no web console (as `--no-console`).
    pub console: Option<bool>,
}

/// `[quotas]` in the file: each key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuotas {
    pub instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub host_memory_percent: Option<u8>,
    pub backups: Option<u32>,
    pub backup_mb: Option<u64>,
}

/// `[rate_limits]` in the file: each key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimits {
    pub reads_per_second: Option<u32>,
    pub read_burst: Option<u32>,
    pub changes_per_second: Option<u32>,
    pub change_burst: Option<u32>,
}

/// `[engines.NAME]`: replaces the built-in versions if it lists any, and each other key it sets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEngine {
    pub default_version: Option<toml::Spanned<String>>,
    pub versions: Option<BTreeMap<String, VersionSpec>>,
    pub memory: Option<toml::Spanned<MemoryBounds>>,
    /// Each instance's CPU weight (2 to 262144; 1024 is equal to any other container's).
    pub cpu_shares: Option<toml::Spanned<i64>>,
    /// The most CPUs each instance may use (1.5: one and a half); no cap if absent.
    pub cpus: Option<toml::Spanned<f64>>,
}

impl FileConfig {
    /// Reads and checks a configuration file. Errors name the file, the key and the line.
    pub fn load(path: &Path) -> Result<(FileConfig, Catalogue), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let catalogue = file.catalogue(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((file, catalogue))
    }

    /// The built-in catalogue changed by the file's `[engines.*]` tables, checked.
    fn catalogue(&self, text: &str) -> Result<Catalogue, String> {
        let line_of = |span: std::ops::Range<usize>| text[..span.start.min(text.len())].lines().count().max(1);
        let mut catalogue = Catalogue::builtin();
        for (engine, changes) in &self.engines {
            let entry = catalogue.0.get_mut(engine).expect("the catalogue has every engine");
            if let Some(versions) = &changes.versions {
                entry.versions = versions.clone();
            }
            if let Some(default) = &changes.default_version {
                entry.default_version = default.get_ref().clone();
            }
            if !entry.versions.contains_key(&entry.default_version) {
                let line =
                    changes.default_version.as_ref().map_or(String::new(), |d| format!(", line {}", line_of(d.span())));
                return Err(format!(
                    "engines.{engine}.default_version{line}: {:?} is not one of the versions listed ({})",
                    entry.default_version,
                    entry.versions.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            for (version, spec) in &entry.versions {
                if spec.flavor.is_some() {
                    tracing::warn!(
                        "engines.{engine}.versions.{version:?}.flavor is deprecated and ignored: dbroker reads \
                         which server an image runs from the image; remove the key"
                    );
                }
            }
            if let Some(memory) = &changes.memory {
                let bounds = *memory.get_ref();
                if !(bounds.min <= bounds.default && bounds.default <= bounds.max && bounds.min.0 > 0) {
                    return Err(format!(
                        "engines.{engine}.memory, line {}: need 0 < min <= default <= max",
                        line_of(memory.span())
                    ));
                }
                entry.memory = bounds;
            }
            if let Some(shares) = &changes.cpu_shares {
                if !(2..=262_144).contains(shares.get_ref()) {
                    return Err(format!(
                        "engines.{engine}.cpu_shares, line {}: need 2 to 262144",
                        line_of(shares.span())
                    ));
                }
                entry.cpu_shares = *shares.get_ref();
            }
            if let Some(cpus) = &changes.cpus {
                let cpus_ok = cpus.get_ref().is_finite() && (0.01..=1024.0).contains(cpus.get_ref());
                if !cpus_ok {
                    return Err(format!("engines.{engine}.cpus, line {}: need 0.01 to 1024", line_of(cpus.span())));
                }
                entry.nano_cpus = Some((cpus.get_ref() * 1e9) as i64);
            }
        }
        Ok(catalogue)
    }
}
