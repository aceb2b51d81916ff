//! The Conclave portal: the Socket.IO endpoint OWT clients log in to
//! (Engine.IO 3 and 4 on one port), and the `portal.v1.Portal` gRPC service
//! through which conference nodes reach those clients. `main.rs` parses
//! configuration and calls [`run`]; tests call [`start`].

pub mod clients;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod dialect;
pub mod error;
pub mod login;
pub mod outbox;
pub mod portal;
pub mod remote;
pub mod requests;
pub mod restore;
pub mod service;
pub mod socket;
pub mod stages;
pub mod ticket;

use axum::serve::ListenerExt;
use conclave_common::cluster_watch::{ClusterChange, ClusterWatch};
use conclave_common::cluster_worker::{ClusterWorker, WorkerEvent};
use conclave_common::grpc::{GrpcError, GrpcServer};
use conclave_common::load::{CpuLoad, LoadSource, ManualLoad};
use conclave_common::purpose::Purpose;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::portal::v1::portal_server::PortalServer;
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error(transparent)]
    Worker(#[from] conclave_common::cluster_worker::WorkerError),
    #[error("portal.tls: {0}")]
    Tls(#[from] conclave_common::tls::TlsError),
}

/// A running portal.
pub struct RunningPortal {
    socket_addr: SocketAddr,
    grpc: GrpcServer,
    portal: Arc<portal::Portal>,
    remotes: Arc<remote::GrpcRemotes>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningPortal {
    /// Where Socket.IO clients connect.
    pub fn socket_addr(&self) -> SocketAddr {
        self.socket_addr
    }

    /// Where `portal.v1.Portal` is served.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    pub fn portal(&self) -> &Arc<portal::Portal> {
        &self.portal
    }

    pub fn worker_id(&self) -> &str {
        self.remotes.worker().map(|w| w.id()).unwrap_or_default()
    }

    /// Wait until the portal has dropped its clients, left the cluster and
    /// closed its servers (after the shutdown token fired).
    pub async fn stopped(self) -> Result<(), GrpcError> {
        let _ = self.done.await;
        self.grpc.stopped().await
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_credentials(true)
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
}

/// Give a request's URI and headers their own allocations.
///
/// hyper parses them as slices of the connection's read buffer (8 to 16 KiB),
/// and engineioxide keeps a socket's request parts for the socket's whole
/// life, so every idle connection kept that whole buffer alive (found with a
/// heap profile: about 16 KiB of each connection). Copies of a few hundred
/// bytes let the buffer go.
fn detach_request_parts<B>(mut request: http::Request<B>) -> http::Request<B> {
    let mut headers = http::HeaderMap::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        if let (Ok(name), Ok(mut copy)) = (
            http::HeaderName::from_bytes(name.as_str().as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            copy.set_sensitive(value.is_sensitive());
            headers.append(name, copy);
        }
    }
    *request.headers_mut() = headers;
    if let Ok(uri) = http::Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    request
}

/// Start the portal: Socket.IO and gRPC servers, cluster membership.
pub async fn start(
    config: Config,
    shutdown: CancellationToken,
) -> Result<RunningPortal, StartError> {
    config.validate().map_err(StartError::Config)?;
    if config.portal.tls.enabled() {
        // a clear start-up error before anything listens
        conclave_common::tls::load(&config.portal.tls.cert, &config.portal.tls.key)?;
    }
    let key =
        conclave_common::token::load_service_key(&config.service_key, &config.service_key_file)
            .map_err(StartError::Config)?;
    let _ = conclave_common::metrics::serve(&config.metrics, shutdown.clone()).await;
    let listener = tokio::net::TcpListener::bind(&config.portal.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.portal.listen.clone(),
            source,
        })?;
    let socket_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.portal.listen.clone(),
        source,
    })?;
    let ip = conclave_common::net::advertised_ip(&config.portal.ip_address);
    let hostname = if config.portal.hostname.is_empty() {
        conclave_common::net::hostname()
    } else {
        config.portal.hostname.clone()
    };

    // gRPC first: its address goes into the portal's worker info.
    let grpc_stop = CancellationToken::new();
    let remotes = Arc::new(remote::GrpcRemotes::new(
        &config.management,
        &config.cluster.manager,
        remote::Deadlines::from_config(&config.portal),
    )?);
    let sockets = Arc::new(delivery::SocketIoSockets::default());
    let portal = Arc::new(portal::Portal::new(
        config.clone(),
        key,
        remotes.clone(),
        sockets.clone(),
    ));
    let grpc = GrpcServer::start(
        &config.portal.grpc_listen,
        tonic::service::Routes::new(PortalServer::new(service::PortalService::new(
            portal.clone(),
        ))),
        &[<PortalServer<service::PortalService> as NamedService>::NAME],
        grpc_stop.clone(),
    )
    .await?;
    remotes.set_endpoint(format!("{ip}:{}", grpc.local_addr().port()));

    let (layer, io) = SocketIo::builder()
        .with_state(portal.clone())
        .ping_interval(Duration::from_secs(config.portal.ping_interval))
        .ping_timeout(Duration::from_secs(config.portal.ping_timeout))
        .max_payload(config.portal.max_payload)
        .ws_read_buffer_size(config.portal.ws_read_buffer_size.max(64))
        .build_layer();
    io.ns("/", socket::connected.with(socket::on_connect));
    sockets.set(io.clone());
    let app = axum::Router::new()
        .layer(layer)
        .layer(cors(&config.portal.cors));
    // Outside the router: before anything (axum's `OriginalUri`) clones the URI.
    let app = tower::ServiceBuilder::new()
        .map_request(detach_request_parts::<axum::body::Body>)
        .service(app);
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
    let http_stop = CancellationToken::new();
    let http_wait = http_stop.clone();
    let secure = config.portal.tls.enabled();
    // Served once this portal has joined the cluster (as OWT starts its
    // servers after joinCluster): a login before that would seat its
    // participant with no portal to reach it. Connections wait in the
    // listen backlog meanwhile.
    let serve_http: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = if secure {
        let (tls, _) = conclave_common::tls::server_config(
            &config.portal.tls,
            &[b"http/1.1"],
            http_stop.clone(),
        )?;
        let listener =
            conclave_common::tls::TlsListener::new(listener, tls, true).map_err(|source| {
                StartError::Bind {
                    addr: config.portal.listen.clone(),
                    source,
                }
            })?;
        Box::pin(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_wait.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "Socket.IO server failed");
            }
        })
    } else {
        Box::pin(async move {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_wait.cancelled().await })
                .await
            {
                tracing::error!(error = %e, "Socket.IO server failed");
            }
        })
    };
    let public_port = if config.portal.public_port == 0 {
        socket_addr.port()
    } else {
        config.portal.public_port
    };
    let info = cluster::WorkerInfo {
        ip: ip.clone(),
        hostname,
        port: u32::from(public_port),
        grpc_endpoint: remotes.endpoint().to_string(),
        max_load: config.cluster.max_load,
        capacity: Some(cluster::Capacity {
            isps: config.portal.isps.clone(),
            regions: config.portal.regions.clone(),
            ..Default::default()
        }),
        via_host: config.portal.via_host.clone(),
        ssl: config.portal.ssl || secure,
    };
    let client_load = ManualLoad::new(0.0);
    let load: Arc<dyn LoadSource> = if config.portal.load == "clients" {
        Arc::new(client_load.clone())
    } else {
        Arc::new(CpuLoad::new())
    };
    let worker =
        match ClusterWorker::join(config.cluster.clone(), Purpose::Portal, info, load).await {
            Ok(w) => w,
            Err(e) => {
                grpc_stop.cancel();
                http_stop.cancel();
                return Err(e.into());
            }
        };
    let mut events = worker.subscribe();
    tracing::info!(worker = %worker.id(), socket_addr = %socket_addr, grpc_addr = %grpc.local_addr(), "portal serving");
    remotes.set_worker(worker);
    let http = tokio::spawn(serve_http);
    tracing::info!(local_addr = %socket_addr, tls = secure, "Socket.IO server listening");

    // A node that exits drops the participants it served, a lost agent
    // those of all its nodes (OWT §9.5).
    let watched = portal.clone();
    ClusterWatch::new(&config.cluster.manager, &[Purpose::Conference])?
        .spawn(shutdown.clone(), move |change: ClusterChange| {
            watched.controller_lost(&change)
        });
    // Connections that do not log in in time are closed by one sweep:
    // a quarter of the idle timeout apart, at most a second.
    let period = (Duration::from_millis(config.portal.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let swept = portal.clone();
    every(period, shutdown.clone(), move || {
        swept.close_idle();
        async {}
    });
    // and in case the watch missed one, every node is asked now and then
    if config.portal.node_check_interval > 0 {
        let period = Duration::from_millis(config.portal.node_check_interval);
        let checked = portal.clone();
        every(period, shutdown.clone(), move || {
            let checked = checked.clone();
            async move { checked.check_controllers().await }
        });
    }
    let p = portal.clone();
    let r = remotes.clone();
    let max_clients = config.portal.max_clients as f64;
    let drain_timeout = Duration::from_millis(config.portal.drain_timeout);
    let done = tokio::spawn(async move {
        let mut load_tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = load_tick.tick() => client_load.set(p.participants() as f64 / max_clients),
                e = events.recv() => if let Ok(WorkerEvent::Lost | WorkerEvent::OutOfContact) = e {
                    // Declared lost while alive (a stall, a late keep-alive),
                    // or out of contact long enough for the nodes to have
                    // detached its participants: rejoined already; take the
                    // participants back (a seat still attached here stays).
                    let n = p.rejoined().await;
                    tracing::warn!(participants = n, "the cluster had lost this portal; its participants are attached again");
                }
            }
        }
        tracing::info!("portal draining");
        // Bounded: with the rest of the cluster gone (a lost host, the
        // whole stack stopped at once) each room's rebuild would wait out
        // its restore timeout in turn, for minutes.
        match tokio::time::timeout(drain_timeout, p.drain()).await {
            Ok((moved, dropped)) => tracing::info!(
                moved,
                dropped,
                "portal drained: clients closed to relogin elsewhere"
            ),
            Err(_) => tracing::warn!(
                left = p.participants(),
                timeout_ms = drain_timeout.as_millis() as u64,
                "portal.drain_timeout ran out; the clients left are closed, their nodes keep their seats for a relogin"
            ),
        }
        io.close().await;
        if let Some(worker) = r.worker()
            && let Err(e) = worker.quit().await
        {
            tracing::warn!(error = %e, "quitting the cluster failed");
        }
        http_stop.cancel();
        grpc_stop.cancel();
        let _ = http.await;
    });
    Ok(RunningPortal {
        socket_addr,
        grpc,
        portal,
        remotes,
        done,
    })
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let portal = start(config, shutdown).await?;
    portal.stopped().await?;
    tracing::info!("portal stopped");
    Ok(())
}

