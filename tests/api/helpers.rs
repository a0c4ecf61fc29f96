//! What the tests share: the Docker engine, the images to use, polling with a deadline, and guards
//! that remove what a test created even when it panics.

use std::future::Future;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::RemoveContainerOptionsBuilder;

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
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes a container and its anonymous volumes when dropped, so a failing test leaves nothing.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        block_on_fresh_runtime(async move {
            let options = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}
