//! The Conclave management service: rooms and one-time join tokens (OWT's
//! management API) over gRPC, on an embedded store. `main.rs` parses
//! configuration and calls [`run`]; tests call [`start`] with their own clock.

pub mod accounts;
pub mod clock;
pub mod config;
pub mod error;
pub mod mauth;
pub mod node;
pub mod owt;
pub mod portal;
pub mod rest;
pub mod room;
pub mod service;
pub mod services;
pub mod store;

use clock::Clock;
use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::management::v1::management_server::ManagementServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

pub use config::Config;

/// Largest request the server decodes.
const MAX_MESSAGE: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("cannot serve the REST API: {0}")]
    Rest(std::io::Error),
}

pub struct Management {
    server: GrpcServer,
    rest: Option<rest::RestServer>,
}

impl Management {
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The REST API's address, when it is on.
    pub fn rest_addr(&self) -> Option<SocketAddr> {
        self.rest.as_ref().map(rest::RestServer::local_addr)
    }

    pub async fn stopped(self) -> Result<(), GrpcError> {
        if let Some(rest) = self.rest
            && let Err(e) = rest.stopped().await
        {
            tracing::warn!(error = %e, "REST API stopped with an error");
        }
        self.server.stopped().await
    }
}

/// Start the service with the system clock.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Management, StartError> {
    start_with_clock(config, Arc::new(clock::SystemClock), shutdown).await
}

/// Start the service with an injected clock (tests age tokens with it).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<Management, StartError> {
    let key =
        conclave_common::token::load_service_key(&config.service_key, &config.service_key_file)
            .map_err(StartError::Config)?;
    if config.rest.tls.enabled() {
        conclave_common::tls::load(&config.rest.tls.cert, &config.rest.tls.key)
            .map_err(|e| StartError::Config(format!("rest.tls: {e}")))?;
    }
    let store = store::open(&config.store, &config.data_dir).await?;
    let _ = conclave_common::metrics::serve(&config.metrics, shutdown.clone()).await;
    if config.store.url.is_empty() {
        tracing::info!(data_dir = %config.data_dir, "store opened (embedded SQLite)");
    }
    let channel = conclave_common::grpc::channel(
        &config.cluster.manager,
        Duration::from_millis(config.cluster.rpc_timeout),
    )?;
    let super_key = conclave_common::token::load_optional_key(
        &config.rest.super_service_key,
        &config.rest.super_service_key_file,
    )
    .map_err(StartError::Config)?;
    if super_key.is_empty() {
        tracing::info!(
            "no super service key (rest.super_service_key): the /services REST routes are closed"
        );
    }
    let replay = config
        .rest
        .replay_protection
        .then(|| mauth::ReplayGuard::new(config.rest.replay_window, config.rest.replay_capacity));
    let accounts = accounts::Accounts::new(
        config.rest.super_service_id.clone(),
        super_key,
        &key,
        replay,
    );
    let service = service::ManagementService::new(
        store,
        clock,
        key,
        ClusterManagerClient::new(channel),
        config.token,
        accounts,
    );
    let rest = if config.rest.listen.is_empty() {
        None
    } else {
        Some(
            rest::serve(&config.rest, service.clone(), shutdown.clone())
                .await
                .map_err(StartError::Rest)?,
        )
    };
    let server = ManagementServer::new(service).max_decoding_message_size(MAX_MESSAGE);
    let server = GrpcServer::start(
        &config.listen,
        tonic::service::Routes::new(server),
        &[<ManagementServer<service::ManagementService> as NamedService>::NAME],
        shutdown,
    )
    .await?;
    Ok(Management { server, rest })
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let management = start(config, shutdown).await?;
    management.stopped().await?;
    tracing::info!("management stopped");
    Ok(())
}

/// `management --copy-store-to TARGET`: the configured store copied into
/// a PostgreSQL database (`postgres://...`, its schema made first) or a
/// SQLite file in the directory TARGET.
pub async fn copy_store(
    config: &Config,
    target: &str,
) -> Result<store::CopyReport, store::StoreError> {
    let same_file = config.store.url.is_empty()
        && std::path::Path::new(target).canonicalize().ok()
            == std::path::Path::new(&config.data_dir).canonicalize().ok();
    if same_file || target == config.store.url {
        return Err(store::StoreError::Config(format!(
            "{target} is the store being copied"
        )));
    }
    let from = store::open(&config.store, &config.data_dir).await?;
    let to_config = store::StoreConfig {
        url: if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            target.to_string()
        } else {
            String::new()
        },
        ..config.store.clone()
    };
    let to = store::open(&to_config, target).await?;
    let report = store::copy(from.as_ref(), to.as_ref()).await?;
    tracing::info!(from = from.kind(), to = to.kind(), ?report, "store copied");
    Ok(report)
}
