//! `relogin(ticket)` (OWT §10.4), on any portal: the participant's seat is
//! on its room's conference node, which keeps its notifications; the portal
//! that receives the relogin takes the seat over there, and the portal that
//! held it (this one or another, if alive) lets go of the client silently.

use super::{Answer, Json};
use crate::clients::Client;
use crate::connection::{Completion, Connection};
use crate::dialect::Protocol;
use crate::error::PortalError;
use crate::outbox::Outbox;
use crate::portal::{Portal, now_ms};
use crate::remote::{Controller, Kept, RemoteError, Seat};
use crate::ticket::{Ticket, TicketError};
use serde_json::{Value, json};
use socketioxide::socket::Sid;

/// The node's refusals, as the client hears them.
fn refusal(e: RemoteError) -> PortalError {
    match &e {
        RemoteError::Refused(m) if m == "Client does NOT exist" => PortalError::ClientNotExist,
        RemoteError::Refused(m) if m == "Reconnection is not allowed" => {
            PortalError::ReconnectionNotAllowed
        }
        RemoteError::Refused(m) if m == "Ticket has been used" => TicketError::Used.into(),
        _ => e.into(),
    }
}

impl Portal {
    /// OWT `relogin` (§10.4): check the ticket, take the seat over on its
    /// node, move the participant to this connection with the notifications
    /// its node kept, close the old connection without leaving, and answer
    /// with a new ticket (and, for 1.2, the messages to replay; for other
    /// dialects the missed ones follow the answer as events).
    pub async fn relogin(&self, sid: Sid, ticket: Option<Value>, answer: impl FnOnce(Answer)) {
        let epoch = match self.begin_attempt(sid) {
            None => return,
            Some(Err(e)) => return answer(Answer::error(e)),
            Some(Ok(epoch)) => epoch,
        };
        let ticket = match ticket {
            Some(Value::String(t)) => t,
            _ => String::new(),
        };
        let moved = self.take_seat(sid, epoch, &ticket).await;
        conclave_common::metrics::counter!("portal_relogins_total",
            "outcome" => moved.as_ref().map_or_else(PortalError::class, |_| "ok"))
        .increment(1);
        match moved {
            Ok(moved) => {
                if let Some(old) = moved.close_old {
                    self.delivery.close(old);
                }
                answer(moved.reply);
                self.delivery.release(&moved.participant, sid);
                tracing::info!(participant = %moved.participant, "relogin ok");
                if let Some(previous) = moved.release_on {
                    if let Err(e) = self.remotes.release(&previous, &moved.participant).await {
                        tracing::debug!(portal = %previous, error = %e, "the previous portal is gone");
                    }
                    if let Err(e) = self.remotes.add_task(&moved.token_code).await {
                        tracing::warn!(task = %moved.token_code, error = %e, "announcing the token task failed");
                    }
                }
            }
            Err(e) => {
                tracing::info!(socket = %sid, reason = %e, "relogin failed");
                self.fail_attempt(sid, epoch, e, answer);
            }
        }
    }

    /// Where the participant's seat is: its node as this portal knows it,
    /// or the node serving the ticket's room.
    async fn seat_controller(&self, ticket: &Ticket) -> Result<Controller, PortalError> {
        let known = self.delivery.with(|r| {
            r.client(&ticket.participant_id)
                .map(|c| c.controller.clone())
        });
        if let Some(controller) = known {
            return Ok(controller);
        }
        if ticket.room.is_empty() {
            return Err(PortalError::ClientNotExist);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let agent = self.remotes.schedule_room(&ticket.room).await?;
            match self.remotes.get_node(&agent, &ticket.room).await {
                Err(e) if e.served_elsewhere() && attempts < 3 => continue,
                got => return Ok(got?),
            }
        }
    }

