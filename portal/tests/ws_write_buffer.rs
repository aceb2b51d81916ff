//! Guard of the tungstenite patch (`patches/tungstenite`, workspace
//! `[patch.crates-io]`): once a WebSocket's write buffer is written out, it
//! does not keep the capacity of the largest message it ever sent. The
//! portal sends each client one big message (the login reply lists the
//! room's participants: ~15 KiB in a room of 500) and then only small ones,
//! so without the patch every idle connection holds that much for its whole
//! life. If a tungstenite upgrade drops the patch (or changes the buffer),
//! this test fails.

use conclave_common::counting_alloc::{Counting, live};
use std::io::{Read, Write};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A peer that takes everything written and never sends anything.
struct Sink(usize);

impl Read for Sink {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn text(len: usize) -> Message {
    Message::Text(Utf8Bytes::from("x".repeat(len)))
}

#[test]
fn a_websocket_does_not_keep_the_capacity_of_its_largest_message() {
    let mut ws = WebSocket::from_raw_socket(Sink(0), Role::Server, None);
    // small messages first: the buffer a connection normally keeps
    for _ in 0..10 {
        ws.send(text(100)).unwrap();
    }
    let before = live();
    // one big message (a login reply in a big room), then small ones again
    ws.send(text(64 * 1024)).unwrap();
    for _ in 0..10 {
        ws.send(text(100)).unwrap();
    }
    let after = live();
    assert!(ws.get_ref().0 > 64 * 1024, "everything was written out");
    let kept = after - before;
    assert!(
        kept < 8 * 1024,
        "the WebSocket kept {kept} bytes after a 64 KiB message: is the tungstenite patch applied?"
    );
}
