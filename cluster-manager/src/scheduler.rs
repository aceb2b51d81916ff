//! One scheduler per purpose (OWT §6): the workers of that purpose, the
//! assignment of each task to a worker (a reservation that expires, or an
//! execution), and the rules that pick a worker for a task.
//!
//! Time is passed in: a reservation holds until `now` passes its expiry, and
//! every operation first repeals what has expired, which is what OWT's
//! reservation timers do.

use crate::matcher::Matcher;
use crate::strategy::Strategy;
use crate::worker::{Preference, WorkerInfo, WorkerRecord};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Why no worker could be picked (OWT's reason strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("No worker available, all in full load.")]
    NoneAvailable,
    #[error("No worker matches the preference.")]
    NoMatch,
}

/// A task's assignment to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub worker: String,
    /// How long the assignment is kept when the task is not executing.
    pub reserve_time: Duration,
    /// When a reservation lapses; `None` while the task executes.
    pub expires: Option<Instant>,
}

#[derive(Debug)]
pub struct Scheduler {
    workers: IndexMap<String, WorkerRecord>,
    tasks: HashMap<String, Assignment>,
    strategy: Strategy,
    matcher: Matcher,
    default_reserve: Duration,
    /// No reservation lapses before this (a lower bound), so most operations
    /// skip the scan over every task.
    next_expiry: Option<Instant>,
}

impl Scheduler {
    pub fn new(matcher: Matcher, strategy: Strategy, default_reserve: Duration) -> Self {
        Scheduler {
            workers: IndexMap::new(),
            tasks: HashMap::new(),
            strategy,
            matcher,
            default_reserve,
            next_expiry: None,
        }
    }

