//! The command line: `dbroker serve` and `dbroker user add|list|remove`. Every flag also reads
//! an environment variable, `DBROKER_` and the flag's name in capitals.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Images, PortRange};
use crate::model::UserName;

#[derive(Debug, Parser)]
#[command(
    name = "dbroker",
    version,
    about = "Self-service MySQL and Redis instances on Docker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Manage the users who may call the API.
    #[command(subcommand)]
    User(UserCommand),
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
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where dbroker keeps its database and master key.
    #[arg(long, env = "DBROKER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address the API listens on.
    #[arg(long, env = "DBROKER_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The host put in connection details.
    #[arg(long, env = "DBROKER_ADVERTISE_HOST", default_value = "127.0.0.1")]
    pub advertise_host: String,
    /// The host address instance ports are published on (0.0.0.0 for all interfaces).
    #[arg(long, env = "DBROKER_PUBLISH_IP", default_value = "127.0.0.1")]
    pub publish_ip: IpAddr,
    /// Host ports handed to instances, FIRST-LAST.
    #[arg(long, env = "DBROKER_PORT_RANGE", default_value = "20000-29999")]
    pub port_range: PortRange,
    /// The image of MySQL instances.
    #[arg(long, env = "DBROKER_MYSQL_IMAGE", default_value = "mysql:8.0")]
    pub mysql_image: String,
    /// The image of Redis instances.
    #[arg(long, env = "DBROKER_REDIS_IMAGE", default_value = "redis:7.2")]
    pub redis_image: String,
    /// Seconds a create waits for the database to accept its credentials.
    #[arg(long, env = "DBROKER_READY_TIMEOUT", default_value_t = 120)]
    pub ready_timeout: u64,
    /// Users whose token is their own name, as the old tool had (user1,user2,user3): trials only.
    #[arg(long, env = "DBROKER_DEMO_USERS", value_delimiter = ',')]
    pub demo_users: Vec<UserName>,
    /// Seconds between the reconciler's comparisons of the store with Docker.
    #[arg(long, env = "DBROKER_RECONCILE_INTERVAL", default_value_t = 30)]
    pub reconcile_interval: u64,
    /// Prefix of container and volume names, and the value of their `dbroker.prefix` label.
    #[arg(long, env = "DBROKER_INSTANCE_PREFIX", default_value = "dbroker")]
    pub instance_prefix: String,
}

impl ServeArgs {
    pub fn into_config(self) -> Config {
        Config {
            listen: self.listen,
            data_dir: self.store.data_dir,
            advertise_host: self.advertise_host,
            publish_ip: self.publish_ip,
            port_range: self.port_range,
            images: Images {
                mysql: self.mysql_image,
                redis: self.redis_image,
            },
            ready_timeout: Duration::from_secs(self.ready_timeout),
            demo_users: self.demo_users,
            instance_prefix: self.instance_prefix,
            master_key: std::env::var("DBROKER_MASTER_KEY").ok(),
            reconcile_interval: Duration::from_secs(self.reconcile_interval.max(1)),
            docker_host: std::env::var("DOCKER_HOST").ok(),
        }
    }
}
