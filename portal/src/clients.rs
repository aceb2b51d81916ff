//! The participants this portal hosts (OWT's `participants` and `clients`
//! maps): which socket, room and conference node each one has.

use crate::connection::Connection;
use crate::dialect::Protocol;
use crate::outbox::Outbox;
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub type SharedConnection = Arc<Mutex<Connection>>;

#[derive(Clone)]
pub struct ClientEntry {
    pub participant: String,
    pub socket: Sid,
    pub connection: SharedConnection,
    pub room: String,
    /// The conference node id (the controller broadcasts name).
    pub controller: String,
    /// The node's gRPC address.
    pub endpoint: String,
    /// The token code: this portal's cluster task for the login.
    pub token_code: String,
    pub user: String,
    pub role: String,
    pub protocol: Protocol,
    /// The SDK type from the login's user agent.
    pub sdk_type: String,
    /// Whether the client may relogin (OWT: known SDK types only).
    pub reconnection: bool,
    /// Sequence numbers, replay buffer and queue: they follow the client
    /// across relogins.
    pub outbox: Arc<Mutex<Outbox>>,
}

impl ClientEntry {
    /// Whether `connection` is the one this client is on now.
    pub fn owned_by(&self, connection: &SharedConnection) -> bool {
        Arc::ptr_eq(&self.connection, connection)
    }
}

#[derive(Default)]
pub struct Clients {
    map: HashMap<String, ClientEntry>,
}

impl Clients {
    pub fn contains(&self, participant: &str) -> bool {
        self.map.contains_key(participant)
    }

    pub fn get(&self, participant: &str) -> Option<&ClientEntry> {
        self.map.get(participant)
    }

    pub fn get_mut(&mut self, participant: &str) -> Option<&mut ClientEntry> {
        self.map.get_mut(participant)
    }

    pub fn insert(&mut self, entry: ClientEntry) {
        self.map.insert(entry.participant.clone(), entry);
    }

    pub fn remove(&mut self, participant: &str) -> Option<ClientEntry> {
        self.map.remove(participant)
    }

    pub fn all(&self) -> impl Iterator<Item = &ClientEntry> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Participants whose controller is `node` (OWT `getParticipantsByController('node', …)`).
    pub fn on_node(&self, node: &str) -> Vec<String> {
        self.map
            .values()
            .filter(|c| c.controller == node)
            .map(|c| c.participant.clone())
            .collect()
    }

    /// Participants on any node of agent `worker`: node ids start with the
    /// agent's worker id (OWT `getParticipantsByController('worker', …)`).
    pub fn on_agent(&self, worker: &str) -> Vec<String> {
        let prefix = format!("{worker}_");
        self.map
            .values()
            .filter(|c| c.controller.starts_with(&prefix))
            .map(|c| c.participant.clone())
            .collect()
    }
}
