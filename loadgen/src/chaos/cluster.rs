//! The chaos soak's stack: every service a real process on fixed loopback
//! ports, so that one killed is started again where the others expect it,
//! as a restart policy would; and the faults themselves.

use super::FaultKind;
use conclave_common::purpose::Purpose;
use conclave_proto::agent::v1 as agent_pb;
use conclave_proto::cluster::v1 as cluster;
use conclave_stack::etcd::Etcd;
use conclave_stack::postgres::Postgres;
use conclave_stack::testing::{ServiceProcess, free_port, grpc};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

const SERVING: (&str, &str) = ("gRPC server listening", "local_addr");
const AGENT_SERVING: (&str, &str) = ("conference agent serving", "endpoint");
const PORTAL_SERVING: (&str, &str) = ("portal serving", "socket_addr");

/// One service: how to start it, and its process while it runs.
pub struct Service {
    pub name: &'static str,
    /// The name and its index (`portal 1`), which prefixes its log lines.
    pub label: String,
    args: Vec<String>,
    ready: (&'static str, &'static str),
    pub process: Option<ServiceProcess>,
    /// Times it was started again after a fault.
    pub restarts: usize,
}

impl Service {
    fn new(
        name: &'static str,
        index: usize,
        sets: Vec<String>,
        ready: (&'static str, &'static str),
    ) -> Service {
        Service {
            name,
            label: format!("{name} {index}"),
            args: sets
                .into_iter()
                .flat_map(|s| ["--set".to_string(), s])
                .collect(),
            ready,
            process: None,
            restarts: 0,
        }
    }

