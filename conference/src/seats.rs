//! Seats that outlive connections: a participant whose portal lost its
//! connection (the socket closed, the portal died or drained) is *detached*:
//! it keeps its place, its id and its notifications for a window, the
//! others see nothing, and a relogin on any portal *reattaches* it. A seat
//! nobody reclaims in time is left as OWT leaves it.

use crate::conference::{
    ClientSpec, Conference, ConferenceError, Delivery, Participant, PortalRef,
};
use crate::mailbox::Kept;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// How many spent reconnection tickets a seat remembers (one use each).
const SPENT_TICKETS: usize = 16;

/// A seat taken over by a relogin.
#[derive(Debug, Clone, PartialEq)]
pub struct Reattached {
    pub participant: Participant,
    /// The portal that held it before (it lets go of the client, if alive).
    pub previous: PortalRef,
    /// Its kept notifications, in order.
    pub messages: Vec<Kept>,
    /// The others told it joined: its join was pending (its first portal
    /// answered the login but had not confirmed it).
    pub deliveries: Vec<Delivery>,
}

impl Conference {
    /// The participant's connection is gone: keep the seat for `window`.
    /// Clients without reconnection leave at once, as in OWT.
    pub fn detach(
        &mut self,
        id: &str,
        window: Duration,
        now: Instant,
    ) -> Result<Vec<Delivery>, ConferenceError> {
        let p = self
            .participants
            .get_mut(id)
            .ok_or(ConferenceError::NotJoined)?;
        if !p.client.reconnection {
            return self.leave(id, now).map(|(_, d)| d);
        }
        // a login answered (its portal detaches only clients it registered)
        // whose confirmation has not come yet: the seat is the client's
        let deliveries = self.seated(id);
        if let Some(p) = self.participants.get_mut(id) {
            p.detached_until.get_or_insert(now + window);
        }
        Ok(deliveries)
    }

    /// A portal was lost (it died, stalled or quit): its participants are
    /// detached; those without reconnection leave. Those in `still_held`
    /// are not touched: the portal itself, asked directly, still holds them
    /// (it was only reported lost, across a cluster manager change).
    pub fn portal_lost(
        &mut self,
        portal_id: &str,
        still_held: &std::collections::HashSet<String>,
        window: Duration,
        now: Instant,
    ) -> (Vec<String>, Vec<Delivery>) {
        let ids: Vec<String> = self
            .participants
            .values()
            .filter(|p| p.portal.id == portal_id && p.detached_until.is_none())
            .filter(|p| !still_held.contains(&p.id))
            // a pending join stays pending: a relogin confirms it (its
            // client had its answer), or its deadline forgets it (it had not)
            .filter(|p| p.pending_until.is_none())
            .map(|p| p.id.clone())
            .collect();
        let mut deliveries = Vec::new();
        for id in &ids {
            deliveries.extend(self.detach(id, window, now).unwrap_or_default());
        }
        (ids, deliveries)
    }

    /// A relogin on `portal` with reconnection ticket `ticket_id` takes the
    /// seat over; its kept notifications go with it.
    pub fn reattach(
        &mut self,
        id: &str,
        portal: PortalRef,
        ticket_id: &str,
        now: Instant,
    ) -> Result<Reattached, ConferenceError> {
        let p = self
            .participants
            .get_mut(id)
            .ok_or(ConferenceError::NoSuchParticipant)?;
        if !p.client.reconnection {
            return Err(ConferenceError::ReconnectionNotAllowed);
        }
        let spent = self.spent_tickets.entry(id.to_string()).or_default();
        if !ticket_id.is_empty() {
            if spent.contains(&ticket_id.to_string()) {
                return Err(ConferenceError::TicketUsed);
            }
            if spent.len() == SPENT_TICKETS {
                spent.pop_front();
            }
            spent.push_back(ticket_id.to_string());
        }
        let previous = std::mem::replace(&mut p.portal, portal);
        p.detached_until = None;
        let deliveries = self.seated(id);
        let participant = self.participants[id].clone();
        let messages = self
            .mailboxes
            .get_mut(id)
            .map(|m| m.replay(now))
            .unwrap_or_default();
        Ok(Reattached {
            participant,
            previous,
            messages,
            deliveries,
        })
    }

    /// Seats whose window is over: they leave, and the others are told.
    pub fn expire_detached(&mut self, now: Instant) -> (Vec<String>, Vec<Delivery>) {
        let ids = self.due(|p| p.detached_until, now);
        let mut deliveries = Vec::new();
        for id in &ids {
            if let Ok((_, d)) = self.leave(id, now) {
                deliveries.extend(d);
            }
        }
        (ids, deliveries)
    }

    /// How many seats are detached.
    pub fn detached(&self) -> usize {
        self.participants
            .values()
            .filter(|p| p.detached_until.is_some())
            .count()
    }
}

/// Spent tickets per participant (one use each, across portals).
pub type SpentTickets = std::collections::HashMap<String, VecDeque<String>>;

