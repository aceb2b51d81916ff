//! A small cluster for agent tests: the real cluster manager and management
//! in-process, a fake portal that records what conference nodes tell it, and
//! agents spawning the real `conference` binary.
#![allow(dead_code)]

use conclave_common::grpc::Channel;
use conclave_common::grpc::GrpcServer;
use conclave_proto::agent::v1 as agent_pb;
use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::conference::v1 as conf;
use conclave_proto::conference::v1::conference_client::ConferenceClient;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_proto::portal::v1 as portal;
pub use conclave_stack::testing::eventually;
use conclave_stack::testing::grpc;
use conference_agent::ConferenceAgent;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

pub const PORTAL_ID: &str = "portal-fake@test";

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Notify {
        participant: String,
        event: String,
        data: Value,
    },
    Broadcast {
        controller: String,
        exclude: Vec<String>,
        /// Who gets it, with each one's sequence number.
        recipients: Vec<(String, u64)>,
        event: String,
        data: Value,
    },
    Drop {
        participant: String,
    },
    SetPermission {
        participant: String,
        permission: Value,
    },
}

#[derive(Clone, Default)]
pub struct FakePortal {
    pub calls: Arc<Mutex<Vec<Call>>>,
}

impl FakePortal {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Call> {
        for _ in 0..300 {
            if self.calls.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.calls()
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::String(format!("NOT JSON: {text}")))
}

#[tonic::async_trait]
impl portal::portal_server::Portal for FakePortal {
    async fn notify(
        &self,
        r: Request<portal::NotifyRequest>,
    ) -> Result<Response<portal::NotifyReply>, Status> {
        let r = r.into_inner();
        self.calls.lock().unwrap().push(Call::Notify {
            participant: r.participant_id,
            event: r.event,
            data: json(&r.data),
        });
        Ok(Response::new(portal::NotifyReply { delivered: true }))
    }
    async fn broadcast(
        &self,
        r: Request<portal::BroadcastRequest>,
    ) -> Result<Response<portal::BroadcastReply>, Status> {
        let r = r.into_inner();
        self.calls.lock().unwrap().push(Call::Broadcast {
            controller: r.controller,
            exclude: r.exclude_list,
            recipients: r
                .recipients
                .into_iter()
                .map(|x| (x.participant_id, x.seq))
                .collect(),
            event: r.event,
            data: json(&r.data),
        });
        Ok(Response::new(portal::BroadcastReply::default()))
    }
    async fn drop(
        &self,
        r: Request<portal::DropRequest>,
    ) -> Result<Response<portal::DropReply>, Status> {
        self.calls.lock().unwrap().push(Call::Drop {
            participant: r.into_inner().participant_id,
        });
        Ok(Response::new(portal::DropReply {}))
    }
    async fn list_clients(
        &self,
        _r: Request<portal::ListClientsRequest>,
    ) -> Result<Response<portal::ListClientsReply>, Status> {
        Ok(Response::new(portal::ListClientsReply { clients: vec![] }))
    }
    async fn set_permission(
        &self,
        r: Request<portal::SetPermissionRequest>,
    ) -> Result<Response<portal::SetPermissionReply>, Status> {
        let r = r.into_inner();
        self.calls.lock().unwrap().push(Call::SetPermission {
            participant: r.participant_id,
            permission: json(&r.permission),
        });
        Ok(Response::new(portal::SetPermissionReply { found: true }))
    }
    async fn release(
        &self,
        _r: Request<portal::ReleaseRequest>,
    ) -> Result<Response<portal::ReleaseReply>, Status> {
        Ok(Response::new(portal::ReleaseReply {}))
    }
}

pub struct Cluster {
    pub stop: CancellationToken,
    pub manager_addr: String,
    pub management_addr: String,
    pub portal: FakePortal,
    pub portal_addr: String,
    _portal_server: GrpcServer,
    data_dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub async fn cluster(conference_strategy: &str) -> Cluster {
    let stop = CancellationToken::new();
    let mut cm = cluster_manager::Config::loopback();
    cm.strategy.conference = conference_strategy.into();
    let manager = cluster_manager::start(cm, stop.clone()).await.unwrap();
    let manager_addr = manager.local_addr().to_string();
    let data_dir = std::env::temp_dir().join(format!(
        "conclave-agent-test-{}",
        management::room::new_id()
    ));
    let mut mc = management::Config {
        listen: "127.0.0.1:0".into(),
        service_key: "agent-test-key".into(),
        data_dir: data_dir.display().to_string(),
        ..Default::default()
    };
    mc.cluster.manager = manager_addr.clone();
    mc.rest.listen = "127.0.0.1:0".into();
    let mgmt_server = management::start(mc, stop.clone()).await.unwrap();
    let portal = FakePortal::default();
    let portal_server = GrpcServer::start(
        "127.0.0.1:0",
        tonic::service::Routes::new(portal::portal_server::PortalServer::new(portal.clone())),
        &[],
        stop.clone(),
    )
    .await
    .unwrap();
    Cluster {
        manager_addr,
        management_addr: mgmt_server.local_addr().to_string(),
        portal_addr: portal_server.local_addr().to_string(),
        portal,
        _portal_server: portal_server,
        stop,
        data_dir,
    }
}

pub fn agent_config(c: &Cluster) -> conference_agent::Config {
    let mut a = conference_agent::Config {
        listen: "127.0.0.1:0".into(),
        advertised_host: "127.0.0.1".into(),
        ..Default::default()
    };
    a.cluster.manager = c.manager_addr.clone();
    a.cluster.report_load_interval = 100;
    // a bounded pool makes the load count nodes, not CPU: deterministic on a busy machine
    a.agent.max_processes = 64;
    a.node.management = c.management_addr.clone();
    a.agent.conference_binary = conclave_stack::testing::workspace_bin("conference")
        .display()
        .to_string();
    a
}

pub struct RunningAgent {
    pub agent: ConferenceAgent,
    pub stop: CancellationToken,
    pub addr: String,
    pub id: String,
}

impl RunningAgent {
    /// Stop the agent and check that none of its node processes is left.
    pub async fn stop(self) {
        let pids: Vec<u32> = self
            .agent
            .agent()
            .pool()
            .nodes()
            .filter_map(|n| n.pid)
            .collect();
        self.stop.cancel();
        self.agent.stopped().await.unwrap();
        for pid in pids {
            assert!(
                eventually(Duration::from_secs(5), || async move { !alive(pid) }).await,
                "node process {pid} outlived its agent"
            );
        }
    }

