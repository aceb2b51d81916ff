//! One trace per login across services: a W3C `traceparent` carried in gRPC
//! metadata. The trace id lives in a task-local while a request is handled,
//! is injected into every outgoing call made from that task, and is a field of
//! the request's span, so every log line of a login shows it.

use rand::Rng;

tokio::task_local! {
    static TRACE_ID: String;
}

/// A new random trace id (32 hex digits).
pub fn new_trace_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id of the request being handled, if any.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Run `fut` as part of trace `trace_id`.
pub async fn scope<F: std::future::Future>(trace_id: String, fut: F) -> F::Output {
    TRACE_ID.scope(trace_id, fut).await
}

/// `traceparent` for an outgoing call in trace `trace_id` (a fresh span id).
pub fn traceparent(trace_id: &str) -> String {
    let span: [u8; 8] = rand::rng().random();
    let span: String = span.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{trace_id}-{span}-01")
}

/// The trace id of a `traceparent` header, if well formed.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    if !hex(version, 2)
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
        || trace.chars().all(|c| c == '0')
    {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let id = new_trace_id();
        assert_eq!(id.len(), 32);
        let header = traceparent(&id);
        assert_eq!(parse_traceparent(&header), Some(id));
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        for bad in [
            "",
            "garbage",
            "00-xyz-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
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
}
