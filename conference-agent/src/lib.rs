//! The Conclave conference agent: a `conference` cluster worker that spawns
//! and supervises conference node processes, one room per node, and tells the
//! portal which node serves a room (`GetNode`). `main.rs` parses configuration
//! and calls [`run`]; tests call [`start`].

pub mod agent;
pub mod config;
pub mod pool;
pub mod service;
pub mod supervisor;

use conclave_common::cluster_worker::{ClusterWorker, WorkerEvent};
use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_common::load::{CpuLoad, LoadSource};
use conclave_common::purpose::Purpose;
use conclave_proto::agent::v1::node_manager_server::NodeManagerServer;
use conclave_proto::cluster::v1 as cluster;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use agent::Agent;
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
    let advertised_host = conclave_common::net::advertised_ip(&config.advertised_host);
    let node_binary = node_binary(&config);
    let _ = conclave_common::metrics::serve(&config.metrics, shutdown.clone()).await;
    if !node_binary.is_file() {
        tracing::warn!(binary = %node_binary.display(), "conference binary not found; nodes will fail to start");
    }
    let agent = Arc::new(Agent::new(config, node_binary, advertised_host.clone()));
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
    agent.name_nodes_after(&worker_id);
    let mut events = worker.subscribe();
    agent.set_worker(worker);
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
                    // its nodes hold their rooms; the portals rebuild any
                    // they took for lost
                    Ok(WorkerEvent::OutOfContact) | Err(_) => {}
                    Ok(WorkerEvent::TasksRefused(tasks)) => {
                        for task in tasks {
                            a.let_go_of(&task);
                        }
                    }
                }
            }
        }
        tracing::info!("conference agent stopping");
        a.begin_shutdown();
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
