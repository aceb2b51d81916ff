//! `relogin(ticket)` (OWT §10.4): a participant moves to a new connection
//! with its id, sequence, replay buffer and queue.

use super::Answer;
use crate::connection::{Completion, Connection};
use crate::dialect::Protocol;
use crate::error::PortalError;
use crate::outbox::Message;
use crate::portal::{Portal, now_ms};
use serde_json::{Value, json};
use socketioxide::socket::Sid;
use tokio::time::Instant;

impl Portal {
    /// OWT `relogin` (§10.4): check the ticket, move the participant with
    /// its sequence, buffer and queue to this connection, close the old
    /// socket without leaving, and answer with a new ticket (and, for 1.2,
    /// the messages to replay). What arrives meanwhile follows the answer.
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
        let moved = self.delivery.with(|r| -> Result<_, PortalError> {
            let now = now_ms();
            let ticket = self.tickets().check(&ticket, now)?;
            let participant = ticket.participant_id.clone();
            let client = r.client(&participant).ok_or(PortalError::ClientNotExist)?;
            if !client.reconnection {
                return Err(PortalError::ReconnectionNotAllowed);
            }
            let old = client.socket;
            if r.connection(old).and_then(Connection::participant) != Some(participant.as_str()) {
                return Err(PortalError::ParticipantNotMatched);
            }
            let done = r
                .connection_mut(sid)
                .map(|c| c.login_done(epoch, &participant));
            if done != Some(Completion::Registered) {
                return Err(PortalError::EarlyLeft);
            }
            let mut tickets = self.tickets();
            tickets.spend(&ticket, now);
            let fresh = tickets.issue(&participant, now);
            drop(tickets);
            let close_old = r.close_connection(old);
            let client = r
                .client_mut(&participant)
                .ok_or(PortalError::ClientNotExist)?;
            client.socket = sid;
            client.held = true;
            let string_reply = self
                .config
                .portal
                .relogin_string_reply_sdks
                .contains(&client.sdk_type);
            let reply = if client.protocol == Protocol::V1_2 && !string_reply {
                let messages = client.outbox.replay(Instant::now());
                Answer::OkWith(
                    "ok",
                    json!({"ticket": fresh, "messages": replayed(&messages)}),
                )
            } else {
                Answer::OkWith(client.protocol.ok_word(), Value::String(fresh))
            };
            Ok((participant, reply, close_old.then_some(old)))
        });
        conclave_common::metrics::counter!("portal_relogins_total",
            "outcome" => moved.as_ref().map_or_else(PortalError::class, |_| "ok"))
        .increment(1);
        match moved {
            Ok((participant, reply, close_old)) => {
                if let Some(old) = close_old {
                    self.delivery.close(old);
                }
                answer(reply);
                self.delivery.release(&participant, sid);
                tracing::info!(%participant, "relogin ok");
            }
            Err(e) => {
                tracing::info!(socket = %sid, reason = %e, "relogin failed");
                self.fail_attempt(sid, epoch, e, answer);
            }
        }
    }
}

/// Messages as the 1.2 relogin reply lists them.
fn replayed(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| json!({"event": m.event, "data": m.data, "seq": m.seq}))
        .collect()
}
