//! Self-healing: compare the store with this deployment's containers, and repair the drift that
//! crashes and people leave behind. One process leads the repairs at a time (a lease in the
//! store), at start-up and then every `--reconcile-interval`; it also follows Docker's event
//! stream, so a server that dies shows as exited at once rather than at the next pass.
//!
//! A pass only reads, and what it reads is a hint: each repair it calls for runs as an operation
//! of its own (kind `repair`), which the store grants only while no other operation is in flight
//! on the instance, and which reads the record and the container again before it acts. So a
//! repair can never touch an instance that a create is handing out, or that a user is changing,
//! in this process or another. Repairs run concurrently (at most `REPAIR_CONCURRENCY`), each within
//! its deadline; a pass never waits for them, and an instance whose repair keeps failing is tried
//! less and less often and reported as needing attention (see `repairs`).
//!
//! What it repairs is listed in `repairs`; operations whose process died (their lease expired)
//! are taken over and resumed or rolled back by their kind (see `takeover`).

mod events;
mod repairs;
mod takeover;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Provisioner;
use repairs::Repair;

/// How often a replica tries to lead, and the leader looks for abandoned operations, at most.
const FAILOVER_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The lease of the process that leads the repairs.
const LEADER_LEASE: &str = "reconciler";

/// How often the history past its retention is forgotten, at most.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// How many repairs run at once: enough that a stuck one delays nobody, few enough that repairs
/// after a crash do not compete with users' creates for the host.
const REPAIR_CONCURRENCY: usize = 4;

/// The reconciler: a component over the provisioning service that owns what only it needs (its
/// leadership, counters and repair slots). Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    service: Provisioner,
    state: Arc<ReconcilerState>,
}

/// What the reconciler has done, for admins; and what bounds its repairs.
#[derive(Debug)]
struct ReconcilerState {
    leader: AtomicBool,
    passes: AtomicU64,
    repairs: Mutex<BTreeMap<&'static str, u64>>,
    /// Permits for repairs in flight.
    slots: Arc<Semaphore>,
    /// Whether a refill of the warm pool is under way.
    filling: AtomicBool,
    /// Whether a look for due scheduled backups is under way.
    scheduling: AtomicBool,
    /// When the history was last pruned.
    pruned: Mutex<Option<std::time::Instant>>,
}

