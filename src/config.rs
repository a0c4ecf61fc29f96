//! Typed configuration: the command line and environment, parsed once into values the rest of
//! dbroker can trust.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::model::{Engine, UserName};

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

/// The image each engine's instances run.
#[derive(Debug, Clone)]
pub struct Images {
    pub mysql: String,
    pub redis: String,
}

impl Images {
    pub fn of(&self, engine: Engine) -> &str {
        match engine {
            Engine::Mysql => &self.mysql,
            Engine::Redis => &self.redis,
        }
    }

    /// The flag that sets an engine's image, for error messages that say what to change.
    pub fn flag(engine: Engine) -> &'static str {
        match engine {
            Engine::Mysql => "--mysql-image (DBROKER_MYSQL_IMAGE)",
            Engine::Redis => "--redis-image (DBROKER_REDIS_IMAGE)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The host put in connection details.
    pub advertise_host: String,
    /// The host address instance ports are published on.
    pub publish_ip: IpAddr,
    pub port_range: PortRange,
    pub images: Images,
    /// How long a create waits for the database to accept its credentials.
    pub ready_timeout: Duration,
    /// Users whose token is their name, as the old tool had: for trials only.
    pub demo_users: Vec<UserName>,
    /// Names this deployment's containers and volumes (`PREFIX-ID`) and labels them
    /// `dbroker.prefix=PREFIX`, so several deployments (or test runs) share one engine safely.
    pub instance_prefix: String,
    /// Hex AES-256 key for passwords at rest; else `master.key` in the data directory.
    pub master_key: Option<String>,
    /// How often the reconciler compares the store with Docker and repairs drift.
    pub reconcile_interval: Duration,
    /// The Docker engine (`unix://…`, `tcp://…`); `None` for `DOCKER_HOST` or the local socket.
    pub docker_host: Option<String>,
}
