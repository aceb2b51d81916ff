//! The cluster-worker client (OWT's `clusterWorker.js`, reference §3): how a
//! portal or an agent joins the cluster manager, proves it is alive, reports
//! its load and tasks, and recovers when the manager forgets it or restarts.
//!
//! The decisions (when to start recovery, what a rejoin means, whether a load
//! is worth sending) are plain types with unit tests; [`ClusterWorker`] drives
//! them with timers and gRPC calls.

use crate::grpc;
use crate::grpc::Channel;
use crate::load::LoadSource;
use crate::sync::Locked;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

/// The `[cluster]` table of every worker service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// host:port of the cluster manager's gRPC server. Default "127.0.0.1:7001".
    pub manager: String,
    /// Join attempts after the first before giving up at start-up. Default 60.
    pub join_retry: u32,
    /// Pause between join attempts, also during recovery, in ms. Default 800.
    pub join_retry_interval: u64,
    /// Keep-alive period in ms. Default 800.
    pub keep_alive_interval: u64,
    /// Consecutive failed keep-alives tolerated; the next one starts recovery.
    /// Default 3 (recovery on the 4th failure, as OWT).
    pub keep_alive_max_failures: u32,
    /// While a keep-alive fails (the manager is gone, or only standbys
    /// answer during a failover), it is tried again this often, in ms, until
    /// its period is over; the period still counts as one failure. A new
    /// leader is so found within this time rather than a whole period.
    /// 0 turns it off. Default 200.
    pub keep_alive_probe_interval: u64,
    /// Load sampling period in ms; a load is sent only when it changed. Default 1000.
    pub report_load_interval: u64,
    /// Load at which the manager stops giving this worker new tasks. Default 0.85.
    pub max_load: f64,
    /// Deadline of each call to the manager, in ms. Default 2000.
    pub rpc_timeout: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            manager: "127.0.0.1:7001".into(),
            join_retry: 60,
            join_retry_interval: 800,
            keep_alive_interval: 800,
            keep_alive_max_failures: 3,
            keep_alive_probe_interval: 200,
            report_load_interval: 1000,
            max_load: 0.85,
            rpc_timeout: 2000,
        }
    }
}

/// In an agent's refusal of `GetNode` for a room another agent serves (the
/// manager refused it the room's task): the caller schedules the room again.
pub const SERVED_ELSEWHERE: &str = "is served by another agent";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Grpc(#[from] grpc::GrpcError),
    #[error("failed to join the cluster manager after {attempts} attempts: {last}")]
    JoinFailed { attempts: u32, last: String },
    #[error("cluster manager refused {call}: {status}")]
    Rpc {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("not registered with the cluster manager")]
    NotRegistered,
    #[error("task {task} is executed by another worker")]
    TaskRefused { task: String },
}

/// What the service hears about its membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The manager had forgotten this worker (it was in service when we
    /// rejoined): the worker's tasks are gone and the service must drop what
    /// depended on them (OWT's `onLoss`).
    Lost,
    /// Rejoined a manager that still knew this worker, but after being out
    /// of contact longer than a liveness bound (the worker was paused, or
    /// the managers changed meanwhile): a manager, maybe a former leader,
    /// may have counted it out and told the others, who may have let go of
    /// what it holds (a portal's participants, detached by their nodes). Its
    /// tasks are announced again; a service takes back what others may have
    /// let go of. Sent before `Recovered`.
    OutOfContact,
    /// The worker is registered again after a recovery (OWT's `onRecovery`).
    Recovered,
    /// Tasks re-announced after a rejoin that another live worker executes
    /// (the manager refused them): this worker no longer holds them, and
    /// the service lets go of what it kept for them. Sent before
    /// `Recovered`.
    TasksRefused(Vec<String>),
}

/// The result of one keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveOutcome {
    Ok,
    WhoAreYou,
    Failed,
}

/// Counts keep-alive failures and says when to start recovery.
#[derive(Debug)]
pub struct KeepAliveTracker {
    loss_count: u32,
    max_failures: u32,
}

impl KeepAliveTracker {
    pub fn new(max_failures: u32) -> Self {
        KeepAliveTracker {
            loss_count: 0,
            max_failures,
        }
    }

