//! The login core (OWT `portal.js` and the socket's `login`/`relogin`/
//! `logout`/`disconnect` handlers): one orchestration over the
//! [`Remotes`](crate::remote::Remotes) trait and the
//! [`Delivery`](crate::delivery::Delivery), with no socket of its own, so
//! tests drive it with fakes.
//!
//! Login stages, in order: dialect and user agent, token signature,
//! one-time consumption, getController (schedule, then get node), conference
//! join, reconnection ticket, registration (client and token task), answer.
//! A connection that closed or logged out meanwhile ends the login as
//! "Participant early left" and leaves the conference again.

use crate::clients::Client;
use crate::connection::{Completion, ConnError, Connection};
use crate::dialect::{self, Protocol};
use crate::error::PortalError;
use crate::outbox::Outbox;
use crate::portal::Portal;
use crate::remote::{Admission, ClientSpec, Controller, Grant, Joiner};
use crate::stages::Stages;
use conclave_common::token::JoinToken;
use serde_json::Value;
use socketioxide::socket::Sid;
use std::sync::Arc;
use tokio::time::Instant;

/// An ack in OWT's `(status[, data])` shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Ok(&'static str),
    OkWith(&'static str, Json),
    Error(String),
}

impl Answer {
    pub fn error(e: impl std::fmt::Display) -> Answer {
        Answer::Error(e.to_string())
    }
}

/// JSON already written out, copied into an ack as it is: a login reply
/// carries the room the node wrote, with no value tree built and dropped
/// for it here.
#[derive(Clone)]
pub struct Json(Box<serde_json::value::RawValue>);

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

impl Json {
    /// `value` written out (`null` if it cannot be: a map with keys that
    /// are not strings, which no caller builds).
    pub fn of(value: &impl serde::Serialize) -> Json {
        Json(
            serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }

    /// JSON text as it came (from a conference node); `None` if it is not
    /// valid JSON.
    pub fn parse(text: String) -> Option<Json> {
        serde_json::value::RawValue::from_string(text)
            .ok()
            .map(Json)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Read back as a value (the legacy dialect, and tests).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.get() == other.get()
    }
}

impl serde::Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A finished conference join, before it is registered.
struct Joined {
    protocol: Protocol,
    reconnection: bool,
    sdk_type: String,
    grant: Grant,
    controller: Controller,
    admission: Admission,
    /// Joined as pending (the token carried its claims): the node tells the
    /// others once this portal confirms it.
    pending: bool,
}

impl Portal {
    /// A socket connected: its connection starts `initialized`, closed by
    /// the idle sweep ([`Portal::close_idle`]) if it has not logged in by
    /// its idle deadline.
    pub fn connected(self: &Arc<Self>, sid: Sid) {
        let connection = Connection::new(Instant::now(), self.idle_timeout());
        self.delivery.with(|r| r.add_connection(sid, connection));
    }

    /// Close every connection past its idle deadline (not logged in since
    /// it connected or logged out); how many. One sweep serves every
    /// connection, so a connection costs no timer of its own and nothing of
    /// it outlives its socket.
    pub fn close_idle(&self) -> usize {
        let expired = self.delivery.with(|r| r.idle_expired(Instant::now()));
        for &sid in &expired {
            tracing::info!(socket = %sid, "no login in time; closing the connection");
            self.delivery.close(sid);
        }
        expired.len()
    }

    /// Start a login or relogin on `sid`: the attempt's epoch. `None` when
    /// the socket is already gone.
    pub(super) fn begin_attempt(&self, sid: Sid) -> Option<Result<u64, PortalError>> {
        if self.draining() {
            return Some(Err(PortalError::Draining));
        }
        self.delivery
            .with(|r| r.connection_mut(sid).map(Connection::begin_login))
            .map(|begun| begun.map_err(PortalError::from))
    }

    /// A login or relogin failed: back to `initialized`, the reason
    /// answered, the socket closed (OWT §10.4).
    pub(super) fn fail_attempt(
        &self,
        sid: Sid,
        epoch: u64,
        e: PortalError,
        answer: impl FnOnce(Answer),
    ) {
        self.delivery.with(|r| {
            if let Some(c) = r.connection_mut(sid) {
                c.login_failed(epoch, Instant::now());
            }
        });
        answer(Answer::error(e));
        self.delivery.close(sid);
    }

