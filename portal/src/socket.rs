//! The Socket.IO adapter: the events OWT clients send, handed to the login
//! core, and its answers sent as acks in OWT's `(status, data)` shape.
//!
//! Handlers are registered in a connect middleware, which runs before the
//! CONNECT reply is sent: a client that emits `login` the moment it is
//! connected (the OWT JS SDK does) cannot beat its handler.
//!
//! One handler takes every event and picks by name: socketioxide keeps a
//! socket's named handlers in a map of its own, and twelve names cost each
//! connection about 1 KiB for its whole life (a heap profile of 3 000 idle
//! clients); a socket's fallback handler is a single boxed function.

use crate::login::Answer;
use crate::portal::Portal;
use serde_json::Value;
use socketioxide::extract::{AckSender, Event, SocketRef, State, TryData};
use std::sync::Arc;

type P = State<Arc<Portal>>;

/// Events that need a media plane, which this portal does not have yet.
const MEDIA_EVENTS: [&str; 7] = [
    "publish",
    "unpublish",
    "subscribe",
    "unsubscribe",
    "stream-control",
    "subscription-control",
    "soac",
];

/// Send an answer as the ack.
fn send(ack: AckSender, answer: Answer) {
    let _ = match answer {
        Answer::Ok(word) => ack.send(&(word,)),
        Answer::OkWith(word, data) => ack.send(&(word, data)),
        Answer::Error(message) => ack.send(&("error", message)),
    };
}

/// Connect middleware: set up the connection and its handlers.
pub async fn on_connect(s: SocketRef, State(portal): P) -> Result<(), std::convert::Infallible> {
    portal.connected(s.id);
    conclave_common::metrics::gauge!("portal_sockets", "eio" => eio(&s)).increment(1.0);
    s.on_fallback(on_event);
    s.on_disconnect(async |s: SocketRef, State(portal): P| {
        conclave_common::metrics::gauge!("portal_sockets", "eio" => eio(&s)).decrement(1.0);
        portal.disconnected(s.id).await;
    });
    Ok(())
}

/// The namespace connect handler proper: all is set up by the middleware.
pub async fn connected(s: SocketRef) {
    tracing::debug!(socket = %s.id, transport = ?s.transport_type(), protocol = ?s.protocol(), "socket connected");
}

/// Every event a client sends; unknown ones are ignored, as socketioxide
/// ignores an event nobody handles.
async fn on_event(
    s: SocketRef,
    Event(event): Event,
    State(portal): P,
    TryData(data): TryData<Value>,
    ack: AckSender,
) {
    match event.as_str() {
        "login" => on_login(s, portal, data.ok(), ack).await,
        "relogin" => on_relogin(s, portal, data.ok(), ack).await,
        "logout" => on_logout(s, portal, ack).await,
        "refreshReconnectionTicket" => send(ack, portal.refresh_ticket(s.id)),
        "text" => on_text(s, portal, data.ok(), ack).await,
        media if MEDIA_EVENTS.contains(&media) => send(ack, portal.media_request(s.id, media)),
        _ => {}
    }
}

async fn on_login(s: SocketRef, portal: Arc<Portal>, data: Option<Value>, ack: AckSender) {
    // One login is one trace: its id is on every log line of the login, here
    // and in every service the login calls.
    let span = tracing::info_span!(
        "login",
        participant = %s.id,
        trace_id = tracing::field::Empty,
        room = tracing::field::Empty,
    );
    let login = portal.login(s.id, data.unwrap_or(Value::Null), |a| send(ack, a));
    conclave_common::trace::root(span, login).await
}

async fn on_relogin(s: SocketRef, portal: Arc<Portal>, data: Option<Value>, ack: AckSender) {
    let span = tracing::info_span!("relogin", socket = %s.id, trace_id = tracing::field::Empty);
    let relogin = portal.relogin(s.id, data, |a| send(ack, a));
    conclave_common::trace::root(span, relogin).await
}

async fn on_logout(s: SocketRef, portal: Arc<Portal>, ack: AckSender) {
    let span = tracing::info_span!("logout", socket = %s.id, trace_id = tracing::field::Empty);
    conclave_common::trace::root(span, portal.logout(s.id, |a| send(ack, a))).await
}

async fn on_text(s: SocketRef, portal: Arc<Portal>, data: Option<Value>, ack: AckSender) {
    // A text is one trace: through its conference node to every receiver's portal.
    let span = tracing::info_span!("text", socket = %s.id, trace_id = tracing::field::Empty);
    let data = data.unwrap_or(Value::Null);
    conclave_common::trace::root(span, async { send(ack, portal.text(s.id, &data).await) }).await
}

/// The Engine.IO version of a socket, as a metrics label.
fn eio(s: &SocketRef) -> &'static str {
    match s.protocol() {
        socketioxide::ProtocolVersion::V4 => "3",
        _ => "4",
    }
}
