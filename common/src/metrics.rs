//! Prometheus metrics: every service records through the `metrics` facade
//! and serves `/metrics` over HTTP on `[metrics] listen`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

pub use metrics::{counter, gauge, histogram};

/// The `[metrics]` table of every service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` is served; "" turns it off. The default differs per
    /// service (management 9700, cluster manager 9701, portal 9702, agent
    /// 9703; conference nodes a port the OS picks).
    pub listen: String,
}

impl MetricsConfig {
    pub fn on(listen: &str) -> Self {
        MetricsConfig {
            listen: listen.to_string(),
        }
    }
}

static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();

/// The process-wide recorder (installed on first use; services started in
/// one test process share it).
pub fn handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): keep recording into ours.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serve `/metrics` on `config.listen` until `shutdown`; `None` when off.
pub async fn serve(
    config: &MetricsConfig,
    shutdown: CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    serve_with(config, shutdown, axum::Router::new()).await
}

/// [`serve`], with more routes beside `/metrics` (the cluster manager's
/// service discovery of conference nodes).
pub async fn serve_with(
    config: &MetricsConfig,
    shutdown: CancellationToken,
    extra: axum::Router,
) -> std::io::Result<Option<SocketAddr>> {
    let handle = handle();
    if config.listen.is_empty() {
        return Ok(None);
    }
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            // Metrics are not worth refusing to serve for: say so loudly.
            tracing::error!(listen = %config.listen, error = %e, "cannot serve metrics");
            return Err(e);
        }
    };
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { handle.render() }),
        )
        .merge(extra);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    tracing::info!(local_addr = %addr, "metrics listening");
    Ok(Some(addr))
}
