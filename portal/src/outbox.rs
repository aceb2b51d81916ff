//! What waits for a client on its portal: notifications that arrive while
//! its login or relogin answer is on the way (they follow the answer), and
//! those that could not be emitted. Sequence numbers come from the
//! participant's conference node, which keeps every notification for replay
//! (issue 15: the portal that carried a message may die).

use serde_json::Value;
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: String,
    pub data: Value,
    /// The participant's sequence number, from its node (0: none given).
    pub seq: u64,
}

/// How many sequence numbers below the highest a window remembers: as many
/// as a node keeps for a participant (`Limits::count`, the default
/// `message_buffer_size`), so that a replay of everything a node kept after
/// a long gap is told apart from what was sent, message by message.
pub const SEQ_WINDOW: u64 = 1024;

/// Which of a client's recent sequence numbers were sent on its connection:
/// the highest, and a bit for each of the [`SEQ_WINDOW`] − 1 below it.
/// Notifications may arrive out of order (a call that timed out on the node
/// but reached this portal later; the node's replay of what a client
/// missed, next to newer messages sent meanwhile), so a high-water mark is
/// not enough. Older ones than the window count as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqWindow {
    max: u64,
    /// Bit `seq % SEQ_WINDOW` for each number within the window.
    bits: Box<[u64; (SEQ_WINDOW / 64) as usize]>,
}

impl Default for SeqWindow {
    fn default() -> Self {
        SeqWindow {
            max: 0,
            bits: Box::new([0; (SEQ_WINDOW / 64) as usize]),
        }
    }
}

impl SeqWindow {
    /// The highest sequence number sent.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// A window in which every number up to `seq` counts as sent: a new
    /// node numbers from there.
    pub fn from_floor(seq: u64) -> SeqWindow {
        SeqWindow {
            max: seq,
            bits: Box::new([u64::MAX; (SEQ_WINDOW / 64) as usize]),
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % SEQ_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    pub fn seen(&self, seq: u64) -> bool {
        if seq > self.max {
            return false;
        }
        if self.max - seq >= SEQ_WINDOW {
            return true;
        }
        let (word, mask) = Self::bit(seq);
        self.bits[word] & mask != 0
    }

    pub fn mark(&mut self, seq: u64) {
        if seq > self.max {
            // the numbers skipped over are not sent (yet)
            if seq - self.max >= SEQ_WINDOW {
                self.bits.fill(0);
            } else {
                for skipped in self.max + 1..seq {
                    let (word, mask) = Self::bit(skipped);
                    self.bits[word] &= !mask;
                }
            }
            self.max = seq;
        } else if self.max - seq >= SEQ_WINDOW {
            return;
        }
        let (word, mask) = Self::bit(seq);
        self.bits[word] |= mask;
    }
}

/// At most this many bytes of messages wait in one outbox (as a node keeps
/// per participant).
pub const OUTBOX_BYTES: usize = 1 << 20;

/// A message's size as it is sent: its event name and its JSON text,
/// counted without writing it out.
fn size(message: &Message) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, &message.data);
    message.event.len() + count.0
}

