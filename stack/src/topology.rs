//! One way to start Conclave as processes on this machine: a cluster
//! manager, management, conference agents (each spawning its conference
//! nodes) and portals. The local-stack launcher, the load generator and the
//! end-to-end tests all start it here.

use crate::process::ServiceProcess;
use conclave_common::grpc::{self, Channel};
use conclave_common::purpose::Purpose;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{0} not found: build the services first (cargo build --bins)")]
    MissingBinary(String),
    #[error("{service}: {message}")]
    Start { service: String, message: String },
    #[error("the stack did not become ready: {0}")]
    NotReady(String),
}

/// What to start, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// The management database's directory.
    pub data_dir: PathBuf,
    /// Every gRPC server (and metrics endpoint) on a port the OS picks,
    /// instead of 7000 management, 7001 cluster manager, 7002 portal, 7003
    /// agent.
    pub any_ports: bool,
    /// The portal's Socket.IO listen address (port 0 for a free one),
    /// whatever `any_ports` says.
    pub socket_listen: String,
    /// The host name tokens send clients to.
    pub hostname: String,
    pub service_key: String,
    /// Environment of every service.
    pub env: Vec<(String, String)>,
    /// `--set` flags of every service, then of each kind.
    pub all: Vec<String>,
    pub manager: Vec<String>,
    pub management: Vec<String>,
    pub agent: Vec<String>,
    pub portal: Vec<String>,
}

impl Options {
    /// The binaries next to the running executable (the launcher's, or a
    /// test's `target/<profile>` directory).
    pub fn beside_this_executable() -> Options {
        let exe = std::env::current_exe().unwrap_or_default();
        let bin_dir = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("portal").is_file())
            .or_else(|| exe.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        Options {
            bin_dir,
            data_dir: PathBuf::from("data/local"),
            any_ports: false,
            socket_listen: "0.0.0.0:8080".into(),
            hostname: "localhost".into(),
            service_key: conclave_common::token::DEV_SERVICE_KEY.into(),
            env: Vec::new(),
            all: Vec::new(),
            manager: Vec::new(),
            management: Vec::new(),
            agent: Vec::new(),
            portal: Vec::new(),
        }
    }

    /// Everything on free loopback ports (tokens name 127.0.0.1), the
    /// database in `data_dir`: for tests and benchmarks, which may run
    /// beside another stack.
    pub fn on_free_ports(data_dir: PathBuf) -> Options {
        Options {
            data_dir,
            any_ports: true,
            socket_listen: "127.0.0.1:0".into(),
            hostname: "127.0.0.1".into(),
            ..Options::beside_this_executable()
        }
    }

    fn listen(&self, default_port: u16) -> String {
        format!(
            "127.0.0.1:{}",
            if self.any_ports { 0 } else { default_port }
        )
    }
}

/// A running stack. Dropping it stops every process, portals and agents
/// first (so nodes exit with their agent).
pub struct Topology {
    pub options: Options,
    pub manager: String,
    pub management: String,
    /// The management REST API's address.
    pub management_rest: String,
    /// The first agent's gRPC address.
    pub agent: String,
    /// The first portal's Socket.IO address.
    pub portal_socket: String,
    /// The first portal's `portal.v1` address and worker id (after [`ready`](Self::ready)).
    pub portal_grpc: String,
    pub portal_worker: String,
    /// 0 cluster manager, 1 management, 2 agent, 3 portal, then those added.
    pub processes: Vec<ServiceProcess>,
}

const MANAGER_READY: (&str, &str) = ("gRPC server listening", "local_addr");
const AGENT_READY: (&str, &str) = ("conference agent serving", "endpoint");
const PORTAL_READY: (&str, &str) = ("portal serving", "socket_addr");

impl Topology {
    /// Start the four services and wait until they are schedulable.
    pub async fn launch(options: Options) -> Result<Topology, TopologyError> {
        let topology = tokio::task::spawn_blocking(move || Topology::start(options))
            .await
            .map_err(|e| TopologyError::NotReady(e.to_string()))??;
        topology.ready().await
    }

