//! Node-pool bookkeeping (OWT §8.2–8.4) for a conference agent: which nodes
//! exist, which are warm and idle, which room each serves. One room per node
//! and no node reused for a second room (OWT's `reuseNode=false`,
//! `consumeNodeByRoom=true`). Plain data: the supervisor spawns and kills.

use indexmap::IndexMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Spawned, not yet ready.
    Starting,
    /// Ready, serving no room.
    Idle,
    /// Serving a room (or taken for one and still starting).
    InUse,
    /// Being stopped.
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub state: NodeState,
    pub room: Option<String>,
    pub tasks: Vec<String>,
    /// host:port once ready.
    pub endpoint: Option<String>,
    pub pid: Option<u32>,
    /// host:port of the node's /metrics.
    pub metrics_endpoint: Option<String>,
    /// When the node was spawned (its start time is measured to readiness).
    pub spawned: std::time::Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("Invalid task")]
    InvalidTask,
    #[error("Not found")]
    NotFound,
}

/// What recycling a room's task did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recycled {
    /// The task is no longer held by the node: lay it down.
    pub task_done: bool,
    /// The node has nothing left: stop it.
    pub stop_node: bool,
}

#[derive(Debug)]
pub struct NodePool {
    agent_id: String,
    next_index: u64,
    nodes: IndexMap<String, Node>,
    prerun: usize,
    max: Option<usize>,
}

impl NodePool {
    pub fn new(agent_id: &str, prerun: usize, max: Option<usize>) -> Self {
        NodePool {
            agent_id: agent_id.to_string(),
            next_index: 0,
            nodes: IndexMap::new(),
            prerun,
            max,
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    fn count(&self, f: impl Fn(&Node) -> bool) -> usize {
        self.nodes.values().filter(|n| f(n)).count()
    }

    /// Nodes warm or warming, free for a room.
    pub fn idle(&self) -> usize {
        self.count(|n| n.room.is_none() && matches!(n.state, NodeState::Starting | NodeState::Idle))
    }

    pub fn in_use(&self) -> usize {
        self.count(|n| n.room.is_some() && n.state != NodeState::Stopping)
    }

    /// How many nodes to start now to keep `prerun` idle ones, within `max`
    /// (OWT `fillNodes`).
    pub fn to_spawn(&self) -> usize {
        let space = self.prerun.saturating_sub(self.idle());
        match self.max {
            None => space,
            Some(max) => space.min(max.saturating_sub(self.nodes.len())),
        }
    }

    /// Record a new node being started; returns its id `<agent>_<n>`.
    pub fn add_node(&mut self) -> String {
        let id = format!("{}_{}", self.agent_id, self.next_index);
        self.next_index += 1;
        self.nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                state: NodeState::Starting,
                room: None,
                tasks: Vec::new(),
                endpoint: None,
                pid: None,
                metrics_endpoint: None,
                spawned: std::time::Instant::now(),
            },
        );
        id
    }

