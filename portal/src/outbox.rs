//! What a client has been sent (OWT §10.7, bounded as issue 6 asks): every
//! notification gets a sequence number starting at 1 and is kept for relogin
//! replay, bounded by age and count (OWT's buffer never shrank, §17.2);
//! notifications sent while the client is away are queued for it.

use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: String,
    pub data: Value,
    pub seq: u64,
}

#[derive(Debug)]
pub struct Outbox {
    seq: u64,
    buffer: VecDeque<(Message, Instant)>,
    pending: VecDeque<Message>,
    keep: Duration,
    limit: usize,
}

impl Outbox {
    /// Keep messages for `keep` and at most `limit` of them (buffer and
    /// pending queue each).
    pub fn new(keep: Duration, limit: usize) -> Self {
        Outbox {
            seq: 0,
            buffer: VecDeque::new(),
            pending: VecDeque::new(),
            keep,
            limit: limit.max(1),
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Record a message; with `deliverable` false it is also queued for the
    /// client's return. Returns the message with its sequence number.
    pub fn record(&mut self, event: &str, data: Value, deliverable: bool, now: Instant) -> Message {
        self.seq += 1;
        let message = Message {
            event: event.to_string(),
            data,
            seq: self.seq,
        };
        self.buffer.push_back((message.clone(), now));
        self.trim(now);
        if !deliverable {
            if self.pending.len() == self.limit {
                self.pending.pop_front();
            }
            self.pending.push_back(message.clone());
        }
        message
    }

    /// A message that could not be delivered after all (the socket was gone).
    pub fn requeue(&mut self, message: Message) {
        if self.pending.len() == self.limit {
            self.pending.pop_front();
        }
        self.pending.push_back(message);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .buffer
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > self.keep)
            || self.buffer.len() > self.limit
        {
            self.buffer.pop_front();
        }
    }

    /// The queued messages, to re-emit after a 1.0/1.1 relogin.
    pub fn take_pending(&mut self) -> Vec<Message> {
        self.pending.drain(..).collect()
    }

    /// The 1.2 relogin reply: recent and queued messages, each once, by seq.
    pub fn replay(&mut self, now: Instant) -> Vec<Message> {
        self.trim(now);
        let mut all: Vec<Message> = self.buffer.iter().map(|(m, _)| m.clone()).collect();
        for m in self.pending.drain(..) {
            if !all.iter().any(|b| b.seq == m.seq) {
                all.push(m);
            }
        }
        all.sort_by_key(|m| m.seq);
        all
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEEP: Duration = Duration::from_secs(46);

    #[tokio::test(start_paused = true)]
    async fn sequence_starts_at_one_and_grows() {
        let mut o = Outbox::new(KEEP, 10);
        let a = o.record("text", json!(1), true, Instant::now());
        let b = o.record("text", json!(2), true, Instant::now());
        assert_eq!((a.seq, b.seq), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_buffer_is_bounded_by_age() {
        let mut o = Outbox::new(KEEP, 100);
        o.record("a", json!(null), true, Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        o.record("b", json!(null), true, Instant::now());
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(o.replay(Instant::now()).len(), 2, "46 s is still kept");
        tokio::time::advance(Duration::from_millis(1)).await;
        let left = o.replay(Instant::now());
        assert_eq!(
            left.iter().map(|m| m.event.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_buffer_and_queue_are_bounded_by_count() {
        let mut o = Outbox::new(KEEP, 3);
        for i in 0..10 {
            o.record("m", json!(i), false, Instant::now());
        }
        assert_eq!(o.buffered(), 3);
        let pending = o.take_pending();
        assert_eq!(
            pending.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn replay_merges_recent_and_queued_once_each() {
        let mut o = Outbox::new(KEEP, 100);
        o.record("seen", json!(1), true, Instant::now());
        tokio::time::advance(Duration::from_secs(50)).await;
        // queued while away, and old enough to leave the recent buffer
        o.record("away", json!(2), false, Instant::now());
        tokio::time::advance(Duration::from_secs(50)).await;
        o.record("away", json!(3), false, Instant::now());
        let replay = o.replay(Instant::now());
        assert_eq!(replay.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(o.take_pending().is_empty(), "replay drains the queue");
    }

    #[tokio::test(start_paused = true)]
    async fn requeued_messages_keep_their_seq() {
        let mut o = Outbox::new(KEEP, 10);
        let m = o.record("text", json!("x"), true, Instant::now());
        o.requeue(m);
        assert_eq!(o.take_pending()[0].seq, 1);
    }
}
