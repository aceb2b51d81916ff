//! OWT's REST management API (reference §1–2) on axum, over the same
//! service core as gRPC: routes (`rest/routes.rs`), handlers
//! (`rest/handlers.rs`), and here the server, MAuth, bodies, CORS and OWT's
//! error form `{"error":{"code","message"}}`.
//!
//! Differences from OWT, each what OWT meant: PUT is in the CORS methods; a
//! failed MAuth answers at once instead of after a random 0–1 s delay (the
//! signature check is constant-time); replay protection is on.

mod handlers;
pub mod routes;

use crate::config::RestConfig;
use crate::error::ManagementError;
use crate::mauth::{AuthError, FAILURE_MESSAGE};
use crate::service::ManagementService;
use crate::store::StoreError;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An error in OWT's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl RestError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> RestError {
        RestError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found() -> RestError {
        RestError::new(StatusCode::NOT_FOUND, 1001, "Resource not found")
    }
    pub fn service_not_found() -> RestError {
        RestError::new(StatusCode::NOT_FOUND, 1002, "Service not found")
    }
    pub fn room_not_found() -> RestError {
        RestError::new(StatusCode::NOT_FOUND, 1003, "Room not found")
    }
    pub fn stream_not_found() -> RestError {
        RestError::new(StatusCode::NOT_FOUND, 1004, "Stream not found")
    }
    pub fn participant_not_found() -> RestError {
        RestError::new(StatusCode::NOT_FOUND, 1005, "Participant not found")
    }
    pub fn unauthorized() -> RestError {
        RestError::new(StatusCode::UNAUTHORIZED, 1101, FAILURE_MESSAGE)
    }
    /// The store cannot be reached: 503, OWT's server error code.
    pub fn unavailable(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::SERVICE_UNAVAILABLE, 2001, message)
    }
    pub fn forbidden(message: &str) -> RestError {
        RestError::new(StatusCode::FORBIDDEN, 1102, message)
    }
    pub fn bad_request(message: impl Into<String>) -> RestError {
        RestError::new(StatusCode::BAD_REQUEST, 1201, message)
    }
    pub fn operation_failed() -> RestError {
        RestError::new(StatusCode::INTERNAL_SERVER_ERROR, 1301, "Operation failed")
    }
    /// Media routes: Conclave has no media plane.
    pub fn no_media_plane(what: &str) -> RestError {
        RestError::new(
            StatusCode::NOT_IMPLEMENTED,
            1301,
            format!("No media plane: Conclave serves signaling only, so {what} are not available"),
        )
    }
}

impl From<ManagementError> for RestError {
    fn from(e: ManagementError) -> RestError {
        let message = e.to_string();
        match e {
            ManagementError::RoomNotFound => RestError::room_not_found(),
            ManagementError::ServiceNotFound => RestError::service_not_found(),
            ManagementError::SuperService => RestError::forbidden(&message),
            ManagementError::InvalidRoom(_)
            | ManagementError::NameOrRole
            | ManagementError::InvalidArgument(_)
            | ManagementError::ServiceExists(_)
            | ManagementError::UnknownToken
            | ManagementError::Expired => RestError::bad_request(message),
            ManagementError::NoPortal => {
                RestError::new(StatusCode::INTERNAL_SERVER_ERROR, 1301, message)
            }
            ManagementError::Store(StoreError::Unavailable(_)) => {
                tracing::warn!(error = %message, "store unavailable");
                RestError::unavailable(message)
            }
            ManagementError::Store(_) | ManagementError::Internal(_) => {
                tracing::error!(error = %message, "management failure");
                RestError::new(StatusCode::INTERNAL_SERVER_ERROR, 2001, message)
            }
        }
    }
}

/// A successful answer.
pub enum Reply {
    Json(Value),
    /// Raw text (tokens, `Room deleted`): the official client hands it to
    /// the application as it is.
    Text(String),
    Empty,
}

fn cors(response: &mut Response) {
    let h = response.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, DELETE, PATCH, PUT"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("origin, authorization, content-type"),
    );
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=1024000; includeSubDomain"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