impl Default for ReconcilerState {
    fn default() -> Self {
        Self {
            leader: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            repairs: Mutex::new(BTreeMap::new()),
            slots: Arc::new(Semaphore::new(REPAIR_CONCURRENCY)),
            filling: AtomicBool::new(false),
            scheduling: AtomicBool::new(false),
            pruned: Mutex::new(None),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReconcilerReport {
    pub leader: bool,
    pub passes: u64,
    pub repairs: BTreeMap<&'static str, u64>,
}

impl Reconciler {
    pub fn new(service: Provisioner) -> Self {
        Self { service, state: Default::default() }
    }

    /// Counts a repair done, for admins and in the metrics.
    fn count(&self, repair: &'static str) {
        *self.state.repairs.lock().unwrap_or_else(|e| e.into_inner()).entry(repair).or_default() += 1;
        self.service.metrics.repaired(repair);
    }

    /// Runs the reconciler until `shutdown` is cancelled: keeps trying to lead (every second, or
    /// every third of the lease if that is shorter), and while leading, takes over abandoned
    /// operations at the same ticks (so within a second of their lease's expiry, whatever the
    /// reconcile interval), reconciles at each pass, refills the warm pool and follows Docker's
    /// events. A leader that dies is so replaced within a second of its lease's expiry too.
    pub async fn run(self, shutdown: CancellationToken) {
        let lease = self.service.ops.lease();
        let mut passes = tokio::time::interval(self.service.config.reconcile_interval);
        let mut renewals = tokio::time::interval(FAILOVER_POLL.min(lease / 3));
        for ticks in [&mut passes, &mut renewals] {
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut watcher: Option<CancellationToken> = None;
        loop {
            let pass = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = passes.tick() => true,
                _ = renewals.tick() => false,
                // A claim from the warm pool wakes the leader early, to refill it.
                _ = self.service.pool_wanted.notified() => false,
            };
            let leads =
                self.service.store.try_lease(LEADER_LEASE, self.service.ops.holder(), lease).await.unwrap_or_else(
                    |error| {
                        tracing::warn!(%error, "cannot renew the reconciler's lease");
                        false
                    },
                );
            if leads != self.state.leader.swap(leads, Ordering::Relaxed) {
                tracing::info!(leads, "this process's leadership of the repairs changed");
            }
            if !leads {
                if let Some(stop) = watcher.take() {
                    stop.cancel();
                }
                continue;
            }
            if watcher.is_none() {
                let stop = shutdown.child_token();
                self.service.ops.tasks().spawn(self.clone().watch_events(stop.clone()));
                watcher = Some(stop);
            }
            if !pass {
                if let Err(error) = self.take_over_abandoned().await {
                    tracing::warn!(%error, "could not look for abandoned operations; trying again next tick");
                }
                if let Err(error) = self.service.fail_orphaned_backups().await {
                    tracing::warn!(%error, "could not look for interrupted backups; trying again next tick");
                }
            }
            if pass {
                self.prune_history().await;
                if let Err(error) = self.service.sweep_retention().await {
                    tracing::warn!(%error, "could not apply the backup policies' retention; trying again next pass");
                }
                let outcome = match self.reconcile_once().await {
                    Ok(()) => "done",
                    Err(super::ProvisionError::EngineUnreachable(reason)) => {
                        tracing::warn!(%reason, "reconciler: the Docker engine is unreachable; trying again next pass");
                        "engine_unreachable"
                    }
                    Err(error) => {
                        tracing::error!(error = ?error, "reconciler pass failed");
                        "failed"
                    }
                };
                self.service.metrics.reconciler_pass(outcome);
                self.state.passes.fetch_add(1, Ordering::Relaxed);
            }
            self.spawn_pool_refill();
            self.spawn_scheduled_backups();
        }
        if let Err(error) = self.service.store.release_lease(LEADER_LEASE, self.service.ops.holder()).await {
            tracing::warn!(%error, "could not give up the reconciler's lease");
        }
    }

    pub fn report(&self) -> ReconcilerReport {
        ReconcilerReport {
            leader: self.state.leader.load(Ordering::Relaxed),
            passes: self.state.passes.load(Ordering::Relaxed),
            repairs: self.state.repairs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Forgets events and ended operations past the retention, at most every `PRUNE_INTERVAL` (a
    /// full scan of the history), or as often as the retention, if that is shorter.
    async fn prune_history(&self) {
        let retention = self.service.config.history_retention;
        {
            let mut pruned = self.state.pruned.lock().unwrap_or_else(|e| e.into_inner());
            if pruned.is_some_and(|at| at.elapsed() < PRUNE_INTERVAL.min(retention)) {
                return;
            }
            *pruned = Some(std::time::Instant::now());
        }
        match self.service.store.prune_history(retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, ?retention, "forgot history past its retention"),
            Err(error) => tracing::warn!(%error, "could not prune the history"),
        }
    }

    /// Starts the scheduled backups that are due, in the background, unless a look for them is
    /// under way already (see `Provisioner::run_due_backups`): every tick, so a backup starts
    /// within a second or so of its time.
    fn spawn_scheduled_backups(&self) {
        if self.state.scheduling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        self.service.ops.tasks().spawn(async move {
            if let Err(error) = this.service.run_due_backups().await {
                tracing::warn!(%error, "could not start the scheduled backups; trying again next tick");
            }
            this.state.scheduling.store(false, Ordering::Release);
        });
    }

    /// Refills the warm pool in the background, unless a refill is under way already: the loop
    /// above never waits for a server's start.
    fn spawn_pool_refill(&self) {
        if self.state.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        self.service.ops.tasks().spawn(async move {
            this.service.fill_pool().await;
            this.state.filling.store(false, Ordering::Release);
        });
    }
}
