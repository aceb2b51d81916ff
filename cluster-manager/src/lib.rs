//! The Conclave cluster manager: the registry of workers (portals, conference
//! agents), one scheduler per purpose, worker liveness and cluster events.
//! `main.rs` parses configuration and calls [`run`]; tests call [`start`].

pub mod config;
pub mod discovery;
pub mod election;
pub mod manager;
pub mod matcher;
pub mod scheduler;
pub mod service;
pub mod strategy;
pub mod worker;

use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_proto::cluster::v1::cluster_manager_server::ClusterManagerServer;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;

/// A running cluster manager.
pub struct ClusterManager {
    server: GrpcServer,
    service: service::ClusterService,
}

impl ClusterManager {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn service(&self) -> &service::ClusterService {
        &self.service
    }

    /// Wait for the server to stop (after the shutdown token fired).
    pub async fn stopped(self) -> Result<(), GrpcError> {
        self.server.stopped().await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
}

/// Start the manager: the gRPC server and the liveness sweep, both ending
/// when `shutdown` is cancelled.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<ClusterManager, StartError> {
    config.validate().map_err(StartError::Config)?;
    let sweep_period = Duration::from_millis(config.manager.check_alive_interval);
    let listen = config.listen.clone();
    let election = config.election.clone();
    let standing = election.enabled().then(|| {
        std::sync::Arc::new(std::sync::Mutex::new(election::Standing::new(
            Duration::from_secs(election.ttl.max(1)),
        )))
    });
    let mut service = service::ClusterService::new(
        manager::Manager::new(config.clone(), Instant::now()),
        shutdown.clone(),
    );
    if let Some(s) = &standing {
        service = service.with_election(s.clone());
    }
    let _ = conclave_common::metrics::serve_with(
        &config.metrics,
        shutdown.clone(),
        discovery::routes(service.clone()),
    )
    .await;
    let routes = tonic::service::Routes::new(ClusterManagerServer::new(service.clone()));
    let server = GrpcServer::start(
        &listen,
        routes,
        &[<ClusterManagerServer<service::ClusterService> as NamedService>::NAME],
        shutdown.clone(),
    )
    .await?;
    if let Some(standing) = standing {
        let advertise = if let Some((network, port)) = election
            .advertise
            .rsplit_once(':')
            .filter(|(n, _)| n.contains('/'))
        {
            // "10.0.9.0/24:7001": this machine's address in that network
            format!("{}:{port}", conclave_common::net::advertised_ip(network))
        } else if !election.advertise.is_empty() {
            election.advertise.clone()
        } else if server.local_addr().ip().is_unspecified() {
            format!(
                "{}:{}",
                conclave_common::net::first_non_loopback_ip(),
                server.local_addr().port()
            )
        } else {
            server.local_addr().to_string()
        };
        tracing::info!(etcd = ?election.etcd, name = %election.name, ttl = election.ttl, %advertise, "campaigning for the lead (standby until elected)");
        let terms = service.clone();
        let registry = service.clone();
        let mut term_config = config.clone();
        term_config.manager.initial_time = election.initial_time;
        tokio::spawn(election::run(
            election,
            advertise,
            standing,
            move |expected| {
                if expected.is_none() {
                    tracing::warn!("no longer leading: standing by");
                }
                terms.new_term(term_config.clone(), expected.unwrap_or_default());
            },
            move || registry.core().worker_ids(),
            shutdown.clone(),
        ));
    } else {
        tracing::info!("no [election]: this cluster manager serves alone");
    }
    let sweeper = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(Instant::now() + sweep_period, sweep_period);
        // after a pause, one late sweep (which sees the pause), not a burst
        // of catch-up sweeps that would count it against every worker
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => sweeper.sweep(),
            }
        }
    });
    Ok(ClusterManager { server, service })
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let manager = start(config, shutdown).await?;
    manager.stopped().await?;
    tracing::info!("cluster manager stopped");
    Ok(())
}