    fn start(&mut self, bin_dir: &Path, env: &[(String, String)]) -> Result<(), String> {
        let program = bin_dir.join(self.name);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (process, _) = ServiceProcess::start_named(
            &self.label,
            &program.display().to_string(),
            &args,
            &env,
            self.ready.0,
            self.ready.1,
        )
        .map_err(|e| format!("{}: {e}", self.name))?;
        self.process = Some(process);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// Whether the process has exited (or was never started).
    pub fn exited(&mut self) -> bool {
        match &mut self.process {
            Some(p) => p.child.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    fn signal(&self, name: &str) {
        if let Some(p) = &self.process {
            p.signal(name);
        }
    }

    /// Wait for it to exit after a signal (SIGKILL after `limit`).
    fn gone(&mut self, limit: Duration) {
        if let Some(p) = &mut self.process
            && p.wait_exit(limit).is_none()
        {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The whole stack: etcd, two cluster managers in one election, management
/// (two replicas on one PostgreSQL when PostgreSQL is installed, else one
/// on SQLite), two conference agents and two portals.
pub struct Cluster {
    bin_dir: PathBuf,
    env: Vec<(String, String)>,
    pub managers: Vec<Service>,
    pub manager_addrs: Vec<String>,
    pub managements: Vec<Service>,
    pub management_addrs: Vec<String>,
    pub agents: Vec<Service>,
    pub agent_addrs: Vec<String>,
    pub portals: Vec<Service>,
    /// Socket.IO addresses, by portal.
    pub portal_sockets: Vec<String>,
    pub portal_grpcs: Vec<String>,
    /// The worker id of every agent instance of this run.
    agent_ids: Vec<String>,
    /// Fields drop in order: the services above before these.
    _postgres: Option<Postgres>,
    _etcd: Etcd,
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

impl Cluster {
    /// Start everything (blocking: it reads the services' logs).
    pub fn start(bin_dir: &Path, data_dir: &Path, service_key: &str) -> Result<Cluster, String> {
        let etcd = Etcd::start().map_err(|e| format!("etcd: {e}"))?;
        let postgres = if conclave_stack::postgres::bin_dir().is_some() {
            Some(Postgres::start().map_err(|e| format!("PostgreSQL: {e}"))?)
        } else {
            None
        };
        let store_url = match &postgres {
            Some(pg) => Some(
                pg.create_database("chaos")
                    .map_err(|e| format!("PostgreSQL: {e}"))?,
            ),
            None => None,
        };
        let manager_addrs = vec![loopback(), loopback()];
        let managers_list = manager_addrs.join(",");
        let management_addrs: Vec<String> = (0..if store_url.is_some() { 2 } else { 1 })
            .map(|_| loopback())
            .collect();
        let management_list = management_addrs.join(",");
        let agent_addrs = vec![loopback(), loopback()];
        let portal_sockets = vec![loopback(), loopback()];
        let portal_grpcs = vec![loopback(), loopback()];
        let common = |sets: &mut Vec<String>| {
            sets.push("metrics.listen=127.0.0.1:0".into());
        };
        let managers = manager_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut sets = vec![
                    format!("listen={addr}"),
                    "manager.initial_time=0".into(),
                    format!("election.etcd=[\"{}\"]", etcd.url),
                    "election.ttl=2".into(),
                    // a room picked up by a new leader and laid down stays
                    // reserved this long (the portal reserves 30 s itself)
                    "manager.schedule_reserve_time=5000".into(),
                ];
                common(&mut sets);
                Service::new("cluster-manager", i, sets, SERVING)
            })
            .collect();
        let managements = management_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut sets = vec![
                    format!("listen={addr}"),
                    "rest.listen=127.0.0.1:0".into(),
                    format!(
                        "data_dir={}",
                        data_dir.join(format!("management-{i}")).display()
                    ),
                    format!("cluster.manager={managers_list}"),
                ];
                if let Some(url) = &store_url {
                    sets.push(format!("store.url={url}"));
                }
                common(&mut sets);
                Service::new("management", i, sets, SERVING)
            })
            .collect();
        let agents = agent_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let mut sets = vec![
                    format!("listen={addr}"),
                    "advertised_host=127.0.0.1".into(),
                    format!("cluster.manager={managers_list}"),
                    format!("node.management={management_list}"),
                    "agent.maxProcesses=512".into(),
                    "cluster.report_load_interval=100".into(),
                    // rooms emptied at the end are cleaned up soon
                    "node.self_clean_timeout=1000".into(),
                ];
                common(&mut sets);
                Service::new("conference-agent", i, sets, AGENT_SERVING)
            })
            .collect();
        let portals = portal_sockets
            .iter()
            .zip(&portal_grpcs)
            .enumerate()
            .map(|(i, (socket, grpc))| {
                let mut sets = vec![
                    format!("portal.listen={socket}"),
                    format!("portal.grpc_listen={grpc}"),
                    "portal.hostname=127.0.0.1".into(),
                    "portal.ip_address=127.0.0.1".into(),
                    format!("cluster.manager={managers_list}"),
                    format!("management={management_list}"),
                    "portal.load=clients".into(),
                    "portal.max_clients=100000".into(),
                    "cluster.report_load_interval=100".into(),
                ];
                common(&mut sets);
                Service::new("portal", i, sets, PORTAL_SERVING)
            })
            .collect();
        let mut c = Cluster {
            bin_dir: bin_dir.to_path_buf(),
            env: vec![
                ("CONCLAVE_SERVICE_KEY".into(), service_key.into()),
                (
                    "RUST_LOG".into(),
                    std::env::var("CONCLAVE_CHAOS_LOG").unwrap_or_else(|_| {
                        "warn,conclave_common::grpc=info,conference_agent=info,portal=info".into()
                    }),
                ),
            ],
            managers,
            manager_addrs,
            managements,
            management_addrs,
            agents,
            agent_addrs,
            portals,
            portal_sockets,
            portal_grpcs,
            agent_ids: Vec::new(),
            _postgres: postgres,
            _etcd: etcd,
        };
        let (bin, env) = (c.bin_dir.clone(), c.env.clone());
        for s in c
            .managers
            .iter_mut()
            .chain(c.managements.iter_mut())
            .chain(c.agents.iter_mut())
            .chain(c.portals.iter_mut())
        {
            s.start(&bin, &env)?;
        }
        for i in 0..c.agents.len() {
            c.note_agent(i);
        }
        Ok(c)
    }

    pub fn managers_list(&self) -> String {
        self.manager_addrs.join(",")
    }

    /// Every service, for memory figures and liveness checks.
    pub fn services_mut(&mut self) -> impl Iterator<Item = &mut Service> {
        self.managers
            .iter_mut()
            .chain(self.managements.iter_mut())
            .chain(self.agents.iter_mut())
            .chain(self.portals.iter_mut())
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.managers
            .iter()
            .chain(self.managements.iter())
            .chain(self.agents.iter())
            .chain(self.portals.iter())
    }

    /// The manager that serves (the leader), if one does now.
    pub async fn leader(&self) -> Option<usize> {
        for (i, addr) in self.manager_addrs.iter().enumerate() {
            let ok = grpc::manager(addr)
                .get_workers(conclave_common::grpc::request(
                    cluster::GetWorkersRequest {
                        purpose: "all".into(),
                    },
                    Duration::from_secs(1),
                ))
                .await
                .is_ok();
            if ok {
                return Some(i);
            }
        }
        None
    }

    /// The conference nodes serving one of `rooms`: (pid, room).
    pub async fn room_nodes(&self, rooms: &[String]) -> Vec<(u32, String)> {
        let mut nodes = Vec::new();
        for addr in &self.agent_addrs {
            let Ok(list) = grpc::node_manager(addr)
                .list_nodes(conclave_common::grpc::request(
                    agent_pb::ListNodesRequest {},
                    Duration::from_secs(1),
                ))
                .await
            else {
                continue;
            };
            for n in list.into_inner().nodes {
                if rooms.contains(&n.room) && n.pid != 0 {
                    nodes.push((n.pid, n.room));
                }
            }
        }
        nodes
    }

    /// The portal with the most clients (a random one when even).
    async fn fuller_portal(&self, pick: &mut dyn FnMut(usize) -> usize) -> usize {
        let mut counts = Vec::new();
        for addr in &self.portal_grpcs {
            let n = grpc::portal(addr)
                .list_clients(conclave_common::grpc::request(
                    conclave_proto::portal::v1::ListClientsRequest {},
                    Duration::from_secs(1),
                ))
                .await
                .map_or(0, |r| r.into_inner().clients.len());
            counts.push(n);
        }
        let most = counts.iter().copied().max().unwrap_or(0);
        let fullest: Vec<usize> = (0..counts.len()).filter(|i| counts[*i] == most).collect();
        fullest[pick(fullest.len())]
    }

    /// Run a blocking start off the runtime's worker.
    fn restart(&mut self, kind: Target, i: usize) -> Result<(), String> {
        let (bin, env) = (self.bin_dir.clone(), self.env.clone());
        let s = self.service_mut(kind, i);
        s.restarts += 1;
        tokio::task::block_in_place(|| s.start(&bin, &env))?;
        if let Target::Agent = kind {
            self.note_agent(i);
        }
        Ok(())
    }

    fn service_mut(&mut self, kind: Target, i: usize) -> &mut Service {
        match kind {
            Target::Portal => &mut self.portals[i],
            Target::Agent => &mut self.agents[i],
            Target::Manager => &mut self.managers[i],
            Target::Management => &mut self.managements[i],
        }
    }

    /// Inflict `fault` (`pick` chooses among candidates); what it hit, and
    /// when the fault landed: a killed or drained process reaped, a stopped
    /// one signalled. Choosing the target and spawning `kill` take a few
    /// milliseconds, so the moment the caller decided is too early to tell
    /// what the process may still have handled.
    /// A killed or drained process is started again before this returns;
    /// a stopped one is continued after `stall`.
    pub async fn inflict(
        &mut self,
        fault: FaultKind,
        rooms: &[String],
        stall: Duration,
        pick: &mut dyn FnMut(usize) -> usize,
    ) -> Result<(String, Instant), String> {
        use FaultKind::*;
        let target = match fault {
            // the portal holding more participants (relogins gather them on
            // one): a fault of an empty portal shows nothing
            KillPortal | StopPortal | DrainPortal => {
                Some((Target::Portal, self.fuller_portal(pick).await))
            }
            KillAgent | StopAgent => Some((Target::Agent, pick(2))),
            KillManagement | StopManagement => {
                Some((Target::Management, pick(self.managements.len())))
            }
            KillLeader | StopLeader => {
                let mut leader = None;
                for _ in 0..100 {
                    leader = self.leader().await;
                    if leader.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Some((Target::Manager, leader.ok_or("no manager leads to be hit")?))
            }
            KillNode | StopNode => None,
        };
        let Some((kind, i)) = target else {
            let nodes = self.room_nodes(rooms).await;
            if nodes.is_empty() {
                return Err("no conference node serves a room".into());
            }
            let (pid, room) = nodes[pick(nodes.len())].clone();
            let signal = |name: &str| {
                let _ = std::process::Command::new("kill")
                    .arg(format!("-{name}"))
                    .arg(pid.to_string())
                    .status();
            };
            let landed;
            if fault == KillNode {
                signal("KILL");
                landed = Instant::now();
            } else {
                signal("STOP");
                landed = Instant::now();
                tokio::time::sleep(stall).await;
                // by now its agent has killed it; a live one goes on
                signal("CONT");
            }
            return Ok((format!("node {pid} of room {room}"), landed));
        };
        let what = format!("{} {i}", kind.name());
        let landed = match fault {
            StopPortal | StopAgent | StopManagement | StopLeader => {
                let s = self.service_mut(kind, i);
                s.signal("STOP");
                let landed = Instant::now();
                tokio::time::sleep(stall).await;
                self.service_mut(kind, i).signal("CONT");
                landed
            }
            DrainPortal => {
                let s = self.service_mut(kind, i);
                s.signal("TERM");
                tokio::task::block_in_place(|| s.gone(Duration::from_secs(20)));
                let landed = Instant::now();
                self.restart(kind, i)?;
                landed
            }
            _ => {
                let s = self.service_mut(kind, i);
                s.signal("KILL");
                tokio::task::block_in_place(|| s.gone(Duration::from_secs(5)));
                let landed = Instant::now();
                self.restart(kind, i)?;
                landed
            }
        };
        Ok((what, landed))
    }

    /// What is left over once everyone logged out (empty when nothing):
    /// the checks of the fault suite, for every process of this stack.
    pub async fn leftovers(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for s in self.services_mut() {
            if s.exited() {
                left.push(format!("{} (pid {:?}) is not running", s.name, s.pid()));
            }
        }
        let manager = grpc::manager(&self.managers_list());
        let workers = |purpose: Purpose| {
            let mut m = manager.clone();
            async move {
                m.get_workers(cluster::GetWorkersRequest {
                    purpose: purpose.to_string(),
                })
                .await
                .map(|r| r.into_inner().workers)
                .unwrap_or_default()
            }
        };
        let agents = workers(Purpose::Conference).await;
        let portals = workers(Purpose::Portal).await;
        if agents.len() != 2 || portals.len() != 2 {
            left.push(format!(
                "the manager lists agents {agents:?} and portals {portals:?}, not two of each"
            ));
        }
        for w in agents.iter().chain(&portals) {
            let tasks = grpc::tasks_of(&self.managers_list(), w).await;
            if !tasks.is_empty() {
                left.push(format!("worker {w} still has tasks {tasks:?}"));
            }
        }
        for addr in &self.agent_addrs {
            let nodes = grpc::node_manager(addr)
                .list_nodes(agent_pb::ListNodesRequest {})
                .await
                .map(|r| r.into_inner().nodes)
                .unwrap_or_default();
            for n in nodes.iter().filter(|n| !n.room.is_empty()) {
                left.push(format!("node {} still serves room {}", n.node_id, n.room));
            }
        }
        for addr in &self.portal_grpcs {
            let clients = grpc::portal(addr)
                .list_clients(conclave_proto::portal::v1::ListClientsRequest {})
                .await
                .map(|r| r.into_inner().clients)
                .unwrap_or_default();
            if !clients.is_empty() {
                left.push(format!(
                    "portal {addr} still holds {} clients",
                    clients.len()
                ));
            }
        }
        left.extend(self.orphan_nodes(&agents));
        left
    }

    /// Rooms the manager still has reserved for an agent. A room laid down
    /// stays reserved for its agent for the portal's reserve time (30 s,
    /// OWT's affinity), so this empties that long after the last logout.
    pub async fn reservations(&self, rooms: &[String]) -> Vec<String> {
        let mut left = Vec::new();
        for room in rooms {
            if let Ok(w) = grpc::scheduled(&self.managers_list(), Purpose::Conference, room).await {
                left.push(format!("room {room} is still scheduled on {w}"));
            }
        }
        left
    }

    /// Conference processes of an agent of this stack (this run's
    /// instances, restarts included) that is not live.
    fn orphan_nodes(&self, live_agents: &[String]) -> Vec<String> {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let mut orphans = Vec::new();
        for line in ps.lines() {
            let Some(rest) = line.split("--node-id ").nth(1) else {
                continue;
            };
            let node = rest.split_whitespace().next().unwrap_or_default();
            let Some((agent, _)) = node.rsplit_once('_') else {
                continue;
            };
            if self.agent_ids.iter().any(|a| a == agent) && !live_agents.iter().any(|a| a == agent)
            {
                orphans.push(format!("orphan conference node {node}"));
            }
        }
        orphans
    }

    /// Note the worker id of the agent just started.
    fn note_agent(&mut self, i: usize) {
        let id = self.agents[i]
            .process
            .as_ref()
            .and_then(|p| p.history.last())
            .and_then(|l| conclave_common::handshake::field(l, "worker"));
        self.agent_ids.extend(id);
    }
}

/// Which kind of service a fault hits.
#[derive(Clone, Copy)]
enum Target {
    Portal,
    Agent,
    Manager,
    Management,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Portal => "portal",
            Target::Agent => "agent",
            Target::Manager => "leading manager",
            Target::Management => "management replica",
        }
    }
}

/// Resident and proportional memory of a process, in KiB, from /proc.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}
