//! Prometheus metrics, served at `/metrics` on a listener of their own (see `api::metrics`).
//!
//! [`Metrics`] owns the registry and every family that something records into as it happens:
//! HTTP requests, operations and the create's steps, the reconciler's passes and repairs, Docker
//! errors. It is handed to what records (the router, the provisioner, its runtime, the reconciler),
//! never global, so that several dbrokers in one process (the tests) keep their figures apart.
//! What is a state rather than an event (instances, the warm pool, ports, quota use) is read from
//! the store when Prometheus scrapes ([`Figures`]), and the process's own figures from
//! `/proc/self`: nothing is kept in step by hand.
//!
//! No label holds an instance id, a user's name, a container's name or a raw path: routes are
//! their templates (`/v1/instances/{id}`), and every other label is one of a few fixed words.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::model::{Engine, OperationKind, Status};

/// The `Content-Type` of the Prometheus text format (0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Seconds. The read path answers in well under a millisecond; a create waits up to the ready
/// timeout (two minutes by default).
const HTTP_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// Seconds: from a stop's fraction of a second to a MariaDB's first start.
const OPERATION_BUCKETS: [f64; 14] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and the families recorded into as things happen. Cheap to clone: every clone
/// records into the same figures.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    http: Histograms<HttpLabels>,
    operations: Histograms<OperationLabels>,
    steps: Histograms<StepLabels>,
    passes: Family<PassLabels, Counter>,
    repairs: Family<RepairLabels, Counter>,
    backups: Family<BackupLabels, Counter>,
    backup_bytes: Family<EngineLabels, Counter>,
    docker_errors: DockerErrors,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http: Histograms<HttpLabels> = Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS));
        let operations: Histograms<OperationLabels> =
            Family::new_with_constructor(|| Histogram::new(OPERATION_BUCKETS));
        let steps: Histograms<StepLabels> = Family::new_with_constructor(|| Histogram::new(OPERATION_BUCKETS));
        let passes = Family::<PassLabels, Counter>::default();
        let repairs = Family::<RepairLabels, Counter>::default();
        let docker_errors = DockerErrors::default();
        let backups = Family::<BackupLabels, Counter>::default();
        let backup_bytes = Family::<EngineLabels, Counter>::default();
        registry.register(
            "dbroker_http_request_duration_seconds",
            "HTTP requests to the API and how long each took to answer, by method, route template and status",
            http.clone(),
        );
        registry.register(
            "dbroker_operation_duration_seconds",
            "Operations (every change to an instance) and how long each ran, by kind, engine and outcome \
             (succeeded, failed, lost to another process, discarded: a repair that found nothing to do)",
            operations.clone(),
        );
        registry.register(
            "dbroker_create_step_duration_seconds",
            "How long each step of a create took, since the step before it, by step and engine",
            steps.clone(),
        );
        registry.register(
            "dbroker_reconciler_passes",
            "Passes of the reconciler that compared the store with Docker, by outcome",
            passes.clone(),
        );
        registry.register("dbroker_repairs", "Drift repaired by the reconciler, by repair", repairs.clone());
        registry.register(
            "dbroker_docker_errors",
            "Calls to the Docker engine that failed, by call and error (unreachable, refused, port_taken)",
            docker_errors.0.clone(),
        );
        registry.register(
            "dbroker_backups",
            "Backups taken, by engine and outcome (stored, failed), and verifications that failed (verify_failed)",
            backups.clone(),
        );
        registry.register(
            "dbroker_backup_stored_bytes",
            "Bytes of backups written to their targets, sealed, by engine",
            backup_bytes.clone(),
        );
        Self {
            registry: Arc::new(registry),
            http,
            operations,
            steps,
            passes,
            repairs,
            backups,
            backup_bytes,
            docker_errors,
        }
    }

    /// The layer that times every request of the router it wraps.
    pub fn http_layer(&self) -> HttpMetricsLayer {
        HttpMetricsLayer { durations: self.http.clone() }
    }

    pub fn operation_ended(&self, kind: OperationKind, engine: Option<Engine>, outcome: Outcome, took: Duration) {
        let labels = OperationLabels { kind: kind.as_str(), engine: engine_label(engine), outcome: outcome.as_str() };
        self.operations.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn create_step(&self, step: &'static str, engine: Option<Engine>, took: Duration) {
        self.steps.get_or_create(&StepLabels { step, engine: engine_label(engine) }).observe(took.as_secs_f64());
    }

    pub fn reconciler_pass(&self, outcome: &'static str) {
        self.passes.get_or_create(&PassLabels { outcome }).inc();
    }

    pub fn repaired(&self, repair: &'static str) {
        self.repairs.get_or_create(&RepairLabels { repair }).inc();
    }

    pub fn backup_stored(&self, engine: Engine, bytes: u64) {
        self.backups.get_or_create(&BackupLabels { engine: engine.as_str(), outcome: "stored" }).inc();
        self.backup_bytes.get_or_create(&EngineLabels { engine: engine.as_str() }).inc_by(bytes);
    }

    pub fn backup_failed(&self, engine: Engine) {
        self.backups.get_or_create(&BackupLabels { engine: engine.as_str(), outcome: "failed" }).inc();
    }

    pub fn backup_verify_failed(&self, engine: Engine) {
        self.backups.get_or_create(&BackupLabels { engine: engine.as_str(), outcome: "verify_failed" }).inc();
    }

    /// Where the runtime counts the Docker engine's errors.
    pub fn docker_errors(&self) -> DockerErrors {
        self.docker_errors.clone()
    }

    /// The text Prometheus scrapes: what was recorded, `figures` read just now, and the
    /// process's own.
    pub fn encode(&self, figures: &Figures) -> String {
        let mut now = Registry::default();
        figures.register(&mut now);
        register_process_figures(&mut now);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_text::encode(&mut text, &now);
        text
    }
}

