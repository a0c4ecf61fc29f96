//! The container runtime: the Docker Engine API (through bollard), wrapped once, in our own words.
//! It runs [`ContainerSpec`]s and reports [`ContainerState`]s, and runs commands in them with
//! their output streamed ([`Exec`]); it knows nothing of HTTP, users or engines. Errors say what the caller should do: `Unreachable`, `ImageMissing`, `PortTaken`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerUpdateBody;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig, HostConfigLogConfig, Mount,
    MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RestartContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::RwLock;

mod exec;
mod files;
mod network;

use crate::metrics::DockerErrors;

pub use exec::{Exec, Execution, Input, STDERR_TAIL_BYTES};
pub use network::NetworkSpec;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the Docker engine is unreachable: {0}")]
    Unreachable(String),
    #[error("image {image} is not on this host and could not be pulled: {reason}")]
    ImageMissing { image: String, reason: String },
    #[error("the host port is already taken")]
    PortTaken,
    #[error("no such container or volume")]
    NotFound,
    #[error("the Docker engine refused: {0}")]
    Refused(String),
    /// A command run in a container (see `exec`) exited with `code`; `stderr` is the tail of what
    /// it wrote there, for the person who reads the error.
    #[error("the command exited with {code}: {stderr}")]
    ExecFailed { code: i64, stderr: String },
    /// The input given to a command failed before its end.
    #[error("the command's input failed: {0}")]
    ExecInput(String),
}

impl RuntimeError {
    /// bollard's error in our words. Private: every call goes through `Runtime::failed`, which
    /// counts it too.
    fn from_bollard(error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match error {
            E::DockerResponseServerError { status_code: 404, message } => {
                tracing::debug!(%message, "Docker: not found");
                RuntimeError::NotFound
            }
            E::DockerResponseServerError { message, .. } if is_port_conflict(&message) => RuntimeError::PortTaken,
            E::DockerResponseServerError { status_code, message } => {
                RuntimeError::Refused(format!("{message} (HTTP {status_code})"))
            }
            // Anything that is not an answer from the engine means we could not talk to it.
            other => RuntimeError::Unreachable(other.to_string()),
        }
    }
}

/// Docker's words when a published port cannot be bound, by the bridge driver or the proxy.
fn is_port_conflict(message: &str) -> bool {
    message.contains("port is already allocated") || message.contains("address already in use")
}

/// Everything needed to run one database container. Arguments are separate strings and are
/// never joined into a shell line.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub labels: HashMap<String, String>,
    /// A named volume mounted at `data_path`: the data outlives the container.
    pub volume: String,
    pub data_path: String,
    pub container_port: u16,
    pub publish_ip: IpAddr,
    pub host_port: u16,
    pub memory_bytes: i64,
    /// The container's weight when CPUs are contended (`EQUAL_CPU_SHARES` for all alike), and
    /// the most CPU time it may take, in billionths of a CPU, if it is capped.
    pub cpu_shares: i64,
    pub nano_cpus: Option<i64>,
    /// Files written into the container's own filesystem after it is created and before it starts.
    pub files: Vec<SpecFile>,
    /// The network it joins (made if missing): ICC off, so it reaches no other container.
    pub network: NetworkSpec,
    /// The only Linux capabilities it keeps; every other is dropped.
    pub capabilities: &'static [&'static str],
}

/// A file dbroker writes into a container, such as a server's configuration.
#[derive(Clone)]
pub struct SpecFile {
    /// A directory in the container.
    pub dir: String,
    pub name: String,
    /// May hold secrets: kept out of `Debug`.
    pub contents: Vec<u8>,
    pub mode: u32,
    /// `Some(mode)`: create `dir` itself with this mode (its parent must exist).
    pub dir_mode: Option<u32>,
}

impl std::fmt::Debug for SpecFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpecFile({}/{}, {} bytes)", self.dir, self.name, self.contents.len())
    }
}

