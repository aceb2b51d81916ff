//! One trace per login across services: a W3C `traceparent` carried in gRPC
//! metadata. The trace id lives in a task-local while a request is handled,
//! is injected into every outgoing call made from that task, and is a field of
//! the request's span, so every log line of a login shows it.
//!
//! When OTLP export is on (`[trace] otlp_endpoint`, see `telemetry`), the
//! spans are OpenTelemetry spans too: a trace's first span takes its trace id
//! from OpenTelemetry, a server span continues the caller's span named in
//! `traceparent`, and an outgoing call names the calling span, so a collector
//! sees one tree per login. Without export the ids are random and the span id
//! of a `traceparent` is a fresh one per call.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

tokio::task_local! {
    static TRACE_ID: String;
}

/// The caller's span, as a `traceparent` header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits.
    pub span_id: String,
    pub sampled: bool,
}

/// A new random trace id (32 hex digits).
pub fn new_trace_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

fn new_span_id() -> String {
    let bytes: [u8; 8] = rand::rng().random();
    hex::encode(bytes)
}

/// The trace id of the request being handled, if any.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Run `fut` as part of trace `trace_id`.
///
/// This and the wrappers below are plain functions returning the wrapped
/// future, not `async fn`s: an `async fn` taking a future keeps it twice in
/// its state (the argument and the future it awaits), so each level of
/// wrapping doubled a login's future (1.9 KB of its own, 7.9 KB wrapped),
/// and every move of it (into its task, into each wrapper) copied that.
pub fn scope<F: std::future::Future>(
    trace_id: String,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    TRACE_ID.scope(trace_id, fut)
}

/// Make `span` the first span of a trace (no `parent`) or the continuation
/// of the caller's span `parent`, record its `trace_id` field and return the
/// trace id. `span` must declare `trace_id` (as `tracing::field::Empty`).
pub fn start(span: &tracing::Span, parent: Option<&Parent>) -> String {
    let trace_id = match parent {
        Some(parent) => {
            // Fails only when no OpenTelemetry layer is installed (no export):
            // then the trace id is all there is to carry on.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(
                SpanContext::new(
                    TraceId::from_hex(&parent.trace_id).unwrap_or(TraceId::INVALID),
                    SpanId::from_hex(&parent.span_id).unwrap_or(SpanId::INVALID),
                    if parent.sampled {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                    true,
                    TraceState::default(),
                ),
            ));
            parent.trace_id.clone()
        }
        None => {
            let context = span.context();
            let otel = context.span().span_context().clone();
            if otel.is_valid() {
                format!("{:032x}", otel.trace_id())
            } else {
                new_trace_id()
            }
        }
    };
    span.record("trace_id", tracing::field::display(&trace_id));
    trace_id
}

/// Record ids a handler learned (`room`, `participant`, `worker`, `node`) on
/// the current span: they show on its log lines and are attributes of its
/// exported span. Fields the span does not declare are ignored.
pub fn record(ids: &[(&str, &str)]) {
    let span = tracing::Span::current();
    for (key, value) in ids {
        span.record(*key, tracing::field::display(value));
    }
}

/// Run `fut` as a new trace whose first span is `span` (which must declare
/// `trace_id`): what a client's request to the portal (login, text, ...) is.
pub fn root<F: std::future::Future>(
    span: tracing::Span,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    within(span, None, fut)
}

/// Run `fut` under `span` (declaring `trace_id`) as the continuation of
/// `parent`, or as a new trace: the trace id is `span`'s field, the current
/// trace for calls `fut` makes, and on every line it logs.
pub fn within<F: std::future::Future>(
    span: tracing::Span,
    parent: Option<Parent>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument;
    let trace_id = start(&span, parent.as_ref());
    scope(trace_id, fut.instrument(span))
}

/// Run `fut` in the trace of `traceparent` (captured with [`outgoing`]
/// where the work was queued) under `span` (declaring `trace_id`); outside
/// any trace when there is none.
pub fn resume<F: std::future::Future>(
    traceparent: Option<&str>,
    span: tracing::Span,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    use futures_util::future::Either;
    match traceparent.and_then(parse_traceparent) {
        Some(parent) => Either::Left(within(span, Some(parent), fut)),
        None => Either::Right(fut),
    }
}

/// `traceparent` for a call made now from within the current span, in the
/// current trace; `None` outside a trace.
pub fn outgoing() -> Option<String> {
    let trace_id = current()?;
    let context = tracing::Span::current().context();
    let otel = context.span().span_context().clone();
    if otel.is_valid() && format!("{:032x}", otel.trace_id()) == trace_id {
        let flags = if otel.is_sampled() { "01" } else { "00" };
        return Some(format!("00-{trace_id}-{:016x}-{flags}", otel.span_id()));
    }
    Some(traceparent(&trace_id))
}

/// `traceparent` for a call made outside any trace (keep-alives, load
/// reports, other housekeeping): the callee logs under a fresh trace id, and
/// the flags say "not sampled", so such calls are never exported as traces.
pub fn untraced() -> String {
    format!("00-{}-{}-00", new_trace_id(), new_span_id())
}

/// `traceparent` for an outgoing call in trace `trace_id` (a fresh span id).
pub fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{}-01", new_span_id())
}

/// The caller's span of a `traceparent` header, if well formed.
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    let zero = |s: &str| s.chars().all(|c| c == '0');
    if !hex(version, 2)
        || version.eq_ignore_ascii_case("ff")
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
        || zero(trace)
        || zero(span)
    {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id: trace.to_ascii_lowercase(),
        span_id: span.to_ascii_lowercase(),
        sampled: flags & 1 == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let id = new_trace_id();
        assert_eq!(id.len(), 32);
        let header = traceparent(&id);
        let parent = parse_traceparent(&header).unwrap();
        assert_eq!(parent.trace_id, id);
        assert_eq!(parent.span_id.len(), 16);
        assert!(parent.sampled);
        assert_eq!(
            parse_traceparent("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-00"),
            Some(Parent {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                sampled: false,
            })
        );
        for bad in [
            "",
            "garbage",
            "00-xyz-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_trace_id_is_task_local() {
        assert_eq!(current(), None);
        let got = scope("abc".into(), async { current() }).await;
        assert_eq!(got.as_deref(), Some("abc"));
        assert_eq!(current(), None);
    }

    #[test]
    fn without_export_a_trace_starts_random_and_continues_the_callers() {
        let span = tracing::info_span!("t", trace_id = tracing::field::Empty);
        let root = start(&span, None);
        assert_eq!(root.len(), 32);
        let parent = parse_traceparent(&traceparent(&root)).unwrap();
        assert_eq!(start(&span, Some(&parent)), root);
    }

    #[tokio::test]
    async fn outgoing_calls_carry_the_current_trace() {
        assert_eq!(outgoing(), None);
        assert!(!parse_traceparent(&untraced()).unwrap().sampled);
        let header = scope("0af7651916cd43dd8448eb211c80319c".into(), async {
            outgoing()
        })
        .await
        .unwrap();
        assert_eq!(
            parse_traceparent(&header).unwrap().trace_id,
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
