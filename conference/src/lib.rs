//! The Conclave conference controller: serves one room per process. An agent
//! spawns it, reads its port from the ready line on stdout, and supervises it.
//! `main.rs` parses configuration and calls [`run`]; tests call [`start`].

pub mod conference;
pub mod config;
pub mod mailbox;
pub mod notifier;
pub mod room;
pub mod seats;
pub mod service;

use conclave_common::cluster_watch::{ClusterChange, ClusterWatch};
use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_common::purpose::Purpose;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::conference::v1::conference_server::ConferenceServer;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
}

pub struct Node {
    server: GrpcServer,
    metrics: Option<SocketAddr>,
    service: service::ConferenceService,
    exit: CancellationToken,
}

impl Node {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where this node serves `/metrics`, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    pub fn service(&self) -> &service::ConferenceService {
        &self.service
    }

    /// Resolves when the node ends itself (self-clean, destroy, failed init)
    /// or is shut down.
    pub async fn exited(&self) {
        self.exit.cancelled().await
    }

    pub async fn stopped(self) -> Result<(), GrpcError> {
        self.server.stopped().await
    }
}

/// Start serving. The node ends when `shutdown` is cancelled or it decides to
/// (self-clean after `self_clean_timeout` idle, `Destroy`, failed room init).
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Node, StartError> {
    if config.node_id.is_empty() {
        return Err(StartError::Config("node_id is required (--node-id)".into()));
    }
    let exit = shutdown.child_token();
    let metrics = conclave_common::metrics::serve(&config.metrics, exit.clone())
        .await
        .ok()
        .flatten();
    let management = conclave_common::grpc::Failover::new(
        &config.management,
        conclave_common::grpc::DEFAULT_DEADLINE,
    )?;
    let notifier = Arc::new(notifier::Notifier::new(
        config.node_id.clone(),
        Duration::from_millis(config.portal_rpc_timeout),
        config.portal_queue,
    ));
    let service = service::ConferenceService::new(
        management,
        notifier,
        exit.clone(),
        config.node_id.clone(),
        config.seats(),
    );
    let server = GrpcServer::start(
        &config.listen,
        tonic::service::Routes::new(ConferenceServer::new(service.clone())),
        &[<ConferenceServer<service::ConferenceService> as NamedService>::NAME],
        exit.clone(),
    )
    .await?;
    tokio::spawn(self_clean(
        service.clone(),
        Duration::from_millis(config.self_clean_timeout),
        exit.clone(),
    ));
    tokio::spawn(expire_detached(service.clone(), exit.clone()));
    // A lost portal's participants are detached (OWT §12.9 dropped them),
    // unless the portal is back already: a stalled portal that rejoined
    // reattaches its participants itself, and this late news must not undo it.
    let watched = service.clone();
    let rpc_timeout = Duration::from_millis(config.cluster.rpc_timeout);
    let manager = ClusterManagerClient::new(conclave_common::grpc::channel(
        &config.cluster.manager,
        rpc_timeout,
    )?);
    ClusterWatch::new(&config.cluster.manager, &[Purpose::Portal])?.spawn(
        exit.clone(),
        move |change| {
            if let ClusterChange::WorkerLost { worker, .. } = change {
                let service = watched.clone();
                let mut manager = manager.clone();
                tokio::spawn(async move {
                    let back = manager
                        .get_worker_attr(cluster::GetWorkerAttrRequest {
                            worker_id: worker.clone(),
                        })
                        .await
                        .is_ok();
                    if back {
                        tracing::info!(portal = %worker, "portal lost and back already; its participants stay");
                        return;
                    }
                    // Across a cluster manager change a live portal can be
                    // reported lost before it rejoined: the portal itself
                    // says whom it still holds.
                    let held = match service.portal_endpoint(&worker) {
                        Some(endpoint) => still_held(&endpoint, rpc_timeout).await,
                        None => Default::default(),
                    };
                    if !held.is_empty() {
                        tracing::info!(portal = %worker, held = held.len(), "portal reported lost but answers; the participants it holds stay");
                    }
                    service.portal_lost(&worker, &held);
                });
            }
        },
    );
    if config.exit_with_stdin {
        conclave_common::shutdown::watch_stdin(exit.clone(), "the agent is gone, exiting");
    }
    Ok(Node {
        server,
        metrics,
        service,
        exit,
    })
}

/// The participants the portal at `endpoint` holds now (none when it does
/// not answer within `timeout`).
async fn still_held(endpoint: &str, timeout: Duration) -> std::collections::HashSet<String> {
    use conclave_proto::portal::v1 as portal;
    let Ok(channel) = conclave_common::grpc::channel(endpoint, timeout) else {
        return Default::default();
    };
    portal::portal_client::PortalClient::new(channel)
        .list_clients(conclave_common::grpc::request(
            portal::ListClientsRequest {},
            timeout,
        ))
        .await
        .map(|r| {
            r.into_inner()
                .clients
                .into_iter()
                .map(|c| c.participant_id)
                .collect()
        })
        .unwrap_or_default()
}

/// Run until the node ends, printing the ready line for the agent.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let node_id = config.node_id.clone();
    let node = start(config, shutdown).await?;
    let ready = conclave_common::handshake::ready_line(
        node.local_addr().port(),
        node.metrics_addr().map(|a| a.port()),
    );
    let mut out = std::io::stdout();
    if writeln!(out, "{ready}").and_then(|_| out.flush()).is_err() {
        // Nobody reads the handshake: the agent is gone.
        tracing::warn!("cannot report readiness: the agent is gone, exiting");
        node.exit.cancel();
    }
    node.exited().await;
    node.stopped().await?;
    tracing::info!(node = %node_id, "conference node stopped");
    Ok(())
}

/// Detached seats nobody reclaimed in time leave (checked four times a second).
async fn expire_detached(service: service::ConferenceService, exit: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = exit.cancelled() => return,
            _ = tick.tick() => service.expire_detached(),
        }
    }
}

async fn self_clean(
    service: service::ConferenceService,
    timeout: Duration,
    exit: CancellationToken,
) {
    let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = exit.cancelled() => return,
            _ = tick.tick() => {
                if service.state().self_clean_due(Instant::now(), timeout) {
                    tracing::info!(room = ?service.state().room_id(), "room idle; self-cleaning");
                    exit.cancel();
                    return;
                }
            }
        }
    }
}
