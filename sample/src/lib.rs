//! The sample application server and page (issue 18), as OWT ships one: an
//! HTTP server on 3001 that gets tokens from the REST API with MAuth (the
//! way an OWT application server does) and serves a conference page that
//! joins a room over Socket.IO.
//!
//! - `POST /tokens` takes OWT's sample body `{room?, user, role}` and answers
//!   the raw token text; without a room it uses (creating it if needed) the
//!   room named `sampleRoom`. A REST failure is `401` with its text, as in
//!   OWT's sample. `POST /createToken` is the older form `{room, username, role}`.
//! - `/` is the page; `/tests.html` runs the page's own unit tests in the
//!   browser.

pub mod config;
pub mod owt_rest;
pub mod sample_service;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use owt_rest::OwtRest;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the sample service: {0}")]
    Service(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;
/// Longest user name accepted.
const MAX_USER: usize = 256;

struct App {
    rest: OwtRest,
    room_name: String,
    /// The sample room's id, once found or made.
    room: Mutex<Option<String>>,
}

impl App {
    /// The sample room: found by name among the service's rooms (first page
    /// of 100, as OWT's sample looks), or created.
    async fn sample_room(&self) -> Result<String, String> {
        let mut room = self.room.lock().await;
        if let Some(id) = room.as_ref() {
            return Ok(id.clone());
        }
        let rooms = self
            .rest
            .get_rooms(1, 100)
            .await
            .map_err(|e| e.to_string())?;
        if !rooms.ok() {
            return Err(rooms.body);
        }
        let found = rooms.json().as_array().and_then(|list| {
            list.iter()
                .find(|r| r["name"] == self.room_name.as_str())
                .and_then(|r| r["_id"].as_str().map(str::to_string))
        });
        let id = match found {
            Some(id) => id,
            None => {
                let made = self
                    .rest
                    .create_room(&self.room_name, serde_json::json!({}))
                    .await
                    .map_err(|e| e.to_string())?;
                if !made.ok() {
                    return Err(made.body);
                }
                let id = made.json()["_id"].as_str().unwrap_or_default().to_string();
                tracing::info!(room = %id, name = %self.room_name, "sample room created");
                id
            }
        };
        *room = Some(id.clone());
        Ok(id)
    }
}

/// The page and its scripts, served from the binary.
const STATIC: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
    (
        "/sio.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/sio.js"),
    ),
    (
        "/owt.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/owt.js"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "/tests.html",
        "text/html; charset=utf-8",
        include_str!("../static/tests.html"),
    ),
    (
        "/tests.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/tests.js"),
    ),
];

fn secure_headers(response: &mut Response) {
    let h = response.headers_mut();
    // the page talks to the portal the token names, over ws: or wss:
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response();
    secure_headers(&mut r);
    r
}

async fn handle(State(app): State<Arc<App>>, request: http::Request<axum::body::Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if parts.method == http::Method::GET {
        if path == "/healthz" {
            return text(StatusCode::OK, "ok".into());
        }
        return match STATIC.iter().find(|(p, _, _)| *p == path) {
            Some((_, kind, content)) => {
                let mut r = ([(header::CONTENT_TYPE, *kind)], *content).into_response();
                secure_headers(&mut r);
                r
            }
            None => text(StatusCode::NOT_FOUND, "Not found".into()),
        };
    }
    let legacy = match (parts.method.as_str(), path.trim_end_matches('/')) {
        ("POST", "/tokens") => false,
        ("POST", "/createToken") => true,
        _ => return text(StatusCode::NOT_FOUND, "Not found".into()),
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return text(StatusCode::BAD_REQUEST, "Request body too large".into());
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&bytes) else {
        return text(StatusCode::BAD_REQUEST, "Expected a JSON object".into());
    };
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::trim);
    let user = if legacy {
        field("username")
    } else {
        field("user")
    };
    let Some(user) = user.filter(|u| !u.is_empty() && u.chars().count() <= MAX_USER) else {
        return text(
            StatusCode::BAD_REQUEST,
            "A user name (1 to 256 characters) is required".into(),
        );
    };
    let role = field("role")
        .filter(|r| !r.is_empty())
        .unwrap_or("presenter");
    let room = match field("room").filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => match app.sample_room().await {
            Ok(r) => r,
            Err(e) => return text(StatusCode::UNAUTHORIZED, e),
        },
    };
    match app.rest.create_token(&room, user, role).await {
        Ok(answer) if answer.ok() => text(StatusCode::OK, answer.body),
        Ok(answer) => text(StatusCode::UNAUTHORIZED, answer.body),
        Err(e) => text(StatusCode::UNAUTHORIZED, e.to_string()),
    }
}

