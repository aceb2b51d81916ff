//! Guard of the engineioxide patch (`patches/engineioxide`,
//! `patches/engineioxide-core`, workspace `[patch.crates-io]`): every
//! Engine.IO socket has an internal channel of packet buffers
//! (`engineioxide_core::PacketBuf`), a tokio mpsc channel, which allocates
//! its first block of 32 slots when it is created; with the published
//! crates a slot takes 168 bytes (two packets inline, the open packet
//! unboxed), so every connection holds 5.3 KiB for it whether it ever sends
//! anything or not. Patched, a slot is 48 bytes. If an upgrade drops the
//! patch, or tokio's block grows, these tests fail.

use conclave_common::counting_alloc::{Counting, live};
use engineioxide_core::{Packet, PacketBuf, Str};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_packet_buffer_is_small() {
    let packet = std::mem::size_of::<Packet>();
    let buffer = std::mem::size_of::<PacketBuf>();
    assert!(
        packet <= 40,
        "a packet takes {packet} bytes: is the engineioxide-core patch (boxed open packet) applied?"
    );
    assert!(
        buffer <= 48,
        "a packet buffer takes {buffer} bytes: is the engineioxide-core patch (one packet inline) applied?"
    );
}

#[test]
fn a_sockets_internal_channel_costs_under_three_kib() {
    // as engineioxide's Socket::new makes it (the portal's max_buffer_size
    // does not matter: tokio allocates one block of 32 slots either way)
    let before = live();
    let channels: Vec<_> = (0..100)
        .map(|_| tokio::sync::mpsc::channel::<PacketBuf>(128))
        .collect();
    let each = (live() - before) / 100;
    // patched: 32 slots of 48 bytes and the channel's shared state, about
    // 2.1 KiB; published: about 5.9 KiB
    assert!(
        each < 3072,
        "an idle socket's internal channel holds {each} bytes: is the engineioxide patch applied?"
    );
    // and one packet still fits without a spill (a message, the common case)
    let (tx, mut rx) = channels.into_iter().next().unwrap();
    let before = live();
    tx.try_send(smallvec_of(Packet::Message(Str::from("hello"))))
        .unwrap();
    let sent = live() - before;
    assert!(sent <= 0, "sending one packet allocated {sent} bytes");
    assert!(rx.try_recv().is_ok());
}

fn smallvec_of(p: Packet) -> PacketBuf {
    let mut b = PacketBuf::new();
    b.push(p);
    b
}
