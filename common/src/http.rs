//! The HTTP counterpart of `grpc::ServerLayer`: one tower layer that gives
//! every HTTP request (the REST API) a span carrying its route and the
//! caller's trace id (`traceparent`, or a new one), and records latency and
//! status metrics. Routes are labelled by a template the server provides,
//! so that ids in paths cannot grow the metrics without bound.

use std::pin::Pin;
use std::task::{Context, Poll};

/// Maps a request's method and path to its route template, e.g.
/// `GET /v1/rooms/{room}`.
pub type RouteLabel = fn(&http::Method, &str) -> String;

#[derive(Clone, Copy)]
pub struct HttpLayer {
    label: RouteLabel,
}

impl HttpLayer {
    pub fn new(label: RouteLabel) -> HttpLayer {
        HttpLayer { label }
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpService {
            inner,
            label: self.label,
        }
    }
}

#[derive(Clone)]
pub struct HttpService<S> {
    inner: S,
    label: RouteLabel,
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for HttpService<S>
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
        let route = (self.label)(request.method(), request.uri().path());
        let parent = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::parse_traceparent);
        let span = tracing::info_span!(
            "http",
            route = %route,
            trace_id = tracing::field::Empty,
            room = tracing::field::Empty,
            participant = tracing::field::Empty,
            service = tracing::field::Empty,
        );
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(crate::trace::within(span, parent, async move {
            let started = std::time::Instant::now();
            let result = inner.call(request).await;
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "transport".to_string(),
            };
            let elapsed = started.elapsed().as_secs_f64();
            metrics::counter!("http_server_requests_total", "route" => route.clone(), "status" => status.clone()).increment(1);
            metrics::histogram!("http_server_duration_seconds", "route" => route).record(elapsed);
            tracing::debug!(%status, elapsed_ms = elapsed * 1000.0, "request handled");
            result
        }))
    }
}
