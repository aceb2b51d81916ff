//! The gRPC adapter: `agent.v1.NodeManager` over the agent's node pool.

use crate::Agent;
use crate::agent::NodeWait;
use crate::pool::{NodeState, PoolError};
use crate::supervisor::Control;
use conclave_proto::agent::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Longest room or task id accepted.
const MAX_ID_LEN: usize = 1024;

#[derive(Clone)]
pub struct NodeManagerService {
    agent: Arc<Agent>,
}

impl NodeManagerService {
    pub fn new(agent: Arc<Agent>) -> Self {
        NodeManagerService { agent }
    }
}

fn pool_status(e: PoolError) -> Status {
    match e {
        PoolError::InvalidTask => Status::invalid_argument(e.to_string()),
        PoolError::NotFound => Status::resource_exhausted(e.to_string()),
    }
}

fn state(s: NodeState) -> pb::node_info::State {
    match s {
        NodeState::Starting => pb::node_info::State::Starting,
        NodeState::Idle => pb::node_info::State::Idle,
        NodeState::InUse => pb::node_info::State::InUse,
        NodeState::Stopping => pb::node_info::State::Stopping,
    }
}

#[tonic::async_trait]
impl pb::node_manager_server::NodeManager for NodeManagerService {
    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeReply>, Status> {
        let r = req.into_inner();
        if r.room.len() > MAX_ID_LEN || r.task.len() > MAX_ID_LEN {
            return Err(pool_status(PoolError::InvalidTask));
        }
        let agent = &self.agent;
        let worker = agent
            .worker()
            .ok_or_else(|| Status::unavailable("agent not ready"))?;
        let (node_id, newly) = agent
            .pool()
            .take_for_room(&r.room, &r.task)
            .map_err(pool_status)?;
        conclave_common::trace::record(&[
            ("room", &r.room),
            ("worker", worker.id()),
            ("node", &node_id),
        ]);
        if newly {
            tracing::info!("node taken for room");
            agent.update_load();
            let refill = agent.clone();
            tokio::spawn(async move { refill.fill() });
        }
        let endpoint = agent.node_ready(&node_id).await.map_err(|e| {
            if e == NodeWait::NotReady {
                tracing::warn!(node = %node_id, "node not ready in time; killing it");
            }
            Status::unavailable(e.to_string())
        })?;
        if agent.pool().add_task(&node_id, &r.task) {
            match worker.add_task(&r.task).await {
                Ok(()) => {}
                Err(conclave_common::cluster_worker::WorkerError::TaskRefused { .. }) => {
                    // another agent serves the room: this node must not
                    agent.let_go_of(&r.task);
                    return Err(Status::failed_precondition(format!(
                        "room {} {}; schedule it again",
                        r.room,
                        conclave_common::cluster_worker::SERVED_ELSEWHERE
                    )));
                }
                Err(e) => {
                    tracing::warn!(task = %r.task, error = %e, "announcing the room task failed")
                }
            }
        }
        Ok(Response::new(pb::GetNodeReply { node_id, endpoint }))
    }

    async fn recycle_node(
        &self,
        req: Request<pb::RecycleNodeRequest>,
    ) -> Result<Response<pb::RecycleNodeReply>, Status> {
        let r = req.into_inner();
        let recycled = self.agent.pool().recycle(&r.node_id, &r.room, &r.task);
        if recycled.task_done
            && let Some(worker) = self.agent.worker()
            && let Err(e) = worker.remove_task(&r.task).await
        {
            tracing::warn!(task = %r.task, error = %e, "laying down the room task failed");
        }
        if recycled.stop_node {
            tracing::info!(node = %r.node_id, "node recycled; stopping it");
            self.agent.control(&r.node_id, Control::Stop);
        }
        Ok(Response::new(pb::RecycleNodeReply {}))
    }

    async fn query_node(
        &self,
        req: Request<pb::QueryNodeRequest>,
    ) -> Result<Response<pb::QueryNodeReply>, Status> {
        let room = req.into_inner().room;
        let pool = self.agent.pool();
        let node = pool
            .query(&room)
            .ok_or_else(|| Status::not_found("No such a task"))?;
        Ok(Response::new(pb::QueryNodeReply {
            node_id: node.id.clone(),
            endpoint: node.endpoint.clone().unwrap_or_default(),
        }))
    }

    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesReply>, Status> {
        let pool = self.agent.pool();
        let nodes = pool
            .nodes()
            .map(|n| pb::NodeInfo {
                node_id: n.id.clone(),
                state: state(n.state) as i32,
                room: n.room.clone().unwrap_or_default(),
                endpoint: n.endpoint.clone().unwrap_or_default(),
                pid: n.pid.unwrap_or_default(),
                tasks: n.tasks.clone(),
                metrics_endpoint: n.metrics_endpoint.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListNodesReply { nodes }))
    }
}