    /// True when this outcome starts recovery: `whoareyou` at once, failures
    /// once more than `max_failures` happened in a row.
    pub fn on_outcome(&mut self, outcome: KeepAliveOutcome) -> bool {
        match outcome {
            KeepAliveOutcome::Ok => {
                self.loss_count = 0;
                false
            }
            KeepAliveOutcome::WhoAreYou => {
                self.loss_count = 0;
                true
            }
            KeepAliveOutcome::Failed => {
                self.loss_count += 1;
                if self.loss_count > self.max_failures {
                    self.loss_count = 0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// What a successful rejoin during recovery means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoined {
    /// The manager itself restarted ("initializing"), or still knew us (the
    /// keep-alives were lost to a stall, its or ours): re-announce our tasks.
    Reannounce,
    /// The manager is in service and had dropped us: our tasks are lost.
    Lost,
}

pub fn rejoined(manager_state: &str, known: bool) -> Rejoined {
    if known || manager_state == "initializing" {
        Rejoined::Reannounce
    } else {
        Rejoined::Lost
    }
}

/// Sends a load only when it differs from the last one; starts (and restarts
/// after each join) at 0.99 as OWT does, so the first real sample is sent.
#[derive(Debug)]
pub struct LoadDedup {
    previous: f64,
}

impl Default for LoadDedup {
    fn default() -> Self {
        LoadDedup { previous: 0.99 }
    }
}

impl LoadDedup {
    pub fn changed(&mut self, load: f64) -> bool {
        if load == self.previous {
            false
        } else {
            self.previous = load;
            true
        }
    }

    pub fn reset(&mut self) {
        self.previous = 0.99;
    }
}

struct Local {
    registered: bool,
    /// A set: a portal executes one task per participant, tens of
    /// thousands, each added and removed by name.
    tasks: indexmap::IndexSet<String>,
    /// Tasks whose `PickUpTasks` is on its way.
    adding: std::collections::HashSet<String>,
    /// Of those, the ones removed meanwhile: the add lays them down once
    /// its call is answered, so the two calls reach the manager in order.
    cancelled: std::collections::HashSet<String>,
    /// Tasks added with [`ClusterWorker::add_task_within`] waiting for their
    /// window to close, announced together in one `PickUpTasks`.
    batch: Option<Batch>,
}

impl Local {
    /// Hold `task`; true when it is to be announced now (it was not held,
    /// and the worker is registered: otherwise the next join announces it),
    /// and it is then marked as on its way.
    fn begin_add(&mut self, task: &str) -> bool {
        if !self.tasks.insert(task.to_string()) {
            return false;
        }
        if self.cancelled.remove(task) {
            // added again before the first pick-up was answered: that one
            // stands
            return false;
        }
        if self.registered {
            self.adding.insert(task.to_string());
        }
        self.registered
    }
}

/// Tasks gathered for one `PickUpTasks`, and where its answer goes.
struct Batch {
    tasks: Vec<String>,
    answer: tokio::sync::watch::Sender<Option<BatchAnswer>>,
}

/// What a batch's `PickUpTasks` came to: the tasks the manager refused, or
/// the call's failure.
type BatchAnswer = Result<Arc<Vec<String>>, tonic::Status>;

struct Shared {
    id: String,
    purpose: crate::purpose::Purpose,
    info: pb::WorkerInfo,
    config: ClusterConfig,
    client: ClusterManagerClient<Channel>,
    local: Mutex<Local>,
    events: broadcast::Sender<WorkerEvent>,
    load: Arc<dyn LoadSource>,
}

/// A live membership in the cluster. Dropping it stops keep-alives without
/// quitting (the manager then times the worker out); call [`quit`](Self::quit)
/// to leave cleanly.
pub struct ClusterWorker {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ClusterWorker {
    /// Join the manager as `purpose` (id `<purpose>-<hex>@<host>`), retrying
    /// `join_retry` times, then keep alive and report load in the background.
    pub async fn join(
        config: ClusterConfig,
        purpose: crate::purpose::Purpose,
        mut info: pb::WorkerInfo,
        load: Arc<dyn LoadSource>,
    ) -> Result<ClusterWorker, WorkerError> {
        let id = crate::net::worker_id(purpose.as_str(), &info.hostname, &info.ip);
        if info.max_load <= 0.0 {
            info.max_load = config.max_load;
        }
        let channel = grpc::channel(&config.manager, Duration::from_millis(config.rpc_timeout))?;
        let (events, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            id,
            purpose,
            info,
            config,
            client: ClusterManagerClient::new(channel),
            local: Mutex::new(Local {
                registered: false,
                tasks: indexmap::IndexSet::new(),
                adding: Default::default(),
                cancelled: Default::default(),
                batch: None,
            }),
            events,
            load,
        });
        let span = info_span!("cluster_worker", worker = %shared.id, purpose = %shared.purpose);
        let attempts = shared.config.join_retry + 1;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match shared.join_once().instrument(span.clone()).await {
                Ok((state, _)) => {
                    span.in_scope(|| info!(manager_state = %state, attempt, "joined the cluster"));
                    shared.set_registered(true);
                    let stop = CancellationToken::new();
                    let task = tokio::spawn(run(shared.clone(), stop.clone()).instrument(span));
                    return Ok(ClusterWorker {
                        shared,
                        stop,
                        task: Mutex::new(Some(task)),
                    });
                }
                Err(status) => {
                    last = status.message().to_string();
                    span.in_scope(|| debug!(attempt, error = %last, "join failed"));
                    if attempt < attempts {
                        tokio::time::sleep(shared.retry_interval()).await;
                    }
                }
            }
        }
        Err(WorkerError::JoinFailed { attempts, last })
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    pub fn purpose(&self) -> crate::purpose::Purpose {
        self.shared.purpose
    }

    pub fn is_registered(&self) -> bool {
        self.shared.local().registered
    }

    /// Membership events (loss, recovery).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.shared.events.subscribe()
    }

    /// Tasks this worker executes, as last announced.
    pub fn tasks(&self) -> Vec<String> {
        self.shared.local().tasks.iter().cloned().collect()
    }

    /// Start executing `task`: announced with `PickUpTasks` unless already held.
    pub async fn add_task(&self, task: &str) -> Result<(), WorkerError> {
        if !self.shared.local().begin_add(task) {
            return Ok(());
        }
        let req = pb::PickUpTasksRequest {
            worker_id: self.shared.id.clone(),
            tasks: vec![task.to_string()],
        };
        let mut client = self.shared.client.clone();
        let answer = client.pick_up_tasks(req).await;
        let cancelled = {
            let mut local = self.shared.local();
            local.adding.remove(task);
            local.cancelled.remove(task)
        };
        if cancelled {
            // removed while its pick-up was on the way: lay it down now
            return self.shared.lay_down(task).await;
        }
        let refused = answer
            .map_err(|status| WorkerError::Rpc {
                call: "PickUpTasks",
                status,
            })?
            .into_inner()
            .refused;
        if refused.iter().any(|t| t == task) {
            self.shared.local().tasks.swap_remove(task);
            return Err(WorkerError::TaskRefused {
                task: task.to_string(),
            });
        }
        Ok(())
    }

    /// [`add_task`](Self::add_task), but announced together with the other
    /// tasks added within `window` of the first of them, in one
    /// `PickUpTasks`: a portal adds a task per login, and each call costs
    /// both sides more CPU than the manager's work on it. Returns when the
    /// batch is answered, so at most `window` later than `add_task` would.
    /// A zero `window` is `add_task`.
    pub async fn add_task_within(&self, task: &str, window: Duration) -> Result<(), WorkerError> {
        if window.is_zero() {
            return self.add_task(task).await;
        }
        let mut answer = {
            let mut local = self.shared.local();
            if !local.begin_add(task) {
                return Ok(());
            }
            match &mut local.batch {
                Some(batch) => {
                    batch.tasks.push(task.to_string());
                    batch.answer.subscribe()
                }
                None => {
                    let (answer, receiver) = tokio::sync::watch::channel(None);
                    local.batch = Some(Batch {
                        tasks: vec![task.to_string()],
                        answer,
                    });
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        shared.send_batch().await;
                    });
                    receiver
                }
            }
        };
        let outcome = match answer.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for an answer"),
            // the sender went without answering: the runtime is shutting down
            Err(_) => return Ok(()),
        };
        match outcome {
            Err(status) => Err(WorkerError::Rpc {
                call: "PickUpTasks",
                status,
            }),
            Ok(refused) if refused.iter().any(|t| t == task) => Err(WorkerError::TaskRefused {
                task: task.to_string(),
            }),
            Ok(_) => Ok(()),
        }
    }