    /// Start the four services (blocking: it reads their logs).
    pub fn start(options: Options) -> Result<Topology, TopologyError> {
        let mut t = Topology {
            options,
            manager: String::new(),
            management: String::new(),
            management_rest: String::new(),
            agent: String::new(),
            portal_socket: String::new(),
            portal_grpc: String::new(),
            portal_worker: String::new(),
            processes: Vec::new(),
        };
        let sets = vec![
            format!("listen={}", t.options.listen(7001)),
            "manager.initial_time=0".into(),
        ];
        t.manager = t.spawn(
            "cluster-manager",
            sets,
            &t.options.manager.clone(),
            MANAGER_READY,
        )?;
        let sets = vec![
            format!("listen={}", t.options.listen(7000)),
            format!("rest.listen={}", t.options.listen(3000)),
            format!("data_dir={}", t.options.data_dir.display()),
            format!("cluster.manager={}", t.manager),
        ];
        t.management = t.spawn(
            "management",
            sets,
            &t.options.management.clone(),
            MANAGER_READY,
        )?;
        // the REST API starts before the gRPC server, so its line is in the history
        t.management_rest = t
            .processes
            .last()
            .and_then(|p| {
                p.history
                    .iter()
                    .filter(|l| l.contains("REST API listening"))
                    .find_map(|l| conclave_common::handshake::field(l, "local_addr"))
            })
            .ok_or_else(|| {
                TopologyError::NotReady(
                    "management logged no REST API address (a log filter must let management::rest=info through)".into(),
                )
            })?;
        t.agent = t.add_agent(&[])?;
        let sets = vec![
            format!("portal.listen={}", t.options.socket_listen),
            format!("portal.grpc_listen={}", t.options.listen(7002)),
        ];
        t.portal_socket = t.add_portal_with(sets, &[])?;
        Ok(t)
    }