/// A one-off container (see `Runtime::run_throwaway`): labelled so that whoever made it can be
/// told and it can be found and removed if its maker dies, and memory-capped like an instance.
#[derive(Debug)]
pub struct Throwaway {
    pub name: String,
    pub image: String,
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub container_port: u16,
    pub labels: HashMap<String, String>,
    pub memory_bytes: i64,
    /// Files written into it before it starts (see `ContainerSpec::files`).
    pub files: Vec<SpecFile>,
    /// As an instance's: `ContainerSpec::network` and `ContainerSpec::capabilities`.
    pub network: NetworkSpec,
    pub capabilities: &'static [&'static str],
}

/// A container as a listing shows it. A listing carries no exit code or restart count, so those
/// read as 0: a hint of what to look at closer, with `state`.
#[derive(Debug, Clone)]
pub struct ContainerSummary {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub state: ContainerState,
}

/// What happened to a container, from Docker's event stream, with the container's labels.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub change: ContainerChange,
    pub labels: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerChange {
    /// Its main process ended, with this exit code.
    Died {
        exit_code: i64,
    },
    Started,
}

/// How long a stopping server gets to shut down cleanly before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What `Runtime::details` reports of a container.
#[derive(Debug, Clone)]
pub struct ContainerDetails {
    pub image: String,
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub labels: HashMap<String, String>,
    pub host_port: Option<u16>,
    pub memory_bytes: Option<i64>,
}

/// A container's use of the CPU and memory, from one sample of Docker's stats API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The CPU time its processes have used since it started, all cores together, in nanoseconds.
    pub cpu_nanos: u64,
    /// The memory it uses, without the page cache the kernel would reclaim before it hit its cap
    /// (as `docker stats` counts it).
    pub memory_used_bytes: u64,
    /// Its memory cap.
    pub memory_limit_bytes: u64,
}

/// Containers get no more processes than this: enough for any database server, not for a fork bomb.
const PIDS_LIMIT: i64 = 1024;

/// Docker's weight of a container that asks for none: given explicitly to every container
/// dbroker makes, so that under contention each gets an equal share of the CPUs.
pub const EQUAL_CPU_SHARES: i64 = 1024;

/// Every container's output is kept in at most this many files of at most this size each
/// (Docker's json-file driver rotates them), so a chatty server cannot fill the host's disk.
const LOG_MAX_SIZE: &str = "10m";
const LOG_MAX_FILES: &str = "3";

/// The rotated json-file logging of every container dbroker makes (see `LOG_MAX_SIZE`).
fn rotated_logs() -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
            ("max-file".to_string(), LOG_MAX_FILES.to_string()),
        ])),
    }
}

/// What a container is doing, in the terms dbroker decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Running; `restart_count` says how often Docker restarted it after its server exited.
    Running {
        restart_count: i64,
    },
    /// Created and never started (or started and not yet running).
    Created,
    /// Paused or being removed: not serving, not finished either.
    Starting,
    Exited {
        exit_code: i64,
        oom_killed: bool,
    },
    /// Exited and about to be restarted by Docker's restart policy.
    Restarting {
        exit_code: i64,
        oom_killed: bool,
    },
    Missing,
}

/// How long a pull of a missing image may take before it counts as failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// A handle on the Docker engine. The API version is negotiated on first contact (tried again on
/// every call until it works), so dbroker starts, and answers from its store, with no engine.
#[derive(Clone)]
pub struct Runtime {
    host: Option<String>,
    client: std::sync::Arc<RwLock<Option<Docker>>>,
    /// Held while the containers' network is looked up or made (see `network`).
    network_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where the engine's errors are counted, by call.
    errors: DockerErrors,
}

impl Runtime {
    /// A runtime for the engine at `host` (`unix://…`, `tcp://…`), or at `DOCKER_HOST` or the
    /// local socket when `None`. Nothing is contacted yet.
    pub fn new(host: Option<String>) -> Self {
        Self { host, client: Default::default(), network_lock: Default::default(), errors: Default::default() }
    }

