//! What a logged-in client asks for besides login (`text`,
//! `refreshReconnectionTicket`, media requests), and how the portal drops
//! clients (node or agent loss, `Portal/Drop`, shutdown).

use crate::error::PortalError;
use crate::login::{Answer, Json, not_logged_in};
use crate::portal::Portal;
use crate::remote::{Controller, RemoteError};
use serde_json::Value;
use socketioxide::socket::Sid;
use std::sync::Arc;

/// Seats taken back (after the cluster lost this portal) or handed to
/// their nodes (on a drain) at once.
const REJOIN_CONCURRENCY: usize = 64;

impl Portal {
    /// The participant logged in on `sid`, or the connection-state error.
    fn logged_in(&self, sid: Sid) -> Result<String, PortalError> {
        self.delivery.with(|r| {
            r.connection(sid)
                .ok_or_else(not_logged_in)?
                .logged_in()
                .map(str::to_string)
                .map_err(PortalError::from)
        })
    }

    /// `text({to, message})` (4 s deadline to the conference).
    pub async fn text(self: &Arc<Self>, sid: Sid, data: &Value) -> Answer {
        match self.try_text(sid, data).await {
            Ok(()) => Answer::Ok("ok"),
            Err(e) => Answer::error(e),
        }
    }

    async fn try_text(self: &Arc<Self>, sid: Sid, data: &Value) -> Result<(), PortalError> {
        let participant = self.logged_in(sid)?;
        let to = match data.get("to") {
            Some(Value::String(to)) if !to.is_empty() => to,
            _ => return Err(PortalError::InvalidReceiver),
        };
        let message = match data.get("message") {
            Some(Value::String(m)) => m.as_str(),
            None | Some(Value::Null) => "",
            Some(_) => return Err(PortalError::InvalidMessage),
        };
        let controller = self
            .delivery
            .with(|r| r.client(&participant).map(|c| c.controller.clone()))
            .ok_or(PortalError::NotJoined)?;
        let sent = self
            .remotes
            .text(&controller, &participant, to, message)
            .await;
        if let Err(RemoteError::Unreachable { .. }) = &sent {
            // Its node is gone, unheard of: the room is rebuilt, and the
            // client's next text goes to the new node. The answer does not
            // wait for the rebuild, which can take seconds (a client's
            // ack timeout is often 10 s).
            let portal = self.clone();
            tokio::spawn(async move { portal.rebuild_rooms_of(&controller).await });
        }
        sent?;
        Ok(())
    }

    /// `refreshReconnectionTicket`: a new ticket for a client that may relogin.
    pub fn refresh_ticket(&self, sid: Sid) -> Answer {
        let participant = match self.logged_in(sid) {
            Ok(p) => p,
            Err(e) => return Answer::error(e),
        };
        let client = self.delivery.with(|r| {
            r.client(&participant)
                .map(|c| (c.reconnection, c.protocol, c.room.clone()))
        });
        match client {
            Some((true, protocol, room)) => Answer::OkWith(
                protocol.ok_word(),
                Json::of(&self.issue_ticket(&participant, &room)),
            ),
            Some((false, ..)) => Answer::error(PortalError::ReconnectionNotEnabled),
            None => Answer::error(not_logged_in()),
        }
    }

    /// A request that needs a media plane, which this portal does not have.
    pub fn media_request(&self, sid: Sid, event: &str) -> Answer {
        match self.logged_in(sid) {
            Ok(_) => Answer::error(PortalError::Unsupported(event.to_string())),
            Err(e) => Answer::error(e),
        }
    }

    /// Drop a participant: it gets `drop` (with `{reason}` when there is
    /// one), its socket closes, it leaves.
    pub async fn drop_participant(&self, participant: &str, reason: &str) -> bool {
        let sid = self.delivery.with(|r| {
            let sid = r.client(participant)?.socket;
            Some((sid, r.close_connection(sid)))
        });
        let Some((sid, open)) = sid else {
            return false;
        };
        if open {
            let data = if reason.is_empty() {
                Value::Null
            } else {
                serde_json::json!({ "reason": reason })
            };
            self.delivery.emit(sid, "drop", &data);
            self.delivery.close(sid);
        }
        tracing::warn!(%participant, %reason, "participant dropped");
        conclave_common::metrics::counter!("portal_drops_total").increment(1);
        self.leave(participant).await
    }

    /// Another portal took the participant over: close its connection here
    /// without `drop` and without leaving, and lay its token task down.
    pub async fn release(&self, participant: &str) -> bool {
        let released = self.delivery.with(|r| {
            let sid = r.client(participant)?.socket;
            let open = r.close_connection(sid);
            let client = r.remove(participant)?;
            Some((open.then_some(sid), client.token_code, r.len()))
        });
        let Some((open, code, count)) = released else {
            return false;
        };
        if let Some(sid) = open {
            self.delivery.close(sid);
        }
        conclave_common::metrics::gauge!("portal_participants").set(count as f64);
        tracing::info!(%participant, "participant taken over by another portal");
        if let Err(e) = self.remotes.remove_task(&code).await {
            tracing::warn!(task = %code, error = %e, "laying down the token task failed");
        }
        true
    }