#[derive(Debug)]
pub struct Outbox {
    /// Each pending message with its size.
    pending: VecDeque<(usize, Message)>,
    limit: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Outbox {
    /// Keep at most `limit` pending messages, and [`OUTBOX_BYTES`].
    pub fn new(limit: usize) -> Self {
        Outbox::bounded(limit, OUTBOX_BYTES)
    }

    /// Keep at most `limit` pending messages and `max_bytes` of them (the
    /// newest is kept whatever its size).
    pub fn bounded(limit: usize, max_bytes: usize) -> Self {
        Outbox {
            pending: VecDeque::new(),
            limit: limit.max(1),
            bytes: 0,
            max_bytes,
        }
    }

    /// A message to send now, or, with `deliverable` false, to keep for later.
    pub fn record(&mut self, event: &str, data: Value, seq: u64, deliverable: bool) -> Message {
        let message = Message {
            event: event.to_string(),
            data,
            seq,
        };
        if !deliverable {
            self.requeue(message.clone());
        }
        message
    }

    /// A message that could not be delivered after all (the socket was gone).
    /// The oldest go when the bounds are passed.
    pub fn requeue(&mut self, message: Message) {
        let size = size(&message);
        self.bytes += size;
        self.pending.push_back((size, message));
        while self.pending.len() > self.limit
            || (self.bytes > self.max_bytes && self.pending.len() > 1)
        {
            if let Some((gone, _)) = self.pending.pop_front() {
                self.bytes -= gone;
            }
        }
    }

    /// The pending messages, in order.
    pub fn take_pending(&mut self) -> Vec<Message> {
        self.bytes = 0;
        self.pending.drain(..).map(|(_, m)| m).collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of the pending messages.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_seq_window_tells_sent_from_missed_out_of_order() {
        let mut w = SeqWindow::default();
        assert!(!w.seen(1));
        w.mark(3);
        w.mark(4);
        assert!(w.seen(3) && w.seen(4));
        assert!(!w.seen(1) && !w.seen(2) && !w.seen(5), "1 and 2 come later");
        w.mark(1);
        assert!(w.seen(1) && !w.seen(2));
        // a replay of a long gap: 300 missed ones come after newer ones
        w.mark(400);
        assert!(!w.seen(2) && !w.seen(399) && w.seen(400));
        for seq in 5..400 {
            assert!(!w.seen(seq), "{seq} was never sent");
            w.mark(seq);
        }
        assert!(w.seen(5) && w.seen(399));
        w.mark(2000);
        assert!(w.seen(2), "older than the window: taken as sent");
        assert!(!w.seen(1999) && w.seen(2000));
        assert!(!w.seen(2000 - SEQ_WINDOW + 1) && w.seen(2000 - SEQ_WINDOW));
        // the skipped numbers' old bits are cleared when the window moves on
        w.mark(2000 + SEQ_WINDOW - 1);
        assert!(!w.seen(2001) && w.seen(2000));
        let floor = SeqWindow::from_floor(50);
        assert!(floor.seen(50) && floor.seen(1) && !floor.seen(51));
    }

    #[test]
    fn kept_messages_are_bounded_and_keep_their_order_and_seq() {
        let mut o = Outbox::new(3);
        for i in 1..=10 {
            o.record("m", json!(i), i, false);
        }
        assert_eq!(o.pending(), 3);
        let kept = o.take_pending();
        assert_eq!(kept.iter().map(|m| m.seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(o.pending(), 0);
        let sent = o.record("m", json!(0), 11, true);
        assert_eq!((sent.seq, o.pending()), (11, 0), "sent now, not kept");
        o.requeue(sent);
        assert_eq!(o.take_pending()[0].seq, 11);
    }

    #[test]
    fn kept_messages_are_bounded_in_bytes_too() {
        // {"message":"xxxx…"} with 90 x's: 104 bytes of JSON, 4 of event
        let message = |i: u64| json!({"message": format!("{i:0>90}")});
        let mut o = Outbox::bounded(100, 500);
        for i in 1..=10 {
            o.record("text", message(i), i, false);
        }
        assert_eq!(o.pending(), 4, "4 × 108 bytes fit in 500, 5 do not");
        assert_eq!(o.bytes(), 4 * 108);
        let kept = o.take_pending();
        assert_eq!(
            kept.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(o.bytes(), 0);
        // one message over the bound alone is kept: it is the newest
        let mut o = Outbox::bounded(100, 50);
        o.record("text", message(1), 1, false);
        o.record("text", message(2), 2, false);
        assert_eq!(
            o.take_pending().iter().map(|m| m.seq).collect::<Vec<_>>(),
            [2]
        );
    }
}
