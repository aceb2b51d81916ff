//! The Socket.IO adapter: one connection state machine per socket, the
//! events OWT clients send, and acks in OWT's `(status, data)` shape.
//!
//! Handlers are registered in a connect middleware, which runs before the
//! CONNECT reply is sent: a client that emits `login` the moment it is
//! connected (the OWT JS SDK does) cannot beat its handler.

use crate::connection::{Completion, Connection, Disconnect};
use crate::dialect::Protocol;
use crate::error::PortalError;
use crate::portal::{Portal, ReloginReply, Stages};
use conclave_common::sync::Locked;
use serde_json::Value;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

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

fn error(ack: AckSender, e: impl std::fmt::Display) {
    let _ = ack.send(&("error", e.to_string()));
}

/// Connect middleware: set up the connection and its handlers.
pub async fn on_connect(s: SocketRef, State(portal): P) -> Result<(), std::convert::Infallible> {
    let idle = Duration::from_millis(portal.config.portal.idle_timeout);
    let connection = Arc::new(Mutex::new(Connection::new(Instant::now(), idle)));
    portal.connections.locked().insert(s.id, connection);
    conclave_common::metrics::gauge!("portal_sockets", "eio" => eio(&s)).increment(1.0);
    arm_idle_timer(&portal, &s);
    s.on("login", on_login);
    s.on("logout", on_logout);
    s.on("relogin", on_relogin);
    s.on("refreshReconnectionTicket", on_refresh_ticket);
    s.on("text", on_text);
    for event in MEDIA_EVENTS {
        s.on(
            event,
            async move |s: SocketRef, State(portal): P, ack: AckSender| match connection_of(
                &portal, &s,
            )
            .map(|c| c.locked().logged_in().map(drop))
            {
                Some(Ok(())) => error(ack, PortalError::Unsupported(event.to_string())),
                Some(Err(e)) => error(ack, e),
                None => error(ack, crate::connection::ConnError::IllegalRequest),
            },
        );
    }
    s.on_disconnect(on_disconnect);
    Ok(())
}

/// The namespace connect handler proper: all is set up by the middleware.
pub async fn connected(s: SocketRef) {
    tracing::debug!(socket = %s.id, transport = ?s.transport_type(), protocol = ?s.protocol(), "socket connected");
}

fn connection_of(portal: &Portal, s: &SocketRef) -> Option<crate::clients::SharedConnection> {
    portal.connections.locked().get(&s.id).cloned()
}

/// Start a login or relogin on this socket's connection: its connection and
/// the attempt's epoch, or the error already acked.
fn begin_attempt(
    portal: &Portal,
    s: &SocketRef,
    ack: AckSender,
) -> Option<(crate::clients::SharedConnection, u64, AckSender)> {
    let connection = connection_of(portal, s)?;
    let begun = connection.locked().begin_login();
    match begun {
        Ok(epoch) => Some((connection, epoch, ack)),
        Err(e) => {
            error(ack, e);
            None
        }
    }
}

/// A login or relogin failed: back to `initialized`, the reason acked, the
/// socket closed (OWT §10.4).
fn fail_attempt(
    s: &SocketRef,
    connection: &crate::clients::SharedConnection,
    epoch: u64,
    ack: Option<AckSender>,
    e: PortalError,
) {
    connection.locked().login_failed(epoch, Instant::now());
    if let Some(ack) = ack {
        error(ack, e);
    }
    let _ = s.clone().disconnect();
}

/// Close the socket if it has not logged in by its idle deadline.
fn arm_idle_timer(portal: &Arc<Portal>, s: &SocketRef) {
    let Some(connection) = connection_of(portal, s) else {
        return;
    };
    let deadline = connection.locked().idle_deadline();
    let s = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline).await;
        let expired = connection.locked().idle_expired(Instant::now());
        if expired {
            tracing::info!(socket = %s.id, "no login in time; closing the connection");
            let _ = s.disconnect();
        }
    });
}

async fn on_login(s: SocketRef, State(portal): P, TryData(data): TryData<Value>, ack: AckSender) {
    // One login is one trace: its id is on every log line of the login, here
    // and in every service the login calls.
    let span = tracing::info_span!(
        "login",
        participant = %s.id,
        trace_id = tracing::field::Empty,
        room = tracing::field::Empty,
    );
    conclave_common::trace::root(span, login(s, portal, data.unwrap_or(Value::Null), ack)).await
}