/// How an operation ended, in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Another process had taken it over (this one stalled past its lease): that one ends it.
    Lost,
    /// A repair that found nothing left to repair, and was forgotten.
    Discarded,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
            Outcome::Discarded => "discarded",
        }
    }
}

fn engine_label(engine: Option<Engine>) -> &'static str {
    engine.map_or("unknown", Engine::as_str)
}

/// The Docker engine's errors, by the runtime's call and the kind of error. Cheap to clone; one
/// made on its own (a runtime outside any dbroker, in a test) counts into nothing anyone reads.
#[derive(Clone, Default)]
pub struct DockerErrors(Family<DockerErrorLabels, Counter>);

impl DockerErrors {
    pub fn count(&self, call: &'static str, error: &'static str) {
        self.0.get_or_create(&DockerErrorLabels { call, error }).inc();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    engine: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
    engine: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PassLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RepairLabels {
    repair: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackupLabels {
    engine: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EngineLabels {
    engine: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DockerErrorLabels {
    call: &'static str,
    error: &'static str,
}

/// A request's route template, as the router matched it, or `unmatched`. It holds axum's own
/// `MatchedPath`, whose clone is a reference count: looking up the figures of a route seen before
/// allocates nothing.
#[derive(Debug, Clone)]
struct Route(Option<MatchedPath>);

impl Route {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The standard methods by name; any other as `other`, so that a client cannot make new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Times each request from its arrival at the router to its answer's head, by method, route
/// template and status. A request whose client went away before its answer is not counted.
#[derive(Clone)]
pub struct HttpMetricsLayer {
    durations: Histograms<HttpLabels>,
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService { inner, durations: self.durations.clone() }
    }
}

#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    durations: Histograms<HttpLabels>,
}

impl<S, B, R> tower::Service<Request<B>> for HttpMetricsService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.method());
        let route = Route(request.extensions().get::<MatchedPath>().cloned());
        Timed {
            inner: self.inner.call(request),
            started: Instant::now(),
            request: Some((method, route)),
            durations: self.durations.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer on its way, and when the request came.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        request: Option<(&'static str, Route)>,
        durations: Histograms<HttpLabels>,
    }
}

impl<F, R, E> Future for Timed<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        if let (Ok(response), Some((method, route))) = (&answer, this.request.take()) {
            let labels = HttpLabels { method, route, status: response.status().as_u16() };
            this.durations.get_or_create(&labels).observe(this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(answer)
    }
}

/// What is read from the store (and the reconciler) when Prometheus scrapes.
#[derive(Debug, Default)]
pub struct Figures {
    /// Users' instances (not the warm pool's), by engine and status; every pair, zeros included.
    pub instances: HashMap<(Engine, Status), u64>,
    /// The warm pool's members, by engine, version and status.
    pub pool_members: HashMap<(Engine, String, Status), u64>,
    /// How many members each version's pool should hold (`pool` in the catalogue).
    pub pool_targets: HashMap<(Engine, String), u64>,
    pub needing_attention: u64,
    pub ports_in_range: u64,
    pub ports_free: u64,
    /// The instances users hold as their quotas count them (failed ones do not count).
    pub instances_held: u64,
    /// The sum of every counted instance's memory cap, the pool's included.
    pub host_memory_capped_bytes: u64,
    /// The host's memory budget; `None` while the Docker engine has not told its host's memory.
    pub host_memory_budget_bytes: Option<u64>,
    pub reconciler_leader: bool,
    /// Every user's stored backups together, as the backup quotas count them.
    pub backups_held: u64,
    pub backup_bytes_held: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InstanceLabels {
    engine: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    engine: &'static str,
    version: String,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    engine: &'static str,
    version: String,
}

/// A gauge set to `value`, registered under `name`.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

impl Figures {
    fn register(&self, registry: &mut Registry) {
        let instances = Family::<InstanceLabels, Gauge>::default();
        for ((engine, status), count) in &self.instances {
            let labels = InstanceLabels { engine: engine.as_str(), status: status.as_str() };
            instances.get_or_create(&labels).set(*count as i64);
        }
        registry.register("dbroker_instances", "Users' instances, by engine and status", instances);
        let pool = Family::<PoolLabels, Gauge>::default();
        for ((engine, version, status), count) in &self.pool_members {
            let labels = PoolLabels { engine: engine.as_str(), version: version.clone(), status: status.as_str() };
            pool.get_or_create(&labels).set(*count as i64);
        }
        registry.register("dbroker_pool_members", "The warm pool's members, by engine, version and status", pool);
        let targets = Family::<VersionLabels, Gauge>::default();
        for ((engine, version), count) in &self.pool_targets {
            targets
                .get_or_create(&VersionLabels { engine: engine.as_str(), version: version.clone() })
                .set(*count as i64);
        }
        registry.register(
            "dbroker_pool_target_members",
            "How many members each version's warm pool is kept at (the catalogue's pool)",
            targets,
        );
        gauge(
            registry,
            "dbroker_instances_needing_attention",
            "Instances that dbroker could not repair or cannot decrypt: an admin should look at them",
            self.needing_attention,
        );
        gauge(registry, "dbroker_ports_in_range", "Host ports in the range handed to instances", self.ports_in_range);
        gauge(registry, "dbroker_ports_free", "Host ports of the range that no instance holds", self.ports_free);
        gauge(
            registry,
            "dbroker_quota_instances_held",
            "Instances users hold, as their quotas count them (failed ones do not count)",
            self.instances_held,
        );
        gauge(
            registry,
            "dbroker_host_memory_capped_bytes",
            "The sum of every instance's memory cap, the warm pool's included: the host memory budget in use",
            self.host_memory_capped_bytes,
        );
        if let Some(budget) = self.host_memory_budget_bytes {
            gauge(
                registry,
                "dbroker_host_memory_budget_bytes",
                "The share of the Docker host's memory that all instances' caps may add up to",
                budget,
            );
        }
        gauge(
            registry,
            "dbroker_quota_backups_held",
            "Backups users hold on the targets, as their backup quotas count them",
            self.backups_held,
        );
        gauge(
            registry,
            "dbroker_quota_backup_bytes_held",
            "Bytes of the backups users hold on the targets, as their backup quotas count them",
            self.backup_bytes_held,
        );
        gauge(
            registry,
            "dbroker_reconciler_leader",
            "1 if this process leads the repairs (one process on a store does)",
            u64::from(self.reconciler_leader),
        );
    }
}

/// The process's resident memory and open files, from `/proc/self`, under the names Prometheus's
/// own clients give them. A figure that cannot be read is left out.
fn register_process_figures(registry: &mut Registry) {
    if let Some(bytes) = resident_memory_bytes() {
        gauge(registry, "process_resident_memory_bytes", "Resident memory size in bytes", bytes);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        gauge(registry, "process_open_fds", "Number of open file descriptors", entries.count() as u64);
    }
}

fn resident_memory_bytes() -> Option<u64> {
    // The second figure of statm is the resident set, in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}
