//! How a participant leaves: `logout`, a disconnect (at once, or after the
//! reconnection grace period, during which its node keeps the seat
//! detached), or being dropped; each leaves the conference and lays the
//! token task down once.

use super::Answer;
use crate::connection::{Connection, Disconnect};
use crate::portal::Portal;
use crate::remote::Controller;
use socketioxide::socket::Sid;
use std::sync::Arc;
use tokio::time::Instant;

impl Portal {
    /// `logout`: the participant leaves; the connection stays, `initialized`.
    pub async fn logout(self: &Arc<Self>, sid: Sid, answer: impl FnOnce(Answer)) {
        let Some(result) = self.delivery.with(|r| {
            let c = r.connection_mut(sid)?;
            let result = c.logout(Instant::now());
            if c.socket_closed() {
                // the logout of a socket already gone (it waited for a
                // relogin): nothing of it stays
                r.remove_connection(sid);
            }
            Some(result)
        }) else {
            return;
        };
        match result {
            Ok(participant) => {
                let ok = participant.as_deref().map_or("ok", |p| {
                    self.delivery
                        .with(|r| r.client(p).map_or("ok", |c| c.protocol.ok_word()))
                });
                if let Some(p) = participant {
                    self.leave(&p).await;
                }
                answer(Answer::Ok(ok));
            }
            Err(e) => answer(Answer::error(e)),
        }
    }

    /// The socket `sid` is gone. A connected client with reconnection waits
    /// `reconnection_timeout` for a relogin before it is forced to leave;
    /// any other leaves now.
    pub async fn disconnected(self: &Arc<Self>, sid: Sid) {
        let grace = self.reconnection_grace();
        let action = self.delivery.with(|r| {
            let reconnection = r
                .connection(sid)
                .and_then(Connection::participant)
                .and_then(|p| r.client(p))
                .is_some_and(|c| c.reconnection && c.socket == sid);
            let connection = r.connection_mut(sid)?;
            let action = connection.disconnected(reconnection.then_some(grace), Instant::now());
            let deadline = connection.grace_deadline();
            if !matches!(action, Disconnect::Wait(_)) {
                r.remove_connection(sid);
            }
            Some((action, deadline))
        });
        match action {
            Some((Disconnect::Leave(participant), _)) => {
                self.leave_if_on(&participant, sid).await;
            }
            Some((Disconnect::Wait(participant), Some(deadline))) => {
                tracing::info!(%participant, ?grace, "waiting for the client to relogin");
                let portal = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    portal.grace_over(sid).await;
                });
                // Its node keeps the seat and its messages meanwhile, for a
                // relogin on any portal, even if this one dies.
                let controller = self
                    .delivery
                    .with(|r| r.client(&participant).map(|c| c.controller.clone()));
                if let Some(controller) = controller
                    && let Err(e) = self.remotes.detach(&controller, &participant, grace).await
                {
                    tracing::warn!(%participant, error = %e, "detaching the participant on its node failed");
                }
            }
            _ => {}
        }
    }

    /// The reconnection grace of connection `sid` ran out: unless a relogin
    /// took its participant meanwhile, the participant leaves.
    async fn grace_over(&self, sid: Sid) {
        let expired = self.delivery.with(|r| {
            let participant = r.connection_mut(sid)?.grace_expired(Instant::now())?;
            r.remove_connection(sid);
            Some(participant)
        });
        if let Some(participant) = expired
            && self.leave_if_on(&participant, sid).await
        {
            tracing::info!(%participant, "no relogin in time; participant left");
        }
    }

    /// Leave only while `participant` is still on connection `sid`, so a
    /// relogin that won the race is never undone.
    async fn leave_if_on(&self, participant: &str, sid: Sid) -> bool {
        let on = self
            .delivery
            .with(|r| r.client(participant).is_some_and(|c| c.socket == sid));
        on && self.leave(participant).await
    }

    /// A participant leaves: forget it, leave the conference, lay the token
    /// task down. Idempotent: the second caller finds nothing.
    pub async fn leave(&self, participant: &str) -> bool {
        let (client, count) = self.delivery.with(|r| (r.remove(participant), r.len()));
        let Some(client) = client else {
            return false;
        };
        conclave_common::metrics::gauge!("portal_participants").set(count as f64);
        tracing::info!(%participant, room = %client.room, "participant leaves");
        self.leave_conference(&client.controller, participant).await;
        if let Err(e) = self.remotes.remove_task(&client.token_code).await {
            tracing::warn!(task = %client.token_code, error = %e, "laying down the token task failed");
        }
        true
    }

    /// Tell the participant's conference node it left (failures are logged).
    pub(super) async fn leave_conference(&self, controller: &Controller, participant: &str) {
        if let Err(e) = self.remotes.leave(controller, participant).await {
            tracing::debug!(%participant, error = %e, "conference leave failed");
        }
    }
}