async fn login(s: SocketRef, portal: Arc<Portal>, info: Value, ack: AckSender) {
    let Some((connection, epoch, ack)) = begin_attempt(&portal, &s, ack) else {
        return;
    };
    let participant = s.id.to_string();
    let started = std::time::Instant::now();
    let mut stages = Stages::default();
    let outcome = portal
        .join(&participant, s.id, connection.clone(), &info, &mut stages)
        .await;
    let class = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.class(),
    };
    conclave_common::metrics::counter!("portal_logins_total", "outcome" => class).increment(1);
    tracing::info!(
        %participant,
        outcome = class,
        total_ms = Stages::ms(Some(started.elapsed())),
        token_check_ms = Stages::ms(stages.token_check),
        token_consumption_ms = Stages::ms(stages.token_consumption),
        schedule_ms = Stages::ms(stages.schedule),
        get_node_ms = Stages::ms(stages.get_node),
        join_ms = Stages::ms(stages.join),
        "login outcome"
    );
    match outcome {
        Ok(mut joined) => {
            let completion = connection.locked().login_done(epoch, &participant);
            match completion {
                Completion::Registered => {
                    let ok = joined.entry.protocol.ok_word();
                    let room = joined.entry.room.clone();
                    if joined.entry.reconnection && joined.entry.protocol != Protocol::Legacy {
                        joined.result["reconnectionTicket"] =
                            Value::String(portal.issue_ticket(&participant));
                    }
                    portal.register(joined.entry).await;
                    tracing::info!(%participant, %room, "login ok");
                    let _ = ack.send(&(ok, joined.result));
                }
                Completion::EarlyLeft => {
                    tracing::info!(%participant, "participant left during its login");
                    portal
                        .leave_conference(&participant, &joined.entry.endpoint)
                        .await;
                    error(ack, PortalError::EarlyLeft);
                    let _ = s.disconnect();
                }
            }
        }
        Err(e) => {
            tracing::info!(%participant, reason = %e, "login failed");
            fail_attempt(&s, &connection, epoch, Some(ack), e);
        }
    }
}

async fn on_relogin(s: SocketRef, State(portal): P, TryData(data): TryData<Value>, ack: AckSender) {
    let span = tracing::info_span!("relogin", socket = %s.id, trace_id = tracing::field::Empty);
    conclave_common::trace::root(span, relogin(s, portal, data, ack)).await
}

async fn relogin(
    s: SocketRef,
    portal: Arc<Portal>,
    data: Result<Value, socketioxide::ParserError>,
    ack: AckSender,
) {
    let Some((connection, epoch, ack)) = begin_attempt(&portal, &s, ack) else {
        return;
    };
    let ticket = match data {
        Ok(Value::String(t)) => t,
        _ => String::new(),
    };
    let mut ack = Some(ack);
    let result = portal.relogin(&ticket, s.id, connection.clone(), epoch, |reply| {
        let Some(ack) = ack.take() else { return };
        let _ = match reply {
            ReloginReply::Messages { ticket, messages } => {
                let messages: Vec<Value> = messages
                    .iter()
                    .map(|m| serde_json::json!({"event": m.event, "data": m.data, "seq": m.seq}))
                    .collect();
                ack.send(&(
                    "ok",
                    serde_json::json!({"ticket": ticket, "messages": messages}),
                ))
            }
            ReloginReply::Ticket { ticket, ok } => ack.send(&(*ok, ticket)),
        };
    });
    let class = match &result {
        Ok(_) => "ok",
        Err(e) => e.class(),
    };
    conclave_common::metrics::counter!("portal_relogins_total", "outcome" => class).increment(1);
    if let Err(e) = result {
        tracing::info!(socket = %s.id, reason = %e, "relogin failed");
        if let Some(ack) = ack.take() {
            fail_attempt(&s, &connection, epoch, Some(ack), e);
        }
    }
}