    /// Stop executing `task`: `LayDownTask` if it was held. A task whose
    /// `PickUpTasks` is still on its way is laid down when that call is
    /// answered (by [`add_task`](Self::add_task)), never before it.
    pub async fn remove_task(&self, task: &str) -> Result<(), WorkerError> {
        let send = {
            let mut local = self.shared.local();
            if !local.tasks.swap_remove(task) {
                return Ok(());
            }
            if local.adding.contains(task) {
                local.cancelled.insert(task.to_string());
                return Ok(());
            }
            local.registered
        };
        if !send {
            return Ok(());
        }
        self.shared.lay_down(task).await
    }

    /// Refuse a task the manager scheduled here (`Unschedule`).
    pub async fn reject_task(&self, task: &str) -> Result<(), WorkerError> {
        let req = pb::UnscheduleRequest {
            worker_id: self.shared.id.clone(),
            task: task.to_string(),
        };
        let mut client = self.shared.client.clone();
        client
            .unschedule(req)
            .await
            .map(drop)
            .map_err(|status| WorkerError::Rpc {
                call: "Unschedule",
                status,
            })
    }

    /// Report a worker state (2 = in service).
    pub async fn report_state(&self, state: i32) -> Result<(), WorkerError> {
        if !self.is_registered() {
            return Err(WorkerError::NotRegistered);
        }
        let req = pb::ReportStateRequest {
            worker_id: self.shared.id.clone(),
            state,
        };
        let mut client = self.shared.client.clone();
        client
            .report_state(req)
            .await
            .map(drop)
            .map_err(|status| WorkerError::Rpc {
                call: "ReportState",
                status,
            })
    }

