//! The cluster manager's state (OWT §5): the registry of workers with their
//! liveness counters, one scheduler per purpose, and the manager's own state
//! (initializing for `initial_time` after start, then in service). Plain data
//! driven by the gRPC adapter and the liveness sweep, with time passed in.

use crate::config::Config;
use crate::matcher::Matcher;
use crate::scheduler::{ScheduleError, Scheduler};
use crate::worker::{Preference, WorkerInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// The manager's errors; `Display` is the OWT message clients see.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManagerError {
    #[error("cluster manager is not ready.")]
    NotReady,
    #[error("No scheduler for purpose: {0}")]
    NoScheduler(String),
    #[error("Failed in scheduling {purpose} worker, reason: {reason}")]
    ScheduleFailed {
        purpose: String,
        reason: ScheduleError,
    },
    #[error("Worker [{0}] does NOT exist.")]
    WorkerNotFound(String),
    #[error("No such a task")]
    NoSuchTask,
    #[error("Invalid purpose.")]
    InvalidPurpose,
    #[error("{0}")]
    InvalidArgument(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerState {
    Initializing,
    InService,
}

impl ManagerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ManagerState::Initializing => "initializing",
            ManagerState::InService => "in-service",
        }
    }
}

/// Why a worker left the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    Quit,
    Timeout,
}

impl LossReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::Quit => "quit",
            LossReason::Timeout => "timeout",
        }
    }
}

/// What the manager tells watchers (OWT's monitoring messages).
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    WorkerJoined {
        purpose: String,
        id: String,
        info: WorkerInfo,
    },
    WorkerLost {
        purpose: String,
        id: String,
        reason: LossReason,
    },
    NodeExited {
        purpose: String,
        node_id: String,
        worker_id: String,
        reason: String,
    },
}

impl ClusterEvent {
    pub fn purpose(&self) -> &str {
        match self {
            ClusterEvent::WorkerJoined { purpose, .. }
            | ClusterEvent::WorkerLost { purpose, .. }
            | ClusterEvent::NodeExited { purpose, .. } => purpose,
        }
    }
}

/// A worker's attributes, for `GetWorkerAttr`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerAttr {
    pub id: String,
    pub purpose: String,
    pub state: Option<i32>,
    pub load: f64,
    pub info: WorkerInfo,
    pub tasks: Vec<String>,
    pub keep_alive: u32,
}

struct Registered {
    purpose: String,
    alive_count: u32,
}

pub struct Manager {
    config: Config,
    started: Instant,
    workers: HashMap<String, Registered>,
    schedulers: BTreeMap<String, Scheduler>,
    /// When the last liveness sweep ran.
    last_sweep: Instant,
    /// The workers the previous leader knew (an elected manager): once all
    /// of them are back, scheduling need not wait out `initial_time`.
    expected: BTreeSet<String>,
    /// When a worker last joined.
    last_join: Option<Instant>,
}

/// How long after the last expected worker joined scheduling starts: time
/// for its task re-announcement and first load report to arrive.
pub const SETTLE: Duration = Duration::from_millis(150);

/// What one liveness sweep did.
#[derive(Debug, Clone, PartialEq)]
pub enum Sweep {
    /// On time: silent workers counted, those past the bound removed.
    Counted(Vec<ClusterEvent>),
    /// The sweep itself ran this late (the manager was paused, a VM
    /// stopped, the process starved): the silence was this manager's, not
    /// the workers'. Nobody was counted; every deadline starts again.
    Renewed { late: std::time::Duration },
}

/// Longest id, purpose or task accepted.
pub const MAX_NAME_LEN: usize = 1024;

