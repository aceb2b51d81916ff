//! The agent's shared state: its node pool (with a signal on every change,
//! which `GetNode` waits on), the control channels of its node processes,
//! and its cluster membership.

use crate::config::Config;
use crate::pool::{self, NodePool};
use crate::supervisor::Control;
use conclave_common::cluster_worker::ClusterWorker;
use conclave_common::load::ManualLoad;
use conclave_common::purpose::Purpose;
use conclave_common::sync::Locked;
use conclave_proto::cluster::v1 as cluster;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Why a node taken for a room cannot serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NodeWait {
    /// It exited or is being stopped.
    #[error("node early recycled")]
    EarlyRecycled,
    /// It did not report ready within `node_ready_timeout`; it is killed.
    #[error("node not ready")]
    NotReady,
}

/// The node pool, locked. Changing it (any `&mut` use) signals the pool's
/// watchers when the lock is released, so a `GetNode` waiting for its node
/// to be ready wakes at once instead of polling.
pub struct PoolGuard<'a> {
    pool: MutexGuard<'a, NodePool>,
    changed: &'a watch::Sender<u64>,
    touched: bool,
}

impl Deref for PoolGuard<'_> {
    type Target = NodePool;

    fn deref(&self) -> &NodePool {
        &self.pool
    }
}

impl DerefMut for PoolGuard<'_> {
    fn deref_mut(&mut self) -> &mut NodePool {
        self.touched = true;
        &mut self.pool
    }
}

impl Drop for PoolGuard<'_> {
    fn drop(&mut self) {
        if self.touched {
            self.changed
                .send_modify(|version| *version = version.wrapping_add(1));
        }
    }
}

/// The agent's shared state.
pub struct Agent {
    pub(crate) config: Config,
    pub(crate) node_binary: PathBuf,
    pub(crate) advertised_host: String,
    pool: Mutex<NodePool>,
    /// Bumped whenever the pool changes.
    pool_changed: watch::Sender<u64>,
    controls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    worker: OnceLock<ClusterWorker>,
    pub(crate) node_load: ManualLoad,
    spawning: AtomicBool,
    shutting_down: AtomicBool,
}

impl Agent {
    pub fn new(config: Config, node_binary: PathBuf, advertised_host: String) -> Agent {
        Agent {
            pool: Mutex::new(NodePool::new(
                "",
                config.agent.prerun_processes as usize,
                config.max_processes(),
            )),
            pool_changed: watch::Sender::new(0),
            node_binary,
            advertised_host,
            controls: Mutex::new(HashMap::new()),
            worker: OnceLock::new(),
            node_load: ManualLoad::new(0.0),
            spawning: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            config,
        }
    }