    /// A direct client to the manager, for calls beyond membership
    /// (`Schedule`, `Watch`, `ReportNodeExit`).
    pub fn manager(&self) -> ClusterManagerClient<Channel> {
        self.shared.client.clone()
    }

    /// Stop keep-alives and load reports and leave the cluster with `Quit`.
    pub async fn quit(&self) -> Result<(), WorkerError> {
        self.stop.cancel();
        let task = self.task.locked().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let was_registered = {
            let mut local = self.shared.local();
            std::mem::replace(&mut local.registered, false)
        };
        if !was_registered {
            return Ok(());
        }
        let mut client = self.shared.client.clone();
        client
            .quit(pb::QuitRequest {
                worker_id: self.shared.id.clone(),
            })
            .await
            .map(drop)
            .map_err(|status| WorkerError::Rpc {
                call: "Quit",
                status,
            })?;
        info!(worker = %self.shared.id, "quit the cluster");
        Ok(())
    }
}

impl Drop for ClusterWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Shared {
    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.locked()
    }

    fn set_registered(&self, registered: bool) {
        self.local().registered = registered;
    }

    async fn lay_down(&self, task: &str) -> Result<(), WorkerError> {
        let req = pb::LayDownTaskRequest {
            worker_id: self.id.clone(),
            task: task.to_string(),
        };
        let mut client = self.client.clone();
        client
            .lay_down_task(req)
            .await
            .map(drop)
            .map_err(|status| WorkerError::Rpc {
                call: "LayDownTask",
                status,
            })
    }

    /// Announce the gathered batch in one `PickUpTasks` and answer its
    /// tasks' callers; tasks removed meanwhile are laid down after it, and
    /// refused ones are no longer held.
    async fn send_batch(&self) {
        let (tasks, answer, registered) = {
            let mut local = self.local();
            let Some(batch) = local.batch.take() else {
                return;
            };
            (batch.tasks, batch.answer, local.registered)
        };
        let outcome: BatchAnswer = if registered {
            let mut client = self.client.clone();
            client
                .pick_up_tasks(pb::PickUpTasksRequest {
                    worker_id: self.id.clone(),
                    tasks: tasks.clone(),
                })
                .await
                .map(|reply| Arc::new(reply.into_inner().refused))
        } else {
            // the worker lost the manager meanwhile: its tasks, these among
            // them, are announced when it joins again
            Ok(Arc::default())
        };
        let cancelled: Vec<String> = {
            let mut local = self.local();
            if let Ok(refused) = &outcome {
                for task in refused.iter() {
                    local.tasks.swap_remove(task);
                }
            }
            tasks
                .into_iter()
                .filter(|task| {
                    local.adding.remove(task);
                    local.cancelled.remove(task)
                })
                .collect()
        };
        if registered {
            for task in &cancelled {
                if let Err(e) = self.lay_down(task).await {
                    debug!(%task, error = %e, "laying down a task removed during its pick-up failed");
                }
            }
        }
        let _ = answer.send(Some(outcome));
    }

    fn retry_interval(&self) -> Duration {
        Duration::from_millis(self.config.join_retry_interval)
    }

    /// One Join: the manager's state, and whether it still knew us.
    async fn join_once(&self) -> Result<(String, bool), tonic::Status> {
        let mut client = self.client.clone();
        let reply = client
            .join(pb::JoinRequest {
                purpose: self.purpose.to_string(),
                worker_id: self.id.clone(),
                info: Some(self.info.clone()),
            })
            .await?
            .into_inner();
        Ok((reply.state, reply.known))
    }

    async fn keep_alive(&self) -> KeepAliveOutcome {
        let mut client = self.client.clone();
        match client
            .keep_alive(pb::KeepAliveRequest {
                worker_id: self.id.clone(),
            })
            .await
        {
            Ok(reply) if reply.get_ref().message == "whoareyou" => KeepAliveOutcome::WhoAreYou,
            Ok(_) => KeepAliveOutcome::Ok,
            Err(status) => {
                debug!(error = %status.message(), "keep-alive failed");
                KeepAliveOutcome::Failed
            }
        }
    }

    /// One period's keep-alive: tried again every probe interval while it
    /// fails, until `period` is over; a success or `whoareyou` ends it.
    async fn keep_alive_probing(&self, period: Duration) -> KeepAliveOutcome {
        let deadline = tokio::time::Instant::now() + period;
        let probe = Duration::from_millis(self.config.keep_alive_probe_interval);
        loop {
            let outcome = self.keep_alive().await;
            if outcome != KeepAliveOutcome::Failed
                || probe.is_zero()
                || tokio::time::Instant::now() + probe >= deadline
            {
                return outcome;
            }
            tokio::time::sleep(probe).await;
        }
    }

    async fn report_load(&self, load: f64) {
        let mut client = self.client.clone();
        if let Err(status) = client
            .report_load(pb::ReportLoadRequest {
                worker_id: self.id.clone(),
                load,
            })
            .await
        {
            debug!(error = %status.message(), "load report failed");
        }
    }

    /// Rejoin until it works (or `stop`); false when stopped. `last_ok` is
    /// when a keep-alive last succeeded.
    async fn recover(&self, stop: &CancellationToken, last_ok: tokio::time::Instant) -> bool {
        warn!("lost the cluster manager, rejoining");
        loop {
            if stop.is_cancelled() {
                return false;
            }
            match self.join_once().await {
                Ok((state, known)) => {
                    match rejoined(&state, known) {
                        Rejoined::Reannounce => {
                            let tasks: Vec<String> = self.local().tasks.iter().cloned().collect();
                            if known {
                                info!(
                                    tasks = tasks.len(),
                                    "rejoined a manager that still knew this worker (a stall), re-announcing tasks"
                                );
                            } else {
                                info!(
                                    tasks = tasks.len(),
                                    "rejoined a restarted manager, re-announcing tasks"
                                );
                            }
                            if !tasks.is_empty() {
                                let mut client = self.client.clone();
                                match client
                                    .pick_up_tasks(pb::PickUpTasksRequest {
                                        worker_id: self.id.clone(),
                                        tasks,
                                    })
                                    .await
                                {
                                    Ok(reply) => {
                                        let refused = reply.into_inner().refused;
                                        if !refused.is_empty() {
                                            warn!(
                                                ?refused,
                                                "other workers execute some of this worker's tasks now; letting go of them"
                                            );
                                            self.local().tasks.retain(|t| !refused.contains(t));
                                            let _ = self
                                                .events
                                                .send(WorkerEvent::TasksRefused(refused));
                                        }
                                    }
                                    Err(status) => {
                                        warn!(error = %status.message(), "re-announcing tasks failed")
                                    }
                                }
                            }
                            let bound = Duration::from_millis(
                                self.config.keep_alive_interval.saturating_mul(3),
                            );
                            if known && last_ok.elapsed() > bound {
                                warn!(
                                    out_of_contact_ms = last_ok.elapsed().as_millis() as u64,
                                    "out of contact past the liveness bound: others may have counted this worker out"
                                );
                                let _ = self.events.send(WorkerEvent::OutOfContact);
                            }
                        }
                        Rejoined::Lost => {
                            let dropped = std::mem::take(&mut self.local().tasks);
                            warn!(
                                tasks = dropped.len(),
                                "the manager had dropped this worker; its tasks are lost"
                            );
                            let _ = self.events.send(WorkerEvent::Lost);
                        }
                    }
                    self.set_registered(true);
                    let _ = self.events.send(WorkerEvent::Recovered);
                    return true;
                }
                Err(status) => {
                    debug!(error = %status.message(), "rejoin failed");
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(self.retry_interval()) => {}
                    }
                }
            }
        }
    }
}

