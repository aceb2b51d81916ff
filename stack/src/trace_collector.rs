//! A small OTLP/gRPC trace collector: it receives the spans services export
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) and keeps
//! them in memory. Tests check a login's trace with it, and the local-stack
//! launcher prints each trace it receives as a tree (`--print-traces`), for
//! a machine without Jaeger or an OpenTelemetry Collector.

use conclave_common::sync::Locked;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One exported span.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectedSpan {
    /// The exporting service's `service.name`.
    pub service: String,
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    /// "" for the first span of a trace.
    pub parent_span_id: String,
    pub name: String,
    /// "server", "client", "internal", ...
    pub kind: &'static str,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

impl CollectedSpan {
    pub fn duration_ms(&self) -> f64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos) as f64 / 1e6
    }
}

/// A running collector; stops when dropped.
pub struct TraceCollector {
    local_addr: SocketAddr,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    arrivals: broadcast::Sender<Vec<CollectedSpan>>,
    shutdown: CancellationToken,
}

impl Drop for TraceCollector {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TraceCollector {
    /// Listen on `listen` (port 0 picks one).
    pub async fn start(listen: &str) -> std::io::Result<TraceCollector> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (arrivals, _) = broadcast::channel(1024);
        let shutdown = CancellationToken::new();
        let service = Sink {
            spans: spans.clone(),
            arrivals: arrivals.clone(),
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let served = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "trace collector stopped");
            }
        });
        Ok(TraceCollector {
            local_addr,
            spans,
            arrivals,
            shutdown,
        })
    }

    /// The endpoint to configure as `trace.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.locked().clone()
    }

    /// The spans of trace `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        let mut spans = self.spans();
        spans.retain(|s| s.trace_id == trace_id);
        spans
    }

    /// Each export's spans, as they arrive.
    pub fn subscribe(&self) -> broadcast::Receiver<Vec<CollectedSpan>> {
        self.arrivals.subscribe()
    }
}

struct Sink {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    arrivals: broadcast::Sender<Vec<CollectedSpan>>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let received = collect(request.into_inner());
        self.spans.locked().extend(received.iter().cloned());
        let _ = self.arrivals.send(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The spans of one export request, flattened.
pub fn collect(request: ExportTraceServiceRequest) -> Vec<CollectedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(CollectedSpan {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    kind: kind(span.kind),
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    out
}

/// The spans of one trace as an indented tree, children in start order;
/// a span whose parent was not received is shown at the top level.
pub fn render_tree(spans: &[CollectedSpan]) -> String {
    let mut spans: Vec<&CollectedSpan> = spans.iter().collect();
    spans.sort_by_key(|s| s.start_unix_nanos);
    let known: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    fn line(out: &mut String, span: &CollectedSpan, depth: usize, all: &[&CollectedSpan]) {
        let ids: Vec<String> = ["participant", "room", "worker", "node"]
            .into_iter()
            .filter_map(|k| span.attributes.get(k).map(|v| format!("{k}={v}")))
            .collect();
        out.push_str(&format!(
            "{:indent$}{} [{}] {:.2} ms{}{}\n",
            "",
            span.name,
            span.service,
            span.duration_ms(),
            if ids.is_empty() { "" } else { " " },
            ids.join(" "),
            indent = depth * 2
        ));
        for child in all.iter().filter(|c| c.parent_span_id == span.span_id) {
            line(out, child, depth + 1, all);
        }
    }
    for root in spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty() || !known.contains(s.parent_span_id.as_str()))
    {
        line(&mut out, root, 0, &spans);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, name: &str, start: u64) -> CollectedSpan {
        CollectedSpan {
            service: "s".into(),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            name: name.into(),
            kind: "internal",
            start_unix_nanos: start,
            end_unix_nanos: start + 1_500_000,
            attributes: BTreeMap::from([("room".to_string(), "r1".to_string())]),
        }
    }

    #[test]
    fn a_trace_renders_as_a_tree_in_start_order() {
        let spans = vec![
            span("c", "a", "second", 30),
            span("b", "a", "first", 20),
            span("a", "", "login", 10),
            span("d", "b", "inner", 25),
            span("e", "missing", "orphan", 40),
        ];
        assert_eq!(
            render_tree(&spans),
            "login [s] 1.50 ms room=r1\n  first [s] 1.50 ms room=r1\n    inner [s] 1.50 ms room=r1\n  second [s] 1.50 ms room=r1\norphan [s] 1.50 ms room=r1\n"
        );
    }
}
