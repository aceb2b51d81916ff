//! The remotes over gRPC, one client per service: each owns its channels and
//! its deadlines (from configuration) and converts proto to domain types.
//! [`GrpcRemotes`] puts the four together behind the [`Remotes`] trait.

use super::{
    Admission, AgentRef, ClientSpec, Controller, Deadlines, Grant, Joiner, Kept, Origin,
    RemoteError, Remotes, Seat,
};
use conclave_common::cluster_worker::ClusterWorker;
use conclave_common::grpc::{Channel, GrpcError, request};
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
use conclave_proto::portal::v1 as portal_pb;
use conclave_proto::portal::v1::portal_client::PortalClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Lazy channels to services that come and go (agents, nodes), by address.
struct Channels {
    connect_deadline: Duration,
    by_address: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    fn new(connect_deadline: Duration) -> Channels {
        Channels {
            connect_deadline,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `endpoint`; `target` names it in errors.
    fn to(&self, endpoint: &str, target: &str) -> Result<Channel, RemoteError> {
        let mut channels = self.by_address.locked();
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let c = conclave_common::grpc::channel(endpoint, self.connect_deadline).map_err(|_| {
            RemoteError::Unreachable {
                target: target.to_string(),
            }
        })?;
        channels.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }
}

/// Management: token consumption.
pub struct ManagementRemote {
    client: ManagementClient<Channel>,
    deadline: Duration,
}

impl ManagementRemote {
    pub fn new(address: &str, deadline: Duration) -> Result<Self, GrpcError> {
        Ok(ManagementRemote {
            client: ManagementClient::new(conclave_common::grpc::channel(address, deadline)?),
            deadline,
        })
    }

    pub async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError> {
        let request = request(
            mgmt::ConsumeTokenRequest {
                token_id: token_id.to_string(),
            },
            self.deadline,
        );
        let grant = self
            .client
            .clone()
            .consume_token(request)
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
}

/// The cluster manager: where a room runs, and this portal's own tasks
/// (through its cluster membership, set once it joined).
pub struct ManagerRemote {
    client: ClusterManagerClient<Channel>,
    deadline: Duration,
    worker: OnceLock<ClusterWorker>,
}

impl ManagerRemote {
    pub fn new(address: &str, deadline: Duration) -> Result<Self, GrpcError> {
        Ok(ManagerRemote {
            client: ClusterManagerClient::new(conclave_common::grpc::channel(address, deadline)?),
            deadline,
            worker: OnceLock::new(),
        })
    }

    pub async fn schedule_room(&self, room: &str) -> Result<AgentRef, RemoteError> {
        let request = request(
            cluster::ScheduleRequest {
                purpose: Purpose::Conference.to_string(),
                task: room.to_string(),
                preference: None,
                reserve_time_ms: 30_000,
            },
            self.deadline,
        );
        let scheduled = self
            .client
            .clone()
            .schedule(request)
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

    fn worker(&self) -> Result<&ClusterWorker, RemoteError> {
        self.worker.get().ok_or_else(|| RemoteError::Unreachable {
            target: "cluster manager".into(),
        })
    }

    pub async fn add_task(&self, code: &str) -> Result<(), RemoteError> {
        self.worker()?
            .add_task(code)
            .await
            .map_err(|e| RemoteError::Refused(e.to_string()))
    }

    pub async fn remove_task(&self, code: &str) -> Result<(), RemoteError> {
        self.worker()?
            .remove_task(code)
            .await
            .map_err(|e| RemoteError::Refused(e.to_string()))
    }
}

/// Conference agents: `GetNode`.
pub struct AgentRemote {
    channels: Channels,
    deadline: Duration,
}

impl AgentRemote {
    pub async fn get_node(&self, agent: &AgentRef, room: &str) -> Result<Controller, RemoteError> {
        let request = request(
            agent::GetNodeRequest {
                room: room.to_string(),
                task: room.to_string(),
            },
            self.deadline,
        );
        let node = NodeManagerClient::new(self.channels.to(&agent.endpoint, &agent.id)?)
            .get_node(request)
            .await
            .map_err(|s| RemoteError::from_status(&agent.id, "getNode", s))?
            .into_inner();
        Ok(Controller {
            node: node.node_id,
            endpoint: node.endpoint,
        })
    }
}

/// Conference nodes: join, leave, text. Joins tell the node which portal
/// holds the participant (this one's worker id and `portal.v1` address).
pub struct ConferenceRemote {
    channels: Channels,
    deadlines: Deadlines,
    portal_worker: OnceLock<String>,
    portal_endpoint: OnceLock<String>,
}

fn media(m: Option<conf::MediaPermission>) -> Value {
    let m = m.unwrap_or_default();
    json!({"audio": m.audio, "video": m.video})
}

impl ConferenceRemote {
    fn client(&self, controller: &Controller) -> Result<ConferenceClient<Channel>, RemoteError> {
        Ok(ConferenceClient::new(
            self.channels.to(&controller.endpoint, &controller.node)?,
        ))
    }

    pub async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError> {
        let request = request(
            conf::JoinRequest {
                room_id: room.to_string(),
                participant: Some(conf::ParticipantSpec {
                    id: joiner.participant.clone(),
                    user: joiner.user.clone(),
                    role: joiner.role.clone(),
                    portal: self.portal_worker.get().cloned().unwrap_or_default(),
                    origin: Some(conf::Origin {
                        isp: joiner.origin.isp.clone(),
                        region: joiner.origin.region.clone(),
                    }),
                    portal_endpoint: self.portal_endpoint.get().cloned().unwrap_or_default(),
                    client: Some(conf::ClientSpec {
                        protocol: joiner.client.protocol.clone(),
                        sdk_type: joiner.client.sdk_type.clone(),
                        reconnection: joiner.client.reconnection,
                        token_code: joiner.client.token_code.clone(),
                        message_buffer_size: joiner
                            .client
                            .message_buffer_size
                            .min(u32::MAX as usize)
                            as u32,
                    }),
                }),
            },
            self.deadlines.join,
        );
        let reply = self
            .client(controller)?
            .join(request)
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

    pub async fn leave(
        &self,
        controller: &Controller,
        participant: &str,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::LeaveRequest {
                participant_id: participant.to_string(),
            },
            self.deadlines.rpc,
        );
        self.client(controller)?
            .leave(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "leave", s))?;
        Ok(())
    }

    pub async fn detach(
        &self,
        controller: &Controller,
        participant: &str,
        window: Duration,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::DetachRequest {
                participant_id: participant.to_string(),
                window_ms: window.as_millis().min(u64::MAX as u128) as u64,
            },
            self.deadlines.rpc,
        );
        self.client(controller)?
            .detach(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "detach", s))?;
        Ok(())
    }

    pub async fn reattach(
        &self,
        controller: &Controller,
        participant: &str,
        ticket_id: &str,
    ) -> Result<Seat, RemoteError> {
        let request = request(
            conf::ReattachRequest {
                participant_id: participant.to_string(),
                portal: self.portal_worker.get().cloned().unwrap_or_default(),
                portal_endpoint: self.portal_endpoint.get().cloned().unwrap_or_default(),
                ticket_id: ticket_id.to_string(),
            },
            self.deadlines.join,
        );
        let reply = self
            .client(controller)?
            .reattach(request)
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::NotFound {
                    RemoteError::Refused("Client does NOT exist".into())
                } else {
                    RemoteError::from_status(&controller.node, "reattach", s)
                }
            })?
            .into_inner();
        let participant = reply.participant.unwrap_or_default();
        let client = reply.client.unwrap_or_default();
        let me = self.portal_endpoint.get().map(String::as_str);
        let (previous_portal, previous_endpoint) =
            if me == Some(reply.previous_portal_endpoint.as_str()) {
                (String::new(), String::new())
            } else {
                (reply.previous_portal, reply.previous_portal_endpoint)
            };
        Ok(Seat {
            room: reply.room_id,
            user: participant.user,
            role: participant.role,
            client: ClientSpec {
                protocol: client.protocol,
                sdk_type: client.sdk_type,
                reconnection: client.reconnection,
                token_code: client.token_code,
                message_buffer_size: client.message_buffer_size as usize,
            },
            previous_portal,
            previous_endpoint,
            messages: reply
                .messages
                .into_iter()
                .map(|m| Kept {
                    seq: m.seq,
                    event: m.event,
                    data: serde_json::from_str(&m.data).unwrap_or(Value::Null),
                    missed: m.missed,
                })
                .collect(),
        })
    }

    pub async fn text(
        &self,
        controller: &Controller,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::TextRequest {
                from: from.to_string(),
                to: to.to_string(),
                message: message.to_string(),
            },
            self.deadlines.text,
        );
        self.client(controller)?
            .text(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "text", s))?;
        Ok(())
    }
}

