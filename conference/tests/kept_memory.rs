//! How much a conference node's kept notifications cost while participants
//! are away (issue 15): 300 participants detached, 300 more joining. Every
//! join notice goes to each away participant's mailbox; it is stored once
//! and shared, so each join costs a small entry per away participant.
//! Heap bytes are counted by a counting allocator: deterministic, no timing.

use conclave_common::counting_alloc::{Counting, live};
use conference::conference::{ClientSpec, Conference, JoinRequest, PortalRef};
use conference::room::{Media, Permission, RoleDef, RoomConfig};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn join(c: &mut Conference, id: &str) {
    c.join(JoinRequest {
        id: id.into(),
        user: format!("user {id}"),
        role: "presenter".into(),
        portal: PortalRef {
            id: "portal-1".into(),
            endpoint: "127.0.0.1:7002".into(),
        },
        client: ClientSpec {
            protocol: "1.2".into(),
            sdk_type: "C++".into(),
            reconnection: true,
            token_code: format!("code-{id}"),
            message_buffer_size: 0,
        },
        pending_until: None,
    })
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn three_hundred_away_and_three_hundred_joining() {
    let both = Media {
        audio: true,
        video: true,
    };
    let mut c = Conference::default();
    c.init(
        RoomConfig {
            id: "room".into(),
            participant_limit: -1,
            roles: vec![RoleDef {
                role: "presenter".into(),
                permission: Permission {
                    publish: both,
                    subscribe: both,
                },
            }],
            views: vec!["common".into()],
            notify_participants: true,
        },
        tokio::time::Instant::now(),
    )
    .unwrap();
    for i in 0..300 {
        join(&mut c, &format!("away-{i}"));
    }
    for i in 0..300 {
        c.detach(
            &format!("away-{i}"),
            Duration::from_secs(60),
            tokio::time::Instant::now(),
        )
        .unwrap();
    }
    let before = live();
    for i in 0..300 {
        join(&mut c, &format!("new-{i}"));
    }
    let grown = live() - before;
    let per_join = grown / 300;
    println!(
        "KEPT-MEMORY 300 away, 300 joining: {} KiB in all, {:.1} KiB per new participant",
        grown / 1024,
        per_join as f64 / 1024.0
    );
    // the bound: at most 60 KiB per new participant
    assert!(per_join <= 60 * 1024, "{per_join} bytes per join");
    assert_eq!(c.detached(), 300);
}