    pub fn set_metrics_endpoint(&mut self, id: &str, endpoint: String) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.metrics_endpoint = Some(endpoint);
        }
    }

    pub fn set_pid(&mut self, id: &str, pid: u32) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.pid = Some(pid);
        }
    }

    /// The node serves at `endpoint`. False when it is no longer tracked.
    pub fn mark_ready(&mut self, id: &str, endpoint: String) -> bool {
        let Some(n) = self.nodes.get_mut(id) else {
            return false;
        };
        n.endpoint = Some(endpoint);
        if n.state == NodeState::Starting {
            n.state = if n.room.is_some() {
                NodeState::InUse
            } else {
                NodeState::Idle
            };
        }
        true
    }

    /// The node already serving `room`, else the first free one (ready or
    /// not) taken for it. The flag says whether a node was newly taken.
    pub fn take_for_room(&mut self, room: &str, task: &str) -> Result<(String, bool), PoolError> {
        if room.is_empty() || task.is_empty() {
            return Err(PoolError::InvalidTask);
        }
        if let Some(n) = self
            .nodes
            .values()
            .find(|n| n.room.as_deref() == Some(room) && n.state != NodeState::Stopping)
        {
            return Ok((n.id.clone(), false));
        }
        let free = self
            .nodes
            .values_mut()
            .find(|n| n.room.is_none() && matches!(n.state, NodeState::Idle | NodeState::Starting))
            .ok_or(PoolError::NotFound)?;
        free.room = Some(room.to_string());
        if free.state == NodeState::Idle {
            free.state = NodeState::InUse;
        }
        Ok((free.id.clone(), true))
    }

    /// Record `task` on the node; true the first time (announce it).
    pub fn add_task(&mut self, id: &str, task: &str) -> bool {
        match self.nodes.get_mut(id) {
            Some(n) if !n.tasks.iter().any(|t| t == task) => {
                n.tasks.push(task.to_string());
                true
            }
            _ => false,
        }
    }

    /// OWT `recycleNode`: drop the task from the node's room; a node left
    /// without tasks is stopped (never reused for another room).
    pub fn recycle(&mut self, id: &str, room: &str, task: &str) -> Recycled {
        let Some(n) = self.nodes.get_mut(id) else {
            return Recycled::default();
        };
        if n.room.as_deref() != Some(room) {
            return Recycled::default();
        }
        let mut out = Recycled::default();
        if let Some(pos) = n.tasks.iter().position(|t| t == task) {
            n.tasks.remove(pos);
            out.task_done = true;
        }
        if n.tasks.is_empty() {
            n.state = NodeState::Stopping;
            out.stop_node = true;
        }
        out
    }

    pub fn mark_stopping(&mut self, id: &str) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.state = NodeState::Stopping;
        }
    }

    /// Forget a node that exited; returns what it was.
    pub fn remove(&mut self, id: &str) -> Option<Node> {
        self.nodes.shift_remove(id)
    }

    /// The node serving `room` (OWT `queryNode`).
    pub fn query(&self, room: &str) -> Option<&Node> {
        self.nodes
            .values()
            .find(|n| n.room.as_deref() == Some(room) && n.state != NodeState::Stopping)
    }

    /// Nodes in use / max, when bounded.
    pub fn load(&self) -> Option<f64> {
        self.max.map(|max| self.in_use() as f64 / max as f64)
    }

    pub fn ids(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The nodes holding `task`, with their rooms.
    pub fn holding(&self, task: &str) -> Vec<(String, String)> {
        self.nodes
            .values()
            .filter(|n| n.tasks.iter().any(|t| t == task))
            .map(|n| (n.id.clone(), n.room.clone().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: &mut NodePool) -> Vec<String> {
        (0..p.to_spawn()).map(|_| p.add_node()).collect()
    }

    #[test]
    fn keeps_prerun_idle_nodes_with_owt_ids() {
        let mut p = NodePool::new("conference-abc@h", 2, None);
        assert_eq!(p.to_spawn(), 2);
        assert_eq!(fill(&mut p), ["conference-abc@h_0", "conference-abc@h_1"]);
        assert_eq!(p.to_spawn(), 0);
        let (id, newly) = p.take_for_room("room-1", "room-1").unwrap();
        assert!(newly);
        assert_eq!(id, "conference-abc@h_0");
        assert_eq!(p.to_spawn(), 1, "refill after a node is taken");
        assert_eq!(fill(&mut p), ["conference-abc@h_2"]);
    }

    #[test]
    fn never_exceeds_max() {
        let mut p = NodePool::new("a", 2, Some(3));
        fill(&mut p);
        p.take_for_room("r1", "r1").unwrap();
        assert_eq!(fill(&mut p).len(), 1);
        p.take_for_room("r2", "r2").unwrap();
        assert_eq!(p.to_spawn(), 0, "3 nodes exist, max 3");
        p.take_for_room("r3", "r3").unwrap();
        assert_eq!(p.take_for_room("r4", "r4"), Err(PoolError::NotFound));
        assert_eq!(p.load(), Some(1.0));
    }

    #[test]
    fn one_room_per_node_and_the_same_room_gets_the_same_node() {
        let mut p = NodePool::new("a", 2, None);
        fill(&mut p);
        let (n1, _) = p.take_for_room("r1", "r1").unwrap();
        let (again, newly) = p.take_for_room("r1", "r1").unwrap();
        assert_eq!((again.as_str(), newly), (n1.as_str(), false));
        let (n2, _) = p.take_for_room("r2", "r2").unwrap();
        assert_ne!(n1, n2);
        assert_eq!(p.query("r1").unwrap().id, n1);
        assert!(p.query("r9").is_none());
    }

    #[test]
    fn readiness_moves_state() {
        let mut p = NodePool::new("a", 2, None);
        let ids = fill(&mut p);
        assert_eq!(p.node(&ids[0]).unwrap().state, NodeState::Starting);
        // taken while starting: in use once ready
        p.take_for_room("r", "r").unwrap();
        assert!(p.mark_ready(&ids[0], "h:1".into()));
        assert_eq!(p.node(&ids[0]).unwrap().state, NodeState::InUse);
        assert!(p.mark_ready(&ids[1], "h:2".into()));
        assert_eq!(p.node(&ids[1]).unwrap().state, NodeState::Idle);
        assert!(!p.mark_ready("ghost", "h:3".into()));
        assert_eq!((p.idle(), p.in_use()), (1, 1));
    }

    #[test]
    fn tasks_are_announced_once_and_recycling_stops_the_node() {
        let mut p = NodePool::new("a", 1, None);
        fill(&mut p);
        let (id, _) = p.take_for_room("r", "r").unwrap();
        assert!(p.add_task(&id, "r"));
        assert!(!p.add_task(&id, "r"));
        assert_eq!(p.recycle(&id, "other", "r"), Recycled::default());
        let r = p.recycle(&id, "r", "r");
        assert_eq!(
            r,
            Recycled {
                task_done: true,
                stop_node: true
            }
        );
        assert_eq!(p.node(&id).unwrap().state, NodeState::Stopping);
        assert!(p.query("r").is_none(), "a stopping node serves nothing");
        assert_eq!(p.remove(&id).unwrap().tasks, Vec::<String>::new());
        assert!(p.remove(&id).is_none());
    }

    #[test]
    fn invalid_requests() {
        let mut p = NodePool::new("a", 1, None);
        assert_eq!(p.take_for_room("", "t"), Err(PoolError::InvalidTask));
        assert_eq!(p.take_for_room("r", ""), Err(PoolError::InvalidTask));
        assert_eq!(
            p.take_for_room("r", "r"),
            Err(PoolError::NotFound),
            "no node yet"
        );
    }
}
