//! Operations: how every change to an instance runs. An operation is recorded in the store before
//! its first side effect, in flight and leased to this process; the store refuses a second one on
//! the same instance, in this process or any other. Its work then runs as a task of its own, so a
//! client that hangs up changes nothing, and shutdown waits for it. While it runs, this process
//! renews its lease every third of the lease's length; after a crash the lease expires, and the
//! reconciler of whichever process leads takes the operation over (see `reconcile::takeover`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Caller, ProvisionError};
use crate::metrics::{Metrics, Outcome};
use crate::model::{Engine, InstanceId, OperationId, OperationKind};
use crate::store::{NewOperation, OperationRecord, Step, Store, StoreError};

/// How long an idempotency key answers with its first request's outcome.
const IDEMPOTENCY_WINDOW: time::Duration = time::Duration::hours(24);

/// How many times recording an operation is tried when what stood in its way went away meanwhile.
const BEGIN_TRIES: usize = 3;

/// How many times the end of an operation is written before it is left to expire (and be taken
/// over), and how long apart.
const FINISH_TRIES: u32 = 5;
const FINISH_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How often a wait for another process's operation looks at the store.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A client's `Idempotency-Key`, and a hash of the request it came with: the same key with the
/// same request answers what the first answered; with another request it is refused.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// The operations this process runs. Cheap to clone.
#[derive(Clone)]
pub(super) struct Operations {
    store: Store,
    /// This process, as the holder of its operations' leases.
    holder: Arc<str>,
    lease: Duration,
    tasks: TaskTracker,
    /// The operations this process holds now, whose leases it renews: only what it is really
    /// running (an operation whose end could not be written expires and is taken over).
    held: Arc<Mutex<HashMap<OperationId, Held>>>,
    /// Where each operation's end is counted, with how long this process held it.
    metrics: Metrics,
}

/// What the figures of an operation this process holds need at its end.
#[derive(Debug, Clone, Copy)]
struct Held {
    kind: OperationKind,
    engine: Option<Engine>,
    since: Instant,
}

/// An operation to record.
pub(super) struct Begin {
    pub instance_id: InstanceId,
    pub kind: OperationKind,
    /// The instance's engine, for the figures; `None` where nobody knows (a container with no
    /// record and no engine label).
    pub engine: Option<Engine>,
    /// Who asked; `None` for dbroker itself.
    pub caller: Option<Caller>,
    /// The user whose instance it is.
    pub owner_id: Option<i64>,
    pub input: serde_json::Value,
    pub idempotency: Option<Idempotency>,
}

/// An operation that has been recorded and is running as a task of its own.
pub struct Running<T> {
    pub operation: OperationRecord,
    outcome: JoinHandle<Result<T, ProvisionError>>,
}

impl<T> Running<T> {
    /// Waits for the operation to end; the work goes on if this future is dropped.
    pub async fn outcome(self) -> Result<T, ProvisionError> {
        self.outcome.await.map_err(|e| ProvisionError::Internal(e.into()))?
    }
}

/// What a running operation reports its steps through.
#[derive(Clone)]
pub(super) struct Progress {
    store: Store,
    id: OperationId,
    holder: Arc<str>,
    steps: Arc<Mutex<Vec<Step>>>,
    started: Instant,
    /// When the last step was done (the operation began, before the first), and where each step's
    /// time is counted if this is a create.
    last_step: Arc<Mutex<Instant>>,
    timing: Option<(Metrics, Option<Engine>)>,
}

impl Progress {
    /// Records that `step` is done, with the time, in the operation's history (and at debug
    /// level in the log, with the time since the operation began).
    pub async fn step(&self, step: &'static str) {
        tracing::debug!(step, elapsed = ?self.started.elapsed(), "operation step");
        if let Some((metrics, engine)) = &self.timing {
            let now = Instant::now();
            let last = std::mem::replace(&mut *self.last_step.lock().unwrap_or_else(PoisonError::into_inner), now);
            metrics.create_step(step, *engine, now - last);
        }
        let steps = {
            let mut steps = self.steps.lock().unwrap_or_else(PoisonError::into_inner);
            steps.push(Step { step: step.to_string(), at: crate::store::now_rfc3339() });
            steps.clone()
        };
        match self.store.record_steps(&self.id, &self.holder, &steps).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(operation = %self.id, "this process lost the operation's lease"),
            Err(error) => tracing::warn!(operation = %self.id, %error, "could not record a step"),
        }
    }

    pub fn operation_id(&self) -> &OperationId {
        &self.id
    }
}