/// Run `f` every `period` (the first time one period from now; late ticks
/// are not bunched up) until `stop`.
fn every<F, Fut>(period: Duration, stop: CancellationToken, mut f: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => f().await,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parts_stop_borrowing_the_connection_buffer() {
        // As hyper builds them: slices of one read buffer.
        let buffer = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
        let head = "/socket.io/?EIO=4&transport=websocket";
        let mut raw = buffer.to_vec();
        raw[..head.len()].copy_from_slice(head.as_bytes());
        raw[100..109].copy_from_slice(b"websocket");
        let buffer = bytes::Bytes::from(raw);
        let mut request = http::Request::new(());
        *request.uri_mut() = http::Uri::from_maybe_shared(buffer.slice(..head.len())).unwrap();
        request.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_maybe_shared(buffer.slice(100..109)).unwrap(),
        );
        request.headers_mut().append(
            http::HeaderName::from_static("x-custom"),
            http::HeaderValue::from_maybe_shared(buffer.slice(100..103)).unwrap(),
        );
        let range = buffer.as_ptr_range();
        let inside = |p: *const u8| range.contains(&p);
        assert!(inside(
            request.headers()[http::header::UPGRADE].as_bytes().as_ptr()
        ));

        let request = detach_request_parts(request);
        assert_eq!(request.uri().to_string(), head);
        assert_eq!(request.headers()[http::header::UPGRADE], "websocket");
        assert_eq!(request.headers()["x-custom"], "web");
        for value in request.headers().values() {
            assert!(!inside(value.as_bytes().as_ptr()));
        }
        assert!(!inside(request.uri().path().as_ptr()));
        assert!(!inside(request.uri().query().unwrap().as_ptr()));
    }
}