    /// This portal was declared lost while alive and has rejoined: its nodes
    /// hold its participants detached. Announce their token tasks again and
    /// take the seats of the connected ones back, delivering what they
    /// missed meanwhile, in order; the clients see nothing but the delay.
    pub async fn rejoined(&self) -> usize {
        let clients: Vec<(String, String, Controller, bool)> = self.delivery.with(|r| {
            r.clients()
                .map(|c| {
                    let connected = r.state_of(c) == crate::connection::State::Connected;
                    (
                        c.participant.clone(),
                        c.token_code.clone(),
                        c.controller.clone(),
                        connected,
                    )
                })
                .collect()
        });
        // Many at a time: a portal holds thousands, and every second of
        // this is a second their nodes keep their messages instead of
        // sending them. Each seat first, then its token task.
        use futures_util::StreamExt;
        let attached = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(clients)
            .for_each_concurrent(REJOIN_CONCURRENCY, |(participant, code, controller, connected)| {
                let attached = &attached;
                async move {
                    if connected {
                        self.take_back(&participant, &controller, attached).await;
                    }
                    // a detached one's seat waits for its relogin
                    if let Err(e) = self.remotes.add_task(&code).await {
                        tracing::warn!(task = %code, error = %e, "re-announcing the token task failed");
                    }
                }
            })
            .await;
        attached.into_inner()
    }

    async fn take_back(
        &self,
        participant: &str,
        controller: &Controller,
        attached: &std::sync::atomic::AtomicUsize,
    ) {
        let until = tokio::time::Instant::now() + self.reconnection_grace();
        loop {
            match self.remotes.reattach(controller, participant, "").await {
                Ok(seat) => {
                    for m in seat.messages.into_iter().filter(|m| m.missed) {
                        self.delivery.notify(participant, &m.event, m.data, m.seq);
                    }
                    attached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                // a seat without reconnection is never detached: it is still
                // there, attached here (had its node counted this portal
                // out, it would have left)
                Err(RemoteError::Refused(m)) if m == "Reconnection is not allowed" => return,
                // Its node is away: the seat is not known to be gone. A
                // node with nothing listening is gone (its room is rebuilt
                // from here, which moves the seat); a stalled one is asked
                // again while the seat would be kept for the client, which
                // is connected here and will not relogin to fetch what its
                // node keeps for it.
                Err(e @ (RemoteError::Unreachable { .. } | RemoteError::Timeout { .. })) => {
                    if matches!(e, RemoteError::Unreachable { .. }) {
                        self.rebuild_rooms_of(controller).await;
                    }
                    let still_there = self.delivery.with(|r| {
                        r.client(participant)
                            .is_some_and(|c| &c.controller == controller)
                    });
                    if !still_there {
                        return;
                    }
                    if tokio::time::Instant::now() >= until {
                        tracing::warn!(%participant, error = %e, "taking the seat back failed; its node is away");
                        return;
                    }
                    tracing::debug!(%participant, error = %e, "taking the seat back failed; its node is away; again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%participant, error = %e, "taking the seat back failed; dropping the client");
                    self.drop_participant(
                        participant,
                        "The conference did not take the participant back",
                    )
                    .await;
                    return;
                }
            }
        }
    }

    /// Drain for a rolling update: no more logins here; every client that
    /// may relogin keeps its seat detached on its node and has its
    /// connection closed without `drop`, so that it reconnects and relogs
    /// in on another portal; the others are dropped. (moved, dropped).
    pub async fn drain(&self) -> (usize, usize) {
        self.start_draining();
        // A seat detached on a node that is gone unheard of would be lost
        // with it: such rooms are rebuilt first.
        self.check_controllers().await;
        let grace = self.reconnection_grace();
        let clients: Vec<(String, bool, Controller)> = self.delivery.with(|r| {
            r.clients()
                .map(|c| (c.participant.clone(), c.reconnection, c.controller.clone()))
                .collect()
        });
        // many at a time, as a rejoin does: a portal holds thousands
        use futures_util::StreamExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (moved, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
        futures_util::stream::iter(clients)
            .for_each_concurrent(
                REJOIN_CONCURRENCY,
                |(participant, reconnection, controller)| {
                    let (moved, dropped) = (&moved, &dropped);
                    async move {
                        if !reconnection {
                            if self
                                .drop_participant(&participant, "The portal is shutting down")
                                .await
                            {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                        if let Err(e) = self.remotes.detach(&controller, &participant, grace).await
                        {
                            tracing::warn!(%participant, error = %e, "detaching on drain failed");
                        }
                        let open = self.delivery.with(|r| {
                            let sid = r.client(&participant)?.socket;
                            let open = r.close_connection(sid);
                            r.remove(&participant);
                            open.then_some(sid)
                        });
                        if let Some(sid) = open {
                            self.delivery.close(sid);
                        }
                        moved.fetch_add(1, Ordering::Relaxed);
                    }
                },
            )
            .await;
        (moved.into_inner(), dropped.into_inner())
    }

    /// Drop every participant (cluster loss, shutdown, `Drop{"all"}`).
    pub async fn drop_all(&self, reason: &str) -> usize {
        let all: Vec<String> = self
            .delivery
            .with(|r| r.clients().map(|c| c.participant.clone()).collect());
        let mut n = 0;
        for p in all {
            if self.drop_participant(&p, reason).await {
                n += 1;
            }
        }
        n
    }
}