/// Other portals: `Release`.
pub struct PortalRemote {
    channels: Channels,
    deadline: Duration,
}

impl PortalRemote {
    pub async fn release(&self, endpoint: &str, participant: &str) -> Result<(), RemoteError> {
        let request = request(
            portal_pb::ReleaseRequest {
                participant_id: participant.to_string(),
            },
            self.deadline,
        );
        PortalClient::new(self.channels.to(endpoint, endpoint)?)
            .release(request)
            .await
            .map_err(|s| RemoteError::from_status(endpoint, "release", s))?;
        Ok(())
    }
}

/// The remotes of a portal.
pub struct GrpcRemotes {
    pub management: ManagementRemote,
    pub manager: ManagerRemote,
    pub agents: AgentRemote,
    pub conferences: ConferenceRemote,
    pub portals: PortalRemote,
}

impl GrpcRemotes {
    /// Remotes for management at `management` and the cluster manager at
    /// `manager`; agents and nodes are reached at the addresses the
    /// scheduler and agents name.
    pub fn new(management: &str, manager: &str, deadlines: Deadlines) -> Result<Self, GrpcError> {
        Ok(GrpcRemotes {
            management: ManagementRemote::new(management, deadlines.rpc)?,
            manager: ManagerRemote::new(manager, deadlines.rpc)?,
            agents: AgentRemote {
                channels: Channels::new(deadlines.rpc),
                deadline: deadlines.get_node,
            },
            conferences: ConferenceRemote {
                channels: Channels::new(deadlines.rpc),
                deadlines,
                portal_worker: OnceLock::new(),
                portal_endpoint: OnceLock::new(),
            },
            portals: PortalRemote {
                channels: Channels::new(deadlines.rpc),
                deadline: deadlines.rpc,
            },
        })
    }

