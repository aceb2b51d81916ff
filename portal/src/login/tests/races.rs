//! Races between login, relogin, logout, disconnect and the grace period.

use super::fake::{Harness, Stage};
use super::{GRACE, error_of};
use crate::login::Answer;
use serde_json::json;
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn a_disconnect_during_login_leaves_the_conference_again() {
    let h = Harness::new();
    let sid = h.connect();
    let gate = h.remotes.gate(Stage::Join);
    let login = h.spawn_login(sid, h.info("1.2", "C++"));
    gate.entered().await;
    h.portal.disconnected(sid).await;
    gate.open();
    let answer = login.await.unwrap();
    assert_eq!(error_of(&answer), "Participant early left");
    let calls = h.remotes.calls();
    assert!(calls.contains(&format!("leave node-1 {sid}")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("add_task")));
    assert_eq!(h.portal.participants(), 0);
    assert_eq!(h.connections(), 0, "nothing left behind");
}

#[tokio::test(start_paused = true)]
async fn a_logout_during_login_makes_it_early_left() {
    let h = Harness::new();
    let sid = h.connect();
    let gate = h.remotes.gate(Stage::Join);
    let login = h.spawn_login(sid, h.info("1.2", "C++"));
    gate.entered().await;
    assert_eq!(h.logout(sid).await, Answer::Ok("ok"));
    gate.open();
    assert_eq!(error_of(&login.await.unwrap()), "Participant early left");
    assert_eq!(h.portal.participants(), 0);
    // the connection can log in again
    assert!(matches!(
        h.login(sid, h.info_with_token(Some("1.2"), "C++", "token-2"))
            .await,
        Answer::OkWith(..)
    ));
}

/// A notification its node sends between the admission and the answer
/// (here: while the join call is still on its way back) waits for the
/// arrival, as the notification service does, and then follows the
/// answer: nothing reaches the client before it. (The token task is
/// announced after the answer.)
#[tokio::test(start_paused = true)]
async fn nothing_reaches_a_client_before_its_login_answer() {
    let h = Harness::new();
    let sid = h.connect();
    let gate = h.remotes.gate(Stage::Join);
    let (portal, sockets, info) = (h.portal.clone(), h.sockets.clone(), h.info("1.2", "C++"));
    let login = tokio::spawn(async move {
        let mut answered = None;
        portal
            .login(sid, info, |a| {
                answered = Some((a, sockets.emitted(sid).len()))
            })
            .await;
        answered.expect("answered")
    });
    gate.entered().await;
    let portal = h.portal.clone();
    let early = tokio::spawn(async move {
        portal.arrived(&sid.to_string()).await;
        portal
            .delivery()
            .notify(&sid.to_string(), "text", json!({"message": "early"}), 1)
    });
    tokio::task::yield_now().await;
    gate.open();
    let (answer, emitted_before_answer) = login.await.unwrap();
    assert!(matches!(answer, Answer::OkWith(..)), "{answer:?}");
    assert_eq!(emitted_before_answer, 0, "nothing before the answer");
    assert_eq!(early.await.unwrap(), crate::delivery::Outcome::Delivered);
    assert_eq!(
        h.sockets.emitted(sid),
        [("text".to_string(), json!({"message": "early"}))]
    );
    assert!(h.remotes.calls().contains(&"add_task code-1".to_string()));
}

