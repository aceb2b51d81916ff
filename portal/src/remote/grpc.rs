//! The remotes over gRPC: lazy channels (cached by address), deadlines
//! from configuration, proto to domain types.

use super::{
    Admission, AgentRef, Controller, Deadlines, Grant, Joiner, Origin, RemoteError, Remotes,
};
use conclave_common::cluster_worker::ClusterWorker;
use conclave_common::grpc::{Channel, request};
use conclave_common::purpose::Purpose;
use conclave_common::sync::Locked;
use conclave_proto::agent::v1 as agent;
use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::conference::v1 as conf;
use conclave_proto::conference::v1::conference_client::ConferenceClient;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The real remotes over gRPC.
pub struct GrpcRemotes {
    deadlines: Deadlines,
    management: ManagementClient<Channel>,
    manager: ClusterManagerClient<Channel>,
    /// Lazy channels to agents and nodes, by address.
    channels: Mutex<HashMap<String, Channel>>,
    /// This portal as nodes know it: its worker (set once it joined the
    /// cluster) and its `portal.v1` address.
    worker: OnceLock<ClusterWorker>,
    endpoint: OnceLock<String>,
}

impl GrpcRemotes {
    pub fn new(
        management: &str,
        manager: &str,
        deadlines: Deadlines,
    ) -> Result<GrpcRemotes, conclave_common::grpc::GrpcError> {
        let rpc = deadlines.rpc;
        Ok(GrpcRemotes {
            deadlines,
            management: ManagementClient::new(conclave_common::grpc::channel(management, rpc)?),
            manager: ClusterManagerClient::new(conclave_common::grpc::channel(manager, rpc)?),
            channels: Mutex::new(HashMap::new()),
            worker: OnceLock::new(),
            endpoint: OnceLock::new(),
        })
    }

    /// This portal's `portal.v1` address, as nodes reach it.
    pub fn set_endpoint(&self, endpoint: String) {
        let _ = self.endpoint.set(endpoint);
    }

    pub fn endpoint(&self) -> &str {
        self.endpoint.get().map(String::as_str).unwrap_or_default()
    }

    pub fn set_worker(&self, worker: ClusterWorker) {
        let _ = self.worker.set(worker);
    }

    pub fn worker(&self) -> Option<&ClusterWorker> {
        self.worker.get()
    }

    fn channel(&self, endpoint: &str, target: &str) -> Result<Channel, RemoteError> {
        let mut channels = self.channels.locked();
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let c = conclave_common::grpc::channel(endpoint, self.deadlines.rpc).map_err(|_| {
            RemoteError::Unreachable {
                target: target.to_string(),
            }
        })?;
        channels.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    fn conference(
        &self,
        controller: &Controller,
    ) -> Result<ConferenceClient<Channel>, RemoteError> {
        Ok(ConferenceClient::new(
            self.channel(&controller.endpoint, &controller.node)?,
        ))
    }

    fn task_worker(&self) -> Result<&ClusterWorker, RemoteError> {
        self.worker.get().ok_or_else(|| RemoteError::Unreachable {
            target: "cluster manager".into(),
        })
    }
}

fn media(m: Option<conf::MediaPermission>) -> Value {
    let m = m.unwrap_or_default();
    json!({"audio": m.audio, "video": m.video})
}

#[tonic::async_trait]
impl Remotes for GrpcRemotes {
    async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError> {
        let grant = self
            .management
            .clone()
            .consume_token(request(
                mgmt::ConsumeTokenRequest {
                    token_id: token_id.to_string(),
                },
                self.deadlines.rpc,
            ))
            .await
            .map_err(|s| RemoteError::from_status("management", "ConsumeToken", s))?
            .into_inner();
        let origin = grant.origin.unwrap_or_default();
        Ok(Grant {
            code: grant.code,
            user: grant.user,
            role: grant.role,
            room: grant.room_id,
            origin: Origin {
                isp: origin.isp,
                region: origin.region,
            },
        })
    }

    async fn schedule_room(&self, room: &str) -> Result<AgentRef, RemoteError> {
        let scheduled = self
            .manager
            .clone()
            .schedule(request(
                cluster::ScheduleRequest {
                    purpose: Purpose::Conference.to_string(),
                    task: room.to_string(),
                    preference: None,
                    reserve_time_ms: 30_000,
                },
                self.deadlines.rpc,
            ))
            .await
            .map_err(|s| RemoteError::from_status("cluster manager", "schedule", s))?
            .into_inner();
        let endpoint = scheduled.info.map(|i| i.grpc_endpoint).unwrap_or_default();
        if endpoint.is_empty() {
            return Err(RemoteError::Unreachable {
                target: scheduled.id,
            });
        }
        Ok(AgentRef {
            id: scheduled.id,
            endpoint,
        })
    }

    async fn get_node(&self, agent: &AgentRef, room: &str) -> Result<Controller, RemoteError> {
        let node = NodeManagerClient::new(self.channel(&agent.endpoint, &agent.id)?)
            .get_node(request(
                agent::GetNodeRequest {
                    room: room.to_string(),
                    task: room.to_string(),
                },
                self.deadlines.get_node,
            ))
            .await
            .map_err(|s| RemoteError::from_status(&agent.id, "getNode", s))?
            .into_inner();
        Ok(Controller {
            node: node.node_id,
            endpoint: node.endpoint,
        })
    }

    async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError> {
        let reply = self
            .conference(controller)?
            .join(request(
                conf::JoinRequest {
                    room_id: room.to_string(),
                    participant: Some(conf::ParticipantSpec {
                        id: joiner.participant.clone(),
                        user: joiner.user.clone(),
                        role: joiner.role.clone(),
                        portal: self.worker.get().map(|w| w.id()).unwrap_or_default().into(),
                        origin: Some(conf::Origin {
                            isp: joiner.origin.isp.clone(),
                            region: joiner.origin.region.clone(),
                        }),
                        portal_endpoint: self.endpoint().to_string(),
                    }),
                },
                self.deadlines.join,
            ))
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "join", s))?
            .into_inner();
        let room = serde_json::from_str(&reply.room).map_err(|_| {
            RemoteError::Refused("the conference answered an unreadable room".into())
        })?;
        let permission = reply
            .permission
            .map(|p| json!({"publish": media(p.publish), "subscribe": media(p.subscribe)}))
            .unwrap_or_else(|| json!({}));
        Ok(Admission { permission, room })
    }

    async fn leave(&self, controller: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.conference(controller)?
            .leave(request(
                conf::LeaveRequest {
                    participant_id: participant.to_string(),
                },
                self.deadlines.rpc,
            ))
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "leave", s))?;
        Ok(())
    }

    async fn text(
        &self,
        controller: &Controller,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<(), RemoteError> {
        self.conference(controller)?
            .text(request(
                conf::TextRequest {
                    from: from.to_string(),
                    to: to.to_string(),
                    message: message.to_string(),
                },
                self.deadlines.text,
            ))
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "text", s))?;
        Ok(())
    }

    async fn add_task(&self, code: &str) -> Result<(), RemoteError> {
        self.task_worker()?
            .add_task(code)
            .await
            .map_err(|e| RemoteError::Refused(e.to_string()))
    }

    async fn remove_task(&self, code: &str) -> Result<(), RemoteError> {
        self.task_worker()?
            .remove_task(code)
            .await
            .map_err(|e| RemoteError::Refused(e.to_string()))
    }
}
