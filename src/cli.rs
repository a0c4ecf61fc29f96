//! The command line: `dbroker serve`,
//! `dbroker user add|list|remove|rotate-token|disable|enable|quota`, and the client's commands
//! (`dbroker login|create|list|show|…|connect`, see `client`).
//! Every server flag also reads an environment variable, `DBROKER_` and the flag's name in
//! capitals; the client reads `DBROKER_URL` and `DBROKER_TOKEN` (never a flag: argv is public).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backups::BackupSettings;
use crate::config::{Catalogue, Config, FileConfig, MetricsListen, PortRange, Quotas, Rate, RateLimits, defaults};
use crate::model::{
    BackupId, Charset, Collation, DatabaseName, Engine, InstanceName, TargetName, UserName, VersionName,
};
use crate::secrets::{KeySource, Secret};
use crate::store::DatabaseUrl;

#[derive(Debug, Parser)]
#[command(name = "dbroker", version, about = "Self-service MySQL, PostgreSQL and Redis instances on Docker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(Box<ServeArgs>),
    /// Manage the users who may call the API.
    #[command(subcommand)]
    User(UserCommand),
    #[command(flatten)]
    Client(ClientCommand),
}

/// The client's commands, on a dbroker's API: its URL and your token from `DBROKER_URL` and
/// `DBROKER_TOKEN`, else from the file `dbroker login` saved. An instance is named by its id or
/// its name.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Check a token against a dbroker and save both for the other commands (the token from
    /// standard input, or DBROKER_TOKEN).
    Login {
        /// The dbroker's URL, such as http://127.0.0.1:5000.
        url: String,
    },
    /// Create an instance; with --wait, follow it until its database accepts its credentials.
    Create {
        engine: Engine,
        /// Unique among your instances [default: the engine and the id].
        #[arg(long)]
        name: Option<InstanceName>,
        /// One of the engine's versions (`GET /v1/engines`) [default: the engine's default].
        #[arg(long)]
        version: Option<VersionName>,
        /// The memory cap in MiB [default: the engine's default].
        #[arg(long)]
        memory_mb: Option<u32>,
        /// MySQL only.
        #[arg(long)]
        charset: Option<Charset>,
        /// MySQL only.
        #[arg(long)]
        collation: Option<Collation>,
        /// PostgreSQL only [default: app].
        #[arg(long)]
        database: Option<DatabaseName>,
        /// Follow the create (its steps on a terminal) and print the instance once it is ready;
        /// without it, print the operation that creates it and return at once.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List your instances.
    List {
        /// Only this engine's.
        #[arg(long)]
        engine: Option<Engine>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show an instance, or with --uri or --password only that, for scripts.
    #[command(group = clap::ArgGroup::new("field").multiple(false))]
    Show {
        instance: String,
        /// Print only its connection URI.
        #[arg(long, group = "field")]
        uri: bool,
        /// Print only its password.
        #[arg(long, group = "field")]
        password: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Delete an instance, its container and its data.
    Delete { instance: String },
    /// Stop an instance; it keeps its port, data and credentials.
    Stop {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Start a stopped instance.
    Start {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Restart an instance's server.
    Restart {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Give an instance another memory cap.
    Resize {
        instance: String,
        /// The new memory cap in MiB.
        #[arg(long)]
        memory_mb: u32,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Give an instance a new password; the old one stops working.
    RotatePassword {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print an instance's server log (its password removed).
    Logs {
        instance: String,
        /// How many of the last lines, 0 to 10000.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines as they come, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print an instance's history.
    Events {
        instance: String,
        /// The last this many events, 1 to 1000.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Print an instance's figures: CPU, memory, and what its server says of itself.
    Stats {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Back an instance up.
    Backup {
        instance: String,
        /// A configured target [default: the server's default target].
        #[arg(long)]
        target: Option<TargetName>,
        /// Restore the backup into a throwaway server and check it.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List your backups, or one instance's.
    Backups {
        instance: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Replace an instance's data with a backup's (after a safety backup).
    Restore {
        instance: String,
        backup: BackupId,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make a new instance with a copy of an instance's data and credentials of its own.
    Clone {
        instance: String,
        /// The new instance's name [default: the engine and its id].
        #[arg(long)]
        name: Option<InstanceName>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a dump of an instance to standard output (SQL, or Redis's RDB file), streamed.
    Export { instance: String },
    /// Replace an instance's data with a dump read from standard input, streamed.
    Import {
        instance: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Open the engine's own client (mariadb, redis-cli, psql) on an instance, in this terminal.
    Connect { instance: String },
    /// Print a completion script for a shell.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the API's answer as JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user and print their new token, once.
    Add {
        name: UserName,
        /// The user may administer dbroker.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user who owns no instances.
    Remove {
        name: UserName,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a new token and print it, once; the old one stops working. Their instances
    /// are left as they are.
    RotateToken {
        name: UserName,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Refuse a user's token, keeping it and their instances, until `enable`.
    Disable {
        name: UserName,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Accept a disabled user's token again.
    Enable {
        name: UserName,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a quota of their own (instead of `[quotas]` of the configuration): the next
    /// create, resize or claim of a running dbroker is checked against it. Their instances are
    /// left as they are, even beyond it.
    #[command(group = clap::ArgGroup::new("limit").required(true).multiple(true))]
    Quota {
        name: UserName,
        /// How many instances they may hold.
        #[arg(long, group = "limit")]
        instances: Option<u32>,
        /// The MiB of memory caps they may hold in all.
        #[arg(long, group = "limit")]
        memory_mb: Option<u64>,
        /// Back to the configuration's default quota.
        #[arg(long, group = "limit", conflicts_with_all = ["instances", "memory_mb"])]
        default: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where dbroker keeps its SQLite store (unless --database-url says otherwise).
    #[arg(long, env = "DBROKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The store, sqlite://PATH or postgres://… [default: dbroker.db in the data directory].
    #[arg(long, env = "DBROKER_DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,
}

impl StoreArgs {
    /// The store these arguments name.
    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_else(|| DatabaseUrl::in_data_dir(&self.data_dir))
    }
}

/// `dbroker serve`. No flag has a clap default: a flag or its variable wins, then the
/// configuration file, then the built-in default (see `config::defaults`), so each layer can tell
/// whether the one above it said anything.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file: every setting below, and the engine catalogue.
    #[arg(long, env = "DBROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The address the API listens on [default: 127.0.0.1:5000].
    #[arg(long, env = "DBROKER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The address Prometheus scrapes /metrics on, or `off` [default: 127.0.0.1:9187].
    #[arg(long, env = "DBROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<MetricsListen>,
    /// Where dbroker keeps its SQLite store, its master key (unless one is given) and caches
    /// [default: ./data].
    #[arg(long, env = "DBROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store, sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE [default: dbroker.db in
    /// the data directory]. Several dbroker replicas share one PostgreSQL database.
    #[arg(long, env = "DBROKER_DATABASE_URL")]
    pub database_url: Option<DatabaseUrl>,
    /// A file holding the master key (64 hex characters), private to dbroker's user; read, never
    /// made. The same file on every replica of a PostgreSQL store [default: DBROKER_MASTER_KEY,
    /// else master.key in the data directory, made on an SQLite store's first start].
    #[arg(long, env = "DBROKER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The host put in connection details [default: 127.0.0.1].
    #[arg(long, env = "DBROKER_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// The host address instance ports are published on; 0.0.0.0 for all interfaces [default: 127.0.0.1].
    #[arg(long, env = "DBROKER_PUBLISH_IP")]
    pub publish_ip: Option<IpAddr>,
    /// Host ports handed to instances, FIRST-LAST [default: 20000-29999].
    #[arg(long, env = "DBROKER_PORT_RANGE")]
    pub port_range: Option<PortRange>,
    /// The image of MySQL's default version [default: mysql:8.0].
    #[arg(long, env = "DBROKER_MYSQL_IMAGE")]
    pub mysql_image: Option<String>,
    /// The image of Redis's default version [default: redis:7.2].
    #[arg(long, env = "DBROKER_REDIS_IMAGE")]
    pub redis_image: Option<String>,
    /// The image of PostgreSQL's default version [default: postgres:16].
    #[arg(long, env = "DBROKER_POSTGRES_IMAGE")]
    pub postgres_image: Option<String>,
    /// Seconds a create waits for the database to accept its credentials [default: 120].
    #[arg(long, env = "DBROKER_READY_TIMEOUT")]
    pub ready_timeout: Option<u64>,
    /// Seconds between the reconciler's comparisons of the store with Docker [default: 30].
    #[arg(long, env = "DBROKER_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<u64>,
    /// Seconds an operation's lease holds before another dbroker process may take over an
    /// operation whose process died [default: 15].
    #[arg(long, env = "DBROKER_OPERATION_LEASE")]
    pub operation_lease: Option<u64>,
    /// Days instances' events and ended operations are kept, at least 1 [default: 90].
    #[arg(long, env = "DBROKER_HISTORY_RETENTION_DAYS")]
    pub history_retention_days: Option<u64>,
    /// Users whose token is their own name, as the old tool had (user1,user2,user3): trials only.
    #[arg(long, env = "DBROKER_DEMO_USERS", value_delimiter = ',')]
    pub demo_users: Option<Vec<UserName>>,
    /// Prefix of container and volume names, and the value of their `dbroker.prefix` label [default: dbroker].
    #[arg(long, env = "DBROKER_INSTANCE_PREFIX")]
    pub instance_prefix: Option<String>,
    /// How many instances a user may hold, unless `dbroker user quota` says otherwise [default: 10].
    #[arg(long, env = "DBROKER_QUOTA_INSTANCES")]
    pub quota_instances: Option<u32>,
    /// The MiB of memory caps a user may hold in all, unless `dbroker user quota` says otherwise
    /// [default: 8192].
    #[arg(long, env = "DBROKER_QUOTA_MEMORY_MB")]
    pub quota_memory_mb: Option<u64>,
    /// The share of the Docker host's memory, in percent, that all instances' memory caps may add
    /// up to [default: 90].
    #[arg(long, env = "DBROKER_HOST_MEMORY_PERCENT")]
    pub host_memory_percent: Option<u8>,
    /// Reads (GET, HEAD) a second each user may send, or each address without a valid token; 0
    /// for no limit [default: 50].
    #[arg(long, env = "DBROKER_READS_PER_SECOND")]
    pub reads_per_second: Option<u32>,
    /// Reads that may come at once above that rate [default: 100].
    #[arg(long, env = "DBROKER_READ_BURST")]
    pub read_burst: Option<u32>,
    /// Changes (POST, PATCH, PUT, DELETE) a second each user may send, or each address without a
    /// valid token; 0 for no limit [default: 5].
    #[arg(long, env = "DBROKER_CHANGES_PER_SECOND")]
    pub changes_per_second: Option<u32>,
    /// Changes that may come at once above that rate [default: 20].
    #[arg(long, env = "DBROKER_CHANGE_BURST")]
    pub change_burst: Option<u32>,
    /// Serves no web console at / (the API only).
    #[arg(long, env = "DBROKER_NO_CONSOLE")]
    pub no_console: bool,
}

impl ServeArgs {
    /// Merges flags (and their variables), the configuration file and the defaults. An invalid
    /// file is an error that names the key and line.
    pub fn into_config(self) -> Result<Config, String> {
        let (file, mut catalogue) = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => (FileConfig::default(), Catalogue::builtin()),
        };
        for (engine, image) in [
            (Engine::Mysql, self.mysql_image),
            (Engine::Redis, self.redis_image),
            (Engine::Postgres, self.postgres_image),
        ] {
            if let Some(image) = image {
                catalogue.set_default_image(engine, image);
            }
        }
        let demo_users = match (self.demo_users, file.demo_users) {
            (Some(users), _) => users,
            (None, Some(names)) => names
                .iter()
                .map(|n| n.parse().map_err(|e: crate::model::Invalid| format!("demo_users: {e}")))
                .collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
        };
        let quotas = Quotas {
            instances: self.quota_instances.or(file.quotas.instances).unwrap_or(defaults::QUOTA_INSTANCES),
            memory_mb: self.quota_memory_mb.or(file.quotas.memory_mb).unwrap_or(defaults::QUOTA_MEMORY_MB),
            host_memory_percent: self
                .host_memory_percent
                .or(file.quotas.host_memory_percent)
                .unwrap_or(defaults::HOST_MEMORY_PERCENT),
            backups: file.quotas.backups.unwrap_or(defaults::QUOTA_BACKUPS),
            backup_mb: file.quotas.backup_mb.unwrap_or(defaults::QUOTA_BACKUP_MB),
        };
        if !(1..=100).contains(&quotas.host_memory_percent) {
            return Err(format!(
                "host_memory_percent (--host-memory-percent, [quotas] in the file): {} is not 1 to 100",
                quotas.host_memory_percent
            ));
        }
        let limits = &file.rate_limits;
        let rate_limits = RateLimits {
            reads: Rate::from_settings(
                "read",
                self.reads_per_second.or(limits.reads_per_second).unwrap_or(defaults::READS_PER_SECOND),
                self.read_burst.or(limits.read_burst).unwrap_or(defaults::READ_BURST),
            )?,
            changes: Rate::from_settings(
                "change",
                self.changes_per_second.or(limits.changes_per_second).unwrap_or(defaults::CHANGES_PER_SECOND),
                self.change_burst.or(limits.change_burst).unwrap_or(defaults::CHANGE_BURST),
            )?,
        };
        let data_dir: PathBuf = self.data_dir.or(file.data_dir).unwrap_or_else(|| defaults::DATA_DIR.into());
        let database_url = match self.database_url {
            Some(url) => url,
            None => match file.database_url {
                Some(url) => url.parse().map_err(|e| format!("database_url: {e}"))?,
                None => DatabaseUrl::in_data_dir(&data_dir),
            },
        };
        // The key itself only from the environment: a flag's value would be on the command line.
        let master_key = KeySource::from_settings(
            std::env::var("DBROKER_MASTER_KEY").ok().map(Secret::new),
            self.master_key_file.or(file.master_key_file),
        )
        .map_err(|e| e.to_string())?;
        let backups = file.backups.as_ref().map(BackupSettings::from_file).transpose()?;
        Ok(Config {
            listen: self.listen.or(file.listen).unwrap_or_else(|| parse_default(defaults::LISTEN)),
            metrics_listen: self
                .metrics_listen
                .or(file.metrics_listen)
                .unwrap_or_else(|| parse_default(defaults::METRICS_LISTEN))
                .0,
            data_dir,
            database_url,
            advertise_host: self
                .advertise_host
                .or(file.advertise_host)
                .unwrap_or_else(|| defaults::ADVERTISE_HOST.into()),
            publish_ip: self.publish_ip.or(file.publish_ip).unwrap_or_else(|| parse_default(defaults::PUBLISH_IP)),
            port_range: self.port_range.or(file.port_range).unwrap_or_else(|| parse_default(defaults::PORT_RANGE)),
            catalogue,
            ready_timeout: Duration::from_secs(
                self.ready_timeout.or(file.ready_timeout).unwrap_or(defaults::READY_TIMEOUT_SECS),
            ),
            demo_users,
            instance_prefix: self
                .instance_prefix
                .or(file.instance_prefix)
                .unwrap_or_else(|| defaults::INSTANCE_PREFIX.into()),
            master_key,
            reconcile_interval: Duration::from_secs(
                self.reconcile_interval.or(file.reconcile_interval).unwrap_or(defaults::RECONCILE_INTERVAL_SECS).max(1),
            ),
            operation_lease: Duration::from_secs(
                self.operation_lease.or(file.operation_lease).unwrap_or(defaults::OPERATION_LEASE_SECS).max(1),
            ),
            history_retention: Duration::from_secs(
                86_400
                    * self
                        .history_retention_days
                        .or(file.history_retention_days)
                        .unwrap_or(defaults::HISTORY_RETENTION_DAYS)
                        .max(1),
            ),
            docker_host: std::env::var("DOCKER_HOST").ok(),
            quotas,
            rate_limits,
            backups,
            // The flag turns it off whatever the file says; the file may turn it off too.
            console: !self.no_console && file.console.unwrap_or(true),
        })
    }
}

/// A built-in default, which always parses.
fn parse_default<T: std::str::FromStr>(value: &str) -> T {
    value.parse().unwrap_or_else(|_| unreachable!("the built-in default {value:?} parses"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from([&["dbroker", "serve"], args].concat()).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve(serve) => (*serve).into_config(),
            Command::User(_) | Command::Client(_) => unreachable!(),
        }
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nready_timeout = 9\n[engines.redis]\ndefault_version = \"6.2\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();

        let from_file = serve(&["--config", file]).unwrap();
        let from_flag =
            serve(&["--config", file, "--listen", "127.0.0.1:7001", "--redis-image", "my/redis:6"]).unwrap();

        assert_eq!(from_file.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(from_file.ready_timeout, Duration::from_secs(9));
        assert_eq!(from_file.port_range.to_string(), defaults::PORT_RANGE, "neither says: the default");
        assert_eq!(from_flag.listen.to_string(), "127.0.0.1:7001");
        let (version, spec) = from_flag.catalogue.resolve(Engine::Redis, None).unwrap();
        assert_eq!(
            (version.as_str(), spec.image.as_str()),
            ("6.2", "my/redis:6"),
            "the flag sets the default version's image"
        );
    }

    #[test]
    fn metrics_listen_on_loopback_by_default_and_the_file_or_a_flag_move_or_turn_them_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "metrics_listen = \"off\"\n").unwrap();
        let file = file.to_str().unwrap();

        let default = serve(&[]).unwrap();
        let off_in_file = serve(&["--config", file]).unwrap();
        let moved = serve(&["--config", file, "--metrics-listen", "0.0.0.0:9100"]).unwrap();
        let refused = serve(&["--metrics-listen", "9100"]).unwrap_err();

        assert_eq!(default.metrics_listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9187"));
        assert_eq!(off_in_file.metrics_listen, None);
        assert_eq!(moved.metrics_listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9100"));
        assert!(refused.contains("`off`"), "{refused}");
    }

    #[test]
    fn the_console_is_on_by_default_and_the_flag_or_the_file_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "console = false\n").unwrap();

        assert!(serve(&[]).unwrap().console);
        assert!(!serve(&["--no-console"]).unwrap().console);
        assert!(!serve(&["--config", file.to_str().unwrap()]).unwrap().console);
    }

    #[test]
    fn quotas_come_from_a_flag_the_file_or_the_default_and_a_host_share_beyond_100_percent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "[quotas]\ninstances = 3\nmemory_mb = 2048\nbackups = 7\nbackup_mb = 100\n").unwrap();
        let file = file.to_str().unwrap();

        let from_file = serve(&["--config", file, "--quota-memory-mb", "4096"]).unwrap();
        let beyond = serve(&["--host-memory-percent", "101"]).unwrap_err();

        assert_eq!(
            from_file.quotas,
            Quotas { instances: 3, memory_mb: 4096, backups: 7, backup_mb: 100, ..Quotas::default() }
        );
        assert!(beyond.contains("host_memory_percent") && beyond.contains("101"), "{beyond}");
    }

    #[test]
    fn rate_limits_come_from_a_flag_the_file_or_the_default_and_a_rate_of_zero_turns_one_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "[rate_limits]\nreads_per_second = 7\nread_burst = 9\nchanges_per_second = 0\n").unwrap();
        let file = file.to_str().unwrap();
        let rate = |per_second, burst| Rate::from_settings("", per_second, burst).unwrap();

        let from_file = serve(&["--config", file, "--read-burst", "11"]).unwrap();
        let built_in = serve(&[]).unwrap();

        assert_eq!(from_file.rate_limits, RateLimits { reads: rate(7, 11), changes: None });
        assert_eq!(
            built_in.rate_limits,
            RateLimits {
                reads: rate(defaults::READS_PER_SECOND, defaults::READ_BURST),
                changes: rate(defaults::CHANGES_PER_SECOND, defaults::CHANGE_BURST),
            }
        );
    }

    #[test]
    fn the_example_files_rate_limits_are_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/dbroker.example.toml");

        assert_eq!(serve(&["--config", example]).unwrap().rate_limits, RateLimits::default());
    }

    #[test]
    fn a_burst_of_zero_under_a_rate_is_refused_saying_how_to_turn_the_limit_off() {
        let refused = serve(&["--change-burst", "0"]).unwrap_err();
        let off = serve(&["--changes-per-second", "0", "--change-burst", "0"]).unwrap();

        assert!(refused.contains("change_burst") && refused.contains("changes_per_second = 0"), "{refused}");
        assert_eq!(off.rate_limits.changes, None);
    }

    #[test]
    fn an_unknown_key_under_rate_limits_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "[rate_limits]\nreads_per_second = 5\nread_bursts = 9\n").unwrap();

        let refused = serve(&["--config", file.to_str().unwrap()]).unwrap_err();

        assert!(refused.contains("read_bursts") && refused.contains("line 3"), "{refused}");
    }

    #[test]
    fn the_key_file_comes_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dbroker.toml");
        std::fs::write(&file, "master_key_file = \"/etc/dbroker/master.key\"\n").unwrap();
        let file = file.to_str().unwrap();

        let from_file = serve(&["--config", file]).unwrap();
        let from_flag = serve(&["--config", file, "--master-key-file", "/run/key"]).unwrap();

        assert_eq!(from_file.master_key, KeySource::File("/etc/dbroker/master.key".into()));
        assert_eq!(from_flag.master_key, KeySource::File("/run/key".into()));
        assert_eq!(serve(&[]).unwrap().master_key, KeySource::DataDir);
    }

    #[test]
    fn backups_are_configured_by_their_section_and_a_mistake_in_it_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let configured = dir.path().join("backups.toml");
        std::fs::write(
            &configured,
            format!(
                "[backups]\nrecipient = \"{recipient}\"\nimport_max_bytes = 5000\n\
                 [backups.targets.local]\nkind = \"dir\"\npath = \"/var/lib/dbroker/backups\"\n"
            ),
        )
        .unwrap();
        let misspelt = dir.path().join("misspelt.toml");
        std::fs::write(&misspelt, format!("[backups]\nrecipient = \"{recipient}\"\ndefault_traget = \"local\"\n"))
            .unwrap();
        let literal = dir.path().join("literal.toml");
        std::fs::write(
            &literal,
            format!(
                "[backups]\nrecipient = \"{recipient}\"\n[backups.targets.s3]\nkind = \"s3\"\n\
                 endpoint = \"https://s3.example.net\"\nbucket = \"b\"\naccess_key_id = \"AKID\"\n\
                 secret_access_key = \"hunter2hunter2\"\n"
            ),
        )
        .unwrap();

        let unconfigured = serve(&[]).unwrap();
        let backups = serve(&["--config", configured.to_str().unwrap()]).unwrap().backups.unwrap();
        let misspelt = serve(&["--config", misspelt.to_str().unwrap()]).unwrap_err();
        let literal = serve(&["--config", literal.to_str().unwrap()]).unwrap_err();

        assert!(unconfigured.backups.is_none(), "no section: backups are not configured");
        assert_eq!((backups.default_target.as_str(), backups.import_max_bytes), ("local", 5000));
        assert_eq!(backups.recipient.to_string(), recipient);
        assert!(backups.identity.is_none());
        assert!(misspelt.contains("default_traget") && misspelt.contains("line 3"), "{misspelt}");
        assert!(literal.contains("backups.targets.s3.access_key_id") && !literal.contains("AKID"), "{literal}");
    }
}
