//! What a participant has been sent, kept on its conference node so that it
//! survives the portal that carried it: every notification gets the
//! participant's next sequence number (increasing across portals), and is
//! kept until it is known delivered and older than the replay window, or
//! until the bounds (count and bytes) push it out. A notification for many
//! recipients is stored once and shared.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One notification, shared by all its recipients.
#[derive(Debug, PartialEq, Eq)]
pub struct Notification {
    pub event: &'static str,
    /// JSON text, as it crosses to portals.
    pub data: String,
}

impl Notification {
    pub fn new(event: &'static str, data: &serde_json::Value) -> Arc<Notification> {
        Arc::new(Notification {
            event,
            data: data.to_string(),
        })
    }

    fn size(&self) -> usize {
        self.event.len() + self.data.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Sent to the portal; no answer yet.
    InFlight,
    /// The portal emitted it to the client's socket.
    Delivered,
    /// Not sent, or the portal could not emit it: the client has not seen it.
    Undelivered,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    notification: Arc<Notification>,
    fate: Fate,
    at: Instant,
}

/// A kept notification, for a relogin reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub seq: u64,
    pub notification: Arc<Notification>,
    /// False: the client may have seen it (1.2 replays it anyway, the
    /// client skips what it has); true: it has not.
    pub missed: bool,
}

/// Bounds of one participant's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Delivered notifications are kept this long for a 1.2 replay (the
    /// longest a dead socket can go unnoticed).
    pub keep: Duration,
    /// At most this many notifications.
    pub count: usize,
    /// At most this many bytes of notification text.
    pub bytes: usize,
}

impl Default for Limits {
    /// Socket.IO's ping interval + timeout + 1 s; the portal's default
    /// `message_buffer_size`; 1 MiB.
    fn default() -> Self {
        Limits {
            keep: Duration::from_secs(46),
            count: 1024,
            bytes: 1 << 20,
        }
    }
}

#[derive(Debug)]
pub struct Mailbox {
    seq: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
    limits: Limits,
}

impl Mailbox {
    pub fn new(limits: Limits) -> Mailbox {
        Mailbox {
            seq: 0,
            entries: VecDeque::new(),
            bytes: 0,
            limits: Limits {
                count: limits.count.max(1),
                ..limits
            },
        }
    }

    /// A mailbox whose next notification is numbered `seq + 1`: a seat
    /// restored on a new node continues the numbering its portal has seen.
    pub fn starting_at(limits: Limits, seq: u64) -> Mailbox {
        Mailbox {
            seq,
            ..Mailbox::new(limits)
        }
    }

    /// Keep `notification`; `sent` says whether it goes to a portal now (in
    /// flight) or waits for a relogin. Its sequence number.
    pub fn push(&mut self, notification: Arc<Notification>, sent: bool, now: Instant) -> u64 {
        self.seq += 1;
        self.bytes += notification.size();
        self.entries.push_back(Entry {
            seq: self.seq,
            notification,
            fate: if sent {
                Fate::InFlight
            } else {
                Fate::Undelivered
            },
            at: now,
        });
        self.trim(now);
        self.seq
    }

    /// The portal answered for `seq`: emitted or not.
    pub fn settle(&mut self, seq: u64, delivered: bool) {
        // Kept sequence numbers are consecutive (only the oldest are trimmed):
        // the entry's place follows from its number.
        let Some(first) = self.entries.front().map(|e| e.seq) else {
            return;
        };
        let Some(index) = seq.checked_sub(first) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(index as usize)
            && e.fate == Fate::InFlight
        {
            e.fate = if delivered {
                Fate::Delivered
            } else {
                Fate::Undelivered
            };
        }
    }