    pub fn pool(&self) -> PoolGuard<'_> {
        PoolGuard {
            pool: self.pool.locked(),
            changed: &self.pool_changed,
            touched: false,
        }
    }

    /// A receiver that sees every later change of the pool.
    pub fn pool_changes(&self) -> watch::Receiver<u64> {
        self.pool_changed.subscribe()
    }

    /// Wait until node `id` is ready (OWT polls for 1.5 s; here the pool's
    /// change signal wakes the wait), within `node_ready_timeout`; its
    /// endpoint. A node not ready in time is killed.
    pub async fn node_ready(&self, id: &str) -> Result<String, NodeWait> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.agent.node_ready_timeout);
        let mut changes = self.pool_changes();
        loop {
            changes.borrow_and_update();
            match self.pool().node(id) {
                None => return Err(NodeWait::EarlyRecycled),
                Some(n) if n.state == pool::NodeState::Stopping => {
                    return Err(NodeWait::EarlyRecycled);
                }
                Some(n) => {
                    if let Some(endpoint) = &n.endpoint {
                        return Ok(endpoint.clone());
                    }
                }
            }
            let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                self.control(id, Control::Kill);
                return Err(NodeWait::NotReady);
            }
        }
    }

    /// Node ids are `<worker id>_<n>`: known once the agent joined.
    pub(crate) fn name_nodes_after(&self, worker_id: &str) {
        *self.pool() = NodePool::new(
            worker_id,
            self.config.agent.prerun_processes as usize,
            self.config.max_processes(),
        );
    }

    pub(crate) fn set_worker(&self, worker: ClusterWorker) {
        let _ = self.worker.set(worker);
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.set_spawning(false);
    }

    pub(crate) fn controls(
        &self,
    ) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Control>>> {
        self.controls.locked()
    }

    pub fn worker(&self) -> Option<&ClusterWorker> {
        self.worker.get()
    }

    pub(crate) fn set_spawning(&self, on: bool) {
        self.spawning.store(on, Ordering::SeqCst);
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Start nodes until `prerunProcesses` are idle, within `maxProcesses`.
    pub fn fill(self: &Arc<Self>) {
        if !self.spawning.load(Ordering::SeqCst) {
            return;
        }
        let ids: Vec<String> = {
            let mut pool = self.pool();
            (0..pool.to_spawn()).map(|_| pool.add_node()).collect()
        };
        for id in ids {
            self.spawn_node(id);
        }
    }

    pub(crate) fn update_load(&self) {
        {
            use conclave_common::metrics::gauge;
            let pool = self.pool();
            let starting = pool
                .nodes()
                .filter(|n| n.state == pool::NodeState::Starting && n.room.is_none())
                .count();
            gauge!("agent_nodes", "state" => "idle")
                .set(pool.idle().saturating_sub(starting) as f64);
            gauge!("agent_nodes", "state" => "starting").set(starting as f64);
            gauge!("agent_nodes", "state" => "in_use").set(pool.in_use() as f64);
        }
        if let Some(load) = self.pool().load()
            && self.config.counts_nodes()
        {
            self.node_load.set(load);
        }
    }

    /// A node process ended: forget it, lay down its room task, tell the
    /// cluster (unless the agent itself is stopping), refill the pool.
    pub(crate) async fn node_exited(
        self: &Arc<Self>,
        id: &str,
        status: Option<ExitStatus>,
        asked: bool,
    ) {
        self.controls().remove(id);
        let Some(node) = self.pool().remove(id) else {
            return;
        };
        let clean = asked || status.is_some_and(|s| s.success());
        let reason = if clean { "quit" } else { "abnormal" };
        conclave_common::metrics::counter!("agent_node_exits_total", "reason" => reason)
            .increment(1);
        if clean {
            tracing::info!(node = %id, room = ?node.room, ?status, "conference node exited");
        } else {
            tracing::warn!(node = %id, room = ?node.room, ?status, "conference node exited abnormally");
        }
        self.update_load();
        if self.shutting_down() {
            return;
        }
        if let Some(worker) = self.worker() {
            for task in &node.tasks {
                if let Err(e) = worker.remove_task(task).await {
                    tracing::warn!(task = %task, error = %e, "laying down the room task failed");
                }
            }
            let mut manager = worker.manager();
            let report = cluster::ReportNodeExitRequest {
                worker_id: worker.id().to_string(),
                node_id: id.to_string(),
                purpose: Purpose::Conference.to_string(),
                reason: reason.into(),
                tasks: Vec::new(),
            };
            if let Err(status) = manager.report_node_exit(report).await {
                tracing::warn!(node = %id, error = %status.message(), "reporting the node exit failed");
            }
        }
        self.fill();
    }

    /// The cluster gave `task` (a room) to another agent, which executes
    /// it (this agent was counted out meanwhile and the room was rebuilt
    /// there): the nodes holding it let go of it, and one left with no
    /// task stops. Its exit is reported, so the portals whose participants
    /// are still on it move them to the room's node.
    pub(crate) fn let_go_of(&self, task: &str) {
        let holding = self.pool().holding(task);
        for (id, room) in holding {
            let recycled = self.pool().recycle(&id, &room, task);
            if recycled.stop_node {
                tracing::warn!(node = %id, %room, "another agent serves this room now; stopping its node here");
                self.control(&id, Control::Stop);
            }
        }
    }

    /// Kill every node (cluster loss, OWT `dropAllNodes`).
    pub(crate) fn drop_all_nodes(&self) {
        for id in self.pool().ids() {
            self.control(&id, Control::Kill);
        }
    }

    /// Stop every node gracefully and wait (bounded) until they are gone.
    pub(crate) async fn stop_all_nodes(&self) {
        let ids = self.pool().ids();
        for id in &ids {
            self.pool().mark_stopping(id);
            self.control(id, Control::Stop);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while !self.controls().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        Agent::new(
            Config::default(),
            PathBuf::from("conference"),
            "127.0.0.1".into(),
        )
    }

    /// An agent with one node taken for "room", not ready yet, and the
    /// control channel its supervisor would read.
    fn with_starting_node() -> (Arc<Agent>, String, mpsc::UnboundedReceiver<Control>) {
        let agent = Arc::new(agent());
        agent.name_nodes_after("conference-1@h");
        let id = agent.pool().add_node();
        agent.pool().take_for_room("room", "room").unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        agent.controls().insert(id.clone(), tx);
        (agent, id, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn get_node_waits_for_readiness_without_polling() {
        let (agent, id, _controls) = with_starting_node();
        let ready = agent.clone();
        let node = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ready.pool().mark_ready(&node, "127.0.0.1:9".into());
        });
        let started = tokio::time::Instant::now();
        assert_eq!(agent.node_ready(&id).await, Ok("127.0.0.1:9".to_string()));
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(300),
            "woken at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_not_ready_in_time_is_killed() {
        let (agent, id, mut controls) = with_starting_node();
        let timeout = Duration::from_millis(agent.config.agent.node_ready_timeout);
        let started = tokio::time::Instant::now();
        assert_eq!(agent.node_ready(&id).await, Err(NodeWait::NotReady));
        assert_eq!(started.elapsed(), timeout);
        assert_eq!(controls.try_recv(), Ok(Control::Kill));
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_exits_while_starting_is_early_recycled() {
        let (agent, id, _controls) = with_starting_node();
        let gone = agent.clone();
        let node = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            gone.pool().remove(&node);
        });
        assert_eq!(agent.node_ready(&id).await, Err(NodeWait::EarlyRecycled));
        let (agent, id, _controls) = with_starting_node();
        agent.pool().mark_stopping(&id);
        assert_eq!(agent.node_ready(&id).await, Err(NodeWait::EarlyRecycled));
    }

    #[tokio::test]
    async fn changing_the_pool_wakes_its_watchers_and_reading_does_not() {
        let agent = agent();
        agent.name_nodes_after("conference-1@h");
        let mut changes = agent.pool_changes();
        changes.borrow_and_update();
        let _ = agent.pool().idle();
        assert!(!changes.has_changed().unwrap(), "a read is no change");
        let id = agent.pool().add_node();
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        let (taken, _) = agent.pool().take_for_room("room", "room").unwrap();
        assert_eq!(taken, id);
        changes.borrow_and_update();
        // a waiter wakes as soon as the node is ready
        let waiter = tokio::spawn(async move {
            changes.changed().await.unwrap();
        });
        tokio::task::yield_now().await;
        assert!(agent.pool().mark_ready(&id, "127.0.0.1:1".into()));
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken without polling")
            .unwrap();
        assert_eq!(
            agent.pool().node(&id).unwrap().endpoint.as_deref(),
            Some("127.0.0.1:1")
        );
    }
}