    /// This portal's `portal.v1` address, as nodes reach it.
    pub fn set_endpoint(&self, endpoint: String) {
        let _ = self.conferences.portal_endpoint.set(endpoint);
    }

    pub fn endpoint(&self) -> &str {
        self.conferences
            .portal_endpoint
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// This portal joined the cluster as `worker`.
    pub fn set_worker(&self, worker: ClusterWorker) {
        let _ = self.conferences.portal_worker.set(worker.id().to_string());
        let _ = self.manager.worker.set(worker);
    }

    pub fn worker(&self) -> Option<&ClusterWorker> {
        self.manager.worker.get()
    }
}

#[tonic::async_trait]
impl Remotes for GrpcRemotes {
    async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError> {
        self.management.consume_token(token_id).await
    }

    async fn schedule_room(&self, room: &str) -> Result<AgentRef, RemoteError> {
        self.manager.schedule_room(room).await
    }

    async fn get_node(&self, agent: &AgentRef, room: &str) -> Result<Controller, RemoteError> {
        self.agents.get_node(agent, room).await
    }

    async fn join(&self, c: &Controller, room: &str, j: &Joiner) -> Result<Admission, RemoteError> {
        self.conferences.join(c, room, j).await
    }

    async fn leave(&self, c: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.conferences.leave(c, participant).await
    }

    async fn text(&self, c: &Controller, from: &str, to: &str, m: &str) -> Result<(), RemoteError> {
        self.conferences.text(c, from, to, m).await
    }

    async fn detach(&self, c: &Controller, p: &str, window: Duration) -> Result<(), RemoteError> {
        self.conferences.detach(c, p, window).await
    }

    async fn reattach(&self, c: &Controller, p: &str, ticket: &str) -> Result<Seat, RemoteError> {
        self.conferences.reattach(c, p, ticket).await
    }

    async fn release(&self, endpoint: &str, participant: &str) -> Result<(), RemoteError> {
        self.portals.release(endpoint, participant).await
    }

    async fn add_task(&self, code: &str) -> Result<(), RemoteError> {
        self.manager.add_task(code).await
    }

    async fn remove_task(&self, code: &str) -> Result<(), RemoteError> {
        self.manager.remove_task(code).await
    }
}