    /// This runtime, counting the engine's errors into `errors`.
    pub fn counting_errors_in(self, errors: DockerErrors) -> Self {
        Self { errors, ..self }
    }

    /// What a failed Docker API `call` becomes: the error in our words, counted (see `counted`).
    fn failed(&self, call: &'static str) -> impl FnOnce(bollard::errors::Error) -> RuntimeError + '_ {
        move |error| counted(&self.errors, call, RuntimeError::from_bollard(error))
    }

    async fn docker(&self) -> Result<Docker, RuntimeError> {
        if let Some(docker) = self.client.read().await.as_ref() {
            return Ok(docker.clone());
        }
        let unreachable =
            |e: bollard::errors::Error| counted(&self.errors, "connect", RuntimeError::Unreachable(e.to_string()));
        let docker = match &self.host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_defaults(),
        }
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)?;
        *self.client.write().await = Some(docker.clone());
        Ok(docker)
    }

    pub async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker().await?.ping().await.map_err(self.failed("ping"))?;
        Ok(())
    }

    /// The memory of the engine's host in bytes (`MemTotal` of `docker info`): where the
    /// containers run, which need not be where dbroker runs.
    pub async fn host_memory_bytes(&self) -> Result<i64, RuntimeError> {
        let info = self.docker().await?.info().await.map_err(self.failed("info"))?;
        info.mem_total.filter(|bytes| *bytes > 0).ok_or_else(|| RuntimeError::Refused("no MemTotal in its info".into()))
    }

    /// Makes sure `image` is on the host, pulling it if it is not.
    /// Returns the image's id.
    pub async fn ensure_image(&self, image: &str) -> Result<String, RuntimeError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await.map_err(self.failed("inspect_image")) {
            Ok(inspect) => return Ok(inspect.id.unwrap_or_default()),
            Err(RuntimeError::NotFound) => {}
            Err(other) => return Err(other),
        }
        tracing::info!(image, "pulling a missing image");
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let pull = docker.create_image(Some(options), None, None).try_collect::<Vec<_>>();
        let missing = |reason: String| RuntimeError::ImageMissing { image: image.to_string(), reason };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Err(_) => Err(missing(format!("the pull took longer than {PULL_TIMEOUT:?}"))),
            Ok(Err(e)) => match self.failed("pull_image")(e) {
                RuntimeError::Unreachable(reason) => Err(RuntimeError::Unreachable(reason)),
                other => Err(missing(other.to_string())),
            },
            Ok(Ok(_)) => {
                Ok(docker.inspect_image(image).await.map_err(self.failed("inspect_image"))?.id.unwrap_or_default())
            }
        }
    }

    /// An image's id (`sha256:…`) and labels; `None` if the host has no such image.
    pub async fn image(&self, image: &str) -> Result<Option<(String, HashMap<String, String>)>, RuntimeError> {
        match self.docker().await?.inspect_image(image).await.map_err(self.failed("inspect_image")) {
            Ok(inspect) => {
                Ok(Some((inspect.id.unwrap_or_default(), inspect.config.and_then(|c| c.labels).unwrap_or_default())))
            }
            Err(RuntimeError::NotFound) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Starts `image` as a throwaway container `name`, with `container_port` published on a
    /// loopback port Docker picks, and returns that port: for one-off jobs such as initialising a
    /// data-directory template. The caller stops and removes it.
    pub async fn run_throwaway(&self, throwaway: Throwaway) -> Result<u16, RuntimeError> {
        let docker = self.docker().await?;
        let Throwaway { name, image, env, args, container_port, labels, memory_bytes, files, network, capabilities } =
            throwaway;
        let name = name.as_str();
        let network_id = self.ensure_network(&network).await?;
        let port_key = format!("{container_port}/tcp");
        let body = ContainerCreateBody {
            image: Some(image),
            env: Some(env),
            cmd: (!args.is_empty()).then_some(args),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key.clone()]),
            networking_config: Some(network::endpoint(&network, &network_id)),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port_key,
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
                )])),
                // The same limits as an instance's: a build is a server's first start.
                memory: Some(memory_bytes),
                memory_swap: Some(memory_bytes),
                security_opt: Some(vec!["no-new-privileges".into()]),
                pids_limit: Some(PIDS_LIMIT),
                cpu_shares: Some(EQUAL_CPU_SHARES),
                log_config: Some(rotated_logs()),
                network_mode: Some(network_id),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(capabilities.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        docker.create_container(Some(options), body).await.map_err(self.failed("create_container"))?;
        for file in &files {
            self.write_file(name, file).await?;
        }
        docker.start_container(name, None).await.map_err(self.failed("start_container"))?;
        // The port Docker picked is in the network settings, not in the host config asked for.
        let inspect = docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(self.failed("inspect_container"))?;
        inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|ports| ports.into_values().flatten().flatten().next())
            .and_then(|binding| binding.host_port?.parse().ok())
            .ok_or_else(|| RuntimeError::Refused("no port was published".into()))
    }

    /// Commits a stopped container as image `reference` with extra labels, keeping the
    /// environment and command of `source_image` rather than the container's own (which may hold
    /// a password). Returns the new image's id.
    pub async fn commit(
        &self,
        container: &str,
        reference: &str,
        source_image: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, RuntimeError> {
        let docker = self.docker().await?;
        let source =
            docker.inspect_image(source_image).await.map_err(self.failed("inspect_image"))?.config.unwrap_or_default();
        let mut all_labels = source.labels.unwrap_or_default();
        all_labels.extend(labels);
        let config = bollard::models::ContainerConfig {
            env: source.env,
            cmd: source.cmd,
            labels: Some(all_labels),
            ..Default::default()
        };
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        let options = bollard::query_parameters::CommitContainerOptionsBuilder::default()
            .container(container)
            .repo(repo)
            .tag(tag)
            .pause(false)
            .build();
        let committed = docker.commit_container(options, config).await.map_err(self.failed("commit_container"))?;
        Ok(committed.id)
    }

    /// Creates the spec's volume and container without starting it; a container of that name that
    /// exists already is left as it is.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.docker()
            .await?
            .create_volume(VolumeCreateRequest {
                name: Some(spec.volume.clone()),
                labels: Some(spec.labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(self.failed("create_volume"))?;
        self.create_container(spec).await
    }

    /// Creates the spec's container on its data volume, which must exist already: a container
    /// made again for data that outlived it. `false`, with nothing left behind, if the volume is
    /// gone, even if it went a moment before: Docker makes an empty volume for a mount whose volume
    /// is missing, which would hide that the data is lost. That one has no labels; dbroker's have.
    pub async fn create_on_existing_volume(&self, spec: &ContainerSpec) -> Result<bool, RuntimeError> {
        self.create_container(spec).await?;
        let volume = self.docker().await?.inspect_volume(&spec.volume).await.map_err(self.failed("inspect_volume"))?;
        if volume.labels.is_empty() {
            self.remove_container(&spec.name).await?;
            self.remove_volume(&spec.volume).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Creates the spec's container (a container of that name that exists already is left as it
    /// is) and writes its files into it.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let network_id = self.ensure_network(&spec.network).await?;
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        match docker.create_container(Some(options), container_body(spec, network_id)).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                tracing::debug!(container = %spec.name, "container exists already");
            }
            Err(e) => return Err(self.failed("create_container")(e)),
        }
        for file in &spec.files {
            self.write_file(&spec.name, file).await?;
        }
        Ok(())
    }

    pub async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker().await?.start_container(name, None).await {
            // 304: started already.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            other => Ok(other.map_err(self.failed("start_container"))?),
        }
    }

    /// Stops a container, giving its server `STOP_TIMEOUT` to shut down cleanly.
    pub async fn stop(&self, name: &str) -> Result<(), RuntimeError> {
        let options = StopContainerOptionsBuilder::default().t(STOP_TIMEOUT.as_secs() as i32).build();
        match self.docker().await?.stop_container(name, Some(options)).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            other => Ok(other.map_err(self.failed("stop_container"))?),
        }
    }

    pub async fn restart(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RestartContainerOptionsBuilder::default().t(STOP_TIMEOUT.as_secs() as i32).build();
        self.docker().await?.restart_container(name, Some(options)).await.map_err(self.failed("restart_container"))?;
        Ok(())
    }

    /// Changes a container's memory cap in place, swap still off.
    pub async fn set_memory(&self, name: &str, memory_bytes: i64) -> Result<(), RuntimeError> {
        let update =
            ContainerUpdateBody { memory: Some(memory_bytes), memory_swap: Some(memory_bytes), ..Default::default() };
        self.docker().await?.update_container(name, update).await.map_err(self.failed("update_container"))?;
        Ok(())
    }

    /// The containers that carry `label=value`, with their labels and state.
    pub async fn list(&self, label: &str, value: &str) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let containers =
            self.docker().await?.list_containers(Some(options)).await.map_err(self.failed("list_containers"))?;
        Ok(containers
            .into_iter()
            .map(|c| ContainerSummary {
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                state: match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running { restart_count: 0 },
                    Some(ContainerSummaryStateEnum::RESTARTING) => {
                        ContainerState::Restarting { exit_code: 0, oom_killed: false }
                    }
                    Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD) => {
                        ContainerState::Exited { exit_code: 0, oom_killed: false }
                    }
                    Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
                    _ => ContainerState::Starting,
                },
            })
            .collect())
    }

    /// Whether a volume exists.
    pub async fn volume_exists(&self, name: &str) -> Result<bool, RuntimeError> {
        match self.docker().await?.inspect_volume(name).await.map_err(self.failed("inspect_volume")) {
            Ok(_) => Ok(true),
            Err(RuntimeError::NotFound) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// A container's environment, labels and published host port, for adopting it.
    pub async fn details(&self, name: &str) -> Result<ContainerDetails, RuntimeError> {
        let inspect = self
            .docker()
            .await?
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(self.failed("inspect_container"))?;
        let config = inspect.config.unwrap_or_default();
        let host_config = inspect.host_config.unwrap_or_default();
        let memory_bytes = host_config.memory;
        let host_port = host_config
            .port_bindings
            .and_then(|bindings| bindings.into_values().flatten().flatten().next())
            .and_then(|binding| binding.host_port)
            .and_then(|port| port.parse().ok());
        Ok(ContainerDetails {
            image: config.image.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            args: config.cmd.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
            host_port,
            memory_bytes,
        })
    }

    /// Docker's container events (die, start) for containers carrying `label=value`, as they
    /// happen. The stream ends when the engine goes away; the caller subscribes again.
    pub async fn events(
        &self,
        label: &str,
        value: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<ContainerEvent, RuntimeError>> + use<>, RuntimeError> {
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![format!("{label}={value}")]),
            ("event", vec!["die".into(), "start".into()]),
        ]);
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let stream = self.docker().await?.events(Some(options));
        let errors = self.errors.clone();
        Ok(stream.filter_map(move |event| std::future::ready(container_event(event, &errors))))
    }

    /// Creates the spec's volume and container and starts it. Creating is idempotent: a container
    /// of that name that exists already is started as it is. `PortTaken` if the host port could
    /// not be bound; the container is removed again then, so the caller can retry on another port.
    pub async fn run(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.create(spec).await?;
        self.start_created(&spec.name).await
    }

    /// Starts a container that was just created. If Docker finds its host port taken, the
    /// container is removed, so that it can be created again with another.
    pub async fn start_created(&self, name: &str) -> Result<(), RuntimeError> {
        match self.start(name).await {
            Err(RuntimeError::PortTaken) => {
                self.remove_container(name).await?;
                Err(RuntimeError::PortTaken)
            }
            other => other,
        }
    }

    pub async fn state(&self, name: &str) -> Result<ContainerState, RuntimeError> {
        let docker = self.docker().await?;
        let inspect = match docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(inspect) => inspect,
            Err(e) => match self.failed("inspect_container")(e) {
                RuntimeError::NotFound => return Ok(ContainerState::Missing),
                other => return Err(other),
            },
        };
        let state = inspect.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => {
                ContainerState::Running { restart_count: inspect.restart_count.unwrap_or_default() }
            }
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => ContainerState::Exited {
                exit_code: state.exit_code.unwrap_or_default(),
                oom_killed: state.oom_killed.unwrap_or_default(),
            },
            Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting {
                exit_code: state.exit_code.unwrap_or_default(),
                oom_killed: state.oom_killed.unwrap_or_default(),
            },
            Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
            _ => ContainerState::Starting,
        })
    }

    /// The container's last `lines` lines of output (stdout and stderr).
    pub async fn logs_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let docker = self.docker().await?;
        let options = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let chunks: Vec<_> = docker.logs(name, Some(options)).collect().await;
        let mut text = String::new();
        for chunk in chunks {
            text.push_str(&chunk.map_err(self.failed("logs"))?.to_string());
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    /// The container's CPU and memory use now: one sample, taken at once (`one-shot`, which
    /// Docker 20.10 and later know; an older engine waits for its next sample, a second or two).
    /// `None` if Docker has no figures of it: a container that does not run has none.
    pub async fn usage(&self, name: &str) -> Result<Option<ContainerUsage>, RuntimeError> {
        let options = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
        let mut samples = self.docker().await?.stats(name, Some(options));
        let Some(sample) = samples.next().await.transpose().map_err(self.failed("stats"))? else { return Ok(None) };
        let cpu_nanos = sample.cpu_stats.and_then(|cpu| cpu.cpu_usage?.total_usage);
        let memory = sample.memory_stats.unwrap_or_default();
        let (Some(cpu_nanos), Some(usage), Some(limit)) = (cpu_nanos, memory.usage, memory.limit) else {
            return Ok(None);
        };
        let memory_used_bytes = usage.saturating_sub(reclaimable_cache(&memory.stats.unwrap_or_default()));
        Ok(Some(ContainerUsage { cpu_nanos, memory_used_bytes, memory_limit_bytes: limit }))
    }

    /// Removes a container (running or not); a container that is gone already is fine.
    pub async fn remove_container(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        ignore_not_found(
            self.docker().await?.remove_container(name, Some(options)).await.map_err(self.failed("remove_container")),
        )
    }

    /// Removes a volume and the data in it; a volume that is gone already is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        ignore_not_found(
            self.docker().await?.remove_volume(name, Some(options)).await.map_err(self.failed("remove_volume")),
        )
    }
}