    /// `login(info)` on socket `sid`; the participant id is the socket id.
    pub async fn login(self: &Arc<Self>, sid: Sid, info: Value, answer: impl FnOnce(Answer)) {
        let epoch = match self.begin_attempt(sid) {
            None => return,
            Some(Err(e)) => return answer(Answer::error(e)),
            Some(Ok(epoch)) => epoch,
        };
        let participant = sid.to_string();
        let started = std::time::Instant::now();
        let mut stages = Stages::default();
        // from the node's admission until it is registered below, what the
        // node sends it waits instead of being refused
        let arriving = self.arriving(&participant);
        let outcome = self.join(&participant, &info, &mut stages).await;
        let class = outcome.as_ref().map_or_else(PortalError::class, |_| "ok");
        stages.log(&participant, class, started.elapsed());
        let joined = match outcome {
            Ok(joined) => joined,
            Err(e) => {
                tracing::info!(%participant, reason = %e, "login failed");
                return self.fail_attempt(sid, epoch, e, answer);
            }
        };
        let ticket = (joined.reconnection && joined.protocol != Protocol::Legacy)
            .then(|| self.issue_ticket(&participant, &joined.grant.room));
        let permission = crate::clients::JsonText::new(&joined.admission.permission);
        let result = dialect::login_result(
            joined.protocol,
            &participant,
            &joined.grant.user,
            &joined.grant.role,
            &joined.admission.permission,
            &joined.admission.room,
            ticket,
        );
        let ok = joined.protocol.ok_word();
        let pending = joined.pending;
        let code = joined.grant.code.clone();
        let room = joined.grant.room.clone();
        let controller = joined.controller.clone();
        let client = Client {
            participant: participant.clone(),
            socket: sid,
            room: joined.grant.room,
            controller: joined.controller,
            token_code: joined.grant.code,
            user: joined.grant.user,
            role: joined.grant.role,
            permission,
            protocol: joined.protocol,
            sdk_type: joined.sdk_type,
            reconnection: joined.reconnection,
            outbox: Outbox::new(self.config.portal.message_buffer_size),
            held: true,
            sent: Default::default(),
        };
        let count = self.delivery.with(|r| {
            let done = r
                .connection_mut(sid)
                .map(|c| c.login_done(epoch, &participant));
            (done == Some(Completion::Registered)).then(|| {
                r.insert(client);
                r.len()
            })
        });
        drop(arriving);
        let Some(count) = count else {
            tracing::info!(%participant, "participant left during its login");
            self.leave_conference(&controller, &participant).await;
            answer(Answer::error(PortalError::EarlyLeft));
            return self.delivery.close(sid);
        };
        conclave_common::metrics::gauge!("portal_participants").set(count as f64);
        tracing::info!(%participant, %room, "login ok");
        // The others hear of it once its node has the confirmation (a
        // request of its own that gets there first confirms it as well).
        // It goes out as the answer does, not after it, so that what the
        // client's application does with the answer (list the room over
        // REST, say) finds it confirmed.
        if pending {
            let (portal, controller, participant) = (self.clone(), controller, participant.clone());
            tokio::spawn(async move {
                if let Err(e) = portal.remotes.confirm(&controller, &participant).await {
                    tracing::warn!(%participant, node = %controller.node, error = %e, "confirming the join failed; the node confirms it at the participant's first request");
                }
            });
        }
        answer(Answer::OkWith(ok, result));
        self.delivery.release(&participant, sid);
        // The token task is announced after the answer, which does not
        // depend on it (OWT's addTask does not wait either); a leave that
        // comes first lays it down after the announcement, not before.
        if let Err(e) = self.remotes.add_task(&code).await {
            tracing::warn!(task = %code, error = %e, "announcing the token task failed");
        }
    }

    /// The login stages up to the conference join.
    async fn join(
        &self,
        participant: &str,
        info: &Value,
        stages: &mut Stages,
    ) -> Result<Joined, PortalError> {
        let started = std::time::Instant::now();
        if !info.is_object() {
            return Err(PortalError::BadLogin("not an object"));
        }
        let protocol = dialect::protocol(info)?;
        let user_agent = dialect::user_agent(info, protocol)?;
        let token_text = info
            .get("token")
            .and_then(Value::as_str)
            .ok_or(PortalError::BadLogin("no token string"))?;
        let token = JoinToken::decode(token_text)?;
        if self.delivery.with(|r| r.contains(participant)) {
            return Err(PortalError::AlreadyInRoom);
        }
        token.verify(&self.key)?;
        Stages::done(&mut stages.token_check, "token_check", started);

        // the consumption's own time, even while the join goes alongside
        let consume = async {
            let started = std::time::Instant::now();
            let consumed = self.remotes.consume_token(&token.token_id).await;
            (consumed, started.elapsed())
        };
        let Some(claims) = token.claims else {
            // OWT's token: the room is known once the token is consumed
            let (consumed, took) = consume.await;
            let grant = consumed?;
            Stages::took(&mut stages.token_consumption, "token_consumption", took);
            conclave_common::trace::record(&[("room", &grant.room)]);
            return self
                .seat(participant, protocol, user_agent, grant, false, stages)
                .await;
        };
        // The token names its room (signed): the join goes while the token
        // is being consumed, as a pending join the node tells nobody of
        // until this portal confirms it.
        let claimed = Grant {
            code: claims.code,
            user: claims.user,
            role: claims.role,
            room: claims.room,
            origin: crate::remote::Origin {
                isp: claims.isp,
                region: claims.region,
            },
        };
        conclave_common::trace::record(&[("room", &claimed.room)]);
        let ((consumed, consume_took), seated) = tokio::join!(
            consume,
            self.seat(participant, protocol, user_agent, claimed, true, stages)
        );
        match (consumed, seated) {
            (Ok(grant), Ok(joined)) if grant == joined.grant => {
                Stages::took(
                    &mut stages.token_consumption,
                    "token_consumption",
                    consume_took,
                );
                Ok(joined)
            }
            (Ok(grant), Ok(joined)) => {
                tracing::error!(%participant, claimed = ?joined.grant, recorded = ?grant, "a token's signed claims differ from its record; check that management and portals share their key");
                self.leave_conference(&joined.controller, participant).await;
                Err(PortalError::Token(
                    conclave_common::token::TokenError::BadFields,
                ))
            }
            (Err(e), Ok(joined)) => {
                // a replayed, expired or unknown token: the pending seat
                // goes again and nobody heard of it
                self.leave_conference(&joined.controller, participant).await;
                Err(e.into())
            }
            (Err(e), Err(_)) => Err(e.into()),
            (Ok(_), Err(e)) => Err(e),
        }
    }