#[tokio::test(start_paused = true)]
async fn the_grace_period_ends_in_a_forced_leave() {
    let h = Harness::new();
    let sid = h.connect();
    h.login(sid, h.info("1.2", "C++")).await;
    h.portal.disconnected(sid).await;
    assert_eq!(h.connection_state(sid), Some("waiting_for_reconnecting"));
    tokio::time::sleep(GRACE - Duration::from_millis(10)).await;
    assert_eq!(h.portal.participants(), 1, "still waiting");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.portal.participants(), 0);
    let calls = h.remotes.calls();
    assert!(calls.contains(&format!("leave node-1 {sid}")));
    assert!(calls.contains(&"remove_task code-1".to_string()));
    assert_eq!(h.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn clients_without_reconnection_leave_at_once() {
    let h = Harness::new();
    let sid = h.connect();
    h.login(sid, h.info("1.2", "conclave-test")).await;
    h.portal.disconnected(sid).await;
    assert_eq!(h.portal.participants(), 0);
    assert_eq!(h.connections(), 0);
    let ticket = h.portal.issue_ticket(&sid.to_string(), "room-1");
    let again = h.connect();
    h.login(
        again,
        h.info_with_token(Some("1.2"), "conclave-test", "token-2"),
    )
    .await;
    let other = h.connect();
    let forged = h.portal.issue_ticket(&again.to_string(), "room-1");
    assert_eq!(
        error_of(&h.relogin(other, &forged).await),
        "Reconnection is not allowed"
    );
    let other = h.connect();
    assert_eq!(
        error_of(&h.relogin(other, &ticket).await),
        "Client does NOT exist"
    );
}

#[tokio::test(start_paused = true)]
async fn a_relogin_that_beats_the_grace_period_is_never_undone() {
    let h = Harness::new();
    let old = h.connect();
    let Answer::OkWith(_, reply) = h.login(old, h.info("1.2", "C++")).await else {
        panic!()
    };
    let reply = reply.value();
    let ticket = reply["reconnectionTicket"].as_str().unwrap().to_string();
    h.portal.disconnected(old).await;
    let participant = old.to_string();
    assert!(
        h.remotes
            .calls()
            .contains(&format!("detach node-1 {participant}")),
        "its node keeps the seat"
    );
    assert!(h.remotes.seat(&participant).unwrap().detached);
    // what its node kept: one it saw, one it missed
    h.remotes
        .keep(&participant, 1, "text", json!({"n": 1}), false);
    h.remotes
        .keep(&participant, 2, "text", json!({"n": 2}), true);
    let new = h.connect();
    let answer = h.relogin(new, &ticket).await;
    assert!(
        !h.remotes.seat(&participant).unwrap().detached,
        "reattached"
    );
    let Answer::OkWith("ok", body) = &answer else {
        panic!("{answer:?}")
    };
    let body = body.value();
    let seqs: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2], "1.2 replays what was missed: {body}");
    assert_ne!(body["ticket"], ticket.as_str());
    assert_eq!(h.connections(), 1, "the old connection is gone");
    tokio::time::sleep(GRACE * 2).await;
    assert_eq!(
        h.portal.participants(),
        1,
        "the grace timer found nothing to do"
    );
    assert!(!h.remotes.calls().iter().any(|c| c.starts_with("leave")));
    assert_eq!(
        error_of(&h.relogin(h.connect(), &ticket).await),
        "Ticket has been used"
    );
    let mut tampered = ticket.clone();
    tampered.insert(4, 'x');
    assert!(
        error_of(&h.relogin(h.connect(), &tampered).await)
            .starts_with("Invalid reconnection ticket")
    );
}

#[tokio::test(start_paused = true)]
async fn string_reply_sdks_get_the_ticket_first_then_the_missed_messages() {
    let h = Harness::new();
    let old = h.connect();
    let Answer::OkWith(_, reply) = h.login(old, h.info("1.1", "JavaScript")).await else {
        panic!()
    };
    let reply = reply.value();
    let ticket = reply["reconnectionTicket"].as_str().unwrap().to_string();
    h.portal.disconnected(old).await;
    h.remotes.keep(
        &old.to_string(),
        1,
        "participant",
        json!({"action": "join"}),
        false,
    );
    h.remotes
        .keep(&old.to_string(), 2, "text", json!({"n": 1}), true);
    let new = h.connect();
    let log = h.sockets.log.clone();
    h.portal
        .relogin(new, Some(json!(ticket)), |a| {
            log.lock().unwrap().push(format!("answer {a:?}"))
        })
        .await;
    let log = h.sockets.log.lock().unwrap().clone();
    assert!(
        log[log.len() - 2].starts_with("answer OkWith(\"ok\", \""),
        "{log:?}"
    );
    assert_eq!(log[log.len() - 1], format!("emit {new} text {{\"n\":1}}"));
}

