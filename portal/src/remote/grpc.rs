//! The remotes over gRPC, one client per service: each owns its channels and
//! its deadlines (from configuration) and converts proto to domain types.
//! [`GrpcRemotes`] puts the four together behind the [`Remotes`] trait.

use super::batch::Batches;
use super::conference::ConferenceRemote;
use super::{
    Admission, AgentRef, Controller, Deadlines, Grant, Joiner, Origin, RemoteError, Remotes,
    Restorable, Seat,
};
use conclave_common::cluster_worker::ClusterWorker;
use conclave_common::grpc::{Channel, GrpcError, request};
use conclave_common::purpose::Purpose;
use conclave_common::sync::Locked;
use conclave_proto::agent::v1 as agent;
use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_proto::portal::v1 as portal_pb;
use conclave_proto::portal::v1::portal_client::PortalClient;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Lazy channels to services that come and go (agents, nodes), by address.
pub(super) struct Channels {
    connect_deadline: Duration,
    by_address: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    pub(super) fn new(connect_deadline: Duration) -> Channels {
        Channels {
            connect_deadline,
            by_address: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `endpoint`; `target` names it in errors.
    pub(super) fn to(&self, endpoint: &str, target: &str) -> Result<Channel, RemoteError> {
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
    /// Management's replicas (a comma-separated `management`).
    replicas: conclave_common::grpc::Failover,
    deadline: Duration,
    /// Logins that come while a consumption is on its way go together in
    /// the next call (`ConsumeTokens`).
    consumptions: Batches<String, Result<Grant, RemoteError>>,
    /// Management answered `ConsumeTokens` with UNIMPLEMENTED (an older
    /// release): one `ConsumeToken` per token from then on.
    no_batches: std::sync::atomic::AtomicBool,
}

impl ManagementRemote {
    pub fn new(addresses: &str, deadline: Duration) -> Result<Self, GrpcError> {
        Ok(ManagementRemote {
            replicas: conclave_common::grpc::Failover::new(addresses, deadline)?,
            deadline,
            consumptions: Batches::new(|| {
                Err(RemoteError::Unreachable {
                    target: "management".into(),
                })
            }),
            no_batches: Default::default(),
        })
    }

    pub async fn consume_token(&self, token_id: &str) -> Result<Grant, RemoteError> {
        self.consumptions
            .call(token_id.to_string(), |ids| self.consume_batch(ids))
            .await
    }

    /// One call for `ids`: `ConsumeToken` for one, `ConsumeTokens` for more.
    async fn consume_batch(&self, ids: Vec<String>) -> Vec<Result<Grant, RemoteError>> {
        use std::sync::atomic::Ordering;
        if ids.len() == 1 || self.no_batches.load(Ordering::Relaxed) {
            return self.consume_each(&ids).await;
        }
        let n = ids.len();
        let reply = self
            .replicas
            .call(|channel| {
                let request = request(
                    mgmt::ConsumeTokensRequest {
                        token_ids: ids.clone(),
                    },
                    self.deadline,
                );
                async move { ManagementClient::new(channel).consume_tokens(request).await }
            })
            .await;
        match reply {
            Ok(reply) => {
                let mut outcomes: Vec<_> = reply
                    .into_inner()
                    .tokens
                    .into_iter()
                    .map(|t| match t.grant {
                        Some(grant) if t.code == 0 => Ok(to_grant(grant)),
                        _ => Err(RemoteError::from_status(
                            "management",
                            "ConsumeToken",
                            tonic::Status::new(tonic::Code::from(t.code), t.message),
                        )),
                    })
                    .collect();
                if outcomes.len() != n {
                    tracing::warn!(
                        asked = n,
                        answered = outcomes.len(),
                        "management answered another number of tokens"
                    );
                    outcomes.resize_with(n, || {
                        Err(RemoteError::Refused(
                            "management did not answer this token".into(),
                        ))
                    });
                }
                outcomes
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "management has no ConsumeTokens (an older release): one call per token"
                );
                self.no_batches.store(true, Ordering::Relaxed);
                self.consume_each(&ids).await
            }
            Err(status) => (0..n)
                .map(|_| {
                    Err(RemoteError::from_status(
                        "management",
                        "ConsumeTokens",
                        status.clone(),
                    ))
                })
                .collect(),
        }
    }

    /// One `ConsumeToken` per token, together.
    async fn consume_each(&self, ids: &[String]) -> Vec<Result<Grant, RemoteError>> {
        futures_util::future::join_all(ids.iter().map(|id| self.consume_one(id))).await
    }

    async fn consume_one(&self, token_id: &str) -> Result<Grant, RemoteError> {
        let grant = self
            .replicas
            .call(|channel| {
                let request = request(
                    mgmt::ConsumeTokenRequest {
                        token_id: token_id.to_string(),
                    },
                    self.deadline,
                );
                async move { ManagementClient::new(channel).consume_token(request).await }
            })
            .await
            .map_err(|s| RemoteError::from_status("management", "ConsumeToken", s))?
            .into_inner();
        Ok(to_grant(grant))
    }
}

fn to_grant(grant: mgmt::TokenGrant) -> Grant {
    let origin = grant.origin.unwrap_or_default();
    Grant {
        code: grant.code,
        user: grant.user,
        role: grant.role,
        room: grant.room_id,
        origin: Origin {
            isp: origin.isp,
            region: origin.region,
        },
    }
}

/// The cluster manager: where a room runs, and this portal's own tasks
/// (through its cluster membership, set once it joined).
pub struct ManagerRemote {
    client: ClusterManagerClient<Channel>,
    deadline: Duration,
    worker: OnceLock<ClusterWorker>,
    /// `portal.task_announcement_window`.
    task_window: Duration,
}

impl ManagerRemote {
    pub fn new(
        address: &str,
        deadline: Duration,
        task_window: Duration,
    ) -> Result<Self, GrpcError> {
        Ok(ManagerRemote {
            client: ClusterManagerClient::new(conclave_common::grpc::channel(address, deadline)?),
            deadline,
            worker: OnceLock::new(),
            task_window,
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
            .add_task_within(code, self.task_window)
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
            manager: ManagerRemote::new(manager, deadlines.rpc, deadlines.task_window)?,
            // each call sets its own deadline; the channel's is only the
            // ceiling, so it must not cut the longer ones (join 6 s, text 4 s)
            agents: AgentRemote {
                channels: Channels::new(deadlines.get_node.max(deadlines.rpc)),
                deadline: deadlines.get_node,
            },
            conferences: ConferenceRemote {
                channels: Channels::new(deadlines.join.max(deadlines.text).max(deadlines.rpc)),
                deadlines,
                portal_worker: OnceLock::new(),
                portal_endpoint: OnceLock::new(),
                confirmations: Default::default(),
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

    async fn confirm(&self, c: &Controller, participant: &str) -> Result<(), RemoteError> {
        self.conferences.confirm_one(c, participant).await
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

    async fn restore(
        &self,
        c: &Controller,
        room: &str,
        participants: &[Restorable],
    ) -> Result<Vec<String>, RemoteError> {
        self.conferences.restore(c, room, participants).await
    }

    async fn served_room(&self, c: &Controller) -> Result<String, RemoteError> {
        self.conferences.served_room(c).await
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
