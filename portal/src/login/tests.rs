//! The login core with a fake remote and fake sockets, on paused time:
//! every stage's OWT error strings, and the races between login, relogin,
//! logout, disconnect and the reconnection grace period.

mod fake;
mod races;

use super::Answer;
use crate::remote::RemoteError;
use crate::remote::RemoteError::{Refused, Timeout, Unreachable};
use fake::{Harness, Stage};
use serde_json::{Value, json};
use std::time::Duration;

const GRACE: Duration = Duration::from_secs(60);

fn error_of(answer: &Answer) -> &str {
    match answer {
        Answer::Error(m) => m,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_login_is_answered_once_with_the_complete_reply() {
    let h = Harness::new();
    let sid = h.connect();
    let answer = h.login(sid, h.info("1.2", "C++")).await;
    let Answer::OkWith("ok", reply) = &answer else {
        panic!("{answer:?}")
    };
    let reply = reply.value();
    assert_eq!(reply["id"], sid.to_string());
    assert_eq!(reply["user"], "alice");
    assert_eq!(reply["role"], "presenter");
    assert_eq!(reply["permission"]["publish"]["audio"], true);
    assert_eq!(reply["room"]["id"], "room-1");
    assert!(reply["reconnectionTicket"].is_string(), "{reply}");
    assert_eq!(
        h.remotes.calls(),
        [
            "consume token-1",
            "schedule room-1",
            "get_node agent-1 room-1",
            "join node-1 room-1 alice",
            "add_task code-1",
        ]
    );
    assert_eq!(h.portal.participants(), 1);
    // OWT's legacy and non-SDK clients get no ticket.
    let other = h.connect();
    let answer = h
        .login(other, h.info_with_token(None, "C++", "token-2"))
        .await;
    let Answer::OkWith("success", legacy) = &answer else {
        panic!("{answer:?}")
    };
    let legacy = legacy.value();
    assert_eq!(legacy["clientId"], other.to_string());
    assert!(legacy.get("reconnectionTicket").is_none());
}

#[tokio::test(start_paused = true)]
async fn bad_login_requests_get_owts_errors_and_a_closed_socket() {
    let h = Harness::new();
    let mut cases: Vec<(Value, &str)> = vec![
        (json!("token"), "Invalid login request: not an object"),
        (h.info("2.0", "C++"), "Unknown client protocol"),
        (
            json!({"token": h.token("t"), "protocol": "1.2"}),
            "User agent info is incorrect",
        ),
        (
            json!({"token": h.token("t"), "protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "3.5"}}}),
            "Deprecated client version",
        ),
        (
            json!({"protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "5.1"}}}),
            "Invalid login request: no token string",
        ),
    ];
    let mut info = h.info("1.2", "C++");
    info["token"] = json!("%%%");
    cases.push((info, "Invalid token: not base64"));
    let mut info = h.info("1.2", "C++");
    info["token"] = json!(fake::token_signed_with("another key", "token-1"));
    cases.push((info, "Invalid token signature"));
    for (info, expected) in cases {
        let sid = h.connect();
        let answer = h.login(sid, info).await;
        assert_eq!(error_of(&answer), expected);
        assert!(h.sockets.closed(sid), "{expected}: the socket is closed");
        assert_eq!(h.connection_state(sid), Some("initialized"));
    }
    assert!(h.remotes.calls().is_empty(), "no remote was called");
}

#[tokio::test(start_paused = true)]
async fn every_remote_stage_fails_with_owts_words() {
    let timeout = |target: &str, method| Timeout {
        target: target.into(),
        method,
    };
    let cases: Vec<(Stage, RemoteError, &str)> = vec![
        (Stage::Consume, Refused("Unknown".into()), "Unknown"),
        (Stage::Consume, Refused("Expired".into()), "Expired"),
        (
            Stage::Consume,
            timeout("management", "ConsumeToken"),
            "Timeout to make rpc to management.ConsumeToken",
        ),
        (
            Stage::Consume,
            Unreachable {
                target: "management".into(),
            },
            "management is not reachable",
        ),
        (
            Stage::Schedule,
            Refused("No worker available".into()),
            "No worker available",
        ),
        (
            Stage::Schedule,
            timeout("cluster manager", "schedule"),
            "Timeout to make rpc to cluster manager.schedule",
        ),
        (
            Stage::GetNode,
            timeout("agent-1", "getNode"),
            "Timeout to make rpc to agent-1.getNode",
        ),
        (Stage::Join, Refused("Room is full".into()), "Room is full"),
        (Stage::Join, Refused("Invalid role".into()), "Invalid role"),
        (
            Stage::Join,
            timeout("node-1", "join"),
            "Timeout to make rpc to node-1.join",
        ),
    ];
    for (stage, error, expected) in cases {
        let h = Harness::new();
        h.remotes.fail(stage, error);
        let sid = h.connect();
        let answer = h.login(sid, h.info("1.2", "C++")).await;
        assert_eq!(error_of(&answer), expected, "{stage:?}");
        assert!(h.sockets.closed(sid));
        assert_eq!(h.connection_state(sid), Some("initialized"));
        assert_eq!(h.portal.participants(), 0);
        let calls = h.remotes.calls();
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("add_task") || c.starts_with("leave")),
            "{calls:?}"
        );
    }
}

/// One sweep closes every connection past its idle deadline: one that never
/// logged in, and one that logged out (OWT §17.7); a logged-in one stays,
/// and a connection that is gone leaves nothing behind to fire later.
#[tokio::test(start_paused = true)]
async fn the_idle_sweep_closes_connections_that_do_not_log_in() {
    let h = Harness::new();
    let idle = h.connect();
    let out = h.connect();
    let gone = h.connect();
    let stays = h.connect();
    assert!(matches!(
        h.login(stays, h.info("1.2", "C++")).await,
        Answer::OkWith(..)
    ));
    h.portal.disconnected(gone).await;
    assert_eq!(
        h.connections(),
        3,
        "a closed socket's connection is gone at once"
    );
    assert_eq!(h.portal.close_idle(), 0, "nobody is past the deadline yet");
    tokio::time::advance(h.portal.idle_timeout() / 2).await;
    assert!(matches!(
        h.login(out, h.info_with_token(Some("1.2"), "C++", "token-2"))
            .await,
        Answer::OkWith(..)
    ));
    assert_eq!(h.logout(out).await, Answer::Ok("ok"));
    tokio::time::advance(h.portal.idle_timeout() / 2).await;
    assert_eq!(h.portal.close_idle(), 1);
    assert!(h.sockets.closed(idle));
    assert!(
        !h.sockets.closed(out),
        "its deadline restarted at the logout"
    );
    // (the socket's disconnect handler runs, as socketioxide's would)
    h.portal.disconnected(idle).await;
    tokio::time::advance(h.portal.idle_timeout() / 2).await;
    assert_eq!(h.portal.close_idle(), 1);
    assert!(h.sockets.closed(out));
    assert!(!h.sockets.closed(stays), "logged in");
}

#[tokio::test(start_paused = true)]
async fn connection_state_errors_keep_the_socket_open() {
    let h = Harness::new();
    let sid = h.connect();
    assert_eq!(
        error_of(&h.portal.text(sid, &json!({"to": "all"})).await),
        "Illegal request"
    );
    assert_eq!(error_of(&h.logout(sid).await), "Illegal request");
    assert!(matches!(
        h.login(sid, h.info("1.2", "C++")).await,
        Answer::OkWith(..)
    ));
    assert_eq!(
        error_of(&h.login(sid, h.info("1.2", "C++")).await),
        "Connection is in service"
    );
    assert_eq!(
        error_of(&h.portal.media_request(sid, "publish")),
        "publish is not supported: this portal has no media plane"
    );
    assert!(!h.sockets.closed(sid));
    assert_eq!(
        h.portal
            .text(sid, &json!({"to": "all", "message": "hi"}))
            .await,
        Answer::Ok("ok")
    );
    assert_eq!(
        error_of(&h.portal.text(sid, &json!({"to": ""})).await),
        "Invalid receiver"
    );
    assert_eq!(
        error_of(
            &h.portal
                .text(sid, &json!({"to": "all", "message": 1}))
                .await
        ),
        "Invalid message"
    );
}

mod restore {
    use super::*;
    use crate::restore::NO_HOST;
    use conclave_common::cluster_watch::ClusterChange;

    fn node_exited(node: &str) -> ClusterChange {
        ClusterChange::NodeExited {
            node: node.into(),
            worker: "agent-1".into(),
            reason: "abnormal".into(),
        }
    }

    fn controller_of(h: &Harness, sid: socketioxide::socket::Sid) -> String {
        h.portal.delivery().with(|r| {
            r.client(&sid.to_string())
                .map(|c| c.controller.node.clone())
                .unwrap_or_default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn late_messages_of_the_old_node_do_not_shadow_the_new_node_s_numbers() {
        use conclave_proto::portal::v1 as pb;
        use conclave_proto::portal::v1::portal_server::Portal as _;
        let h = Harness::new();
        let alice = h.connect();
        assert!(matches!(
            h.login(alice, h.info("1.2", "C++")).await,
            Answer::OkWith(..)
        ));
        // the room is rebuilt on node-2 while node-1 still runs (its agent
        // stalled, not its node)
        *h.remotes.node.lock().unwrap() = "node-2".into();
        let gate = h.remotes.gate(Stage::Restore);
        h.portal.controller_lost(&node_exited("node-1"));
        gate.entered().await;
        let service = crate::service::PortalService::new(h.portal.clone());
        let send = |node: &str, message: &str, seq: u64| {
            let service = service.clone();
            let request = pb::BroadcastRequest {
                controller: node.into(),
                event: "text".into(),
                data: json!({"from": "x", "to": "all", "message": message}).to_string(),
                recipients: vec![pb::Recipient {
                    participant_id: alice.to_string(),
                    seq,
                }],
                ..Default::default()
            };
            async move {
                service
                    .broadcast(tonic::Request::new(request))
                    .await
                    .unwrap()
                    .into_inner()
                    .undelivered
            }
        };
        let texts = |h: &Harness| {
            h.sockets
                .emitted(alice)
                .iter()
                .filter(|(e, _)| e == "text")
                .map(|(_, d)| d["message"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        };
        // the old node goes on numbering while the room is being rebuilt
        assert!(send("node-1", "before", 1).await.is_empty());
        gate.open();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(controller_of(&h, alice), "node-2");
        // a late message of the old node, then the new node's first, with
        // the same number as the old node's: different messages, all arrive
        assert!(send("node-1", "late", 2).await.is_empty());
        assert!(send("node-2", "new", 1).await.is_empty());
        assert_eq!(texts(&h), ["before", "late", "new"]);
        // a late copy of the new node's own message is still dropped
        assert!(send("node-2", "new", 1).await.is_empty());
        assert_eq!(texts(&h), ["before", "late", "new"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_exit_missed_in_a_watch_gap_is_found_when_the_watch_resumes() {
        let h = Harness::new();
        let alice = h.connect();
        assert!(matches!(
            h.login(alice, h.info("1.2", "C++")).await,
            Answer::OkWith(..)
        ));
        // the watch comes back and the node still serves the room: nothing
        h.portal.controller_lost(&ClusterChange::Resumed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(h.remotes.calls().iter().any(|c| c == "served_room node-1"));
        assert!(!h.remotes.calls().iter().any(|c| c.starts_with("restore")));
        assert_eq!(controller_of(&h, alice), "node-1");
        // the node died while the watch was away (its exit went unheard)
        h.remotes.serving.lock().unwrap().remove("node-1");
        *h.remotes.node.lock().unwrap() = "node-2".into();
        h.portal.controller_lost(&ClusterChange::Resumed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls = h.remotes.calls();
        let restore = calls
            .iter()
            .find(|c| c.starts_with("restore"))
            .expect("restored");
        assert!(restore.starts_with("restore node-2 room-1 "), "{restore}");
        assert_eq!(controller_of(&h, alice), "node-2");
        assert!(!h.sockets.emitted(alice).iter().any(|(e, _)| e == "drop"));
        // a node that serves another room now is not this room's node
        h.remotes
            .serving
            .lock()
            .unwrap()
            .insert("node-2".into(), "room-9".into());
        *h.remotes.node.lock().unwrap() = "node-3".into();
        h.portal.controller_lost(&ClusterChange::Resumed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(controller_of(&h, alice), "node-3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_node_s_participants_are_put_back_on_a_new_one_with_their_seats() {
        let h = Harness::new();
        let alice = h.connect();
        assert!(matches!(
            h.login(alice, h.info("1.2", "C++")).await,
            Answer::OkWith(..)
        ));
        let away = h.connect();
        assert!(matches!(
            h.login(away, h.info_with_token(Some("1.2"), "C++", "token-2"))
                .await,
            Answer::OkWith(..)
        ));
        h.portal.disconnected(away).await;
        *h.remotes.node.lock().unwrap() = "node-2".into();
        h.portal.controller_lost(&node_exited("node-1"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let calls = h.remotes.calls();
        let restore = calls
            .iter()
            .find(|c| c.starts_with("restore"))
            .expect("restored");
        assert!(restore.starts_with("restore node-2 room-1 "), "{restore}");
        let restored = h.remotes.restored.lock().unwrap().clone();
        assert_eq!(restored.len(), 2);
        let a = restored
            .iter()
            .find(|p| p.participant == alice.to_string())
            .unwrap();
        assert_eq!((a.user.as_str(), a.role.as_str()), ("alice", "presenter"));
        assert_eq!(a.permission["publish"]["video"], true);
        assert_eq!(a.detached, None, "connected");
        let b = restored
            .iter()
            .find(|p| p.participant == away.to_string())
            .unwrap();
        assert!(
            b.detached.is_some_and(|d| d <= GRACE),
            "away: kept detached for what is left of its grace"
        );
        assert_eq!(controller_of(&h, alice), "node-2");
        assert!(
            !h.sockets.emitted(alice).iter().any(|(e, _)| e == "drop"),
            "nobody is dropped"
        );
        assert!(!h.portal.is_restoring("room-1"));
        // texts go to the new node
        let answer = h
            .portal
            .text(alice, &json!({"to": "all", "message": "hi"}))
            .await;
        assert_eq!(answer, Answer::Ok("ok"));
        assert!(
            h.remotes
                .calls()
                .iter()
                .any(|c| c.starts_with("text node-2"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_no_agent_can_host_the_room_its_participants_are_dropped_with_the_reason() {
        let h = Harness::new();
        let alice = h.connect();
        h.login(alice, h.info("1.2", "C++")).await;
        h.remotes
            .fail(Stage::Schedule, Refused("No worker available".into()));
        let started = tokio::time::Instant::now();
        h.portal.controller_lost(&node_exited("node-1"));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            !h.sockets.emitted(alice).iter().any(|(e, _)| e == "drop"),
            "retried for restore_timeout first"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let drops: Vec<Value> = h
            .sockets
            .emitted(alice)
            .into_iter()
            .filter(|(e, _)| e == "drop")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(drops, [json!({ "reason": NO_HOST })]);
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(h.portal.participants(), 0);
    }

    /// An agent the cluster still names but that does not answer (killed,
    /// not yet counted out) is no verdict that no agent can host the room:
    /// the rebuild tries on past `restore_timeout` and succeeds once an
    /// agent answers; one that never does ends without dropping anybody.
    #[tokio::test(start_paused = true)]
    async fn an_agent_that_does_not_answer_is_no_reason_to_drop() {
        let h = Harness::new();
        let alice = h.connect();
        h.login(alice, h.info("1.2", "C++")).await;
        let dropped = |h: &Harness| h.sockets.emitted(alice).iter().any(|(e, _)| e == "drop");
        let unreachable = || Unreachable {
            target: "agent-1".into(),
        };
        h.remotes.fail(Stage::GetNode, unreachable());
        *h.remotes.node.lock().unwrap() = "node-2".into();
        h.portal.controller_lost(&node_exited("node-1"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!dropped(&h), "not dropped at restore_timeout (1 s)");
        assert!(h.portal.is_restoring("room-1"), "still trying");
        h.remotes.heal(Stage::GetNode);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!h.portal.is_restoring("room-1"));
        assert_eq!(controller_of(&h, alice), "node-2", "rebuilt elsewhere");
        // an agent that never answers: given up after 3 × restore_timeout,
        // the participant left in place for the next report or node check
        let node = controller_of(&h, alice);
        h.remotes.fail(Stage::GetNode, unreachable());
        *h.remotes.node.lock().unwrap() = "node-3".into();
        h.portal.controller_lost(&node_exited(&node));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(!h.portal.is_restoring("room-1"), "given up");
        assert!(!dropped(&h));
        assert_eq!(h.portal.participants(), 1);
        assert_eq!(controller_of(&h, alice), node);
    }

    #[tokio::test(start_paused = true)]
    async fn a_relogin_during_the_gap_waits_for_the_new_node() {
        let h = Harness::new();
        let sid = h.connect();
        let Answer::OkWith(_, reply) = h.login(sid, h.info("1.2", "C++")).await else {
            panic!()
        };
        let reply = reply.value();
        let ticket = reply["reconnectionTicket"].as_str().unwrap().to_string();
        h.portal.disconnected(sid).await;
        *h.remotes.node.lock().unwrap() = "node-2".into();
        let gate = h.remotes.gate(Stage::Restore);
        h.portal.controller_lost(&node_exited("node-1"));
        gate.entered().await;
        let back = h.connect();
        let relogin = {
            let portal = h.portal.clone();
            tokio::spawn(async move {
                let mut answered = None;
                portal
                    .relogin(back, Some(json!(ticket)), |a| answered = Some(a))
                    .await;
                answered.unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!relogin.is_finished(), "waits for the restore");
        gate.open();
        let answer = relogin.await.unwrap();
        assert!(matches!(answer, Answer::OkWith("ok", _)), "{answer:?}");
        assert!(
            h.remotes
                .calls()
                .iter()
                .any(|c| c.starts_with("reattach node-2")),
            "{:?}",
            h.remotes.calls()
        );
    }
}

/// Tokens that carry their claims: the join goes while the token is
/// consumed, pending until the portal confirms it.
mod claims {
    use super::*;
    use fake::{KEY, token_with_claims};

    fn info(token: String) -> Value {
        json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "5.1"}}})
    }

    #[tokio::test(start_paused = true)]
    async fn the_join_goes_while_the_token_is_consumed_and_is_confirmed_after_the_answer() {
        let h = Harness::new();
        let sid = h.connect();
        let consume = h.remotes.gate(Stage::Consume);
        let login = h.spawn_login(sid, info(token_with_claims(KEY, "token-1", "room-1")));
        consume.entered().await;
        // the token is still being consumed, and the room is joined already
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            h.remotes.calls(),
            [
                "consume token-1",
                "schedule room-1",
                "get_node agent-1 room-1",
                "join node-1 room-1 alice pending",
            ]
        );
        consume.open();
        let answer = login.await.unwrap();
        let Answer::OkWith("ok", reply) = &answer else {
            panic!("{answer:?}")
        };
        assert_eq!(reply.value()["room"]["id"], "room-1");
        // the confirmation goes out with the answer, on a task of its own
        tokio::task::yield_now().await;
        let mut after = h.remotes.calls()[4..].to_vec();
        after.sort();
        assert_eq!(
            after,
            [
                "add_task code-1".to_string(),
                format!("confirm node-1 {sid}")
            ]
        );
        assert_eq!(h.portal.participants(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_takes_its_pending_seat_back() {
        let h = Harness::new();
        for (i, refusal) in ["Unknown", "Expired"].into_iter().enumerate() {
            let sid = h.connect();
            h.remotes.fail_once(Stage::Consume, Refused(refusal.into()));
            let token = token_with_claims(KEY, &format!("token-{i}"), "room-1");
            let answer = h.login(sid, info(token)).await;
            assert_eq!(error_of(&answer), refusal);
            let calls = h.remotes.calls();
            assert!(calls.contains(&format!("leave node-1 {sid}")), "{calls:?}");
            assert!(!calls.iter().any(|c| c.starts_with("confirm")), "{calls:?}");
            assert!(h.remotes.seat(&sid.to_string()).is_none());
            assert!(h.sockets.closed(sid));
        }
        assert_eq!(h.portal.participants(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_join_answers_with_the_token_s_refusal_first() {
        let h = Harness::new();
        h.remotes.fail(Stage::Join, Refused("Room is full".into()));
        let sid = h.connect();
        let answer = h
            .login(sid, info(token_with_claims(KEY, "token-1", "room-1")))
            .await;
        assert_eq!(error_of(&answer), "Room is full");
        h.remotes
            .fail_once(Stage::Consume, Refused("Unknown".into()));
        let sid = h.connect();
        let answer = h
            .login(sid, info(token_with_claims(KEY, "token-2", "room-1")))
            .await;
        assert_eq!(error_of(&answer), "Unknown");
        assert_eq!(h.portal.participants(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn claims_that_differ_from_the_record_are_refused_and_undone() {
        let h = Harness::new();
        let sid = h.connect();
        // signed with the portal's key, but the record says room-1
        let answer = h
            .login(sid, info(token_with_claims(KEY, "token-1", "room-9")))
            .await;
        assert_eq!(error_of(&answer), "Invalid token: missing or wrong fields");
        assert!(h.remotes.calls().contains(&format!("leave node-1 {sid}")));
        // claims signed with another key are refused before any call
        let sid = h.connect();
        let before = h.remotes.calls().len();
        let answer = h
            .login(
                sid,
                info(token_with_claims("another-key", "token-2", "room-1")),
            )
            .await;
        assert_eq!(error_of(&answer), "Invalid token signature");
        assert_eq!(h.remotes.calls().len(), before);
    }
}

mod known_room {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_login_into_a_room_served_here_joins_its_node_directly() {
        let h = Harness::new();
        let first = h.connect();
        assert!(matches!(
            h.login(first, h.info("1.2", "C++")).await,
            Answer::OkWith(..)
        ));
        let before = h.remotes.calls().len();
        let second = h.connect();
        assert!(matches!(
            h.login(second, h.info_with_token(Some("1.2"), "C++", "token-2"))
                .await,
            Answer::OkWith(..)
        ));
        assert_eq!(
            h.remotes.calls()[before..],
            [
                "consume token-2",
                "join node-1 room-1 alice",
                "add_task code-2"
            ],
            "no schedule, no get_node"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_node_sends_the_login_to_the_scheduler_after_all() {
        let h = Harness::new();
        let first = h.connect();
        h.login(first, h.info("1.2", "C++")).await;
        h.remotes.fail_once(
            Stage::Join,
            Unreachable {
                target: "node-1".into(),
            },
        );
        *h.remotes.node.lock().unwrap() = "node-2".into();
        let before = h.remotes.calls().len();
        let second = h.connect();
        let answer = h
            .login(second, h.info_with_token(Some("1.2"), "C++", "token-2"))
            .await;
        assert!(matches!(answer, Answer::OkWith(..)), "{answer:?}");
        assert_eq!(
            h.remotes.calls()[before..],
            [
                "consume token-2",
                "join node-1 room-1 alice",
                "schedule room-1",
                "get_node agent-1 room-1",
                "join node-2 room-1 alice",
                "add_task code-2"
            ]
        );
        // a real refusal is not retried
        h.remotes
            .fail_once(Stage::Join, Refused("Room is full".into()));
        let third = h.connect();
        let answer = h
            .login(third, h.info_with_token(Some("1.2"), "C++", "token-3"))
            .await;
        assert_eq!(error_of(&answer), "Room is full");
    }

    #[test]
    fn the_room_index_follows_logins_leaves_and_moves() {
        use crate::clients::Registry;
        use crate::remote::Controller;
        let node = |n: &str| Controller {
            node: n.into(),
            endpoint: "127.0.0.1:1".into(),
        };
        let client = |p: &str| crate::clients::Client {
            participant: p.into(),
            socket: socketioxide::socket::Sid::new(),
            room: "r".into(),
            controller: node("n1"),
            token_code: "c".into(),
            user: "u".into(),
            role: "presenter".into(),
            permission: crate::clients::JsonText::new(&Value::Null),
            protocol: crate::dialect::Protocol::V1_2,
            sdk_type: "C++".into(),
            reconnection: true,
            outbox: crate::outbox::Outbox::new(4),
            held: false,
            sent: Default::default(),
        };
        let mut r = Registry::default();
        assert!(r.room_controller("r").is_none());
        r.insert(client("a"));
        r.insert(client("b"));
        assert_eq!(r.room_controller("r"), Some(&node("n1")));
        assert!(r.move_to("a", &node("n2"), 0));
        assert_eq!(r.room_controller("r"), Some(&node("n2")));
        r.remove("a");
        assert!(r.room_controller("r").is_some(), "b is still here");
        r.remove("b");
        assert!(
            r.room_controller("r").is_none(),
            "forgotten with its last participant"
        );
        // a participant inserted twice (a relogin) counts once
        r.insert(client("c"));
        r.insert(client("c"));
        r.remove("c");
        assert!(r.room_controller("r").is_none());
    }
}

/// A client's goodbye is `logout` then the close; the portal may handle the
/// close first (each is a task of its own, as a browser tab that closes
/// sends them): the logout still makes the participant leave at once, not
/// after the reconnection grace period.
#[tokio::test(start_paused = true)]
async fn a_logout_handled_after_its_close_leaves_at_once() {
    let h = Harness::new();
    let sid = h.connect();
    assert!(matches!(
        h.login(sid, h.info("1.2", "JavaScript")).await,
        Answer::OkWith(..)
    ));
    h.portal.disconnected(sid).await;
    assert_eq!(h.portal.participants(), 1, "held for its relogin");
    assert_eq!(h.logout(sid).await, Answer::Ok("ok"));
    assert_eq!(h.portal.participants(), 0, "left at once");
    assert!(
        h.remotes
            .calls()
            .iter()
            .any(|c| c.starts_with("leave node-1 ")),
        "{:?}",
        h.remotes.calls()
    );
    // the grace period ends with nothing left to do
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let leaves = h
        .remotes
        .calls()
        .iter()
        .filter(|c| c.starts_with("leave "))
        .count();
    assert_eq!(leaves, 1, "{:?}", h.remotes.calls());
}