async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let period = Duration::from_millis(shared.config.keep_alive_interval.max(1));
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let load_period = Duration::from_millis(shared.config.report_load_interval.max(1));
    // The first tick fires at once: a fresh worker becomes schedulable
    // without waiting a whole period.
    let mut load_tick = tokio::time::interval(load_period);
    load_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = KeepAliveTracker::new(shared.config.keep_alive_max_failures);
    let mut dedup = LoadDedup::default();
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = keep_alive.tick() => {
                let outcome = tokio::select! {
                    _ = stop.cancelled() => return,
                    o = shared.keep_alive_probing(period) => o,
                };
                if outcome == KeepAliveOutcome::Ok {
                    last_ok = tokio::time::Instant::now();
                }
                if tracker.on_outcome(outcome) {
                    shared.set_registered(false);
                    if !shared.recover(&stop, last_ok).await {
                        return;
                    }
                    last_ok = tokio::time::Instant::now();
                    dedup.reset();
                    keep_alive.reset();
                    load_tick.reset_immediately();
                }
            }
            _ = load_tick.tick() => {
                let load = shared.load.sample();
                if shared.local().registered && dedup.changed(load) {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = shared.report_load(load) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_starts_on_the_fourth_failure() {
        let mut t = KeepAliveTracker::new(3);
        assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        assert!(t.on_outcome(KeepAliveOutcome::Failed));
    }

    #[test]
    fn an_ok_resets_the_failure_count() {
        let mut t = KeepAliveTracker::new(3);
        for _ in 0..3 {
            assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        }
        assert!(!t.on_outcome(KeepAliveOutcome::Ok));
        for _ in 0..3 {
            assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        }
        assert!(t.on_outcome(KeepAliveOutcome::Failed));
    }

    #[test]
    fn whoareyou_starts_recovery_at_once() {
        let mut t = KeepAliveTracker::new(3);
        assert!(!t.on_outcome(KeepAliveOutcome::Failed));
        assert!(t.on_outcome(KeepAliveOutcome::WhoAreYou));
        // and resets the count
        assert!(!t.on_outcome(KeepAliveOutcome::Failed));
    }

    #[test]
    fn rejoin_meaning() {
        assert_eq!(rejoined("initializing", false), Rejoined::Reannounce);
        assert_eq!(rejoined("in-service", false), Rejoined::Lost);
        // the manager still had us (it or we stalled): nothing was lost
        assert_eq!(rejoined("in-service", true), Rejoined::Reannounce);
    }

    #[test]
    fn load_is_sent_only_when_changed() {
        let mut d = LoadDedup::default();
        assert!(d.changed(0.1));
        assert!(!d.changed(0.1));
        assert!(d.changed(0.2));
        assert!(!d.changed(0.2));
        d.reset();
        assert!(d.changed(0.2));
        let mut d = LoadDedup::default();
        assert!(
            !d.changed(0.99),
            "0.99 equals the starting value, as in OWT"
        );
    }
}
