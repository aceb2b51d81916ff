//! The portal's shared state (OWT `portal.js`): configuration, the remotes it
//! calls, the delivery that owns every connection and client, and the ticket
//! book. The operations on it are the login core in [`crate::login`].

use crate::config::Config;
use crate::delivery::{Delivery, Sockets};
use crate::remote::Remotes;
use crate::ticket::Tickets;
use conclave_common::sync::Locked;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Portal {
    pub(crate) config: Config,
    /// The service key tokens are signed with.
    pub(crate) key: String,
    pub(crate) remotes: Arc<dyn Remotes>,
    pub(crate) delivery: Delivery,
    tickets: Mutex<Tickets>,
    /// Stopping: no more logins or relogins here.
    draining: std::sync::atomic::AtomicBool,
    /// Rooms being rebuilt on another node (their node or agent was lost).
    pub(crate) restoring: Mutex<std::collections::HashSet<String>>,
    /// Participants whose node already counts them here (a `Join` or
    /// `Reattach` answered) but who are not registered yet: a notification
    /// for one of them waits for it instead of being refused.
    arriving: Mutex<std::collections::HashMap<String, tokio::sync::watch::Receiver<()>>>,
}

/// How long a notification waits for its participant to arrive here.
const ARRIVAL_WAIT: Duration = Duration::from_secs(5);

/// Held while a participant arrives; dropping it lets waiting
/// notifications try again.
pub(crate) struct Arriving<'a> {
    portal: &'a Portal,
    participant: String,
    _done: tokio::sync::watch::Sender<()>,
    rx: tokio::sync::watch::Receiver<()>,
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        let mut arriving = self.portal.arriving.locked();
        if arriving
            .get(&self.participant)
            .is_some_and(|rx| rx.same_channel(&self.rx))
        {
            arriving.remove(&self.participant);
        }
    }
}

/// Milliseconds since the epoch (ticket windows).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Portal {
    pub fn new(
        config: Config,
        key: String,
        remotes: Arc<dyn Remotes>,
        sockets: Arc<dyn Sockets>,
    ) -> Portal {
        let ticket_key = if config.portal.reconnection_key.is_empty() {
            crate::ticket::derive_key(&key)
        } else {
            config.portal.reconnection_key.clone()
        };
        let lifetime = config
            .portal
            .reconnection_ticket_lifetime
            .saturating_mul(1000)
            .min(i64::MAX as u64) as i64;
        Portal {
            tickets: Mutex::new(Tickets::new(ticket_key, lifetime)),
            config,
            key,
            remotes,
            delivery: Delivery::new(sockets),
            draining: std::sync::atomic::AtomicBool::new(false),
            restoring: Mutex::new(Default::default()),
            arriving: Mutex::new(Default::default()),
        }
    }

    /// `participant` is about to be seated here by its node (before the
    /// `Join` or `Reattach` call): until the guard drops, a notification
    /// for it that finds it absent waits (see [`Self::arrived`]).
    pub(crate) fn arriving(&self, participant: &str) -> Arriving<'_> {
        let (tx, rx) = tokio::sync::watch::channel(());
        self.arriving
            .locked()
            .insert(participant.to_string(), rx.clone());
        Arriving {
            portal: self,
            participant: participant.to_string(),
            _done: tx,
            rx,
        }
    }

    /// Wait (bounded) until `participant`, if it is arriving, has arrived
    /// or failed to; at once when it is not arriving.
    pub(crate) async fn arrived(&self, participant: &str) {
        let rx = self.arriving.locked().get(participant).cloned();
        if let Some(mut rx) = rx {
            let _ = tokio::time::timeout(ARRIVAL_WAIT, rx.changed()).await;
        }
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// How many participants are logged in here.
    pub fn participants(&self) -> usize {
        self.delivery.with(|r| r.len())
    }

    /// The ticket book (lock order: after the registry).
    pub(crate) fn tickets(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.tickets.locked()
    }

    /// A fresh reconnection ticket for a participant of `room`.
    pub fn issue_ticket(&self, participant: &str, room: &str) -> String {
        self.tickets().issue(participant, room, now_ms())
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.portal.idle_timeout)
    }

    pub(crate) fn reconnection_grace(&self) -> Duration {
        Duration::from_secs(self.config.portal.reconnection_timeout)
    }
}