#[tokio::test(start_paused = true)]
async fn a_relogin_before_the_old_socket_is_noticed_dead_closes_it_without_a_leave() {
    let h = Harness::new();
    let old = h.connect();
    let Answer::OkWith(_, reply) = h.login(old, h.info("1.2", "C++")).await else {
        panic!()
    };
    let reply = reply.value();
    let new = h.connect();
    h.relogin(new, reply["reconnectionTicket"].as_str().unwrap())
        .await;
    assert!(h.sockets.closed(old), "the old socket is closed");
    // a logout racing on the old socket finds nothing to undo
    assert_eq!(error_of(&h.logout(old).await), "Illegal request");
    // its disconnect comes later and changes nothing
    h.portal.disconnected(old).await;
    assert_eq!(h.portal.participants(), 1);
    assert_eq!(h.connections(), 1);
    assert_eq!(h.connection_state(new), Some("connected"));
    assert_eq!(h.logout(new).await, Answer::Ok("ok"));
    assert_eq!(h.portal.participants(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_logout_before_the_relogin_leaves_nothing_to_take_over() {
    let h = Harness::new();
    let old = h.connect();
    let Answer::OkWith(_, reply) = h.login(old, h.info("1.2", "C++")).await else {
        panic!()
    };
    let reply = reply.value();
    assert_eq!(h.logout(old).await, Answer::Ok("ok"));
    let new = h.connect();
    let answer = h
        .relogin(new, reply["reconnectionTicket"].as_str().unwrap())
        .await;
    assert_eq!(error_of(&answer), "Client does NOT exist");
    assert!(h.sockets.closed(new));
}

#[tokio::test(start_paused = true)]
async fn another_node_s_loss_touches_nobody_here() {
    let h = Harness::new();
    let sid = h.connect();
    h.login(sid, h.info("1.2", "C++")).await;
    let before = h.remotes.calls().len();
    h.portal
        .controller_lost(&conclave_common::cluster_watch::ClusterChange::NodeExited {
            node: "node-2".into(),
            worker: "agent-1".into(),
            reason: "abnormal".into(),
        });
    h.portal
        .controller_lost(&conclave_common::cluster_watch::ClusterChange::WorkerLost {
            worker: "agent-2".into(),
            reason: "timeout".into(),
        });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.portal.participants(), 1);
    assert_eq!(h.remotes.calls().len(), before, "nothing to rebuild");
    assert!(h.sockets.emitted(sid).is_empty());
    assert!(!h.sockets.closed(sid));
}

#[tokio::test(start_paused = true)]
async fn a_relogin_on_another_portal_takes_the_seat_over() {
    let a = Harness::new();
    let old = a.connect();
    let Answer::OkWith(_, reply) = a.login(old, a.info("1.2", "C++")).await else {
        panic!()
    };
    let reply = reply.value();
    let ticket = reply["reconnectionTicket"].as_str().unwrap().to_string();
    let participant = old.to_string();
    // portal A died: its node holds the seat detached, with what came meanwhile
    a.remotes
        .seats
        .lock()
        .unwrap()
        .get_mut(&participant)
        .unwrap()
        .holder = "portal-a:7002".into();
    a.remotes
        .keep(&participant, 1, "text", json!({"n": 1}), true);
    let b = a.another_portal();
    let new = b.connect();
    let answer = b.relogin(new, &ticket).await;
    let Answer::OkWith("ok", body) = &answer else {
        panic!("{answer:?}")
    };
    let body = body.value();
    assert_eq!(body["messages"][0]["data"], json!({"n": 1}));
    assert_eq!(body["messages"][0]["seq"], 1);
    let calls = b.remotes.calls();
    for call in [
        "schedule room-1".to_string(),
        format!("reattach node-1 {participant}"),
        format!("release portal-a:7002 {participant}"),
        "add_task code-1".to_string(),
    ] {
        assert!(calls.contains(&call), "{call} in {calls:?}");
    }
    assert_eq!(b.portal.participants(), 1);
    assert_eq!(b.connection_state(new), Some("connected"));
    // the same participant id, and live texts reach it on B
    assert_eq!(
        b.portal
            .delivery()
            .notify(&participant, "text", json!({"n": 2}), 2),
        crate::delivery::Outcome::Delivered
    );
    assert_eq!(
        b.sockets.emitted(new),
        [("text".to_string(), json!({"n": 2}))]
    );
    // one use per ticket, across portals
    let c = a.another_portal();
    assert_eq!(
        error_of(&c.relogin(c.connect(), &ticket).await),
        "Ticket has been used"
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_hands_seats_to_the_nodes_and_refuses_new_logins() {
    let h = Harness::new();
    let keeps = h.connect();
    h.login(keeps, h.info("1.2", "C++")).await;
    let plain = h.connect();
    h.login(
        plain,
        h.info_with_token(Some("1.2"), "conclave-test", "token-2"),
    )
    .await;
    assert_eq!(h.portal.drain().await, (1, 1));
    // the SDK client: seat detached on its node, closed without drop
    assert!(
        h.remotes
            .calls()
            .contains(&format!("detach node-1 {keeps}"))
    );
    assert!(h.sockets.closed(keeps));
    assert!(h.sockets.emitted(keeps).is_empty(), "no drop");
    assert!(h.remotes.seat(&keeps.to_string()).unwrap().detached);
    // the other cannot relogin: it is dropped and leaves
    assert_eq!(
        h.sockets.emitted(plain),
        [(
            "drop".to_string(),
            json!({"reason": "The portal is shutting down"})
        )]
    );
    assert!(h.remotes.calls().contains(&format!("leave node-1 {plain}")));
    assert_eq!(h.portal.participants(), 0);
    let late = h.connect();
    assert_eq!(
        error_of(
            &h.login(late, h.info_with_token(Some("1.2"), "C++", "token-3"))
                .await
        ),
        "Portal is draining"
    );
}

#[tokio::test(start_paused = true)]
async fn a_notification_the_node_sends_as_it_seats_a_participant_waits_for_its_login() {
    use conclave_proto::portal::v1 as pb;
    use conclave_proto::portal::v1::portal_server::Portal as _;
    let h = Harness::new();
    let sid = h.connect();
    let gate = h.remotes.gate(Stage::Join);
    let login = h.spawn_login(sid, h.info("1.2", "C++"));
    gate.entered().await;
    // the node has seated it and already notifies it, before the portal
    // has registered it
    let service = crate::service::PortalService::new(h.portal.clone());
    let notify = tokio::spawn(async move {
        service
            .notify(tonic::Request::new(pb::NotifyRequest {
                participant_id: sid.to_string(),
                event: "text".into(),
                data: r#"{"from":"x","to":"all","message":"hi"}"#.into(),
                seq: 1,
            }))
            .await
            .unwrap()
            .into_inner()
            .delivered
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!notify.is_finished(), "it waits for the participant");
    gate.open();
    assert!(matches!(login.await.unwrap(), Answer::OkWith(..)));
    assert!(
        notify.await.unwrap(),
        "delivered once the participant is registered, not refused (the node would keep it as missed, and a client that is connected never gets it)"
    );
    let emitted = h.sockets.emitted(sid);
    assert!(
        emitted
            .iter()
            .any(|(e, d)| e == "text" && d["message"] == "hi"),
        "{emitted:?}"
    );
    // a participant that is not arriving is refused at once, as before
    let service = crate::service::PortalService::new(h.portal.clone());
    let delivered = service
        .notify(tonic::Request::new(pb::NotifyRequest {
            participant_id: "nobody".into(),
            event: "text".into(),
            data: "{}".into(),
            seq: 1,
        }))
        .await
        .unwrap()
        .into_inner()
        .delivered;
    assert!(!delivered);
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_waiting_for_one_arriving_participant_still_reaches_another_that_arrived_meanwhile()
 {
    use conclave_proto::portal::v1 as pb;
    use conclave_proto::portal::v1::portal_server::Portal as _;
    let h = Harness::new();
    let a = h.connect();
    let gate_a = h.remotes.gate(Stage::Join);
    let login_a = h.spawn_login(a, h.info_with_token(Some("1.2"), "C++", "token-1"));
    gate_a.entered().await;
    let b = h.connect();
    let gate_b = h.remotes.gate(Stage::Join);
    let login_b = h.spawn_login(b, h.info_with_token(Some("1.2"), "C++", "token-2"));
    gate_b.entered().await;
    // both are seated on their node, neither registered here yet; the node
    // sends one text to both (b first)
    let service = crate::service::PortalService::new(h.portal.clone());
    let broadcast = tokio::spawn(async move {
        service
            .broadcast(tonic::Request::new(pb::BroadcastRequest {
                controller: String::new(),
                exclude_list: Vec::new(),
                event: "text".into(),
                data: r#"{"from":"x","to":"all","message":"hi"}"#.into(),
                recipients: [b, a]
                    .iter()
                    .map(|p| pb::Recipient {
                        participant_id: p.to_string(),
                        seq: 1,
                    })
                    .collect(),
            }))
            .await
            .unwrap()
            .into_inner()
            .undelivered
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!broadcast.is_finished(), "it waits for b");
    // a arrives while the broadcast waits for b, then b arrives
    gate_a.open();
    assert!(matches!(login_a.await.unwrap(), Answer::OkWith(..)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    gate_b.open();
    assert!(matches!(login_b.await.unwrap(), Answer::OkWith(..)));
    assert_eq!(
        broadcast.await.unwrap(),
        Vec::<String>::new(),
        "a arrived while the broadcast waited for b: it is registered now, not missed (its node would keep it for a relogin that never comes)"
    );
    for sid in [a, b] {
        let emitted = h.sockets.emitted(sid);
        assert!(
            emitted
                .iter()
                .any(|(e, d)| e == "text" && d["message"] == "hi"),
            "{sid}: {emitted:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_text_that_finds_nothing_at_its_node_rebuilds_the_room() {
    // The node's exit was never heard (a cluster watch that missed it):
    // the first call that finds nothing listening there rebuilds the room,
    // as the exit would have.
    let h = Harness::new();
    let sid = h.connect();
    assert!(matches!(
        h.login(sid, h.info("1.2", "C++")).await,
        Answer::OkWith(..)
    ));
    h.remotes.fail_once(
        Stage::Text,
        crate::remote::RemoteError::Unreachable {
            target: "node-1".into(),
        },
    );
    let answer = h
        .portal
        .text(sid, &serde_json::json!({"to": "all", "message": "hi"}))
        .await;
    assert!(matches!(answer, Answer::Error(..)), "{answer:?}");
    let restored = |calls: &[String]| {
        calls
            .iter()
            .any(|c| c.starts_with("restore ") && c.ends_with(&sid.to_string()))
    };
    assert!(
        !restored(&h.remotes.calls()),
        "the answer does not wait for the rebuild"
    );
    for _ in 0..100 {
        if restored(&h.remotes.calls()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let calls = h.remotes.calls();
    assert!(restored(&calls), "{calls:?}");
}