/// The page cache in a container's memory use that the kernel reclaims before the cap is hit:
/// inactive file pages, as `docker stats` subtracts them (`inactive_file` under cgroup v2,
/// `total_inactive_file` under v1).
fn reclaimable_cache(stats: &HashMap<String, u64>) -> u64 {
    stats.get("inactive_file").or_else(|| stats.get("total_inactive_file")).copied().unwrap_or_default()
}

/// Our words for one of Docker's events; `None` for one dbroker does not follow.
fn container_event(
    event: Result<bollard::models::EventMessage, bollard::errors::Error>,
    errors: &DockerErrors,
) -> Option<Result<ContainerEvent, RuntimeError>> {
    let event = match event {
        Ok(event) => event,
        Err(error) => return Some(Err(counted(errors, "events", RuntimeError::from_bollard(error)))),
    };
    let labels = event.actor.and_then(|a| a.attributes).unwrap_or_default();
    let change = match event.action.as_deref() {
        Some("die") => {
            ContainerChange::Died { exit_code: labels.get("exitCode").and_then(|c| c.parse().ok()).unwrap_or_default() }
        }
        Some("start") => ContainerChange::Started,
        _ => return None,
    };
    Some(Ok(ContainerEvent { change, labels }))
}

fn ignore_not_found(result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match result {
        Err(RuntimeError::NotFound) | Ok(()) => Ok(()),
        Err(other) => Err(other),
    }
}

