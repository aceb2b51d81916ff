//! Portal part 2 end to end: reconnection tickets, relogin with missed
//! messages, the disconnect grace period and fault drops, with real
//! python-socketio clients against the real binaries.

use conclave_e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Log `sdk`/`protocol` in as `user` and return (client, participant id, ticket).
async fn logged_in(
    stack: &Stack,
    room: &str,
    user: &str,
    flavor: Flavor,
    protocol: &str,
    sdk: &str,
) -> (PyClient, String, String) {
    let token = stack.token(room, user, "presenter").await;
    logged_in_at(&stack.url(), &token, flavor, protocol, sdk).await
}

async fn cut(c: &mut PyClient) {
    let r = c.cmd(json!({"cmd": "cut"})).await;
    assert_eq!(r["ok"], true, "{r}");
}

/// What the others do while the participant is away: two texts to it, then
/// bob leaves and comes back. Returns bob's new client and id.
async fn meanwhile(
    stack: &Stack,
    room: &str,
    bob: &mut PyClient,
    away: &str,
) -> (PyClient, String) {
    for n in 1..=2 {
        let ack = bob
            .emit(
                "text",
                vec![json!({"to": away, "message": format!("missed {n}")})],
            )
            .await;
        assert_eq!(ack, vec![json!("ok")]);
    }
    assert_eq!(bob.emit("logout", vec![]).await, vec![json!("ok")]);
    let mut bob2 = PyClient::connect(stack, Flavor::Eio4Websocket).await;
    let ack = bob2
        .login(&stack.token(room, "bob", "presenter").await, "1.2")
        .await;
    assert_eq!(ack[0], "ok");
    let id = bob2.sid.clone();
    (bob2, id)
}

fn expected_missed(bob: &str, bob2: &str, away: &str) -> Vec<(String, Value)> {
    vec![
        (
            "text".into(),
            json!({"from": bob, "to": "me", "message": "missed 1"}),
        ),
        (
            "text".into(),
            json!({"from": bob, "to": "me", "message": "missed 2"}),
        ),
        (
            "participant".into(),
            json!({"action": "leave", "data": bob}),
        ),
        (
            "participant".into(),
            json!({"action": "join", "data": {"id": bob2, "user": "bob", "role": "presenter"}}),
        ),
    ]
    .into_iter()
    .filter(|_| !away.is_empty())
    .collect()
}