/// A started sample server.
pub struct Sample {
    local_addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl Sample {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn stopped(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Start serving: find (or make) the sample service, then listen.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Sample, StartError> {
    let (rest_addr, rest_secure) =
        config::rest_addr(&config.rest_url).map_err(StartError::Config)?;
    let rest_tls = if rest_secure {
        Some(
            owt_rest::TlsClient::from_ca_file(&config.rest_ca)
                .map_err(|e| StartError::Config(format!("rest_ca: {e}")))?,
        )
    } else {
        None
    };
    if config.tls.enabled() {
        conclave_common::tls::load(&config.tls.cert, &config.tls.key)
            .map_err(|e| StartError::Config(format!("tls: {e}")))?;
    }
    let (id, key) = if !config.service_id.is_empty() && !config.service_key.is_empty() {
        (config.service_id.clone(), config.service_key.clone())
    } else {
        sample_service::find_or_create(
            &config.management,
            std::path::Path::new(&config.data_dir),
            &config.service_name,
        )
        .await
        .map_err(|e| StartError::Service(format!("{e:#}")))?
    };
    let mut rest = OwtRest::new(&id, &key, &rest_addr);
    if let Some(tls) = rest_tls {
        rest = rest.with_tls(tls);
    }
    let app = Arc::new(App {
        rest,
        room_name: config.room.clone(),
        room: Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    // find or make the sample room now, so that the first visitor does not wait
    let warm = app.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            match warm.sample_room().await {
                Ok(room) => {
                    tracing::info!(%room, "sample room ready");
                    return;
                }
                Err(e) => tracing::info!(error = %e, "sample room not ready yet; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(app)
        .layer(conclave_common::http::HttpLayer::new(route_label));
    let secure = config.tls.enabled();
    tracing::info!(%local_addr, service = %id, rest = %rest_addr, tls = secure, "sample serving");
    let task = if secure {
        let (tls, _) =
            conclave_common::tls::server_config(&config.tls, &[b"http/1.1"], shutdown.clone())
                .map_err(|e| StartError::Config(format!("tls: {e}")))?;
        let listener =
            conclave_common::tls::TlsListener::new(listener, tls, false).map_err(|source| {
                StartError::Bind {
                    addr: config.listen.clone(),
                    source,
                }
            })?;
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
    Ok(Sample { local_addr, task })
}

fn route_label(method: &http::Method, path: &str) -> String {
    let known = STATIC.iter().any(|(p, _, _)| *p == path)
        || matches!(
            path.trim_end_matches('/'),
            "/tokens" | "/createToken" | "/healthz"
        );
    format!("{method} {}", if known { path } else { "unknown" })
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let sample = start(config, shutdown).await?;
    if let Err(e) = sample.stopped().await {
        tracing::warn!(error = %e, "sample server stopped with an error");
    }
    tracing::info!("sample stopped");
    Ok(())
}

/// `--health-check HOST:PORT`: whether `/healthz` answers 200 (over
/// https trusting `tls` when given).
pub async fn healthy(addr: &str, tls: Option<&owt_rest::TlsClient>) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            owt_rest::request(addr, tls, "GET", "/healthz", None, "", None)
        )
        .await,
        Ok(Ok(a)) if a.status == 200
    )
}
