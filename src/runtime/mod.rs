//! The container runtime: the Docker Engine API (through bollard), wrapped once, in our own words.
//! It runs [`ContainerSpec`]s and reports [`ContainerState`]s; it knows nothing of HTTP, users or
//! engines. Errors say what the caller should do: `Unreachable`, `ImageMissing`, `PortTaken`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, Mount, MountType, PortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::RwLock;

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
}

impl From<bollard::errors::Error> for RuntimeError {
    fn from(error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match error {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => {
                tracing::debug!(%message, "Docker: not found");
                RuntimeError::NotFound
            }
            E::DockerResponseServerError { message, .. } if is_port_conflict(&message) => {
                RuntimeError::PortTaken
            }
            E::DockerResponseServerError {
                status_code,
                message,
            } => RuntimeError::Refused(format!("{message} (HTTP {status_code})")),
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
}

/// Containers get no more processes than this: enough for any database server, not for a fork bomb.
const PIDS_LIMIT: i64 = 1024;

/// What a container is doing, in the terms dbroker decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Running; `restart_count` says how often Docker restarted it after its server exited.
    Running {
        restart_count: i64,
    },
    /// Created, restarting or paused: not serving, not finished either.
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

/// A handle on the Docker engine. The API version is negotiated on first contact, and again after
/// the engine was unreachable, so dbroker starts (and answers from its store) with no engine.
#[derive(Clone)]
pub struct Runtime {
    client: std::sync::Arc<RwLock<Option<Docker>>>,
}

impl Runtime {
    pub fn new() -> Self {
        Self {
            client: Default::default(),
        }
    }

    async fn docker(&self) -> Result<Docker, RuntimeError> {
        if let Some(docker) = self.client.read().await.as_ref() {
            return Ok(docker.clone());
        }
        // DOCKER_HOST, or the local socket.
        let docker = Docker::connect_with_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        *self.client.write().await = Some(docker.clone());
        Ok(docker)
    }

    pub async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker().await?.ping().await?;
        Ok(())
    }

    /// Makes sure `image` is on the host, pulling it if it is not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match docker
            .inspect_image(image)
            .await
            .map_err(RuntimeError::from)
        {
            Ok(_) => return Ok(()),
            Err(RuntimeError::NotFound) => {}
            Err(other) => return Err(other),
        }
        tracing::info!(image, "pulling a missing image");
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let pull = docker
            .create_image(Some(options), None, None)
            .try_collect::<Vec<_>>();
        let missing = |reason: String| RuntimeError::ImageMissing {
            image: image.to_string(),
            reason,
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Err(_) => Err(missing(format!(
                "the pull took longer than {PULL_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => match RuntimeError::from(e) {
                RuntimeError::Unreachable(reason) => Err(RuntimeError::Unreachable(reason)),
                other => Err(missing(other.to_string())),
            },
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Creates the spec's volume and container and starts it. Creating is idempotent: a container
    /// of that name that exists already is started as it is. `PortTaken` if the host port could
    /// not be bound; the container is removed again then, so the caller can retry on another port.
    pub async fn run(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(spec.volume.clone()),
                labels: Some(spec.labels.clone()),
                ..Default::default()
            })
            .await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        match docker
            .create_container(Some(options), container_body(spec))
            .await
        {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                tracing::debug!(container = %spec.name, "container exists already; starting it");
            }
            Err(e) => return Err(e.into()),
        }
        match docker
            .start_container(&spec.name, None)
            .await
            .map_err(RuntimeError::from)
        {
            Err(RuntimeError::PortTaken) => {
                self.remove_container(&spec.name).await?;
                Err(RuntimeError::PortTaken)
            }
            other => other,
        }
    }

    pub async fn state(&self, name: &str) -> Result<ContainerState, RuntimeError> {
        let docker = self.docker().await?;
        let inspect = match docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => inspect,
            Err(e) => match RuntimeError::from(e) {
                RuntimeError::NotFound => return Ok(ContainerState::Missing),
                other => return Err(other),
            },
        };
        let state = inspect.state.unwrap_or_default();
        Ok(match state.status {
            Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running {
                restart_count: inspect.restart_count.unwrap_or_default(),
            },
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                ContainerState::Exited {
                    exit_code: state.exit_code.unwrap_or_default(),
                    oom_killed: state.oom_killed.unwrap_or_default(),
                }
            }
            Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting {
                exit_code: state.exit_code.unwrap_or_default(),
                oom_killed: state.oom_killed.unwrap_or_default(),
            },
            _ => ContainerState::Starting,
        })
    }

    /// The container's last `lines` lines of output (stdout and stderr).
    pub async fn logs_tail(&self, name: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let docker = self.docker().await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<_> = docker.logs(name, Some(options)).collect().await;
        let mut text = String::new();
        for chunk in chunks {
            text.push_str(&chunk?.to_string());
        }
        Ok(text.lines().map(str::to_string).collect())
    }

    /// Removes a container (running or not); a container that is gone already is fine.
    pub async fn remove_container(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        ignore_not_found(
            self.docker()
                .await?
                .remove_container(name, Some(options))
                .await,
        )
    }

    /// Removes a volume and the data in it; a volume that is gone already is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        ignore_not_found(
            self.docker()
                .await?
                .remove_volume(name, Some(options))
                .await,
        )
    }

    /// Names of the containers, running or not, that carry `label=value`.
    pub async fn containers_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker().await?.list_containers(Some(options)).await?;
        Ok(containers
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect())
    }

    /// Names of the volumes that carry `label=value`.
    pub async fn volumes_labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
        let options = bollard::query_parameters::ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = self.docker().await?.list_volumes(Some(options)).await?;
        Ok(volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

fn ignore_not_found(result: Result<(), bollard::errors::Error>) -> Result<(), RuntimeError> {
    match result.map_err(RuntimeError::from) {
        Err(RuntimeError::NotFound) | Ok(()) => Ok(()),
        Err(other) => Err(other),
    }
}

/// The Docker container body for a spec: limits and isolation that no request can change.
fn container_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let port_key = format!("{}/tcp", spec.container_port);
    let host_config = HostConfig {
        // Swap off: memory-swap equal to memory, so the cap is the cap.
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        pids_limit: Some(PIDS_LIMIT),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
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
            let error = bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: message.into(),
            };
            assert!(
                matches!(RuntimeError::from(error), RuntimeError::PortTaken),
                "{message}"
            );
        }
        let other = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "no space left".into(),
        };
        assert!(matches!(
            RuntimeError::from(other),
            RuntimeError::Refused(_)
        ));
    }
}
