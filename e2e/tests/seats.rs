//! No seat lost when a portal goes away (issue 15): a participant relogs in
//! on another portal with its id and every message, also when its portal
//! was killed. Real binaries, two portals, python-socketio 5.x and 4.x.

use conclave_common::purpose::Purpose;
use conclave_e2e::*;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::portal::v1 as portal_pb;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A stack with a second portal (region "b"); its Socket.IO and gRPC addresses.
async fn two_portals() -> (Stack, String, String) {
    second_portal(stack(&[]).await).await
}

async fn second_portal(mut stack: Stack) -> (Stack, String, String) {
    let socket = stack.add_portal("b").await;
    let mut m = stack.manager_client();
    for _ in 0..200 {
        let portals = m
            .get_workers(cluster::GetWorkersRequest {
                purpose: Purpose::Portal.to_string(),
            })
            .await
            .unwrap()
            .into_inner()
            .workers;
        if let Some(other) = portals.iter().find(|w| **w != stack.portal_worker) {
            let info = m
                .get_worker_attr(cluster::GetWorkerAttrRequest {
                    worker_id: other.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .info
                .unwrap();
            return (stack, socket, info.grpc_endpoint);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the second portal never joined");
}

async fn clients_of(portal_grpc: &str) -> Vec<portal_pb::ClientInfo> {
    conclave_stack::testing::grpc::portal(portal_grpc)
        .list_clients(portal_pb::ListClientsRequest {})
        .await
        .unwrap()
        .into_inner()
        .clients
}

/// Log in on the portal at `url` as `sdk`, protocol 1.2; (client, id, ticket).
async fn on(url: &str, token: &str, flavor: Flavor, sdk: &str) -> (PyClient, String, String) {
    logged_in_at(url, token, flavor, "1.2", sdk).await
}

async fn text(from: &mut PyClient, to: &str, message: &str) {
    let ack = from
        .emit("text", vec![json!({"to": to, "message": message})])
        .await;
    assert_eq!(ack, vec![json!("ok")], "{message}");
}

/// The texts a client saw: live events, then a relogin reply's messages it
/// had not seen (seq above the notifications it had received: OWT's
/// receive counter).
fn texts_seen(live: &[Value], seen_before: usize, replay: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = live
        .iter()
        .filter(|e| e["event"] == "text")
        .map(|e| {
            e["data"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    texts.extend(
        replay
            .iter()
            .filter(|m| m["seq"].as_u64().unwrap_or(0) > seen_before as u64)
            .filter(|m| m["event"] == "text")
            .map(|m| {
                m["data"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }),
    );
    texts
}

fn left(events: &[Value]) -> bool {
    events
        .iter()
        .any(|e| e["event"] == "participant" && e["data"]["action"] == "leave")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_client_relogs_in_on_the_other_portal_with_its_id_and_messages() {
    if !have_clients() {
        return;
    }
    let (stack, other, other_grpc) = two_portals().await;
    let room = stack.room(-1).await;
    let (mut alice, alice_id, ticket) = on(
        &stack.url(),
        &stack.token(&room, "alice", "presenter").await,
        Flavor::Eio4Websocket,
        "C++",
    )
    .await;
    let bob_token = stack.token_in_region(&room, "bob", "b").await;
    let (mut bob, bob_id, _) = on(
        &format!("http://{other}"),
        &bob_token,
        Flavor::Eio4Websocket,
        "conclave-e2e",
    )
    .await;
    assert_eq!(
        alice.wait_event("participant", 5.0).await.unwrap()["action"],
        "join"
    );
    let seen_before = alice.events().await.len();

    let r = alice.cmd(json!({"cmd": "cut"})).await;
    assert_eq!(r["ok"], true);
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(5), || async {
            clients_of(&stack.portal_grpc)
                .await
                .iter()
                .any(|c| c.participant_id == alice_id && c.state == "waiting_for_reconnecting")
        })
        .await,
        "portal A noticed the cut"
    );
    text(&mut bob, &alice_id, "while away").await;

    // back, on the other portal, over Engine.IO 3
    let mut back = PyClient::connect_url(&format!("http://{other}"), Flavor::Eio3).await;
    let ack = back.emit("relogin", vec![json!(ticket)]).await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let replay = ack[1]["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        texts_seen(&[], seen_before, &replay),
        ["while away"],
        "the missed text, once: {replay:?}"
    );
    // the same participant: texts to its id reach it on the new portal
    text(&mut bob, &alice_id, "live").await;
    assert_eq!(
        back.wait_event("text", 5.0).await.unwrap()["message"],
        "live"
    );
    assert_eq!(
        back.emit("text", vec![json!({"to": bob_id, "message": "hi bob"})])
            .await,
        vec![json!("ok")]
    );
    assert_eq!(
        bob.wait_event("text", 5.0).await.unwrap()["from"],
        alice_id.as_str()
    );
    assert!(!left(&bob.events().await), "bob never saw alice leave");
    // portal A let go, portal B holds it; the node kept one seat for it
    assert!(
        !clients_of(&stack.portal_grpc)
            .await
            .iter()
            .any(|c| c.participant_id == alice_id)
    );
    assert!(
        clients_of(&other_grpc)
            .await
            .iter()
            .any(|c| c.participant_id == alice_id && c.state == "connected")
    );
    let mut expected = vec![alice_id.clone(), bob_id.clone()];
    expected.sort();
    assert_eq!(stack.conference_participants(&room).await, expected);
    assert!(
        stack.portal_tasks().await.is_empty(),
        "A laid its token task down"
    );
    for c in [alice, bob, back] {
        c.quit().await;
    }
}

/// Many participants with tickets on portal A (`CONCLAVE_SEATS_CLIENTS`,
/// default 50), of one room in a stack with a second portal: (stack, B's
/// URL, B's gRPC address, room, the clients as (client, id, ticket)).
async fn many_on_a(
    flavor_of: impl Fn(usize) -> Flavor,
) -> (
    Stack,
    String,
    String,
    String,
    Vec<(PyClient, String, String)>,
) {
    let n: usize = std::env::var("CONCLAVE_SEATS_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (stack, other, other_grpc) = two_portals().await;
    let room = stack.room(-1).await;
    let mut on_a = Vec::new();
    for i in 0..n {
        let token = stack.token(&room, &format!("a{i}"), "presenter").await;
        on_a.push(on(&stack.url(), &token, flavor_of(i), "C++").await);
    }
    (stack, format!("http://{other}"), other_grpc, room, on_a)
}

/// `n` clients connected to `url`, not logged in: where relogins will go,
/// opened ahead so that timings are the relogins', not Python's start-up.
async fn connected_to(url: &str, n: usize) -> Vec<PyClient> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(PyClient::connect_url(url, Flavor::Eio4Websocket).await);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_portals_participants_relogin_on_the_other_and_lose_nothing() {
    if !have_clients() {
        return;
    }
    // EIO 4 and EIO 3 clients, alternately
    let (mut stack, other_url, other_grpc, room, mut on_a) = many_on_a(|i| {
        if i % 2 == 0 {
            Flavor::Eio4Websocket
        } else {
            Flavor::Eio3
        }
    })
    .await;
    let n = on_a.len();
    let mut on_b = Vec::new();
    for i in 0..n {
        let token = stack.token_in_region(&room, &format!("b{i}"), "b").await;
        on_b.push(on(&other_url, &token, Flavor::Eio4Websocket, "conclave-e2e").await);
    }
    for (j, (b, _, _)) in on_b.iter_mut().enumerate() {
        text(b, &on_a[j].1, &format!("before {j}")).await;
    }
    let mut seen_before = Vec::new();
    for (j, (a, _, _)) in on_a.iter_mut().enumerate() {
        let got = a.wait_event("text", 5.0).await.unwrap();
        assert_eq!(got["message"], format!("before {j}"));
        // everything it received (wait_event took the text out of the list)
        let mut live = a.events().await;
        live.push(json!({"event": "text", "data": got}));
        seen_before.push(live);
    }

    let mut back = connected_to(&other_url, n).await;
    // portal A dies; B's participants keep texting A's
    let killed = Instant::now();
    stack.processes[3].signal("KILL");
    for (j, (b, _, _)) in on_b.iter_mut().enumerate() {
        text(b, &on_a[j].1, &format!("during {j}")).await;
    }
    let texted = killed.elapsed();
    let mut replays = HashMap::new();
    for (j, (_, id, ticket)) in on_a.iter().enumerate() {
        let ack = back[j].emit("relogin", vec![json!(ticket)]).await;
        assert_eq!(ack[0], "ok", "{id}: {ack:?}");
        replays.insert(
            j,
            ack[1]["messages"].as_array().cloned().unwrap_or_default(),
        );
    }
    let reattached = killed.elapsed();
    println!(
        "FAULT-TIMING portal SIGKILL: {n} texts to the dead portal's participants accepted in {} ms, then {n} relogins in {} ms",
        texted.as_millis(),
        (reattached - texted).as_millis()
    );
    println!(
        "FAULT-TIMING portal SIGKILL: kill to all {n} participants reattached on the other portal (texts to them sent meanwhile) {} ms",
        reattached.as_millis()
    );
    for (j, (b, _, _)) in on_b.iter_mut().enumerate() {
        text(b, &on_a[j].1, &format!("after {j}")).await;
    }
    for (j, c) in back.iter_mut().enumerate() {
        let got = c.wait_event("text", 5.0).await.unwrap();
        let mut live = c.events().await;
        live.insert(0, json!({"event": "text", "data": got}));
        let mut texts = texts_seen(&seen_before[j], seen_before[j].len(), &replays[&j]);
        texts.extend(texts_seen(&live, 0, &[]));
        assert_eq!(
            texts,
            [
                format!("before {j}"),
                format!("during {j}"),
                format!("after {j}")
            ],
            "every text exactly once for a{j}"
        );
    }
    for (b, _, _) in on_b.iter_mut() {
        assert!(!left(&b.events().await), "nobody on B saw a leave");
    }

    // everyone logs out: nothing is left
    for c in back.iter_mut() {
        assert_eq!(c.emit("logout", vec![]).await, vec![json!("ok")]);
    }
    for (b, _, _) in on_b.iter_mut() {
        assert_eq!(b.emit("logout", vec![]).await, vec![json!("ok")]);
    }
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(10), || async {
            stack.conference_participants(&room).await.is_empty()
                && clients_of(&other_grpc).await.is_empty()
        })
        .await,
        "no participant left behind"
    );
    // the manager has dropped the dead portal by now (about 4 s)
    let killed_worker = stack.portal_worker.clone();
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(10), || async {
            conclave_stack::testing::grpc::manager(&stack.manager)
                .get_workers(cluster::GetWorkersRequest {
                    purpose: Purpose::Portal.to_string(),
                })
                .await
                .is_ok_and(|r| !r.into_inner().workers.contains(&killed_worker))
        })
        .await
    );
    stack.assert_invariants(&[3]).await;
    for c in back {
        c.quit().await;
    }
    for (c, _, _) in on_a.into_iter().chain(on_b) {
        c.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_stalled_past_its_liveness_keeps_its_clients_and_their_messages() {
    if !have_clients() {
        return;
    }
    let (stack, other, _) = two_portals().await;
    let room = stack.room(-1).await;
    let mut held = Vec::new();
    for (i, flavor) in [Flavor::Eio4Websocket, Flavor::Eio3]
        .into_iter()
        .enumerate()
    {
        let token = stack.token(&room, &format!("a{i}"), "presenter").await;
        held.push(on(&stack.url(), &token, flavor, "C++").await);
    }
    let token = stack.token_in_region(&room, "bob", "b").await;
    let (mut bob, _, _) = on(
        &format!("http://{other}"),
        &token,
        Flavor::Eio4Websocket,
        "conclave-e2e",
    )
    .await;
    for (c, _, _) in held.iter_mut() {
        // the join notices, then nothing pending
        while c.wait_event("participant", 1.0).await.is_some() {}
    }

    // SIGSTOP for 6 s: past the manager's liveness bound (about 4 s)
    stack.processes[3].signal("STOP");
    let stalled = Instant::now();
    let mut sent = 0;
    while stalled.elapsed() < Duration::from_secs(6) {
        for (j, (_, id, _)) in held.iter().enumerate() {
            text(&mut bob, id, &format!("stall {sent} to {j}")).await;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    stack.processes[3].signal("CONT");
    for (j, (c, _, _)) in held.iter_mut().enumerate() {
        let mut got = Vec::new();
        while let Some(t) = c.wait_event("text", 10.0).await {
            got.push(t["message"].as_str().unwrap_or_default().to_string());
            if got.len() == sent {
                break;
            }
        }
        assert!(
            c.wait_event("text", 1.0).await.is_none(),
            "no duplicate for a{j}"
        );
        // Exactly once; the order can differ: calls that timed out on the
        // node during the stall are handled by the portal when it resumes,
        // next to the node's replay of the older ones.
        got.sort_by_key(|t| t.split(' ').nth(1).and_then(|k| k.parse::<usize>().ok()));
        let expected: Vec<String> = (0..sent).map(|k| format!("stall {k} to {j}")).collect();
        assert_eq!(got, expected, "every text exactly once for a{j}");
        assert!(c.connected().await, "a{j} stays connected");
        assert!(
            !c.events().await.iter().any(|e| e["event"] == "drop"),
            "a{j} saw no drop"
        );
    }
    assert!(!left(&bob.events().await), "bob saw nobody leave");
    // the stalled portal serves its clients again
    let (a0, _, _) = &mut held[0];
    let bob_id = bob.sid.clone();
    assert_eq!(
        a0.emit("text", vec![json!({"to": bob_id, "message": "back"})])
            .await,
        vec![json!("ok")]
    );
    assert_eq!(
        bob.wait_event("text", 5.0).await.unwrap()["message"],
        "back"
    );
    for (c, _, _) in held {
        c.quit().await;
    }
    bob.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_portals_clients_relogin_elsewhere_and_lose_nothing() {
    if !have_clients() {
        return;
    }
    let (mut stack, other_url, _, room, mut on_a) = many_on_a(|_| Flavor::Eio4Websocket).await;
    let n = on_a.len();
    let token = stack.token_in_region(&room, "bob", "b").await;
    let (mut bob, _, _) = on(&other_url, &token, Flavor::Eio4Websocket, "conclave-e2e").await;
    let mut back = connected_to(&other_url, n).await;

    // a rolling update: SIGTERM; bob keeps texting meanwhile
    stack.processes[3].signal("TERM");
    for (j, (_, id, _)) in on_a.iter().enumerate() {
        text(&mut bob, id, &format!("during {j}")).await;
    }
    let mut failed = 0;
    for (j, (a, id, ticket)) in on_a.iter_mut().enumerate() {
        assert!(a.wait_disconnect(15.0).await, "a{j} is disconnected");
        let live = a.events().await;
        assert!(
            !live.iter().any(|e| e["event"] == "drop"),
            "a{j} got no drop: it may relogin elsewhere"
        );
        let ack = back[j].emit("relogin", vec![json!(ticket)]).await;
        if ack[0] != "ok" {
            failed += 1;
            continue;
        }
        let replay = ack[1]["messages"].as_array().cloned().unwrap_or_default();
        let texts = texts_seen(&live, live.len(), &replay);
        assert_eq!(texts, [format!("during {j}")], "exactly once for {id}");
    }
    assert_eq!(failed, 0, "failed relogins");
    let status = stack.processes[3]
        .wait_exit(Duration::from_secs(20))
        .expect("the drained portal exits");
    assert!(status.success(), "{status:?}");
    assert!(!left(&bob.events().await), "bob saw nobody leave");
    for c in back {
        c.quit().await;
    }
    for (c, _, _) in on_a {
        c.quit().await;
    }
    bob.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_told_to_stop_with_the_cluster_gone_exits_within_its_drain_timeout() {
    if !have_clients() {
        return;
    }
    // The whole stack stopped at once (a lost host, `docker compose kill`
    // but for the portal): its drain finds every room's node gone and no
    // manager to rebuild them on. Each room's rebuild tries for up to three
    // restore timeouts (9 s here), one room after another: 36 s for these
    // four before the drain had a deadline. Here it may take 2 s.
    let mut stack = stack(&["portal.drain_timeout=2000"]).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let room = stack.room(-1).await;
        let token = stack.token(&room, &format!("u{i}"), "presenter").await;
        clients.push(on(&stack.url(), &token, Flavor::Eio4Websocket, "C++").await);
    }
    // manager, management, agent (its nodes go with it)
    for process in &stack.processes[..3] {
        process.signal("KILL");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    stack.processes[3].signal("TERM");
    let status = stack.processes[3]
        .wait_exit(Duration::from_secs(40))
        .expect("the portal exits");
    let took = asked.elapsed();
    println!(
        "DRAIN-TIMING 4 rooms, cluster gone, drain_timeout 2 s: SIGTERM to exit {} ms",
        took.as_millis()
    );
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    for (mut c, _, _) in clients {
        assert!(c.wait_disconnect(5.0).await, "its connection is closed");
        c.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_nobody_reclaims_leaves_after_the_window_and_its_tasks_go() {
    if !have_clients() {
        return;
    }
    // seats kept 2 s on the nodes
    let (mut stack, other, other_grpc) =
        second_portal(stack_with_agent(&["node.reconnection_timeout=2000"], &[]).await).await;
    let room = stack.room(-1).await;
    let (alice, alice_id, _) = on(
        &stack.url(),
        &stack.token(&room, "alice", "presenter").await,
        Flavor::Eio4Websocket,
        "C++",
    )
    .await;
    let token = stack.token_in_region(&room, "bob", "b").await;
    let (mut bob, bob_id, _) = on(
        &format!("http://{other}"),
        &token,
        Flavor::Eio4Websocket,
        "conclave-e2e",
    )
    .await;
    let killed_worker = stack.portal_worker.clone();
    let killed = Instant::now();
    stack.processes[3].signal("KILL");
    // detached while the manager notices (about 4 s) and for the window
    let leave = bob
        .wait_event("participant", 15.0)
        .await
        .expect("bob hears alice leave");
    assert_eq!(leave, json!({"action": "leave", "data": alice_id}));
    let after = killed.elapsed();
    println!(
        "FAULT-TIMING portal SIGKILL, no relogin: kill to leave heard {} ms (2 s window)",
        after.as_millis()
    );
    assert!(
        after >= Duration::from_secs(2),
        "not before the window: {after:?}"
    );
    assert_eq!(stack.conference_participants(&room).await, vec![bob_id]);
    // the dead portal's token tasks went with it; bob's stay on B
    assert!(
        conclave_stack::testing::grpc::manager(&stack.manager)
            .get_tasks(cluster::GetTasksRequest {
                worker_id: killed_worker,
            })
            .await
            .is_err()
    );
    assert_eq!(clients_of(&other_grpc).await.len(), 1);
    stack.assert_invariants(&[3]).await;
    alice.quit().await;
    bob.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_used_and_expired_tickets_are_refused_on_another_portal() {
    if !have_clients() {
        return;
    }
    // tickets live 2 s here
    let (stack, other, _) =
        second_portal(stack(&["portal.reconnection_ticket_lifetime=2"]).await).await;
    let other_url = format!("http://{other}");
    let room = stack.room(-1).await;
    let relogin_on_b = |ticket: String| {
        let url = other_url.clone();
        async move {
            let mut c = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
            let ack = c.emit("relogin", vec![json!(ticket)]).await;
            c.quit().await;
            ack
        }
    };
    let (alice, _, ticket) = on(
        &stack.url(),
        &stack.token(&room, "alice", "presenter").await,
        Flavor::Eio4Websocket,
        "C++",
    )
    .await;
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut t: Value = serde_json::from_slice(&b64.decode(&ticket).unwrap()).unwrap();
        t["notAfter"] = json!(t["notAfter"].as_i64().unwrap() + 3_600_000);
        b64.encode(t.to_string())
    };
    assert_eq!(
        relogin_on_b(forged).await,
        [
            json!("error"),
            json!("Invalid reconnection ticket signature")
        ]
    );
    assert_eq!(relogin_on_b(ticket.clone()).await[0], "ok");
    assert_eq!(
        relogin_on_b(ticket.clone()).await,
        [json!("error"), json!("Ticket has been used")],
        "one use, across portals"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (bob, _, bobs) = on(
        &stack.url(),
        &stack.token(&room, "bob", "presenter").await,
        Flavor::Eio4Websocket,
        "C++",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        relogin_on_b(bobs).await,
        [json!("error"), json!("Ticket is expired")]
    );
    alice.quit().await;
    bob.quit().await;
}