fn check_name(field: &str, value: &str) -> Result<(), ManagerError> {
    if value.is_empty() {
        return Err(ManagerError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(ManagerError::InvalidArgument(format!(
            "{field} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

impl Manager {
    pub fn new(config: Config, now: Instant) -> Self {
        Manager {
            config,
            started: now,
            workers: HashMap::new(),
            schedulers: BTreeMap::new(),
            last_sweep: now,
            expected: BTreeSet::new(),
            last_join: None,
        }
    }

    /// The workers the previous leader knew (read from etcd on election).
    pub fn expect(&mut self, workers: BTreeSet<String>) {
        self.expected = workers;
    }

    /// Whether a worker joining now was known with this purpose: registered
    /// here, or, for a newly elected manager, registered with the previous
    /// leader. Its tasks are then intact and it re-announces them, however
    /// late it rejoins.
    pub fn knows(&self, id: &str, purpose: &str) -> bool {
        self.workers.get(id).is_some_and(|w| w.purpose == purpose) || self.expected.contains(id)
    }

    /// The ids of every registered worker.
    pub fn worker_ids(&self) -> BTreeSet<String> {
        self.workers.keys().cloned().collect()
    }

    /// Whether `Schedule` may place tasks: in service, or, for an elected
    /// manager, every worker the previous leader knew is back (and settled
    /// for [`SETTLE`]), so no task can still be waiting to be re-announced.
    /// Joins keep the answer of [`state`](Self::state) for the whole window.
    pub fn schedulable(&self, now: Instant) -> bool {
        if self.state(now) == ManagerState::InService {
            return true;
        }
        !self.expected.is_empty()
            && self.expected.iter().all(|w| self.workers.contains_key(w))
            && self
                .last_join
                .is_some_and(|t| now.saturating_duration_since(t) >= SETTLE)
    }

    pub fn state(&self, now: Instant) -> ManagerState {
        if now.duration_since(self.started)
            < Duration::from_millis(self.config.manager.initial_time)
        {
            ManagerState::Initializing
        } else {
            ManagerState::InService
        }
    }

    fn scheduler_of(&mut self, worker: &str) -> Result<&mut Scheduler, ManagerError> {
        let purpose = &self
            .workers
            .get(worker)
            .ok_or_else(|| ManagerError::WorkerNotFound(worker.to_string()))?
            .purpose;
        self.schedulers
            .get_mut(purpose)
            .ok_or_else(|| ManagerError::WorkerNotFound(worker.to_string()))
    }

    /// A worker joins (or joins again). A rejoin of a known worker refreshes
    /// its info and keeps its tasks. Returns the manager's state and, for a
    /// new worker, the event to publish.
    pub fn join(
        &mut self,
        purpose: &str,
        id: &str,
        mut info: WorkerInfo,
        now: Instant,
    ) -> Result<(ManagerState, Option<ClusterEvent>), ManagerError> {
        check_name("purpose", purpose)?;
        check_name("workerId", id)?;
        if !info.max_load.is_finite() || info.max_load < 0.0 || info.max_load > 1.0 {
            return Err(ManagerError::InvalidArgument(format!(
                "info.maxLoad must be within [0, 1], got {}",
                info.max_load
            )));
        }
        if info.max_load == 0.0 {
            info.max_load = 1.0;
        }
        self.last_join = Some(now);
        let mut event = None;
        match self.workers.get_mut(id) {
            Some(known) if known.purpose == purpose => known.alive_count = 0,
            known => {
                if let Some(old) = known {
                    // Same id, new purpose: leave the old scheduler first.
                    let old_purpose = std::mem::replace(&mut old.purpose, purpose.to_string());
                    if let Some(s) = self.schedulers.get_mut(&old_purpose) {
                        s.remove(id);
                    }
                }
                self.workers.insert(
                    id.to_string(),
                    Registered {
                        purpose: purpose.to_string(),
                        alive_count: 0,
                    },
                );
                event = Some(ClusterEvent::WorkerJoined {
                    purpose: purpose.to_string(),
                    id: id.to_string(),
                    info: info.clone(),
                });
            }
        }
        let strategies = &self.config.strategy;
        let reserve = Duration::from_millis(self.config.manager.schedule_reserve_time);
        self.schedulers
            .entry(purpose.to_string())
            .or_insert_with(|| {
                Scheduler::new(
                    Matcher::for_purpose(purpose),
                    strategies.for_purpose(purpose),
                    reserve,
                )
            })
            .add(id, info);
        Ok((self.state(now), event))
    }

    /// A worker leaves: its executing tasks are released.
    pub fn quit(&mut self, id: &str) -> Result<ClusterEvent, ManagerError> {
        check_name("workerId", id)?;
        self.remove(id, LossReason::Quit)
            .ok_or_else(|| ManagerError::WorkerNotFound(id.to_string()))
    }

    fn remove(&mut self, id: &str, reason: LossReason) -> Option<ClusterEvent> {
        let registered = self.workers.remove(id)?;
        let released = self
            .schedulers
            .get_mut(&registered.purpose)
            .map(|s| s.remove(id))
            .unwrap_or_default();
        tracing::info!(worker = %id, purpose = %registered.purpose, reason = reason.as_str(), released = released.len(), "worker removed");
        Some(ClusterEvent::WorkerLost {
            purpose: registered.purpose,
            id: id.to_string(),
            reason,
        })
    }

    /// True ("ok") for a known worker, whose liveness counter restarts;
    /// false ("whoareyou") otherwise.
    pub fn keep_alive(&mut self, id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                w.alive_count = 0;
                true
            }
            None => false,
        }
    }

    /// Per purpose: (available workers, full workers, assigned tasks).
    pub fn stats(&self) -> Vec<(String, usize, usize, usize)> {
        self.schedulers
            .iter()
            .map(|(purpose, s)| {
                let (available, full) = s.worker_ids().fold((0, 0), |(a, f), id| {
                    if s.worker(id).is_some_and(|w| w.is_available()) {
                        (a + 1, f)
                    } else {
                        (a, f + 1)
                    }
                });
                (purpose.clone(), available, full, s.assigned())
            })
            .collect()
    }

    /// One liveness sweep at `now`, due every `check_alive_interval`. On
    /// time, every worker's counter grows and those past
    /// `check_alive_count` are removed. A sweep that comes more than two
    /// intervals after the last one means this manager was not running
    /// (SIGSTOP, a paused VM, starvation): the keep-alives it missed are
    /// its own pause, so instead of counting them it renews every
    /// worker's deadline.
    pub fn sweep(&mut self, now: Instant) -> Sweep {
        let interval = std::time::Duration::from_millis(self.config.manager.check_alive_interval);
        let since = now.saturating_duration_since(self.last_sweep);
        self.last_sweep = now;
        if since > interval * 2 {
            for w in self.workers.values_mut() {
                w.alive_count = 0;
            }
            return Sweep::Renewed {
                late: since - interval,
            };
        }
        Sweep::Counted(self.check_alive())
    }

    /// Count one sweep against every worker; those past
    /// `check_alive_count` are removed.
    fn check_alive(&mut self) -> Vec<ClusterEvent> {
        let limit = self.config.manager.check_alive_count;
        let mut dead = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            w.alive_count += 1;
            if w.alive_count > limit {
                dead.push(id.clone());
            }
        }
        dead.sort();
        dead.iter()
            .filter_map(|id| self.remove(id, LossReason::Timeout))
            .collect()
    }

    pub fn report_load(&mut self, id: &str, load: f64) -> Result<(), ManagerError> {
        check_name("workerId", id)?;
        if !load.is_finite() || !(0.0..=1.0).contains(&load) {
            return Err(ManagerError::InvalidArgument(format!(
                "load must be within [0, 1], got {load}"
            )));
        }
        self.scheduler_of(id)?.update_load(id, load);
        Ok(())
    }

    pub fn report_state(&mut self, id: &str, state: i32) -> Result<(), ManagerError> {
        check_name("workerId", id)?;
        self.scheduler_of(id)?.update_state(id, state);
        Ok(())
    }

    /// The tasks refused: another live worker executes them.
    pub fn pick_up_tasks(
        &mut self,
        id: &str,
        tasks: &[String],
        now: Instant,
    ) -> Result<Vec<String>, ManagerError> {
        check_name("workerId", id)?;
        for t in tasks {
            check_name("task", t)?;
        }
        Ok(self
            .scheduler_of(id)?
            .pick_up(id, tasks, now)
            .unwrap_or_default())
    }

    pub fn lay_down_task(
        &mut self,
        id: &str,
        task: &str,
        now: Instant,
    ) -> Result<(), ManagerError> {
        check_name("workerId", id)?;
        check_name("task", task)?;
        self.scheduler_of(id)?.lay_down(id, task, now);
        Ok(())
    }

    pub fn unschedule(&mut self, id: &str, task: &str) -> Result<(), ManagerError> {
        check_name("workerId", id)?;
        check_name("task", task)?;
        self.scheduler_of(id)?.unschedule(id, task);
        Ok(())
    }

    /// Pick a worker of `purpose` for `task`. `reserve_ms` of 0 means the
    /// default reservation; negative is refused.
    pub fn schedule(
        &mut self,
        purpose: &str,
        task: &str,
        preference: &Preference,
        reserve_ms: i64,
        now: Instant,
    ) -> Result<(String, WorkerInfo), ManagerError> {
        check_name("purpose", purpose)?;
        check_name("task", task)?;
        if reserve_ms < 0 {
            return Err(ManagerError::InvalidArgument(format!(
                "reserveTimeMs must not be negative, got {reserve_ms}"
            )));
        }
        if !self.schedulable(now) {
            return Err(ManagerError::NotReady);
        }
        let scheduler = self
            .schedulers
            .get_mut(purpose)
            .ok_or_else(|| ManagerError::NoScheduler(purpose.to_string()))?;
        let reserve = (reserve_ms > 0).then(|| Duration::from_millis(reserve_ms as u64));
        scheduler
            .schedule(task, preference, reserve, now)
            .map_err(|reason| ManagerError::ScheduleFailed {
                purpose: purpose.to_string(),
                reason,
            })
    }

    /// Worker ids of `purpose`, or of every purpose for "all", sorted.
    pub fn get_workers(&self, purpose: &str) -> Result<Vec<String>, ManagerError> {
        check_name("purpose", purpose)?;
        let mut ids: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| purpose == "all" || w.purpose == purpose)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        Ok(ids)
    }

    pub fn get_worker_attr(&self, id: &str) -> Result<WorkerAttr, ManagerError> {
        check_name("workerId", id)?;
        let not_found = || ManagerError::WorkerNotFound(id.to_string());
        let registered = self.workers.get(id).ok_or_else(not_found)?;
        let record = self
            .schedulers
            .get(&registered.purpose)
            .and_then(|s| s.worker(id))
            .ok_or_else(not_found)?;
        Ok(WorkerAttr {
            id: id.to_string(),
            purpose: registered.purpose.clone(),
            state: record.state,
            load: record.load,
            info: record.info.clone(),
            tasks: record.tasks.iter().cloned().collect(),
            keep_alive: registered.alive_count,
        })
    }

    /// Tasks executing on a worker (OWT never answered this, §17.12).
    pub fn get_tasks(&self, id: &str) -> Result<Vec<String>, ManagerError> {
        Ok(self.get_worker_attr(id)?.tasks)
    }

    pub fn get_scheduled(
        &mut self,
        purpose: &str,
        task: &str,
        now: Instant,
    ) -> Result<String, ManagerError> {
        check_name("purpose", purpose)?;
        check_name("task", task)?;
        let scheduler = self
            .schedulers
            .get_mut(purpose)
            .ok_or(ManagerError::InvalidPurpose)?;
        scheduler
            .scheduled(task, now)
            .map(|a| a.worker.clone())
            .ok_or(ManagerError::NoSuchTask)
    }

    /// An agent's node exited: lay down the tasks it served on the agent and
    /// tell watchers.
    pub fn report_node_exit(
        &mut self,
        worker: &str,
        node_id: &str,
        purpose: &str,
        reason: &str,
        tasks: &[String],
        now: Instant,
    ) -> Result<ClusterEvent, ManagerError> {
        check_name("workerId", worker)?;
        check_name("nodeId", node_id)?;
        let worker_purpose = self
            .workers
            .get(worker)
            .ok_or_else(|| ManagerError::WorkerNotFound(worker.to_string()))?
            .purpose
            .clone();
        let scheduler = self.scheduler_of(worker)?;
        for task in tasks {
            scheduler.lay_down(worker, task, now);
        }
        Ok(ClusterEvent::NodeExited {
            purpose: if purpose.is_empty() {
                worker_purpose
            } else {
                purpose.to_string()
            },
            node_id: node_id.to_string(),
            worker_id: worker.to_string(),
            reason: if reason.is_empty() {
                "abnormal".to_string()
            } else {
                reason.to_string()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial: u64) -> Config {
        let mut c = Config::default();
        c.manager.initial_time = initial;
        c.strategy.conference = "round-robin".into();
        c
    }

    fn info() -> WorkerInfo {
        WorkerInfo {
            max_load: 0.85,
            ..Default::default()
        }
    }

    fn ready(m: &mut Manager, purpose: &str, id: &str, now: Instant) {
        m.join(purpose, id, info(), now).unwrap();
        m.report_load(id, 0.1).unwrap();
    }

    #[test]
    fn initializing_refuses_schedule_then_serves() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(2000), t0);
        let (state, event) = m.join("conference", "a", info(), t0).unwrap();
        assert_eq!(state, ManagerState::Initializing);
        assert!(matches!(event, Some(ClusterEvent::WorkerJoined { .. })));
        m.report_load("a", 0.1).unwrap();
        let pref = Preference::default();
        assert_eq!(
            m.schedule("conference", "room", &pref, 30_000, t0)
                .unwrap_err()
                .to_string(),
            "cluster manager is not ready."
        );
        let later = t0 + Duration::from_millis(2000);
        assert_eq!(m.state(later), ManagerState::InService);
        assert_eq!(
            m.schedule("conference", "room", &pref, 30_000, later)
                .unwrap()
                .0,
            "a"
        );
    }

    #[test]
    fn schedule_errors_carry_owt_messages() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        let pref = Preference::default();
        assert_eq!(
            m.schedule("conference", "r", &pref, 0, t0)
                .unwrap_err()
                .to_string(),
            "No scheduler for purpose: conference"
        );
        m.join("conference", "a", info(), t0).unwrap();
        assert_eq!(
            m.schedule("conference", "r", &pref, 0, t0)
                .unwrap_err()
                .to_string(),
            "Failed in scheduling conference worker, reason: No worker available, all in full load."
        );
        m.join(
            "portal",
            "p",
            WorkerInfo {
                max_load: 0.85,
                capacity: crate::worker::Capacity {
                    isps: vec!["x".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
            t0,
        )
        .unwrap();
        m.report_load("p", 0.1).unwrap();
        assert_eq!(
            m.schedule("portal", "code", &pref, 0, t0)
                .unwrap_err()
                .to_string(),
            "Failed in scheduling portal worker, reason: No worker matches the preference."
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        let pref = Preference::default();
        let msg = |e: ManagerError| e.to_string();
        assert!(msg(m.join("", "a", info(), t0).unwrap_err()).contains("purpose"));
        assert!(msg(m.join("portal", "", info(), t0).unwrap_err()).contains("workerId"));
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(msg(m.join("portal", &too_long, info(), t0).unwrap_err()).contains("longer"));
        let mut bad = info();
        bad.max_load = 1.5;
        assert!(msg(m.join("portal", "a", bad, t0).unwrap_err()).contains("maxLoad"));
        ready(&mut m, "portal", "a", t0);
        for load in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(msg(m.report_load("a", load).unwrap_err()).contains("load must be within"));
        }
        assert!(
            msg(m.schedule("portal", "t", &pref, -1, t0).unwrap_err()).contains("reserveTimeMs")
        );
        assert!(msg(m.schedule("portal", "", &pref, 0, t0).unwrap_err()).contains("task"));
        assert_eq!(
            msg(m.report_load("ghost", 0.5).unwrap_err()),
            "Worker [ghost] does NOT exist."
        );
        assert_eq!(
            msg(m.quit("ghost").unwrap_err()),
            "Worker [ghost] does NOT exist."
        );
        assert_eq!(
            msg(m.get_tasks("ghost").unwrap_err()),
            "Worker [ghost] does NOT exist."
        );
        assert_eq!(
            msg(m.get_scheduled("nope", "t", t0).unwrap_err()),
            "Invalid purpose."
        );
        assert_eq!(
            msg(m.get_scheduled("portal", "t", t0).unwrap_err()),
            "No such a task"
        );
    }

    /// One sweep on time (an interval after the last).
    fn counted(m: &mut Manager) -> Vec<ClusterEvent> {
        let at = m.last_sweep + Duration::from_millis(m.config.manager.check_alive_interval);
        match m.sweep(at) {
            Sweep::Counted(lost) => lost,
            other => panic!("an on-time sweep counted nothing: {other:?}"),
        }
    }

    #[test]
    fn an_elected_manager_schedules_once_every_expected_worker_is_back() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(1000), t0);
        m.expect(["a".to_string(), "p".to_string()].into());
        let pref = Preference::default();
        ready(&mut m, "conference", "a", t0);
        assert!(!m.schedulable(t0 + SETTLE), "p is not back yet");
        let (state, _) = m
            .join("portal", "p", info(), t0 + Duration::from_millis(100))
            .unwrap();
        assert_eq!(state, ManagerState::Initializing, "joins still re-announce");
        // a worker the old leader knew is known, even after the window
        assert!(m.knows("p", "portal") && !m.knows("stranger", "portal"));
        let mut late = Manager::new(config(1000), t0);
        late.expect(["slow".to_string()].into());
        assert!(late.knows("slow", "conference"));
        assert!(!m.schedulable(t0 + Duration::from_millis(200)), "settling");
        let settled = t0 + Duration::from_millis(100) + SETTLE;
        assert!(m.schedulable(settled));
        assert_eq!(
            m.schedule("conference", "room", &pref, 30_000, settled)
                .unwrap()
                .0,
            "a"
        );
        assert_eq!(m.state(settled), ManagerState::Initializing);
        // without an expected list: the whole initial time
        let mut m = Manager::new(config(1000), t0);
        ready(&mut m, "conference", "a", t0);
        assert!(!m.schedulable(t0 + Duration::from_millis(999)));
        assert!(m.schedulable(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn a_late_sweep_renews_every_deadline_instead_of_evicting() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "a", t0);
        ready(&mut m, "portal", "p", t0);
        // two silent sweeps on time: counts 2 of 3
        assert!(counted(&mut m).is_empty());
        assert!(counted(&mut m).is_empty());
        // the manager is paused for 10 s: its next sweep is late
        let late = m.last_sweep + Duration::from_secs(10);
        assert_eq!(
            m.sweep(late),
            Sweep::Renewed {
                late: Duration::from_secs(9)
            }
        );
        // the workers get a full bound again from the resume
        for _ in 0..3 {
            assert!(counted(&mut m).is_empty());
        }
        assert_eq!(counted(&mut m).len(), 2, "silent ever since: removed");
        // two intervals exactly is still on time
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "a", t0);
        for i in 1..=3 {
            assert!(
                matches!(m.sweep(t0 + Duration::from_secs(2 * i)), Sweep::Counted(l) if l.is_empty())
            );
        }
        assert!(matches!(m.sweep(t0 + Duration::from_secs(8)), Sweep::Counted(l) if l.len() == 1));
    }

    #[test]
    fn keep_alive_answers_and_the_sweep_removes_silent_workers() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "a", t0);
        ready(&mut m, "conference", "b", t0);
        m.pick_up_tasks("a", &["room".into()], t0).unwrap();
        assert!(m.keep_alive("a"));
        assert!(!m.keep_alive("ghost"));
        // three sweeps: both still there (count 3 is not > 3)
        for _ in 0..3 {
            assert!(counted(&mut m).is_empty());
            assert!(m.keep_alive("b"));
        }
        let lost = counted(&mut m);
        assert_eq!(
            lost,
            vec![ClusterEvent::WorkerLost {
                purpose: "conference".into(),
                id: "a".into(),
                reason: LossReason::Timeout
            }]
        );
        assert_eq!(m.get_workers("all").unwrap(), ["b"]);
        // its executing task was released
        assert_eq!(
            m.get_scheduled("conference", "room", t0).unwrap_err(),
            ManagerError::NoSuchTask
        );
    }

    #[test]
    fn quit_releases_tasks_and_reports_the_loss() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "portal", "p", t0);
        m.pick_up_tasks("p", &["code".into()], t0).unwrap();
        let event = m.quit("p").unwrap();
        assert_eq!(
            event,
            ClusterEvent::WorkerLost {
                purpose: "portal".into(),
                id: "p".into(),
                reason: LossReason::Quit
            }
        );
        assert!(m.get_workers("portal").unwrap().is_empty());
        assert!(m.get_scheduled("portal", "code", t0).is_err());
    }

    #[test]
    fn rejoin_of_a_known_worker_keeps_its_tasks() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "a", t0);
        m.pick_up_tasks("a", &["room".into()], t0).unwrap();
        let (_, event) = m.join("conference", "a", info(), t0).unwrap();
        assert!(event.is_none());
        assert_eq!(m.get_tasks("a").unwrap(), ["room"]);
        assert_eq!(m.get_worker_attr("a").unwrap().load, 0.1);
        // a rejoin under another purpose moves it and releases its tasks
        let (_, event) = m.join("portal", "a", info(), t0).unwrap();
        assert!(event.is_some());
        assert!(m.get_tasks("a").unwrap().is_empty());
        assert_eq!(m.get_workers("conference").unwrap(), Vec::<String>::new());
        assert_eq!(m.get_workers("portal").unwrap(), ["a"]);
    }

    #[test]
    fn worker_attr_and_lists() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "c1", t0);
        ready(&mut m, "portal", "p1", t0);
        m.report_state("c1", 2).unwrap();
        let attr = m.get_worker_attr("c1").unwrap();
        assert_eq!(
            (attr.purpose.as_str(), attr.state, attr.load),
            ("conference", Some(2), 0.1)
        );
        assert_eq!(m.get_workers("all").unwrap(), ["c1", "p1"]);
        assert_eq!(m.get_workers("portal").unwrap(), ["p1"]);
        assert!(m.get_workers("video").unwrap().is_empty());
    }

    #[test]
    fn node_exit_lays_down_its_tasks_and_becomes_an_event() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "agent", t0);
        m.pick_up_tasks("agent", &["room".into()], t0).unwrap();
        let e = m
            .report_node_exit("agent", "agent_0", "", "", &["room".into()], t0)
            .unwrap();
        assert_eq!(
            e,
            ClusterEvent::NodeExited {
                purpose: "conference".into(),
                node_id: "agent_0".into(),
                worker_id: "agent".into(),
                reason: "abnormal".into()
            }
        );
        assert!(m.get_tasks("agent").unwrap().is_empty());
        assert!(m.report_node_exit("ghost", "n", "", "", &[], t0).is_err());
        assert!(m.report_node_exit("agent", "", "", "", &[], t0).is_err());
    }

    #[test]
    fn strategy_is_per_purpose() {
        let t0 = Instant::now();
        let mut m = Manager::new(config(0), t0);
        ready(&mut m, "conference", "a", t0);
        ready(&mut m, "conference", "b", t0);
        ready(&mut m, "portal", "p", t0);
        let pref = Preference::default();
        let picks: Vec<String> = (0..4)
            .map(|i| {
                m.schedule("conference", &format!("r{i}"), &pref, 0, t0)
                    .unwrap()
                    .0
            })
            .collect();
        assert_eq!(
            picks,
            ["a", "b", "a", "b"],
            "round-robin configured for conference"
        );
        assert_eq!(m.schedule("portal", "c", &pref, 0, t0).unwrap().0, "p");
    }
}