impl Operations {
    pub fn new(store: Store, lease: Duration, tasks: TaskTracker, metrics: Metrics) -> Self {
        let holder = hex::encode(rand::random::<[u8; 8]>());
        Self { store, holder: holder.into(), lease, tasks, held: Default::default(), metrics }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Records an operation in flight on `begin.instance_id`, leased to this process. `Busy`,
    /// naming the operation, if one is in flight there already; `Replay` if the caller sent the
    /// same idempotency key with the same request before, `IdempotencyKeyReused` with another.
    pub async fn begin(&self, begin: Begin) -> Result<OperationRecord, ProvisionError> {
        let id = OperationId::random();
        let new = NewOperation {
            id: &id,
            instance_id: &begin.instance_id,
            kind: begin.kind,
            requested_by: begin.caller.as_ref().map_or(super::SYSTEM_ACTOR, |c| c.name.as_str()),
            owner_id: begin.owner_id,
            holder: &self.holder,
            lease: self.lease,
            input: begin.input,
            idempotency: begin.idempotency.as_ref().map(|i| (i.key.as_str(), i.request_hash.as_str())),
        };
        // A few tries at most: again when the operation in the way ended before it could be
        // named, or after an expired key was forgotten.
        for _ in 0..BEGIN_TRIES {
            match self.store.insert_operation(&new).await {
                Ok(operation) => {
                    self.hold(&operation.id, begin.kind, begin.engine);
                    return Ok(operation);
                }
                Err(StoreError::OperationInFlight) => match self.store.operation_in_flight(&begin.instance_id).await? {
                    Some(running) => {
                        return Err(ProvisionError::Busy { operation: Some((running.id, running.kind)) });
                    }
                    None => continue,
                },
                Err(StoreError::IdempotencyKeyUsed) => {
                    let (Some(caller), Some(idempotency)) = (&begin.caller, &begin.idempotency) else {
                        return Err(ProvisionError::Internal(anyhow::anyhow!("a key without a caller")));
                    };
                    let Some(first) = self.store.operation_by_key(caller.user_id, &idempotency.key).await? else {
                        continue;
                    };
                    if is_older_than(&first.created_at, IDEMPOTENCY_WINDOW) {
                        self.store.forget_idempotency_key(&first.id).await?;
                        continue;
                    }
                    if first.request_hash.as_deref() != Some(idempotency.request_hash.as_str()) {
                        return Err(ProvisionError::IdempotencyKeyReused);
                    }
                    return Err(ProvisionError::Replay(Box::new(first)));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ProvisionError::Busy { operation: None })
    }

    /// Records an operation (see `begin`) and runs `work` on it, both in one task of its own: a
    /// caller that goes away at any point leaves either no operation, or one that runs to its end.
    pub async fn start<T, F, Fut>(&self, begin: Begin, work: F) -> Result<Running<T>, ProvisionError>
    where
        T: Send + 'static,
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ProvisionError>> + Send + 'static,
    {
        let (begun, recorded) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let outcome = self.tasks.spawn(async move {
            match this.begin(begin).await {
                Ok(operation) => {
                    let _ = begun.send(Ok(operation.clone()));
                    this.execute(operation, work).await
                }
                Err(error) => {
                    let _ = begun.send(Err(error));
                    // Nobody waits for this outcome: the caller has the error above.
                    Err(ProvisionError::NotFound)
                }
            }
        });
        let operation = recorded.await.map_err(|e| ProvisionError::Internal(e.into()))??;
        Ok(Running { operation, outcome })
    }

    /// Runs `work` on `operation`, recorded already and held by this process (one taken over), as
    /// a task of its own.
    pub fn run<T, F, Fut>(&self, operation: OperationRecord, work: F) -> Running<T>
    where
        T: Send + 'static,
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ProvisionError>> + Send + 'static,
    {
        let this = self.clone();
        let recorded = operation.clone();
        Running { operation, outcome: self.tasks.spawn(async move { this.execute(recorded, work).await }) }
    }

    /// Runs `work` to its end and records the outcome: `succeeded`, or `failed` with the error.
    async fn execute<T, F, Fut>(&self, operation: OperationRecord, work: F) -> Result<T, ProvisionError>
    where
        F: FnOnce(Progress) -> Fut,
        Fut: Future<Output = Result<T, ProvisionError>>,
    {
        let span = tracing::info_span!("operation", operation = %operation.id, kind = %operation.kind,
            instance_id = %operation.instance_id);
        let outcome = tracing::Instrument::instrument(work(self.progress(&operation)), span).await;
        let kept = self.finish_kept(&operation.id, outcome.as_ref().err()).await;
        // This process stalled past its lease and another took the operation over: that one
        // decides its outcome now (it may roll back what was done here), so none is answered.
        if !kept && outcome.is_ok() {
            return Err(ProvisionError::Conflict(format!(
                "this dbroker process lost operation {} to another (its lease expired while it ran); \
                 follow the operation to its end",
                operation.id
            )));
        }
        outcome
    }

    /// The progress handle of an operation this process holds (one it began or took over).
    pub fn progress(&self, operation: &OperationRecord) -> Progress {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).get(&operation.id).copied();
        let engine = held.and_then(|h| h.engine);
        let started = Instant::now();
        Progress {
            store: self.store.clone(),
            id: operation.id.clone(),
            holder: self.holder.clone(),
            steps: Arc::new(Mutex::new(operation.steps.clone())),
            started,
            last_step: Arc::new(Mutex::new(held.map_or(started, |h| h.since))),
            timing: (operation.kind == OperationKind::Create).then(|| (self.metrics.clone(), engine)),
        }
    }

    /// Records the end of an operation this process holds and ran itself (not through `run`).
    pub async fn finish(&self, id: &OperationId, error: Option<&ProvisionError>) {
        self.finish_kept(id, error).await;
    }

    /// Records an operation's end, and lets go of it; `false` if another process had taken it
    /// over. An end that cannot be written is tried again a few times, then left: its lease
    /// expires, and whoever takes it over finds its change done, by the record.
    async fn finish_kept(&self, id: &OperationId, error: Option<&ProvisionError>) -> bool {
        let report = error.map(|e| serde_json::to_value(e.report()).unwrap_or_default());
        let mut kept = true;
        for attempt in 1..=FINISH_TRIES {
            match self.store.finish_operation(id, &self.holder, report.as_ref()).await {
                Ok(done) => {
                    if !done {
                        tracing::error!(operation = %id, "the operation had been taken over before it ended");
                    }
                    kept = done;
                    break;
                }
                Err(e) => {
                    tracing::error!(operation = %id, attempt, error = %e, "could not record the end of an operation");
                    tokio::time::sleep(FINISH_RETRY_DELAY).await;
                }
            }
        }
        let outcome = match (kept, error) {
            (false, _) => Outcome::Lost,
            (true, None) => Outcome::Succeeded,
            (true, Some(_)) => Outcome::Failed,
        };
        self.let_go(id, outcome);
        kept
    }

    /// Takes over an abandoned operation (see `Store::take_over_operation`).
    pub async fn take_over(&self, operation: &OperationRecord) -> Result<bool, ProvisionError> {
        let taken = self.store.take_over_operation(&operation.id, &self.holder, self.lease).await?;
        if taken {
            // Only for the figures: a record gone (a delete that had finished) leaves it unknown.
            let engine = self.store.instance(&operation.instance_id).await.ok().flatten().map(|r| r.engine());
            self.hold(&operation.id, operation.kind, engine);
        }
        Ok(taken)
    }

    /// Forgets an operation this process holds that turned out to have nothing to do.
    pub async fn discard(&self, id: &OperationId) {
        if let Err(error) = self.store.discard_operation(id, &self.holder).await {
            tracing::warn!(operation = %id, %error, "could not discard an operation");
        }
        self.let_go(id, Outcome::Discarded);
    }

    /// Whether this process is running operation `id` now (and renewing its lease).
    pub fn holds(&self, id: &OperationId) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).contains_key(id)
    }