fn respond(result: Result<Reply, RestError>) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let json = |status: StatusCode, body: &Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response()
    };
    let mut response = match result {
        Ok(Reply::Json(v)) => json(StatusCode::OK, &v),
        Ok(Reply::Text(t)) => text(StatusCode::OK, t),
        Ok(Reply::Empty) => StatusCode::OK.into_response(),
        Err(e) => json(
            e.status,
            &json!({"error": {"code": e.code, "message": e.message}}),
        ),
    };
    cors(&mut response);
    response
}

struct App {
    service: ManagementService,
    max_body: usize,
}

/// A request as the handlers see it: authenticated, its body parsed.
pub struct Call {
    pub method: Method,
    pub query: String,
    pub body: Value,
    /// The service that signed the request.
    pub caller: crate::services::Service,
    /// Username and role vouched for by the MAuth header.
    pub header_user: Option<(String, String)>,
}

async fn handle(State(app): State<Arc<App>>, request: http::Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method == Method::OPTIONS {
        let mut response = (StatusCode::OK, "OK").into_response();
        cors(&mut response);
        return response;
    }
    let path = parts.uri.path().to_string();
    if !routes::needs_auth(&path) {
        return respond(Err(RestError::not_found()));
    }
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match app.service.authenticate(authorization).await {
        Ok(caller) => caller,
        Err(AuthError::Unavailable(message)) => {
            tracing::warn!(error = %message, "cannot check MAuth: the store is unavailable");
            return respond(Err(RestError::unavailable(message)));
        }
        Err(e) => {
            let reason = match e {
                AuthError::Missing => "missing",
                AuthError::Malformed(_) => "malformed",
                AuthError::Method(_) => "method",
                AuthError::UnknownService => "unknown_service",
                AuthError::Signature => "signature",
                AuthError::Stale => "stale",
                AuthError::Replayed => "replayed",
                AuthError::Unavailable(_) => "unavailable",
            };
            conclave_common::metrics::counter!("management_rest_auth_failures_total", "reason" => reason)
                .increment(1);
            tracing::info!(error = %e, "MAuth refused");
            return respond(Err(RestError::unauthorized()));
        }
    };
    conclave_common::trace::record(&[("service", &caller.id)]);
    let header_user = authorization
        .and_then(|h| crate::mauth::Header::parse(h).ok())
        .and_then(|h| h.user_and_role());
    let Some(resource) = routes::parse(&path) else {
        return respond(Err(RestError::not_found()));
    };
    let body = match read_body(&parts.headers, body, app.max_body).await {
        Ok(body) => body,
        Err(e) => return respond(Err(e)),
    };
    let call = Call {
        method: parts.method,
        query: parts.uri.query().unwrap_or("").to_string(),
        body,
        caller,
        header_user,
    };
    respond(handlers::dispatch(&app.service, resource, call).await)
}

/// The body as JSON when it says it is JSON; `{}` when it is empty or of
/// another type (OWT's body parser leaves such bodies empty).
async fn read_body(
    headers: &http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Value, RestError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        RestError::bad_request(format!("Request body is larger than {limit} bytes"))
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    if !is_json || bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|_| RestError::bad_request("Failed to parse JSON body"))
}

/// A started REST server.
pub struct RestServer {
    local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl RestServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn stopped(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Serve the REST API on `config.listen` until `shutdown`.
pub async fn serve(
    config: &RestConfig,
    service: ManagementService,
    shutdown: CancellationToken,
) -> std::io::Result<RestServer> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("REST API on {}: {e}", config.listen))
        })?;
    let local_addr = listener.local_addr()?;
    let app = Arc::new(App {
        service,
        max_body: config.max_body,
    });
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(app)
        .layer(conclave_common::http::HttpLayer::new(routes::template));
    let secure = config.tls.enabled();
    tracing::info!(%local_addr, tls = secure, "REST API listening");
    let task = if secure {
        let (tls, _) =
            conclave_common::tls::server_config(&config.tls, &[b"http/1.1"], shutdown.clone())
                .map_err(std::io::Error::other)?;
        let listener = conclave_common::tls::TlsListener::new(listener, tls, false)?;
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        })
    } else {
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        })
    };
    Ok(RestServer { local_addr, task })
}