async fn on_refresh_ticket(s: SocketRef, State(portal): P, ack: AckSender) {
    let Some(connection) = connection_of(&portal, &s) else {
        return;
    };
    let participant = match connection.locked().logged_in() {
        Ok(p) => p.to_string(),
        Err(e) => return error(ack, e),
    };
    let entry = portal
        .clients()
        .get(&participant)
        .map(|e| (e.reconnection, e.protocol));
    match entry {
        Some((true, protocol)) => {
            let _ = ack.send(&(protocol.ok_word(), portal.issue_ticket(&participant)));
        }
        Some((false, _)) => error(ack, PortalError::ReconnectionNotEnabled),
        None => error(ack, crate::connection::ConnError::IllegalRequest),
    }
}

async fn on_logout(s: SocketRef, State(portal): P, ack: AckSender) {
    let span = tracing::info_span!("logout", socket = %s.id, trace_id = tracing::field::Empty);
    conclave_common::trace::root(span, logout(s, portal, ack)).await
}

async fn logout(s: SocketRef, portal: Arc<Portal>, ack: AckSender) {
    let Some(connection) = connection_of(&portal, &s) else {
        return;
    };
    let result = connection.locked().logout(Instant::now());
    match result {
        Ok(participant) => {
            let ok = participant
                .as_deref()
                .and_then(|p| portal.clients().get(p).map(|c| c.protocol.ok_word()))
                .unwrap_or("ok");
            if let Some(p) = participant {
                portal.leave(&p).await;
            }
            let _ = ack.send(&(ok,));
            arm_idle_timer(&portal, &s);
        }
        Err(e) => error(ack, e),
    }
}

async fn on_text(s: SocketRef, State(portal): P, TryData(data): TryData<Value>, ack: AckSender) {
    // A text is one trace: through its conference node to every receiver's portal.
    let span = tracing::info_span!("text", socket = %s.id, trace_id = tracing::field::Empty);
    conclave_common::trace::root(span, text(s, portal, data.unwrap_or(Value::Null), ack)).await
}

async fn text(s: SocketRef, portal: Arc<Portal>, data: Value, ack: AckSender) {
    let Some(connection) = connection_of(&portal, &s) else {
        return;
    };
    let participant = match connection.locked().logged_in() {
        Ok(p) => p.to_string(),
        Err(e) => return error(ack, e),
    };
    let to = match data.get("to") {
        Some(Value::String(to)) if !to.is_empty() => to.clone(),
        _ => return error(ack, PortalError::InvalidReceiver),
    };
    let message = match data.get("message") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return error(ack, PortalError::InvalidMessage),
    };
    match portal.text(&participant, &to, &message).await {
        Ok(()) => {
            let _ = ack.send(&("ok",));
        }
        Err(e) => error(ack, e),
    }
}

/// The Engine.IO version of a socket, as a metrics label.
fn eio(s: &SocketRef) -> &'static str {
    match s.protocol() {
        socketioxide::ProtocolVersion::V4 => "3",
        _ => "4",
    }
}

async fn on_disconnect(s: SocketRef, State(portal): P) {
    conclave_common::metrics::gauge!("portal_sockets", "eio" => eio(&s)).decrement(1.0);
    let connection = portal.connections.locked().remove(&s.id);
    let Some(connection) = connection else { return };
    let participant = connection.locked().participant().map(str::to_string);
    let reconnection = participant
        .as_deref()
        .and_then(|p| {
            portal
                .clients()
                .get(p)
                .map(|e| e.reconnection && e.owned_by(&connection))
        })
        .unwrap_or(false);
    let grace =
        reconnection.then(|| Duration::from_secs(portal.config.portal.reconnection_timeout));
    let action = connection.locked().disconnected(grace, Instant::now());
    match action {
        Disconnect::Leave(participant) => {
            portal.leave_if_owned(&participant, &connection).await;
        }
        Disconnect::Wait(participant) => {
            tracing::info!(%participant, ?grace, "waiting for the client to relogin");
            let deadline = connection.locked().grace_deadline();
            tokio::spawn(async move {
                if let Some(deadline) = deadline {
                    tokio::time::sleep_until(deadline).await;
                }
                let expired = connection.locked().grace_expired(Instant::now());
                if let Some(participant) = expired
                    && portal.leave_if_owned(&participant, &connection).await
                {
                    tracing::info!(%participant, "no relogin in time; participant left");
                }
            });
        }
        Disconnect::Nothing => {}
    }
}
