//! Getting notifications to clients: `notify` (one participant),
//! `broadcast` (everyone here on a conference node), each in the client's
//! dialect, numbered, buffered for replay, and queued while the client is
//! away or its answer is pending.
//!
//! [`Delivery`] is the one owner of connection and client state: a single
//! lock over the [`Registry`]. Lock order: the registry, then the ticket
//! book ([`crate::ticket::Tickets`]), then socketioxide's own locks (an emit
//! looks the socket up). Nothing awaits and no callback runs under the
//! registry lock; emits happen under it so that a client's messages leave in
//! sequence order. Sockets are closed only outside it, since a close runs
//! socketioxide's disconnect path.

use crate::clients::{Recorded, Registry};
use conclave_common::sync::Locked;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use std::sync::{Arc, Mutex, OnceLock};

/// The sockets clients are on, as delivery needs them; tests give a fake.
pub trait Sockets: Send + Sync {
    /// Send an event; false when the socket is gone or its buffer is full.
    fn emit(&self, sid: Sid, event: &str, data: &Value) -> bool;
    /// Close the socket (its disconnect handler then runs).
    fn close(&self, sid: Sid);
}

/// The portal's Socket.IO server (set once it is built).
#[derive(Default)]
pub struct SocketIoSockets {
    io: OnceLock<SocketIo>,
}

impl SocketIoSockets {
    pub fn set(&self, io: SocketIo) {
        let _ = self.io.set(io);
    }
}

impl Sockets for SocketIoSockets {
    fn emit(&self, sid: Sid, event: &str, data: &Value) -> bool {
        let Some(socket) = self.io.get().and_then(|io| io.get_socket(sid)) else {
            return false;
        };
        match socket.emit(event, data) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(socket = %sid, error = %e, "emit failed");
                false
            }
        }
    }

    fn close(&self, sid: Sid) {
        if let Some(socket) = self.io.get().and_then(|io| io.get_socket(sid)) {
            let _ = socket.disconnect();
        }
    }
}

/// What became of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Emitted to the client's connection (or held to follow its answer).
    Delivered,
    /// Kept for the client, which is not connected.
    Missed,
    /// No such participant here.
    Absent,
}

pub struct Delivery {
    registry: Mutex<Registry>,
    sockets: Arc<dyn Sockets>,
}

impl Delivery {
    pub fn new(sockets: Arc<dyn Sockets>) -> Self {
        Delivery {
            registry: Mutex::new(Registry::default()),
            sockets,
        }
    }

    /// Run `f` on the registry under its lock (synchronous: no await, no
    /// callback can run inside).
    pub fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.locked())
    }

    /// Send an event as it is, outside the outbox (`drop`).
    pub fn emit(&self, sid: Sid, event: &str, data: &Value) -> bool {
        self.sockets.emit(sid, event, data)
    }

    pub fn close(&self, sid: Sid) {
        self.sockets.close(sid);
    }

    /// Record and, when possible, send one notification. Under the lock.
    fn deliver(
        &self,
        r: &mut Registry,
        participant: &str,
        event: &str,
        data: Value,
        seq: u64,
    ) -> Outcome {
        let traced = tracing::enabled!(tracing::Level::TRACE).then(|| data.to_string());
        let outcome = self.deliver_once(r, participant, event, data, seq);
        if let Some(data) = traced {
            tracing::trace!(%participant, seq, event, %data, ?outcome, "notification");
        }
        outcome
    }

    fn deliver_once(
        &self,
        r: &mut Registry,
        participant: &str,
        event: &str,
        data: Value,
        seq: u64,
    ) -> Outcome {
        match r.record(participant, event, data, seq) {
            Recorded::Absent => Outcome::Absent,
            Recorded::Duplicate => Outcome::Delivered,
            Recorded::Send(sid, message) => {
                if self.sockets.emit(sid, &message.event, &message.data) {
                    Outcome::Delivered
                } else {
                    r.requeue(participant, message);
                    Outcome::Missed
                }
            }
            Recorded::Kept { held } => {
                conclave_common::metrics::counter!("portal_messages_queued_total").increment(1);
                // held for an answer: it follows the answer
                if held {
                    Outcome::Delivered
                } else {
                    Outcome::Missed
                }
            }
        }
    }

    /// A notification to one participant, with its sequence number.
    pub fn notify(&self, participant: &str, event: &str, data: Value, seq: u64) -> Outcome {
        let mut r = self.registry.locked();
        self.deliver(&mut r, participant, event, data, seq)
    }

    /// A notification to each of `recipients` (participant, sequence
    /// number), in their dialects; those it could not be emitted to (not
    /// here, or not connected).
    ///
    /// `from` is the sending node ("" when not known). A participant whose
    /// room was rebuilt on another node gets the old node's late messages
    /// unnumbered: the new node numbers from where the portal stood, so the
    /// same numbers name different messages of the two nodes.
    pub fn deliver_to(
        &self,
        recipients: &[(String, u64)],
        event: &str,
        data: &Value,
        from: &str,
    ) -> Vec<String> {
        let mut r = self.registry.locked();
        recipients
            .iter()
            .filter(|(p, seq)| {
                let current =
                    from.is_empty() || r.client(p).is_none_or(|c| c.controller.node == from);
                let seq = if current { *seq } else { 0 };
                self.deliver(&mut r, p, event, data.clone(), seq) != Outcome::Delivered
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// OWT `broadcast`: every participant here on `controller`, except
    /// `exclude`, each in its own dialect. Returns how many.
    pub fn broadcast(
        &self,
        controller: &str,
        exclude: &[String],
        event: &str,
        data: &Value,
    ) -> usize {
        let mut r = self.registry.locked();
        let targets = r.on_controller(controller, exclude);
        for participant in &targets {
            self.deliver(&mut r, participant, event, data.clone(), 0);
        }
        targets.len()
    }

    /// The answer to `participant` on `sid` has been sent: what was queued
    /// meanwhile follows it, in order.
    pub fn release(&self, participant: &str, sid: Sid) {
        let mut r = self.registry.locked();
        for message in r.release(participant, sid) {
            if !self.sockets.emit(sid, &message.event, &message.data) {
                r.requeue(participant, message);
            }
        }
    }
}
