//! Every connection and every participant this portal holds (OWT's
//! `clients` and `participants` maps), in one plain structure: the
//! [`Delivery`](crate::delivery::Delivery) owns it behind its one lock.
//!
//! A connection stays here from its socket's connect until its socket is gone
//! and it holds no participant waiting for a relogin. A participant stays
//! from its login until it leaves, whatever connection it is on.

use crate::connection::{Connection, State};
use crate::dialect::Protocol;
use crate::outbox::{Message, Outbox, SeqWindow};
use crate::remote::Controller;
use serde_json::Value;
use socketioxide::socket::Sid;
use std::collections::HashMap;

/// A JSON value kept as its compact text, for what is read only when a
/// seat moves: a parsed permission object is a tree of `BTreeMap` nodes,
/// about 1.8 KiB per client (heap profile, 3 000 idle clients), against
/// about 150 bytes of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    pub fn new(value: &Value) -> JsonText {
        JsonText(value.to_string().into_boxed_str())
    }

    /// The value again (`null` if the text were ever not JSON).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// A logged-in participant.
#[derive(Debug)]
pub struct Client {
    pub participant: String,
    /// The socket (connection) it is on now; relogins move it.
    pub socket: Sid,
    pub room: String,
    pub controller: Controller,
    /// The token code: this portal's cluster task for the login.
    pub token_code: String,
    pub user: String,
    pub role: String,
    /// What it may publish and subscribe, as its node last said (kept so
    /// that its seat can be restored on another node).
    pub permission: JsonText,
    pub protocol: Protocol,
    /// The SDK type from the login's user agent.
    pub sdk_type: String,
    /// Whether the client may relogin (OWT: known SDK types only).
    pub reconnection: bool,
    /// What waits for the client here (its node keeps everything for replay).
    pub outbox: Outbox,
    /// Its login or relogin answer is on the way: notifications are queued
    /// until it has been sent, so none overtakes it.
    pub held: bool,
    /// The sequence numbers sent (or queued to follow an answer) on its
    /// connection here.
    pub sent: SeqWindow,
}

/// What became of a notification in the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// No such participant here.
    Absent,
    /// Already sent: dropped.
    Duplicate,
    /// To send now on this socket.
    Send(Sid, Message),
    /// Kept: it follows the client's answer (`held`), or waits because the
    /// client is not connected.
    Kept { held: bool },
}

#[derive(Default)]
pub struct Registry {
    connections: HashMap<Sid, Connection>,
    clients: HashMap<String, Client>,
    /// Rooms with participants here: the node serving each (as its last
    /// login, relogin or restore here said) and how many participants.
    rooms: HashMap<String, (Controller, usize)>,
}

impl Registry {
    pub fn add_connection(&mut self, sid: Sid, connection: Connection) {
        self.connections.insert(sid, connection);
    }

    pub fn connection(&self, sid: Sid) -> Option<&Connection> {
        self.connections.get(&sid)
    }

    pub fn connection_mut(&mut self, sid: Sid) -> Option<&mut Connection> {
        self.connections.get_mut(&sid)
    }

    pub fn remove_connection(&mut self, sid: Sid) -> Option<Connection> {
        self.connections.remove(&sid)
    }