    fn hold(&self, id: &OperationId, kind: OperationKind, engine: Option<Engine>) {
        let held = Held { kind, engine, since: Instant::now() };
        self.held.lock().unwrap_or_else(PoisonError::into_inner).insert(id.clone(), held);
    }

    /// Lets go of an operation that ended (`outcome`) and counts it.
    fn let_go(&self, id: &OperationId, outcome: Outcome) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        if let Some(Held { kind, engine, since }) = held {
            self.metrics.operation_ended(kind, engine, outcome, since.elapsed());
        }
    }

    /// Waits until an operation (maybe another process's) has ended, and returns it as it ended.
    pub async fn wait_for(&self, id: &OperationId) -> Result<OperationRecord, ProvisionError> {
        loop {
            let operation = self.store.operation(id).await?.ok_or(ProvisionError::NotFound)?;
            if !operation.state.in_flight() {
                return Ok(operation);
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL).await;
        }
    }

    /// Renews the leases of the operations this process holds, every third of a lease, until
    /// `stop`.
    pub async fn keep_leases(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.lease / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let held: Vec<OperationId> =
                self.held.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
            for id in held {
                if let Err(error) = self.store.renew_lease(&id, &self.holder, self.lease).await {
                    tracing::warn!(operation = %id, %error, "could not renew an operation's lease");
                }
            }
        }
    }
}

/// Whether an RFC 3339 time lies more than `age` in the past (an unreadable one counts as old).
fn is_older_than(at: &str, age: time::Duration) -> bool {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_or(true, |at| at + age < time::OffsetDateTime::now_utc())
}
