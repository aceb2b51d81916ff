//! Logging through `tracing`: an env filter, human-readable lines by default,
//! JSON lines on request; and, when a collector is configured, the same spans
//! exported over OTLP (gRPC) as OpenTelemetry traces.

use crate::sync::Locked;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `[log]` table of every service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" (default) or "json".
    pub format: String,
    /// Filter directives as in RUST_LOG (default "info"); RUST_LOG wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            filter: "info".into(),
        }
    }
}

/// The `[trace]` table of every service: OTLP export of spans.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TraceConfig {
    /// OTLP/gRPC collector to export spans to, e.g. "http://localhost:4317".
    /// Default "": the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variable when set, else no export (the
    /// trace id is still on every log line).
    pub otlp_endpoint: String,
    /// Longest time a finished span waits before it is sent (the batch
    /// processor's schedule delay). Default 5000 (OpenTelemetry's).
    pub export_delay: u64,
    /// Deadline of one export call. Default 10000.
    pub export_timeout: u64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            otlp_endpoint: String::new(),
            export_delay: 5000,
            export_timeout: 10_000,
        }
    }
}

impl TraceConfig {
    /// The collector spans go to, if any: the configured endpoint, else the
    /// standard OpenTelemetry variables of `env`.
    pub fn endpoint(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        if !self.otlp_endpoint.trim().is_empty() {
            return Some(self.otlp_endpoint.trim().to_string());
        }
        [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .filter_map(env)
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (then outgoing calls get client spans).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// What `init` installed; `shutdown` sends the spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flush and stop the exporter (waits at most the export timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = result {
                eprintln!("OTLP exporter shutdown: {e}");
            }
        }
    }
}

/// Install the global subscriber for service `service` (its OpenTelemetry
/// `service.name`). Must run inside a Tokio runtime when exporting. Safe to
/// call more than once (tests start several services in one process); later
/// calls install nothing.
pub fn init(
    service: &str,
    log: &LogConfig,
    trace: &TraceConfig,
    force_json: bool,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: piped logs (containers, tests) stay plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let fmt = if force_json || log.format.eq_ignore_ascii_case("json") {
        fmt.json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    // The log filter is the log's alone: quiet logs (`warn`) must not empty
    // the exported traces, whose spans are all at `info`.
    let fmt = fmt.with_filter(filter);
    let endpoint = trace.endpoint(|k| std::env::var(k).ok());
    let provider = match &endpoint {
        Some(endpoint) => Some(provider(service, endpoint, trace)?),
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("conclave"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok();
    if !installed {
        // Already installed: keep the first subscriber; this exporter would
        // never see a span.
        return Ok(Telemetry::default());
    }
    if let Some(endpoint) = endpoint {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(%endpoint, service, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

fn provider(
    service: &str,
    endpoint: &str,
    trace: &TraceConfig,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_millis(trace.export_timeout))
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let exporter = ReportedExporter {
        inner: exporter,
        endpoint: endpoint.to_string(),
        last_warning: std::sync::Mutex::new(None),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(trace.export_delay.max(1)))
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_sampler(TraceRoots)
        .with_span_processor(GrpcSpanNames(batch))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build())
}

/// How often a failing exporter says so in the log.
const EXPORT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The OTLP exporter, with its failures in the log (at most one line a
/// minute): OpenTelemetry itself drops them silently, and an operator with a
/// wrong endpoint would never learn why no trace arrives.
#[derive(Debug)]
struct ReportedExporter<E> {
    inner: E,
    endpoint: String,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for ReportedExporter<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            let mut last = self.last_warning.locked();
            if last.is_none_or(|t| t.elapsed() >= EXPORT_WARNING_INTERVAL) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(endpoint = %self.endpoint, error = %e, spans, "exporting spans failed; they are dropped");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource)
    }
}

/// Which spans start a trace: a client's login, relogin, text or logout (the
/// portal's `trace::root` spans), and a gRPC call with no trace of its own
/// (an operator's `grpcurl`). Long-lived spans of
/// housekeeping (a worker's keep-alive loop) are never exported; a span
/// with a parent follows its parent, so a caller's "not sampled" holds.
#[derive(Debug, Clone)]
struct TraceRoots;

impl opentelemetry_sdk::trace::ShouldSample for TraceRoots {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry_sdk::trace::Sampler;
        let root = if matches!(name, "login" | "relogin" | "text" | "logout" | "grpc") {
            Sampler::AlwaysOn
        } else {
            Sampler::AlwaysOff
        };
        Sampler::ParentBased(Box::new(root)).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// Names the spans of gRPC calls after their method and gives them their
/// kind (server or client), so a collector shows
/// `/conference.v1.Conference/Join` rather than `grpc`; the log lines keep
/// the short span name with a `method` field.
#[derive(Debug)]
struct GrpcSpanNames<P>(P);

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for GrpcSpanNames<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.0.on_start(span, cx)
    }

    fn on_end(&self, mut span: opentelemetry_sdk::trace::SpanData) {
        let kind = match span.name.as_ref() {
            "grpc" => Some(opentelemetry::trace::SpanKind::Server),
            "grpc_client" => Some(opentelemetry::trace::SpanKind::Client),
            _ => None,
        };
        if let Some(kind) = kind
            && let Some(method) = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "method")
        {
            span.name = method.value.as_str().into_owned().into();
            span.span_kind = kind;
        }
        self.0.on_end(span)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_the_config_then_the_standard_variables() {
        let none = |_: &str| None;
        assert_eq!(TraceConfig::default().endpoint(none), None);
        let env =
            |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4317".to_string());
        assert_eq!(
            TraceConfig::default().endpoint(env).as_deref(),
            Some("http://c:4317")
        );
        let configured = TraceConfig {
            otlp_endpoint: " http://mine:4317 ".into(),
            ..TraceConfig::default()
        };
        assert_eq!(
            configured.endpoint(env).as_deref(),
            Some("http://mine:4317")
        );
        let blank = |_: &str| Some("  ".to_string());
        assert_eq!(TraceConfig::default().endpoint(blank), None);
    }
}