/// Counts `error` of `call` (a container or volume not found is an answer, not a fault: not
/// counted) and returns it.
fn counted(errors: &DockerErrors, call: &'static str, error: RuntimeError) -> RuntimeError {
    let kind = match &error {
        RuntimeError::Unreachable(_) => "unreachable",
        RuntimeError::Refused(_) => "refused",
        RuntimeError::PortTaken => "port_taken",
        // A command's own failure, or its input's, is an answer too, not the engine's fault.
        RuntimeError::NotFound
        | RuntimeError::ImageMissing { .. }
        | RuntimeError::ExecFailed { .. }
        | RuntimeError::ExecInput(_) => return error,
    };
    errors.count(call, kind);
    error
}

/// The Docker container body for a spec: limits and isolation that no request can change.
fn container_body(spec: &ContainerSpec, network_id: String) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.container_port);
    let host_config = HostConfig {
        // Swap off: memory-swap equal to memory, so the cap is the cap.
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        pids_limit: Some(PIDS_LIMIT),
        cpu_shares: Some(spec.cpu_shares),
        nano_cpus: spec.nano_cpus,
        log_config: Some(rotated_logs()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        // By id: a second network of the same name (see `network`) cannot make it ambiguous.
        network_mode: Some(network_id.clone()),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(spec.capabilities.iter().map(|c| c.to_string()).collect()),
        port_bindings: Some(HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.publish_ip.to_string()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )])),
        mounts: Some(vec![Mount {
            target: Some(spec.data_path.clone()),
            source: Some(spec.volume.clone()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        labels: Some(spec.labels.clone()),
        exposed_ports: Some(vec![port_key]),
        networking_config: Some(network::endpoint(&spec.network, &network_id)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake for a rare fault: Docker finding a port taken between dbroker's check and the start
    /// cannot be produced on demand, so its messages (from Docker 20.10 to 28) are checked here.
    #[test]
    fn fake_docker_port_conflict_messages_are_recognised_as_port_taken() {
        let messages = [
            "driver failed programming external connectivity on endpoint x: Bind for 127.0.0.1:20000 failed: port is already allocated",
            "driver failed programming external connectivity on endpoint x: Error starting userland proxy: listen tcp4 127.0.0.1:20000: bind: address already in use",
        ];
        for message in messages {
            let error = bollard::errors::Error::DockerResponseServerError { status_code: 500, message: message.into() };
            assert!(matches!(RuntimeError::from_bollard(error), RuntimeError::PortTaken), "{message}");
        }
        let other =
            bollard::errors::Error::DockerResponseServerError { status_code: 500, message: "no space left".into() };
        assert!(matches!(RuntimeError::from_bollard(other), RuntimeError::Refused(_)));
    }

    /// This host runs cgroup v1; v2's name for the same figure is checked here.
    #[test]
    fn the_reclaimable_cache_is_read_under_cgroup_v1_and_v2() {
        let stats = |key: &str| HashMap::from([(key.to_string(), 4096), ("active_file".to_string(), 1)]);
        assert_eq!(reclaimable_cache(&stats("total_inactive_file")), 4096);
        assert_eq!(reclaimable_cache(&stats("inactive_file")), 4096);
        assert_eq!(reclaimable_cache(&HashMap::new()), 0);
    }
}