    /// getController and the conference join for a granted token.
    async fn seat(
        &self,
        participant: &str,
        protocol: Protocol,
        user_agent: dialect::UserAgent,
        grant: Grant,
        pending: bool,
        stages: &mut Stages,
    ) -> Result<Joined, PortalError> {
        let joiner = Joiner {
            participant: participant.to_string(),
            user: grant.user.clone(),
            role: grant.role.clone(),
            origin: grant.origin.clone(),
            pending,
            client: ClientSpec {
                protocol: protocol.as_str().to_string(),
                sdk_type: user_agent.sdk_type.clone(),
                reconnection: user_agent.reconnection_enabled(),
                token_code: grant.code.clone(),
                message_buffer_size: self.config.portal.message_buffer_size,
            },
        };
        // A participant of the room is here already: its node is known, and
        // the login joins it without asking the scheduler and the agent.
        // If that node is gone (or serves another room after a restart on
        // its address), the login asks them after all.
        // Not while the room is being rebuilt elsewhere: its known node may
        // be alive on a lost agent.
        let known = if self.is_restoring(&grant.room) {
            None
        } else {
            self.delivery
                .with(|r| r.room_controller(&grant.room).cloned())
        };
        let mut joined = None;
        if let Some(controller) = known {
            let started = std::time::Instant::now();
            match self.remotes.join(&controller, &grant.room, &joiner).await {
                Ok(admission) => {
                    Stages::done(&mut stages.join, "join", started);
                    joined = Some((controller, admission));
                }
                Err(e) if stale_controller(&e) => {
                    tracing::debug!(node = %controller.node, error = %e, "the room's known node did not take the join; asking the scheduler");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let (controller, admission) = match joined {
            Some(joined) => joined,
            None => {
                // OWT getController: the room's agent from the scheduler,
                // then the node serving the room from that agent.
                // (again when the agent named serves the room no longer)
                let mut attempts = 0;
                let controller = loop {
                    attempts += 1;
                    let started = std::time::Instant::now();
                    let agent = self.remotes.schedule_room(&grant.room).await?;
                    Stages::done(&mut stages.schedule, "schedule", started);
                    let started = std::time::Instant::now();
                    match self.remotes.get_node(&agent, &grant.room).await {
                        Err(e) if e.served_elsewhere() && attempts < 3 => continue,
                        got => {
                            Stages::done(&mut stages.get_node, "get_node", started);
                            break got?;
                        }
                    }
                };
                let started = std::time::Instant::now();
                let admission = self.remotes.join(&controller, &grant.room, &joiner).await?;
                Stages::done(&mut stages.join, "join", started);
                (controller, admission)
            }
        };
        Ok(Joined {
            protocol,
            reconnection: user_agent.reconnection_enabled(),
            sdk_type: user_agent.sdk_type,
            grant,
            controller,
            admission,
            pending,
        })
    }
}

/// A join refused because the node is not (or no longer) the room's: it
/// cannot be reached, or it serves another room.
fn stale_controller(e: &crate::remote::RemoteError) -> bool {
    use crate::remote::RemoteError;
    match e {
        RemoteError::Unreachable { .. } => true,
        RemoteError::Refused(m) => m == "room id clash",
        RemoteError::Timeout { .. } => false,
    }
}

/// The connection-state error a request on a connection that is not logged
/// in gets.
pub(crate) fn not_logged_in() -> PortalError {
    PortalError::Connection(ConnError::IllegalRequest)
}

mod leave;
mod relogin;

#[cfg(test)]
mod tests;