    /// Start one service; the value its ready line names.
    fn spawn(
        &mut self,
        name: &str,
        mut sets: Vec<String>,
        extra: &[String],
        (marker, key): (&str, &str),
    ) -> Result<String, TopologyError> {
        let program = self.options.bin_dir.join(name);
        if !program.is_file() {
            return Err(TopologyError::MissingBinary(program.display().to_string()));
        }
        if self.options.any_ports {
            sets.push("metrics.listen=127.0.0.1:0".into());
        }
        sets.extend(self.options.all.iter().cloned());
        sets.extend(extra.iter().cloned());
        let args: Vec<String> = sets
            .iter()
            .flat_map(|s| ["--set".to_string(), s.clone()])
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env: Vec<(&str, &str)> = vec![("CONCLAVE_SERVICE_KEY", &self.options.service_key)];
        env.extend(
            self.options
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let (process, value) = ServiceProcess::start_named(
            name,
            &program.display().to_string(),
            &args,
            &env,
            marker,
            key,
        )
        .map_err(|message| TopologyError::Start {
            service: name.to_string(),
            message,
        })?;
        self.processes.push(process);
        Ok(value)
    }

    /// Another conference agent, with `extra` settings; its gRPC address.
    pub fn add_agent(&mut self, extra: &[String]) -> Result<String, TopologyError> {
        // the first agent on its default port, the others on free ones
        let listen = if self.agent.is_empty() {
            self.options.listen(7003)
        } else {
            "127.0.0.1:0".to_string()
        };
        let mut all_extra = self.options.agent.clone();
        all_extra.extend(extra.iter().cloned());
        let sets = vec![
            format!("listen={listen}"),
            "advertised_host=127.0.0.1".into(),
            format!("cluster.manager={}", self.manager),
            format!("node.management={}", self.management),
            // count nodes, not CPU, as the load: predictable on a busy machine
            "agent.maxProcesses=512".into(),
        ];
        self.spawn("conference-agent", sets, &all_extra, AGENT_READY)
    }

    /// Another portal on free ports, with `extra` settings; its Socket.IO address.
    pub fn add_portal(&mut self, extra: &[String]) -> Result<String, TopologyError> {
        let sets = vec![
            "portal.listen=127.0.0.1:0".to_string(),
            "portal.grpc_listen=127.0.0.1:0".into(),
        ];
        self.add_portal_with(sets, extra)
    }

    fn add_portal_with(
        &mut self,
        mut sets: Vec<String>,
        extra: &[String],
    ) -> Result<String, TopologyError> {
        sets.extend([
            format!("portal.hostname={}", self.options.hostname),
            "portal.ip_address=127.0.0.1".into(),
            format!("cluster.manager={}", self.manager),
            format!("management={}", self.management),
            "portal.load=clients".into(),
            "portal.max_clients=100000".into(),
        ]);
        let mut all_extra = self.options.portal.clone();
        all_extra.extend(extra.iter().cloned());
        self.spawn("portal", sets, &all_extra, PORTAL_READY)
    }

    /// Another management replica on free ports (its REST API too), with
    /// the first one's settings and `extra` (a shared `store.url`); its
    /// gRPC address. The process is the last in `processes`.
    pub fn add_management(&mut self, extra: &[String]) -> Result<String, TopologyError> {
        let n = self.processes.len();
        let sets = vec![
            "listen=127.0.0.1:0".to_string(),
            "rest.listen=127.0.0.1:0".into(),
            format!(
                "data_dir={}",
                self.options
                    .data_dir
                    .join(format!("management-{n}"))
                    .display()
            ),
            format!("cluster.manager={}", self.manager),
        ];
        let mut all_extra = self.options.management.clone();
        all_extra.extend(extra.iter().cloned());
        self.spawn("management", sets, &all_extra, MANAGER_READY)
    }

    /// Start the cluster manager again on its address (after it was
    /// killed), with `extra` settings.
    pub fn restart_manager(&mut self, extra: &[String]) -> Result<(), TopologyError> {
        let mut sets = vec![format!("listen={}", self.manager)];
        sets.extend(extra.iter().cloned());
        let old = self.processes.len();
        self.spawn("cluster-manager", sets, &[], MANAGER_READY)?;
        let restarted = self.processes.remove(old);
        self.processes[0] = restarted;
        Ok(())
    }

    pub fn manager_client(&self) -> ClusterManagerClient<Channel> {
        ClusterManagerClient::new(
            grpc::channel(&self.manager, Duration::from_secs(5)).expect("a valid address"),
        )
    }

    /// Wait until a portal and a conference agent are schedulable (load
    /// under their maximum) and every server answers its health check;
    /// learn the first portal's worker id and gRPC address.
    pub async fn ready(mut self) -> Result<Topology, TopologyError> {
        let mut m = self.manager_client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let portal = schedulable(&mut m, Purpose::Portal).await;
            let agent = schedulable(&mut m, Purpose::Conference).await;
            if let (Some((id, info)), Some(_)) = (portal, agent) {
                self.portal_worker = id;
                self.portal_grpc = info.grpc_endpoint;
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TopologyError::NotReady(
                    "no schedulable portal and conference agent".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        for endpoint in [
            &self.manager,
            &self.management,
            &self.agent,
            &self.portal_grpc,
        ] {
            if !grpc::health_check(endpoint, "").await.unwrap_or(false) {
                return Err(TopologyError::NotReady(format!(
                    "{endpoint} is not healthy"
                )));
            }
        }
        Ok(self)
    }

    /// Stop every process gracefully, last started first (bounded wait,
    /// then SIGKILL).
    pub fn stop(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            if p.child.try_wait().ok().flatten().is_some() {
                continue; // already gone (a test killed it)
            }
            p.signal("TERM");
            if p.wait_exit(Duration::from_secs(15)).is_none() {
                let _ = p.child.kill();
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker of `purpose` whose load is under its maximum.
async fn schedulable(
    m: &mut ClusterManagerClient<Channel>,
    purpose: Purpose,
) -> Option<(String, cluster::WorkerInfo)> {
    let workers = m
        .get_workers(cluster::GetWorkersRequest {
            purpose: purpose.to_string(),
        })
        .await
        .ok()?
        .into_inner()
        .workers;
    for worker in workers {
        let Ok(attr) = m
            .get_worker_attr(cluster::GetWorkerAttrRequest {
                worker_id: worker.clone(),
            })
            .await
        else {
            continue;
        };
        let attr = attr.into_inner();
        let info = attr.info.unwrap_or_default();
        if attr.load < info.max_load {
            return Some((worker, info));
        }
    }
    None
}