    /// The connections past their idle deadline at `now`.
    pub fn idle_expired(&self, now: tokio::time::Instant) -> Vec<Sid> {
        self.connections
            .iter()
            .filter(|(_, c)| c.idle_expired(now))
            .map(|(&sid, _)| sid)
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// The server closes connection `sid` (drop, relogin elsewhere): it
    /// forgets its participant without leaving. Returns whether its socket
    /// is still open (the caller closes it; its disconnect then removes the
    /// connection); a connection whose socket is already gone goes now.
    pub fn close_connection(&mut self, sid: Sid) -> bool {
        let Some(connection) = self.connections.get_mut(&sid) else {
            return false;
        };
        let socket_gone = connection.state() == State::WaitingForReconnecting;
        connection.close();
        if socket_gone {
            self.connections.remove(&sid);
        }
        !socket_gone
    }

    pub fn contains(&self, participant: &str) -> bool {
        self.clients.contains_key(participant)
    }

    pub fn client(&self, participant: &str) -> Option<&Client> {
        self.clients.get(participant)
    }

    pub fn client_mut(&mut self, participant: &str) -> Option<&mut Client> {
        self.clients.get_mut(participant)
    }

    pub fn insert(&mut self, client: Client) {
        let room = self
            .rooms
            .entry(client.room.clone())
            .or_insert_with(|| (client.controller.clone(), 0));
        room.0 = client.controller.clone();
        room.1 += 1;
        if let Some(old) = self.clients.insert(client.participant.clone(), client) {
            self.forget_room_member(&old.room);
        }
    }

    pub fn remove(&mut self, participant: &str) -> Option<Client> {
        let client = self.clients.remove(participant)?;
        self.forget_room_member(&client.room);
        Some(client)
    }

    fn forget_room_member(&mut self, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                self.rooms.remove(room);
            }
        }
    }

    /// The node serving `room`, if participants of it are here: a login
    /// into it can join that node without asking the scheduler and the
    /// agent (a stale answer, the node gone or moved, is found out by the
    /// join and the login falls back to them).
    pub fn room_controller(&self, room: &str) -> Option<&Controller> {
        self.rooms.get(room).map(|(c, _)| c)
    }

    /// A participant's room moved to another node (a restore).
    /// Move a participant to the node its room was rebuilt on, which
    /// numbers its notifications from `seq` on (what the portal had sent
    /// when it handed the seat over; the old node may have sent more
    /// since, under numbers the new node gives to other messages).
    pub fn move_to(&mut self, participant: &str, controller: &Controller, seq: u64) -> bool {
        let Some(client) = self.clients.get_mut(participant) else {
            return false;
        };
        client.controller = controller.clone();
        client.sent = crate::outbox::SeqWindow::from_floor(seq);
        if let Some(entry) = self.rooms.get_mut(&client.room) {
            entry.0 = controller.clone();
        }
        true
    }

    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The state of the connection a participant is on (`initialized` once
    /// that connection is gone).
    pub fn state_of(&self, client: &Client) -> State {
        self.connections
            .get(&client.socket)
            .map_or(State::Initialized, Connection::state)
    }

    /// Whether messages to `participant` can be sent now: its connection is
    /// `connected` and no answer is pending.
    fn deliverable(&self, client: &Client) -> bool {
        !client.held && self.state_of(client) == State::Connected
    }

    /// Record a notification for `participant` in its dialect: what to do
    /// with it.
    pub fn record(&mut self, participant: &str, event: &str, data: Value, seq: u64) -> Recorded {
        let Some(client) = self.clients.get(participant) else {
            return Recorded::Absent;
        };
        let deliverable = self.deliverable(client);
        let Some(client) = self.clients.get_mut(participant) else {
            return Recorded::Absent;
        };
        // Sequence numbers come from the participant's node: one already
        // sent here is a late copy (a call that timed out on the node but
        // reached this portal after a stall), or a replay of it.
        if seq != 0 && client.sent.seen(seq) {
            return Recorded::Duplicate;
        }
        let held = client.held;
        if seq != 0 && (deliverable || held) {
            client.sent.mark(seq);
        }
        if !deliverable && !held {
            // Away: its node keeps it for the relogin; nothing to hold here.
            return Recorded::Kept { held: false };
        }
        let (event, data) = crate::dialect::translate(client.protocol, event, data);
        let message = client.outbox.record(&event, data, seq, deliverable);
        if deliverable {
            Recorded::Send(client.socket, message)
        } else {
            Recorded::Kept { held }
        }
    }

    /// A message that could not be sent after all: its node keeps it for
    /// the relogin; an unnumbered one waits here.
    pub fn requeue(&mut self, participant: &str, message: Message) {
        if message.seq == 0
            && let Some(client) = self.clients.get_mut(participant)
        {
            client.outbox.requeue(message);
        }
    }

    /// The answer to `participant` on `sid` was sent: lift the hold and hand
    /// back what was queued meanwhile, to send now.
    pub fn release(&mut self, participant: &str, sid: Sid) -> Vec<Message> {
        let connected = self
            .connections
            .get(&sid)
            .is_some_and(|c| c.state() == State::Connected);
        match self.clients.get_mut(participant) {
            Some(client) if client.socket == sid => {
                client.held = false;
                if connected {
                    client.outbox.take_pending()
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    /// Participants here whose controller is `node`, except `exclude`.
    pub fn on_controller(&self, node: &str, exclude: &[String]) -> Vec<String> {
        self.clients
            .values()
            .filter(|c| c.controller.node == node && !exclude.contains(&c.participant))
            .map(|c| c.participant.clone())
            .collect()
    }

    /// Participants on any node of agent `worker`: node ids start with the
    /// agent's worker id (OWT `getParticipantsByController('worker', …)`).
    pub fn on_agent(&self, worker: &str) -> Vec<String> {
        let prefix = format!("{worker}_");
        self.clients
            .values()
            .filter(|c| c.controller.node.starts_with(&prefix))
            .map(|c| c.participant.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn a_kept_permission_is_compact_text_and_reads_back_the_same() {
        let permission = json!({
            "publish": {"audio": true, "video": false},
            "subscribe": {"audio": true, "video": true},
            "text": "to-all",
            "manage": false
        });
        let kept = JsonText::new(&permission);
        assert_eq!(kept.value(), permission);
        assert!(!kept.0.contains(' '), "compact: {}", kept.0);
        assert_eq!(JsonText::new(&Value::Null).value(), Value::Null);
    }

    fn client(participant: &str, socket: Sid, node: &str) -> Client {
        Client {
            participant: participant.into(),
            socket,
            room: "r".into(),
            controller: Controller {
                node: node.into(),
                endpoint: "127.0.0.1:1".into(),
            },
            token_code: "code".into(),
            user: "u".into(),
            role: "presenter".into(),
            permission: JsonText::new(&Value::Null),
            protocol: Protocol::V1_2,
            sdk_type: "C++".into(),
            reconnection: true,
            outbox: Outbox::new(16),
            held: true,
            sent: SeqWindow::default(),
        }
    }

    fn connected(r: &mut Registry, sid: Sid, participant: &str) {
        let mut c = Connection::new(Instant::now(), Duration::from_secs(60));
        let e = c.begin_login().unwrap();
        c.login_done(e, participant);
        r.add_connection(sid, c);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_wait_for_the_answer_then_flow() {
        let mut r = Registry::default();
        let sid = Sid::new();
        connected(&mut r, sid, "p");
        r.insert(client("p", sid, "agent-1_0"));
        assert_eq!(
            r.record("p", "text", json!(1), 1),
            Recorded::Kept { held: true },
            "held until the answer is sent"
        );
        let queued = r.release("p", sid);
        assert_eq!(queued.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
        let Recorded::Send(to, sent) = r.record("p", "text", json!(2), 2) else {
            panic!("sent now")
        };
        assert_eq!((to, sent.seq), (sid, 2));
        assert_eq!(r.record("nobody", "text", json!(3), 3), Recorded::Absent);
        // a late copy of what was sent is dropped; unnumbered ones pass
        assert_eq!(r.record("p", "text", json!(2), 2), Recorded::Duplicate);
        assert!(matches!(
            r.record("p", "stream", json!(0), 0),
            Recorded::Send(..)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_connection_whose_socket_is_gone_removes_it() {
        let mut r = Registry::default();
        let (open, gone) = (Sid::new(), Sid::new());
        connected(&mut r, open, "a");
        connected(&mut r, gone, "b");
        r.connection_mut(gone)
            .unwrap()
            .disconnected(Some(Duration::from_secs(60)), Instant::now());
        assert!(r.close_connection(open), "its socket must still be closed");
        assert!(r.connection(open).is_some(), "until its disconnect");
        assert!(!r.close_connection(gone));
        assert!(r.connection(gone).is_none());
        assert!(!r.close_connection(Sid::new()));
    }

    #[test]
    fn controllers_by_node_and_agent() {
        let mut r = Registry::default();
        r.insert(client("a", Sid::new(), "conference-1@h_0"));
        r.insert(client("b", Sid::new(), "conference-1@h_1"));
        r.insert(client("c", Sid::new(), "conference-2@h_0"));
        assert_eq!(r.on_controller("conference-1@h_0", &[]), ["a"]);
        assert!(
            r.on_controller("conference-1@h_0", &["a".into()])
                .is_empty()
        );
        let mut on = r.on_agent("conference-1@h");
        on.sort();
        assert_eq!(on, ["a", "b"]);
    }
}