    pub fn strategy_name(&self) -> &'static str {
        self.strategy.name()
    }

    /// Add a worker, or refresh the info of one already here. A refresh keeps
    /// the worker's load, state and executing tasks (unlike OWT, whose
    /// re-add silently dropped them, §17.12).
    pub fn add(&mut self, id: &str, info: WorkerInfo) {
        match self.workers.get_mut(id) {
            Some(record) => record.info = info,
            None => {
                self.workers.insert(id.to_string(), WorkerRecord::new(info));
            }
        }
    }

    /// Remove a worker; the tasks executing on it are released (returned).
    /// Reservations pointing at it stay until they lapse or are scheduled again.
    pub fn remove(&mut self, id: &str) -> Vec<String> {
        let Some(record) = self.workers.shift_remove(id) else {
            return Vec::new();
        };
        let mut released = Vec::new();
        for task in record.tasks {
            if self.tasks.get(&task).is_some_and(|a| a.worker == id) {
                self.tasks.remove(&task);
                released.push(task);
            }
        }
        released
    }

    /// Tasks assigned (reserved or executing).
    pub fn assigned(&self) -> usize {
        self.tasks.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.workers.contains_key(id)
    }

    pub fn worker(&self, id: &str) -> Option<&WorkerRecord> {
        self.workers.get(id)
    }

    pub fn worker_ids(&self) -> impl Iterator<Item = &String> {
        self.workers.keys()
    }

    pub fn update_load(&mut self, id: &str, load: f64) -> bool {
        self.workers.get_mut(id).map(|w| w.load = load).is_some()
    }

    pub fn update_state(&mut self, id: &str, state: i32) -> bool {
        self.workers
            .get_mut(id)
            .map(|w| w.state = Some(state))
            .is_some()
    }

    /// Repeal the reservations that have lapsed by `now`.
    pub fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|next| now < next) {
            return;
        }
        self.tasks
            .retain(|_, a| a.expires.is_none_or(|deadline| deadline > now));
        self.next_expiry = self.tasks.values().filter_map(|a| a.expires).min();
    }

    /// Note a reservation deadline.
    fn expires_at(&mut self, deadline: Instant) -> Option<Instant> {
        self.next_expiry = Some(self.next_expiry.map_or(deadline, |n| n.min(deadline)));
        Some(deadline)
    }

    /// Pick a worker for `task` (OWT §6.3). An existing assignment to a live
    /// worker is reused whatever its load; its reservation only ever grows.
    /// `reserve` of `None` means the default reservation time.
    pub fn schedule(
        &mut self,
        task: &str,
        preference: &Preference,
        reserve: Option<Duration>,
        now: Instant,
    ) -> Result<(String, WorkerInfo), ScheduleError> {
        self.expire(now);
        if let Some(existing) = self.tasks.get_mut(task) {
            let reserve_time = match reserve {
                Some(r) if existing.reserve_time < r => r,
                _ => existing.reserve_time,
            };
            if let Some(record) = self.workers.get(&existing.worker) {
                existing.reserve_time = reserve_time;
                let executing = record.tasks.contains(task);
                let worker = existing.worker.clone();
                let info = record.info.clone();
                let deadline = (!executing).then(|| now + reserve_time);
                existing.expires = deadline;
                if let Some(d) = deadline {
                    self.expires_at(d);
                }
                return Ok((worker, info));
            }
            self.tasks.remove(task);
        }
        let candidates: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.is_available())
            .map(|(id, _)| id.clone())
            .collect();
        if candidates.is_empty() {
            return Err(ScheduleError::NoneAvailable);
        }
        let candidates = self.matcher.matches(preference, &self.workers, candidates);
        if candidates.is_empty() {
            return Err(ScheduleError::NoMatch);
        }
        let chosen = self
            .strategy
            .allocate(&self.workers, &candidates)
            .ok_or(ScheduleError::NoneAvailable)?;
        let reserve_time = reserve.unwrap_or(self.default_reserve);
        let expires = self.expires_at(now + reserve_time);
        self.tasks.insert(
            task.to_string(),
            Assignment {
                worker: chosen.clone(),
                reserve_time,
                expires,
            },
        );
        let info = self.workers[&chosen].info.clone();
        Ok((chosen, info))
    }

    /// `worker` executes `tasks` (OWT `executeTask`): reservations become
    /// executions; a reservation for another worker, or an assignment to a
    /// worker that is gone, moves to this one. A task another registered
    /// worker executes stays there and is returned as refused: two workers
    /// both claim it only when one of them is stale (it was counted out,
    /// or a failover let both re-announce a room that moved meanwhile), and
    /// the claimant must let go of its copy. OWT moved it to the claimant
    /// ("worker conflicts"), which left the room on two workers at once.
    /// None when the worker is unknown.
    pub fn pick_up(&mut self, worker: &str, tasks: &[String], now: Instant) -> Option<Vec<String>> {
        self.expire(now);
        if !self.workers.contains_key(worker) {
            return None;
        }
        let mut refused = Vec::new();
        for task in tasks {
            match self.tasks.get_mut(task) {
                Some(a) if a.worker != worker => {
                    // a holder at the claimant's own address is a process
                    // the claimant replaced there (restarted in its place,
                    // not yet timed out): it is gone
                    let endpoint = |id: &str| {
                        self.workers
                            .get(id)
                            .map(|w| w.info.grpc_endpoint.as_str())
                            .filter(|e| !e.is_empty())
                    };
                    let holder_lives = self.workers.contains_key(&a.worker)
                        && (endpoint(&a.worker).is_none()
                            || endpoint(&a.worker) != endpoint(worker));
                    if a.expires.is_none() && holder_lives {
                        tracing::warn!(task = %task, holder = %a.worker, claimant = %worker, "worker conflicts: another worker executes the task; refused");
                        refused.push(task.clone());
                        continue;
                    }
                    tracing::warn!(task = %task, from = %a.worker, to = %worker, "worker conflicts: task moves");
                    let from = std::mem::replace(&mut a.worker, worker.to_string());
                    a.expires = None;
                    if let Some(old) = self.workers.get_mut(&from) {
                        old.tasks.swap_remove(task);
                    }
                }
                Some(a) => a.expires = None,
                None => {
                    self.tasks.insert(
                        task.clone(),
                        Assignment {
                            worker: worker.to_string(),
                            reserve_time: self.default_reserve,
                            expires: None,
                        },
                    );
                }
            }
            let record = self.workers.get_mut(worker).expect("checked above");
            record.tasks.insert(task.clone());
        }
        Some(refused)
    }

    /// `worker` no longer executes `task` (OWT `cancelExecution`): the task
    /// stays reserved for it for its reserve time, keeping affinity.
    /// False when the worker is unknown.
    pub fn lay_down(&mut self, worker: &str, task: &str, now: Instant) -> bool {
        self.expire(now);
        let Some(record) = self.workers.get_mut(worker) else {
            return false;
        };
        let was_executing = record.tasks.swap_remove(task);
        let mut deadline = None;
        if let Some(a) = self.tasks.get_mut(task) {
            if a.worker != worker {
                // another worker's (a refused claim, a moved task): not ours
            } else if was_executing {
                deadline = Some(now + a.reserve_time);
                a.expires = deadline;
            } else {
                self.tasks.remove(task);
            }
        }
        if let Some(d) = deadline {
            self.expires_at(d);
        }
        true
    }

    /// Drop the assignment of `task` if it points at `worker`.
    pub fn unschedule(&mut self, worker: &str, task: &str) {
        if self.tasks.get(task).is_some_and(|a| a.worker == worker) {
            self.tasks.remove(task);
        }
    }

    /// The worker `task` is assigned to.
    pub fn scheduled(&mut self, task: &str, now: Instant) -> Option<&Assignment> {
        self.expire(now);
        self.tasks.get(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESERVE: Duration = Duration::from_secs(60);

    fn info() -> WorkerInfo {
        WorkerInfo {
            max_load: 0.85,
            ..Default::default()
        }
    }

    fn scheduler(strategy: &str) -> Scheduler {
        Scheduler::new(Matcher::General, strategy.parse().unwrap(), RESERVE)
    }

    fn ready(s: &mut Scheduler, id: &str, load: f64) {
        s.add(id, info());
        s.update_load(id, load);
    }

    fn sched(
        s: &mut Scheduler,
        task: &str,
        reserve: Option<u64>,
        now: Instant,
    ) -> Result<String, ScheduleError> {
        s.schedule(
            task,
            &Preference::default(),
            reserve.map(Duration::from_millis),
            now,
        )
        .map(|(id, _)| id)
    }

    #[test]
    fn a_new_worker_is_not_schedulable_before_its_first_load_report() {
        let now = Instant::now();
        let mut s = scheduler("round-robin");
        s.add("w1", info());
        assert_eq!(
            sched(&mut s, "t", None, now),
            Err(ScheduleError::NoneAvailable)
        );
        s.update_load("w1", 0.1);
        assert_eq!(sched(&mut s, "t", None, now).unwrap(), "w1");
    }

    #[test]
    fn availability_needs_load_below_max_and_state_in_service() {
        let now = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.85);
        assert_eq!(
            sched(&mut s, "t1", None, now),
            Err(ScheduleError::NoneAvailable)
        );
        s.update_load("w1", 0.84);
        s.update_state("w1", 1);
        assert_eq!(
            sched(&mut s, "t1", None, now),
            Err(ScheduleError::NoneAvailable)
        );
        s.update_state("w1", 2);
        assert_eq!(sched(&mut s, "t1", None, now).unwrap(), "w1");
    }

    #[test]
    fn a_max_load_of_zero_at_add_still_rejects_until_reported() {
        // The gRPC edge maps max_load 0 to 1.0; a worker at 1.0 is full.
        let now = Instant::now();
        let mut s = scheduler("least-used");
        s.add(
            "w",
            WorkerInfo {
                max_load: 1.0,
                ..Default::default()
            },
        );
        assert_eq!(
            sched(&mut s, "t", None, now),
            Err(ScheduleError::NoneAvailable)
        );
        s.update_load("w", 0.99);
        assert_eq!(sched(&mut s, "t", None, now).unwrap(), "w");
    }

    #[test]
    fn an_assigned_task_reuses_its_worker_even_when_full() {
        let now = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        assert_eq!(sched(&mut s, "room", Some(30_000), now).unwrap(), "w1");
        s.update_load("w1", 0.99);
        assert_eq!(sched(&mut s, "room", Some(30_000), now).unwrap(), "w1");
        assert_eq!(sched(&mut s, "other", Some(30_000), now).unwrap(), "w2");
    }

    #[test]
    fn a_reservation_lapses_after_its_time() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        assert_eq!(sched(&mut s, "t", Some(1000), t0).unwrap(), "w1");
        assert!(s.scheduled("t", t0 + Duration::from_millis(999)).is_some());
        assert!(s.scheduled("t", t0 + Duration::from_millis(1000)).is_none());
        // the next schedule is free to choose again (round-robin moves on)
        assert_eq!(
            sched(&mut s, "t", Some(1000), t0 + Duration::from_millis(1000)).unwrap(),
            "w2"
        );
    }

    #[test]
    fn reservations_lapse_each_at_its_own_time() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        sched(&mut s, "short", Some(1000), t0).unwrap();
        sched(&mut s, "long", Some(5000), t0).unwrap();
        sched(&mut s, "other", Some(3000), t0 + Duration::from_millis(500)).unwrap();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(s.scheduled("short", at(999)).is_some());
        assert!(s.scheduled("short", at(1000)).is_none());
        assert!(s.scheduled("other", at(3499)).is_some());
        assert!(s.scheduled("long", at(4999)).is_some());
        assert!(s.scheduled("other", at(3500)).is_none());
        assert!(s.scheduled("long", at(5000)).is_none());
    }

    #[test]
    fn reuse_rearms_the_reservation_and_it_only_grows() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        sched(&mut s, "t", Some(1000), t0).unwrap();
        // rescheduled at 800 ms with a shorter time: keeps 1000, re-armed from now
        sched(&mut s, "t", Some(500), t0 + Duration::from_millis(800)).unwrap();
        let a = s.scheduled("t", t0 + Duration::from_millis(1700)).unwrap();
        assert_eq!(a.reserve_time, Duration::from_millis(1000));
        assert!(s.scheduled("t", t0 + Duration::from_millis(1800)).is_none());
        // a longer time grows it
        sched(&mut s, "t", Some(1000), t0 + Duration::from_secs(2)).unwrap();
        sched(&mut s, "t", Some(5000), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(
            s.scheduled("t", t0 + Duration::from_secs(2))
                .unwrap()
                .reserve_time,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn no_reserve_time_means_the_default() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        sched(&mut s, "t", None, t0).unwrap();
        assert!(
            s.scheduled("t", t0 + RESERVE - Duration::from_millis(1))
                .is_some()
        );
        assert!(s.scheduled("t", t0 + RESERVE).is_none());
    }

    #[test]
    fn picked_up_tasks_do_not_lapse_and_laid_down_ones_keep_affinity_for_a_while() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        sched(&mut s, "room", Some(1000), t0).unwrap();
        assert_eq!(s.pick_up("w1", &["room".to_string()], t0), Some(vec![]));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(s.scheduled("room", later).unwrap().worker, "w1");
        assert_eq!(Vec::from_iter(&s.worker("w1").unwrap().tasks), ["room"]);
        // executing: rescheduling keeps it executing, no expiry
        assert_eq!(sched(&mut s, "room", Some(1000), later).unwrap(), "w1");
        assert_eq!(s.scheduled("room", later).unwrap().expires, None);
        assert!(s.lay_down("w1", "room", later));
        assert!(s.worker("w1").unwrap().tasks.is_empty());
        assert_eq!(
            s.scheduled("room", later + Duration::from_millis(999))
                .unwrap()
                .worker,
            "w1"
        );
        assert!(
            s.scheduled("room", later + Duration::from_millis(1000))
                .is_none()
        );
    }

    #[test]
    fn pick_up_without_assignment_creates_one_and_moves_conflicts() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        assert_eq!(
            s.pick_up("w2", &["a".to_string(), "a".to_string()], t0),
            Some(vec![])
        );
        assert_eq!(Vec::from_iter(&s.worker("w2").unwrap().tasks), ["a"]);
        let a = s.scheduled("a", t0).unwrap();
        assert_eq!(
            (a.worker.as_str(), a.reserve_time, a.expires),
            ("w2", RESERVE, None)
        );
        // reserved on w1 but picked up by w2: moves
        sched(&mut s, "b", Some(1000), t0).unwrap();
        assert_eq!(s.scheduled("b", t0).unwrap().worker, "w1");
        s.pick_up("w2", &["b".to_string()], t0);
        assert_eq!(s.scheduled("b", t0).unwrap().worker, "w2");
        assert_eq!(s.pick_up("ghost", &["c".to_string()], t0), None);
    }

    #[test]
    fn a_task_another_live_worker_executes_is_refused_and_stays_there() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        assert_eq!(s.pick_up("w1", &["room".to_string()], t0), Some(vec![]));
        // w2 re-announces a stale copy of the room (it was counted out while
        // the room was rebuilt on w1): refused, w1 keeps it
        assert_eq!(
            s.pick_up("w2", &["room".to_string(), "other".to_string()], t0),
            Some(vec!["room".to_string()])
        );
        assert_eq!(s.scheduled("room", t0).unwrap().worker, "w1");
        assert_eq!(Vec::from_iter(&s.worker("w2").unwrap().tasks), ["other"]);
        // w2 letting go of its copy does not repeal w1's
        assert!(s.lay_down("w2", "room", t0));
        assert_eq!(s.scheduled("room", t0).unwrap().worker, "w1");
        assert_eq!(s.scheduled("room", t0).unwrap().expires, None);
        // once w1 is gone, the room is free for w2
        s.remove("w1");
        assert_eq!(s.pick_up("w2", &["room".to_string()], t0), Some(vec![]));
        assert_eq!(s.scheduled("room", t0).unwrap().worker, "w2");
    }

    #[test]
    fn a_holder_replaced_at_its_address_does_not_keep_its_tasks() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        let at = |endpoint: &str| WorkerInfo {
            grpc_endpoint: endpoint.into(),
            ..info()
        };
        s.add("old", at("127.0.0.1:7000"));
        s.add("new", at("127.0.0.1:7000"));
        s.add("elsewhere", at("127.0.0.1:7001"));
        assert_eq!(s.pick_up("old", &["room".to_string()], t0), Some(vec![]));
        // another live worker elsewhere is refused
        assert_eq!(
            s.pick_up("elsewhere", &["room".to_string()], t0),
            Some(vec!["room".to_string()])
        );
        // the process restarted at the old one's address takes it over
        assert_eq!(s.pick_up("new", &["room".to_string()], t0), Some(vec![]));
        assert_eq!(s.scheduled("room", t0).unwrap().worker, "new");
        assert!(s.worker("old").unwrap().tasks.is_empty());
    }

    #[test]
    fn a_moved_task_leaves_the_old_workers_list() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        sched(&mut s, "b", Some(1000), t0).unwrap(); // reserved for w1
        assert_eq!(s.scheduled("b", t0).unwrap().worker, "w1");
        assert_eq!(s.pick_up("w2", &["b".to_string()], t0), Some(vec![]));
        assert!(s.worker("w1").unwrap().tasks.is_empty());
        assert_eq!(Vec::from_iter(&s.worker("w2").unwrap().tasks), ["b"]);
    }

    #[test]
    fn lay_down_of_a_task_not_executing_here_repeals_it() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        sched(&mut s, "t", Some(1000), t0).unwrap();
        assert!(s.lay_down("w1", "t", t0));
        assert!(s.scheduled("t", t0).is_none());
        assert!(!s.lay_down("ghost", "t", t0));
    }

    #[test]
    fn unschedule_only_drops_the_workers_own_assignment() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        sched(&mut s, "t", Some(1000), t0).unwrap();
        s.unschedule("w2", "t");
        assert!(s.scheduled("t", t0).is_some());
        s.unschedule("w1", "t");
        assert!(s.scheduled("t", t0).is_none());
    }

    #[test]
    fn removing_a_worker_releases_its_executing_tasks_and_lazily_its_reservations() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        ready(&mut s, "w2", 0.1);
        sched(&mut s, "exec", Some(1000), t0).unwrap(); // w1
        s.pick_up("w1", &["exec".to_string()], t0);
        sched(&mut s, "skip", Some(1000), t0).unwrap(); // w2
        sched(&mut s, "resv", Some(1000), t0).unwrap(); // w1
        assert_eq!(s.scheduled("resv", t0).unwrap().worker, "w1");
        assert_eq!(s.remove("w1"), ["exec"]);
        assert!(s.scheduled("exec", t0).is_none());
        // the reservation still points at w1 until it is scheduled again
        assert_eq!(s.scheduled("resv", t0).unwrap().worker, "w1");
        assert_eq!(sched(&mut s, "resv", Some(1000), t0).unwrap(), "w2");
        assert!(s.remove("w1").is_empty());
    }

    #[test]
    fn refreshing_a_worker_keeps_its_tasks_and_load() {
        let t0 = Instant::now();
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.3);
        s.pick_up("w1", &["t".to_string()], t0);
        s.add(
            "w1",
            WorkerInfo {
                max_load: 0.9,
                port: 9,
                ..Default::default()
            },
        );
        let w = s.worker("w1").unwrap();
        assert_eq!((w.load, w.info.port, w.tasks.len()), (0.3, 9, 1));
        assert_eq!(s.scheduled("t", t0).unwrap().worker, "w1");
    }

    #[test]
    fn matcher_failure_is_reported_after_availability() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Matcher::IspRegion, "last-used".parse().unwrap(), RESERVE);
        s.add(
            "w1",
            WorkerInfo {
                max_load: 0.85,
                capacity: crate::worker::Capacity {
                    isps: vec!["isp1".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        s.update_load("w1", 0.1);
        let pref = Preference {
            isp: "isp2".into(),
            ..Default::default()
        };
        assert_eq!(
            s.schedule("t", &pref, None, t0).unwrap_err(),
            ScheduleError::NoMatch
        );
        let pref = Preference {
            isp: "isp1".into(),
            ..Default::default()
        };
        assert_eq!(s.schedule("t", &pref, None, t0).unwrap().0, "w1");
    }

    #[test]
    fn least_used_with_every_load_at_one_is_full() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Matcher::General, Strategy::LeastUsed, RESERVE);
        s.add(
            "w",
            WorkerInfo {
                max_load: 2.0,
                ..Default::default()
            },
        );
        s.update_load("w", 1.0);
        assert_eq!(
            sched(&mut s, "t", None, t0),
            Err(ScheduleError::NoneAvailable)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reservation_expiry_under_paused_tokio_time() {
        let mut s = scheduler("round-robin");
        ready(&mut s, "w1", 0.1);
        sched(&mut s, "t", Some(30_000), Instant::now()).unwrap();
        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert!(s.scheduled("t", Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(s.scheduled("t", Instant::now()).is_none());
    }
}