async fn wait_server_noticed(stack: &Stack, participant: &str) {
    for _ in 0..200 {
        let state = stack
            .clients()
            .await
            .into_iter()
            .find(|c| c.participant_id == participant)
            .map(|c| c.state);
        if state.as_deref() == Some("waiting_for_reconnecting") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the portal never noticed the cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_1_2_client_relogins_and_gets_what_it_missed_in_the_reply() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let (mut alice, alice_id, ticket) =
        logged_in(&stack, &room, "alice", Flavor::Eio4Websocket, "1.2", "C++").await;
    assert!(!ticket.is_empty(), "C++ clients get a ticket");
    let (mut bob, bob_id, _) = logged_in(
        &stack,
        &room,
        "bob",
        Flavor::Eio4Websocket,
        "1.2",
        "conclave-e2e",
    )
    .await;
    assert_eq!(
        alice.wait_event("participant", 5.0).await.unwrap()["action"],
        "join"
    );
    cut(&mut alice).await;
    wait_server_noticed(&stack, &alice_id).await;
    let (mut bob2, bob2_id) = meanwhile(&stack, &room, &mut bob, &alice_id).await;
    stack
        .assert_participants(&room, &[&alice_id, &bob2_id])
        .await;

    let mut back = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    let ack = back.emit("relogin", vec![json!(ticket)]).await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let reply = &ack[1];
    assert!(
        reply["ticket"]
            .as_str()
            .is_some_and(|t| !t.is_empty() && t != ticket),
        "{reply}"
    );
    let messages = reply["messages"]
        .as_array()
        .expect("1.2 reply carries messages");
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "increasing seq, no duplicate: {seqs:?}"
    );
    let missed: Vec<(String, Value)> = messages
        .iter()
        .filter(|m| m["seq"].as_u64().unwrap() > 1)
        .map(|m| (m["event"].as_str().unwrap().to_string(), m["data"].clone()))
        .collect();
    assert_eq!(
        missed,
        expected_missed(&bob_id, &bob2_id, &alice_id),
        "{messages:?}"
    );
    assert_eq!(
        messages[0]["data"]["action"], "join",
        "seq 1 is the join alice saw before the cut"
    );
    assert!(
        back.wait_event("text", 0.5).await.is_none(),
        "1.2: nothing re-emitted as events"
    );

    // alice is alice again on the new socket; the others never saw her leave
    assert_eq!(
        bob2.emit(
            "text",
            vec![json!({"to": alice_id, "message": "welcome back"})]
        )
        .await,
        vec![json!("ok")]
    );
    assert_eq!(
        back.wait_event("text", 5.0).await.unwrap()["message"],
        "welcome back"
    );
    assert!(
        !bob2
            .events()
            .await
            .iter()
            .any(|e| e["data"]["action"] == "leave"),
        "nobody heard alice leave"
    );
    stack
        .assert_participants(&room, &[&alice_id, &bob2_id])
        .await;
    assert_eq!(stack.portal_tasks().await.len(), 2);
    for c in [alice, bob, bob2, back] {
        c.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_1_1_client_relogins_and_gets_what_it_missed_as_events() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    for (flavor, protocol, sdk) in [
        (Flavor::Eio3, "1.1", "Android"),
        (Flavor::Eio4Polling, "1.2", "JavaScript"),
    ] {
        let room = stack.room(-1).await;
        let (mut alice, alice_id, ticket) =
            logged_in(&stack, &room, "alice", flavor, protocol, sdk).await;
        let (mut bob, bob_id, _) = logged_in(
            &stack,
            &room,
            "bob",
            Flavor::Eio4Websocket,
            "1.2",
            "conclave-e2e",
        )
        .await;
        assert_eq!(
            alice.wait_event("participant", 5.0).await.unwrap()["action"],
            "join"
        );
        cut(&mut alice).await;
        wait_server_noticed(&stack, &alice_id).await;
        let (bob2, bob2_id) = meanwhile(&stack, &room, &mut bob, &alice_id).await;

        let mut back = PyClient::connect(&stack, flavor).await;
        let ack = back.emit("relogin", vec![json!(ticket)]).await;
        assert_eq!(ack.len(), 2, "{ack:?}");
        assert_eq!(ack[0], "ok");
        assert!(
            ack[1].as_str().is_some_and(|t| !t.is_empty()),
            "{sdk}: the reply is a ticket string: {ack:?}"
        );
        let mut got = Vec::new();
        for _ in 0..4 {
            let events = back.cmd(json!({"cmd": "events"})).await;
            got.extend(events["events"].as_array().cloned().unwrap_or_default());
            if got.len() >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let got: Vec<(String, Value)> = got
            .into_iter()
            .map(|e| (e["event"].as_str().unwrap().to_string(), e["data"].clone()))
            .collect();
        assert_eq!(
            got,
            expected_missed(&bob_id, &bob2_id, &alice_id),
            "{sdk}: all missed, in order, once"
        );
        stack
            .assert_participants(&room, &[&alice_id, &bob2_id])
            .await;
        for c in [alice, bob, bob2, back] {
            c.quit().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_refused_when_tampered_reused_expired_or_garbage() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let (mut alice, alice_id, ticket) =
        logged_in(&stack, &room, "alice", Flavor::Eio4Websocket, "1.2", "C++").await;
    let refused = async |ticket: Value, reason: &str| {
        let mut x = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = x.emit("relogin", vec![ticket]).await;
        assert_eq!(ack, vec![json!("error"), json!(reason)]);
        assert!(
            x.wait_disconnect(5.0).await,
            "a refused relogin is disconnected"
        );
        x.quit().await;
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut decoded: Value = serde_json::from_slice(&b64.decode(&ticket).unwrap()).unwrap();
    for field in [
        "participantId",
        "ticketId",
        "notBefore",
        "notAfter",
        "signature",
    ] {
        let mut t = decoded.clone();
        t[field] = match &t[field] {
            Value::String(s) => json!(format!("{s}x")),
            Value::Number(n) => json!(n.as_i64().unwrap() - 1),
            other => other.clone(),
        };
        refused(
            json!(b64.encode(t.to_string())),
            "Invalid reconnection ticket signature",
        )
        .await;
    }
    for garbage in [
        json!("%%%"),
        json!(b64.encode("not json")),
        json!(b64.encode("[1,2]")),
        json!(42),
        json!({"ticket": ticket}),
        json!(b64.encode(
            r#"{"participantId":"p","ticketId":"t","notBefore":1e999,"notAfter":1,"signature":"s"}"#
        )),
    ] {
        refused(garbage, "Invalid reconnection ticket").await;
    }
    decoded["notAfter"] = json!(1);
    refused(json!(b64.encode(decoded.to_string())), "Ticket is expired").await;
    // a ticket of an unknown participant
    let (mut other, _, other_ticket) =
        logged_in(&stack, &room, "other", Flavor::Eio4Websocket, "1.2", "C++").await;
    assert_eq!(other.emit("logout", vec![]).await, vec![json!("ok")]);
    refused(json!(other_ticket), "Client does NOT exist").await;

    // used once, then refused
    cut(&mut alice).await;
    let mut back = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(back.emit("relogin", vec![json!(ticket)]).await[0], "ok");
    refused(json!(ticket), "Ticket has been used").await;
    // relogin on a logged-in connection
    let ack = back.emit("relogin", vec![json!(ticket)]).await;
    assert_eq!(ack, vec![json!("error"), json!("Connection is in service")]);
    stack.assert_participants(&room, &[&alice_id]).await;
    alice.quit().await;
    other.quit().await;
    back.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_gives_a_ticket_that_works() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut nobody = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        nobody.emit("refreshReconnectionTicket", vec![]).await,
        vec![json!("error"), json!("Illegal request")]
    );
    let (mut plain, _, no_ticket) = logged_in(
        &stack,
        &room,
        "plain",
        Flavor::Eio4Websocket,
        "1.2",
        "conclave-e2e",
    )
    .await;
    assert!(no_ticket.is_empty(), "unknown SDKs get no ticket");
    assert_eq!(
        plain.emit("refreshReconnectionTicket", vec![]).await,
        vec![json!("error"), json!("Reconnection is not enabled.")]
    );
    let (mut alice, alice_id, first) =
        logged_in(&stack, &room, "alice", Flavor::Eio4Websocket, "1.2", "C++").await;
    let ack = alice.emit("refreshReconnectionTicket", vec![]).await;
    assert_eq!(ack.len(), 2);
    assert_eq!(ack[0], "ok");
    let fresh = ack[1].as_str().unwrap().to_string();
    assert_ne!(fresh, first);
    cut(&mut alice).await;
    let mut back = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(back.emit("relogin", vec![json!(fresh)]).await[0], "ok");
    stack
        .assert_participants(&room, &[&alice_id, &plain.sid])
        .await;
    for c in [nobody, plain, alice, back] {
        c.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_participant_is_gone() {
    if !have_clients() {
        return;
    }
    let stack = stack(&["portal.reconnection_timeout=1"]).await;
    let room = stack.room(-1).await;
    let (mut alice, alice_id, ticket) =
        logged_in(&stack, &room, "alice", Flavor::Eio4Websocket, "1.2", "C++").await;
    let (mut bob, bob_id, _) = logged_in(
        &stack,
        &room,
        "bob",
        Flavor::Eio4Websocket,
        "1.2",
        "conclave-e2e",
    )
    .await;
    cut(&mut alice).await;
    wait_server_noticed(&stack, &alice_id).await;
    stack
        .assert_participants(&room, &[&alice_id, &bob_id])
        .await;
    let left = bob
        .wait_event("participant", 5.0)
        .await
        .expect("bob hears alice leave when the grace ends");
    assert_eq!(left, json!({"action": "leave", "data": alice_id}));
    stack.assert_participants(&room, &[&bob_id]).await;
    assert_eq!(
        stack.portal_tasks().await.len(),
        1,
        "alice's token task laid down"
    );
    let mut late = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        late.emit("relogin", vec![json!(ticket)]).await,
        vec![json!("error"), json!("Client does NOT exist")]
    );
    for c in [alice, bob, late] {
        c.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relogin_racing_the_old_sockets_disconnect_keeps_the_participant() {
    if !have_clients() {
        return;
    }
    let stack = stack(&["portal.reconnection_timeout=1"]).await;
    let room = stack.room(-1).await;
    let (mut alice, alice_id, ticket) =
        logged_in(&stack, &room, "alice", Flavor::Eio4Websocket, "1.2", "C++").await;
    let (mut bob, bob_id, _) = logged_in(
        &stack,
        &room,
        "bob",
        Flavor::Eio4Websocket,
        "1.2",
        "conclave-e2e",
    )
    .await;
    // the new socket relogins while the server still holds the old one as connected
    let mut back = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(back.emit("relogin", vec![json!(ticket)]).await[0], "ok");
    assert!(alice.wait_disconnect(5.0).await, "the old socket is closed");
    // well past the grace period, the participant is still there
    tokio::time::sleep(Duration::from_millis(1800)).await;
    stack
        .assert_participants(&room, &[&alice_id, &bob_id])
        .await;
    assert!(
        !bob.events()
            .await
            .iter()
            .any(|e| e["data"]["action"] == "leave")
    );
    assert_eq!(
        bob.emit(
            "text",
            vec![json!({"to": alice_id, "message": "still here?"})]
        )
        .await,
        vec![json!("ok")]
    );
    assert_eq!(
        back.wait_event("text", 5.0).await.unwrap()["message"],
        "still here?"
    );
    for c in [alice, bob, back] {
        c.quit().await;
    }
}

/// Since issue 16 a killed node's room is rebuilt on a fresh node with its
/// participants (every dialect keeps its seat); a room of another node is
/// untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_rooms_node_keeps_its_clients() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let other_room = stack.room(-1).await;
    let (mut a, a_id, _) = logged_in(&stack, &room, "a", Flavor::Eio4Websocket, "1.2", "C++").await;
    let (mut b, b_id, _) = logged_in(&stack, &room, "b", Flavor::Eio3, "1.1", "Android").await;
    let (mut c, c_id, _) = logged_in(
        &stack,
        &other_room,
        "c",
        Flavor::Eio4Websocket,
        "1.2",
        "C++",
    )
    .await;
    let nodes = stack.nodes().await;
    let node = nodes
        .iter()
        .find(|n| n.room == room)
        .expect("the room's node");
    let killed = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &node.pid.to_string()])
        .status()
        .unwrap();
    let mut ids = vec![a_id.clone(), b_id.clone()];
    ids.sort();
    assert!(
        conclave_stack::testing::eventually(std::time::Duration::from_secs(5), || async {
            stack.conference_participants(&room).await == ids
        })
        .await,
        "the room is rebuilt with both"
    );
    eprintln!(
        "room rebuilt {:?} after the node was killed",
        killed.elapsed()
    );
    for x in [&mut a, &mut b] {
        x.assert_still_seated().await;
    }
    let fresh = stack.nodes().await;
    let now = fresh.iter().find(|n| n.room == room).expect("a node");
    assert_ne!(now.node_id, node.node_id, "a fresh node");
    // the other room is untouched; a newcomer joins the rebuilt room
    stack.assert_participants(&other_room, &[&c_id]).await;
    assert!(c.connected().await);
    let (d, d_id, _) = logged_in(&stack, &room, "d", Flavor::Eio4Websocket, "1.2", "C++").await;
    stack
        .assert_participants(&room, &[&a_id, &b_id, &d_id])
        .await;
    let mut heard = false;
    for _ in 0..50 {
        heard = a
            .events()
            .await
            .iter()
            .any(|e| e["event"] == "participant" && e["data"]["data"]["id"] == d_id.as_str());
        if heard {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(heard, "a hears the newcomer");
    assert_eq!(
        stack.portal_tasks().await.len(),
        4,
        "every token task stays"
    );
    for x in [a, b, c, d] {
        x.quit().await;
    }
}