    fn trim(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let stale =
                front.fate == Fate::Delivered && now.duration_since(front.at) > self.limits.keep;
            let over = self.entries.len() > self.limits.count || self.bytes > self.limits.bytes;
            if !(stale || over) {
                break;
            }
            if let Some(gone) = self.entries.pop_front() {
                self.bytes -= gone.notification.size();
            }
        }
    }

    /// What a relogin hands the client: everything kept, in order; what it
    /// has not seen is marked `missed`. In-flight notifications count as
    /// missed: the portal they went to is being replaced.
    pub fn replay(&mut self, now: Instant) -> Vec<Kept> {
        self.trim(now);
        self.entries
            .iter_mut()
            .map(|e| {
                let missed = e.fate != Fate::Delivered;
                if missed {
                    // handed over now: a late answer from the old portal
                    // changes nothing
                    e.fate = Fate::Delivered;
                }
                Kept {
                    seq: e.seq,
                    notification: e.notification.clone(),
                    missed,
                }
            })
            .collect()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        keep: Duration::from_secs(46),
        count: 100,
        bytes: 1 << 20,
    };

    fn n(i: u64) -> Arc<Notification> {
        Notification::new("text", &json!({"n": i}))
    }

    #[tokio::test(start_paused = true)]
    async fn sequence_numbers_start_at_one_and_grow() {
        let mut m = Mailbox::new(LIMITS);
        assert_eq!(m.push(n(1), true, Instant::now()), 1);
        assert_eq!(m.push(n(2), false, Instant::now()), 2);
        assert_eq!(m.seq(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_marks_what_the_client_missed() {
        let mut m = Mailbox::new(LIMITS);
        let a = m.push(n(1), true, Instant::now());
        let b = m.push(n(2), true, Instant::now());
        let _c = m.push(n(3), true, Instant::now());
        m.push(n(4), false, Instant::now());
        m.settle(a, true);
        m.settle(b, false);
        let replay = m.replay(Instant::now());
        assert_eq!(
            replay.iter().map(|k| (k.seq, k.missed)).collect::<Vec<_>>(),
            [(1, false), (2, true), (3, true), (4, true)]
        );
        m.settle(3, true);
        assert!(
            m.replay(Instant::now()).iter().all(|k| !k.missed),
            "handed over once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delivered_notifications_age_out_and_missed_ones_wait() {
        let mut m = Mailbox::new(LIMITS);
        let seen = m.push(n(1), true, Instant::now());
        m.settle(seen, true);
        m.push(n(2), false, Instant::now());
        tokio::time::advance(Duration::from_secs(47)).await;
        let replay = m.replay(Instant::now());
        assert_eq!(replay.iter().map(|k| k.seq).collect::<Vec<_>>(), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_by_count_and_bytes() {
        let mut m = Mailbox::new(Limits { count: 3, ..LIMITS });
        for i in 0..10 {
            m.push(n(i), false, Instant::now());
        }
        assert_eq!(m.len(), 3);
        assert_eq!(
            m.replay(Instant::now())
                .iter()
                .map(|k| k.seq)
                .collect::<Vec<_>>(),
            [8, 9, 10]
        );
        let one = n(0).size();
        let mut m = Mailbox::new(Limits {
            bytes: one * 4,
            ..LIMITS
        });
        for i in 0..10 {
            m.push(n(i % 10), false, Instant::now());
        }
        assert_eq!(m.len(), 4);
        assert!(m.bytes() <= one * 4);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_find_their_entry_after_older_ones_were_trimmed() {
        let mut m = Mailbox::new(Limits { count: 3, ..LIMITS });
        for i in 1..=5 {
            m.push(n(i), true, Instant::now());
        }
        m.settle(1, true); // trimmed already: nothing to do
        m.settle(4, true);
        m.settle(5, false);
        assert_eq!(
            m.replay(Instant::now())
                .iter()
                .map(|k| (k.seq, k.missed))
                .collect::<Vec<_>>(),
            [(3, true), (4, false), (5, true)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_for_many_is_stored_once() {
        let shared = n(7);
        let mut boxes: Vec<Mailbox> = (0..300).map(|_| Mailbox::new(LIMITS)).collect();
        for m in &mut boxes {
            m.push(shared.clone(), false, Instant::now());
        }
        assert_eq!(Arc::strong_count(&shared), 301);
    }
}