    pub fn client(&self) -> NodeManagerClient<Channel> {
        NodeManagerClient::new(
            conclave_common::grpc::channel(&self.addr, Duration::from_secs(10)).unwrap(),
        )
    }
}

pub async fn start_agent(config: conference_agent::Config) -> RunningAgent {
    let stop = CancellationToken::new();
    let agent = conference_agent::start(config, stop.clone()).await.unwrap();
    let addr = agent.local_addr().to_string();
    let id = agent.worker_id().to_string();
    RunningAgent {
        agent,
        stop,
        addr,
        id,
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn manager(c: &Cluster) -> ClusterManagerClient<Channel> {
    grpc::manager(&c.manager_addr)
}

pub fn management(c: &Cluster) -> ManagementClient<Channel> {
    grpc::management(&c.management_addr)
}

pub fn conference(endpoint: &str) -> ConferenceClient<Channel> {
    grpc::conference(endpoint)
}

pub async fn create_room(c: &Cluster, limit: i32) -> String {
    grpc::create_room(&c.management_addr, "test room", limit).await
}

/// Schedule a room's agent the way a portal does, waiting for agents to be schedulable.
pub async fn schedule_room(c: &Cluster, room: &str) -> String {
    let mut m = manager(c);
    for _ in 0..200 {
        match m
            .schedule(cluster::ScheduleRequest {
                purpose: "conference".into(),
                task: room.into(),
                preference: None,
                reserve_time_ms: 30_000,
            })
            .await
        {
            Ok(r) => return r.into_inner().id,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("no conference agent became schedulable");
}

pub async fn get_node(agent: &RunningAgent, room: &str) -> agent_pb::GetNodeReply {
    agent
        .client()
        .get_node(agent_pb::GetNodeRequest {
            room: room.into(),
            task: room.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn list_nodes(agent: &RunningAgent) -> Vec<agent_pb::NodeInfo> {
    agent
        .client()
        .list_nodes(agent_pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
}

pub async fn tasks_of(c: &Cluster, worker: &str) -> Vec<String> {
    grpc::tasks_of(&c.manager_addr, worker).await
}

pub fn spec(c: &Cluster, id: &str, role: &str) -> conf::ParticipantSpec {
    conf::ParticipantSpec {
        id: id.into(),
        user: format!("user-{id}"),
        role: role.into(),
        portal: PORTAL_ID.into(),
        origin: None,
        portal_endpoint: c.portal_addr.clone(),
        client: None,
    }
}

pub async fn join(
    c: &Cluster,
    endpoint: &str,
    room: &str,
    id: &str,
    role: &str,
) -> Result<conf::JoinReply, Status> {
    conference(endpoint)
        .join(conf::JoinRequest {
            room_id: room.into(),
            participant: Some(spec(c, id, role)),
            pending: false,
        })
        .await
        .map(|r| r.into_inner())
}