/// The client spec a join carries, from its proto form.
pub fn client_spec(c: Option<conclave_proto::conference::v1::ClientSpec>) -> ClientSpec {
    let c = c.unwrap_or_default();
    ClientSpec {
        protocol: c.protocol,
        sdk_type: c.sdk_type,
        reconnection: c.reconnection,
        token_code: c.token_code,
        message_buffer_size: c.message_buffer_size as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conference::tests::{conf, portal, req, shape};
    use serde_json::json;

    const WINDOW: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_detached_seat_keeps_its_messages_and_the_others_see_nothing() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 2)).unwrap();
        assert!(
            c.detach("a", WINDOW, Instant::now()).unwrap().is_empty(),
            "no leave"
        );
        assert_eq!(c.detached(), 1);
        // a text to the detached participant is accepted and kept
        assert!(c.text("b", "a", "while away").unwrap().is_empty());
        let to_all = c.text("b", "all", "to all").unwrap();
        assert_eq!(to_all.len(), 1, "only b's portal gets a delivery");
        assert_eq!(shape(&to_all[0]).1, ["b"]);
        let seat = c.reattach("a", portal(3), "t1", Instant::now()).unwrap();
        assert_eq!(seat.previous, portal(1));
        assert_eq!(seat.participant.portal, portal(3));
        assert_eq!(
            seat.messages
                .iter()
                .map(|k| (k.seq, k.missed, k.notification.event))
                .collect::<Vec<_>>(),
            // b's join notice (never answered for), then the two texts
            [
                (1, true, "participant"),
                (2, true, "text"),
                (3, true, "text")
            ]
        );
        // attached again: deliveries go to its new portal, numbering goes on
        let next = c.text("b", "a", "back").unwrap();
        assert_eq!(next[0].portal, portal(3));
        assert_eq!(next[0].recipients, [("a".to_string(), 4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_serve_one_relogin_and_unknown_seats_are_refused() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.reattach("a", portal(2), "t1", Instant::now()).unwrap();
        assert_eq!(
            c.reattach("a", portal(3), "t1", Instant::now())
                .unwrap_err(),
            ConferenceError::TicketUsed
        );
        assert_eq!(
            c.reattach("zz", portal(3), "t2", Instant::now())
                .unwrap_err(),
            ConferenceError::NoSuchParticipant
        );
        let mut no_relogin = req("n", "presenter", 1);
        no_relogin.client.reconnection = false;
        c.join(no_relogin).unwrap();
        assert_eq!(
            c.reattach("n", portal(2), "t3", Instant::now())
                .unwrap_err(),
            ConferenceError::ReconnectionNotAllowed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_portal_reported_lost_that_still_holds_participants_keeps_them() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("c", "presenter", 1)).unwrap();
        let held = ["a".to_string()].into_iter().collect();
        let (lost, _) = c.portal_lost("portal-1", &held, WINDOW, Instant::now());
        assert_eq!(lost, ["c"], "only the one the portal no longer holds");
        tokio::time::advance(WINDOW).await;
        let (gone, _) = c.expire_detached(Instant::now());
        assert_eq!(gone, ["c"]);
        assert_eq!(c.participants().count(), 1, "a stays seated");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_portal_detaches_its_participants_until_the_window_ends() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 2)).unwrap();
        let mut plain = req("n", "presenter", 1);
        plain.client.reconnection = false;
        c.join(plain).unwrap();
        // the portal, asked, still holds nobody
        let none = Default::default();
        let (lost, deliveries) = c.portal_lost("portal-1", &none, WINDOW, Instant::now());
        assert_eq!(lost, ["a", "n"]);
        // n had no reconnection: it left, and b heard so
        assert_eq!(deliveries.len(), 1);
        assert_eq!(
            shape(&deliveries[0]).3,
            json!({"action": "leave", "data": "n"})
        );
        assert_eq!(c.participants().count(), 2);
        tokio::time::advance(WINDOW - Duration::from_millis(1)).await;
        assert!(c.expire_detached(Instant::now()).0.is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        let (gone, deliveries) = c.expire_detached(Instant::now());
        assert_eq!(gone, ["a"]);
        assert_eq!(
            shape(&deliveries[0]).3,
            json!({"action": "leave", "data": "a"})
        );
        assert!(!c.mailboxes.contains_key("a"), "its messages go with it");
    }

    #[tokio::test(start_paused = true)]
    async fn delivery_outcomes_decide_what_a_relogin_replays() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 1)).unwrap();
        let d1 = c.text("b", "a", "emitted").unwrap();
        c.settle(&d1[0].recipients, &[], false);
        let d2 = c.text("b", "a", "socket gone").unwrap();
        c.settle(&d2[0].recipients, &["a".into()], false);
        let d3 = c.text("b", "a", "portal down").unwrap();
        c.settle(&d3[0].recipients, &[], true);
        let seat = c.reattach("a", portal(2), "", Instant::now()).unwrap();
        assert_eq!(
            seat.messages
                .iter()
                .map(|k| (k.seq, k.missed))
                .collect::<Vec<_>>(),
            // b's join notice was never answered for: it counts as missed
            [(1, true), (2, false), (3, true), (4, true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_portals_buffer_size_bounds_what_is_kept() {
        let (mut c, _) = conf(-1);
        let mut small = req("a", "presenter", 1);
        small.client.message_buffer_size = 2;
        c.join(small).unwrap();
        c.join(req("b", "presenter", 1)).unwrap();
        c.detach("a", WINDOW, Instant::now()).unwrap();
        for i in 0..5 {
            c.text("b", "a", &format!("t{i}")).unwrap();
        }
        let seat = c.reattach("a", portal(2), "", Instant::now()).unwrap();
        assert_eq!(
            seat.messages.iter().map(|k| k.seq).collect::<Vec<_>>(),
            [5, 6],
            "the newest two"
        );
    }
}
