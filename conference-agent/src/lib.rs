//! The Conclave conference agent: a `conference` cluster worker that spawns
//! and supervises conference node processes, one room per node, and tells the
//! portal which node serves a room (`GetNode`). `main.rs` parses configuration
//! and calls [`run`]; tests call [`start`].

pub mod config;
pub mod pool;
pub mod service;
pub mod supervisor;

use conclave_common::cluster_worker::{ClusterWorker, WorkerEvent};
use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_common::load::{CpuLoad, LoadSource, ManualLoad};
use conclave_common::purpose::Purpose;
use conclave_common::sync::Locked;
use conclave_proto::agent::v1::node_manager_server::NodeManagerServer;
use conclave_proto::cluster::v1 as cluster;
use pool::NodePool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use supervisor::Control;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Worker(#[from] conclave_common::cluster_worker::WorkerError),
}

/// The agent's shared state.
pub struct Agent {
    config: Config,
    node_binary: PathBuf,
    advertised_host: String,
    pool: Mutex<NodePool>,
    controls: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    worker: OnceLock<ClusterWorker>,
    node_load: ManualLoad,
    spawning: AtomicBool,
    shutting_down: AtomicBool,
}

impl Agent {
    pub fn pool(&self) -> MutexGuard<'_, NodePool> {
        self.pool.locked()
    }

    fn controls(&self) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Control>>> {
        self.controls.locked()
    }

    pub fn worker(&self) -> Option<&ClusterWorker> {
        self.worker.get()
    }

    fn set_spawning(&self, on: bool) {
        self.spawning.store(on, Ordering::SeqCst);
    }

    fn shutting_down(&self) -> bool {
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

    fn update_load(&self) {
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
    async fn node_exited(self: &Arc<Self>, id: &str, status: Option<ExitStatus>, asked: bool) {
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

    /// Kill every node (cluster loss, OWT `dropAllNodes`).
    fn drop_all_nodes(&self) {
        for id in self.pool().ids() {
            self.control(&id, Control::Kill);
        }
    }

    /// Stop every node gracefully and wait (bounded) until they are gone.
    async fn stop_all_nodes(&self) {
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

/// A running agent.
pub struct ConferenceAgent {
    server: GrpcServer,
    agent: Arc<Agent>,
    done: tokio::task::JoinHandle<()>,
}

impl ConferenceAgent {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    pub fn worker_id(&self) -> &str {
        self.agent.worker().map(|w| w.id()).unwrap_or_default()
    }

    /// Wait until the agent has stopped its nodes, left the cluster and
    /// closed its server (after the shutdown token fired).
    pub async fn stopped(self) -> Result<(), GrpcError> {
        let _ = self.done.await;
        self.server.stopped().await
    }
}

fn node_binary(config: &Config) -> PathBuf {
    if !config.agent.conference_binary.is_empty() {
        return PathBuf::from(&config.agent.conference_binary);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("conference")))
        .unwrap_or_else(|| PathBuf::from("conference"))
}

/// Start the agent: serve NodeManager, join the cluster as `conference`,
/// warm the node pool. Everything stops when `shutdown` is cancelled.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ConferenceAgent, StartError> {
    config.validate().map_err(StartError::Config)?;
    let advertised_host = if config.advertised_host.is_empty() {
        conclave_common::net::first_non_loopback_ip()
    } else {
        config.advertised_host.clone()
    };
    let node_binary = node_binary(&config);
    let _ = conclave_common::metrics::serve(&config.metrics, shutdown.clone()).await;
    if !node_binary.is_file() {
        tracing::warn!(binary = %node_binary.display(), "conference binary not found; nodes will fail to start");
    }
    let agent = Arc::new(Agent {
        pool: Mutex::new(NodePool::new(
            "",
            config.agent.prerun_processes as usize,
            config.max_processes(),
        )),
        node_binary,
        advertised_host: advertised_host.clone(),
        controls: Mutex::new(HashMap::new()),
        worker: OnceLock::new(),
        node_load: ManualLoad::new(0.0),
        spawning: AtomicBool::new(true),
        shutting_down: AtomicBool::new(false),
        config,
    });
    let server_stop = CancellationToken::new();
    let server = GrpcServer::start(
        &agent.config.listen,
        tonic::service::Routes::new(NodeManagerServer::new(service::NodeManagerService::new(
            agent.clone(),
        ))),
        &[<NodeManagerServer<service::NodeManagerService> as NamedService>::NAME],
        server_stop.clone(),
    )
    .await?;
    let port = server.local_addr().port();
    let info = cluster::WorkerInfo {
        ip: advertised_host.clone(),
        hostname: conclave_common::net::hostname(),
        port: u32::from(port),
        grpc_endpoint: format!("{advertised_host}:{port}"),
        max_load: agent.config.cluster.max_load,
        capacity: Some(cluster::Capacity::default()),
        ..Default::default()
    };
    let load: Arc<dyn LoadSource> = if agent.config.counts_nodes() {
        Arc::new(agent.node_load.clone())
    } else {
        Arc::new(CpuLoad::new())
    };
    let worker = match ClusterWorker::join(
        agent.config.cluster.clone(),
        Purpose::Conference,
        info,
        load,
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            server_stop.cancel();
            return Err(e.into());
        }
    };
    let worker_id = worker.id().to_string();
    *agent.pool() = NodePool::new(
        &worker_id,
        agent.config.agent.prerun_processes as usize,
        agent.config.max_processes(),
    );
    let mut events = worker.subscribe();
    let _ = agent.worker.set(worker);
    tracing::info!(worker = %worker_id, endpoint = %format!("{advertised_host}:{port}"), "conference agent serving");
    agent.fill();

    let a = agent.clone();
    let done = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                e = events.recv() => match e {
                    Ok(WorkerEvent::Lost) => {
                        tracing::warn!("cluster lost this agent; dropping all nodes");
                        a.set_spawning(false);
                        a.drop_all_nodes();
                    }
                    Ok(WorkerEvent::Recovered) => {
                        a.set_spawning(true);
                        a.fill();
                    }
                    Err(_) => {}
                }
            }
        }
        tracing::info!("conference agent stopping");
        a.shutting_down.store(true, Ordering::SeqCst);
        a.set_spawning(false);
        a.stop_all_nodes().await;
        if let Some(worker) = a.worker() {
            for task in worker.tasks() {
                let _ = worker.remove_task(&task).await;
            }
            if let Err(e) = worker.quit().await {
                tracing::warn!(error = %e, "quitting the cluster failed");
            }
        }
        server_stop.cancel();
    });
    Ok(ConferenceAgent {
        server,
        agent,
        done,
    })
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let agent = start(config, shutdown).await?;
    agent.stopped().await?;
    tracing::info!("conference agent stopped");
    Ok(())
}