    async fn take_seat(&self, sid: Sid, epoch: u64, text: &str) -> Result<Moved, PortalError> {
        let ticket = self.tickets().check(text, now_ms())?;
        let participant = ticket.participant_id.clone();
        // its room's node was lost and is being rebuilt here: wait for it
        if self.is_restoring(&ticket.room) {
            self.restored(&ticket.room).await;
        }
        let controller = self.seat_controller(&ticket).await?;
        // from the node's answer until it is registered below, what the node
        // sends it waits instead of being refused (and so never replayed)
        let _arriving = self.arriving(&participant);
        let seat = match self
            .remotes
            .reattach(&controller, &participant, &ticket.ticket_id)
            .await
        {
            Ok(seat) => seat,
            Err(e) => {
                // nothing listens at its node: gone, unheard of; once its
                // room is rebuilt, the client's next attempt finds it
                if matches!(e, RemoteError::Unreachable { .. }) {
                    self.rebuild_rooms_of(&controller).await;
                }
                return Err(refusal(e));
            }
        };
        let moved = self.delivery.with(|r| {
            let done = r
                .connection_mut(sid)
                .map(|c| c.login_done(epoch, &participant));
            if done != Some(Completion::Registered) {
                return Err(PortalError::EarlyLeft);
            }
            let now = now_ms();
            let mut tickets = self.tickets();
            tickets.spend(&ticket, now);
            let fresh = tickets.issue(&participant, &seat.room, now);
            drop(tickets);
            // The connection that held it here, if any, closes without a leave.
            let old = r.remove(&participant).map(|c| c.socket);
            let close_old = old.filter(|old| {
                r.connection(*old).and_then(Connection::participant) == Some(participant.as_str())
                    && r.close_connection(*old)
            });
            let protocol = Protocol::parse(&seat.client.protocol).unwrap_or(Protocol::V1_2);
            let string_reply = self
                .config
                .portal
                .relogin_string_reply_sdks
                .contains(&seat.client.sdk_type);
            let mut outbox = Outbox::new(self.config.portal.message_buffer_size);
            let reply = if protocol == Protocol::V1_2 && !string_reply {
                Answer::OkWith(
                    "ok",
                    Json::of(&json!({"ticket": fresh, "messages": replayed(&seat.messages)})),
                )
            } else {
                // the missed messages follow the answer, as events
                for m in seat.messages.iter().filter(|m| m.missed) {
                    let (event, data) =
                        crate::dialect::translate(protocol, &m.event, m.data.clone());
                    outbox.record(&event, data, m.seq, false);
                }
                Answer::OkWith(protocol.ok_word(), Json::of(&fresh))
            };
            let moved = Moved {
                participant: participant.clone(),
                reply,
                close_old,
                release_on: (!seat.previous_endpoint.is_empty())
                    .then(|| seat.previous_endpoint.clone()),
                token_code: seat.client.token_code.clone(),
            };
            r.insert(client_of(
                participant.clone(),
                sid,
                controller.clone(),
                seat,
                protocol,
                outbox,
            ));
            Ok(moved)
        });
        if moved.is_err() {
            // The new connection closed meanwhile: the seat waits again.
            let window = self.reconnection_grace();
            if let Err(e) = self.remotes.detach(&controller, &participant, window).await {
                tracing::debug!(%participant, error = %e, "detaching after an early-left relogin failed");
            }
        }
        moved
    }
}

/// A relogin that took its seat over, before it is answered.
struct Moved {
    participant: String,
    reply: Answer,
    /// This portal's previous connection of the participant, to close.
    close_old: Option<Sid>,
    /// Another portal held the participant: it lets go (`Release`).
    release_on: Option<String>,
    token_code: String,
}

fn client_of(
    participant: String,
    socket: Sid,
    controller: Controller,
    seat: Seat,
    protocol: Protocol,
    outbox: Outbox,
) -> Client {
    // the client has every kept message now (in the reply or following it)
    let mut sent = crate::outbox::SeqWindow::default();
    for m in &seat.messages {
        sent.mark(m.seq);
    }
    Client {
        sent,
        participant,
        socket,
        room: seat.room,
        controller,
        token_code: seat.client.token_code,
        user: seat.user,
        role: seat.role,
        permission: crate::clients::JsonText::new(&seat.permission),
        protocol,
        sdk_type: seat.client.sdk_type,
        reconnection: seat.client.reconnection,
        outbox,
        held: true,
    }
}

/// Messages as the 1.2 relogin reply lists them.
fn replayed(messages: &[Kept]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"event": m.event, "data": m.data, "seq": m.seq}))
        .collect()
}
