//! Hostile input on the portal's Socket.IO endpoint: malformed frames, wrong
//! types for every event, oversized payloads, floods, half-open handshakes.
//! The portal answers with an error ack or closes that one socket; it stays
//! up and other clients keep logging in.

use conclave_e2e::*;
use loadgen::sio::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ACK: Duration = Duration::from_secs(10);

async fn timed_login(stack: &Stack, room: &str, user: &str) -> Duration {
    let token = stack.token(room, user, "presenter").await;
    let started = Instant::now();
    let c = Client::connect(&stack.portal_socket)
        .await
        .expect("connect");
    let ack = c
        .call("login", &[json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "conclave-e2e", "version": "1"}}})], ACK)
        .await
        .expect("a login ack");
    assert_eq!(ack[0], "ok", "{ack:?}");
    let took = started.elapsed();
    c.disconnect();
    took
}

async fn still_serving(stack: &Stack, room: &str) {
    timed_login(stack, room, "probe").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_socket() {
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let frames = [
        "zzz",
        "4",
        "42",
        "42[",
        "42[\"login\",",
        "42{}",
        "43",
        "43[1]",
        "4x[\"login\"]",
        "40/nope,",
        "2probe",
        "6",
        "42[1,2,3]",
        "42[\"login\",{\"token\":",
        "429999999999999999999999[\"login\",{}]",
        "\u{0}\u{1}\u{2}",
    ];
    for frame in frames {
        let c = Client::connect(&stack.portal_socket)
            .await
            .expect("connect");
        c.send_raw(frame);
        // the server either ignores it or closes this socket; it must still answer a ping-like request
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.cut();
    }
    let c = Client::connect(&stack.portal_socket).await.unwrap();
    c.send_binary(vec![0xff; 4096]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    still_serving(&stack, &room).await;
    stack.assert_participants(&room, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_for_every_event_get_error_acks() {
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let garbage: Vec<Value> = vec![
        json!(null),
        json!(42),
        json!(-1.5e300),
        json!("text"),
        json!([1, [2, [3]]]),
        json!({"a": {"b": {}}}),
        json!(true),
    ];
    // before login (a refused relogin closes its socket: a fresh one each time)
    for event in [
        "relogin",
        "refreshReconnectionTicket",
        "logout",
        "text",
        "publish",
        "subscribe",
        "soac",
        "stream-control",
        "subscription-control",
        "unpublish",
        "unsubscribe",
    ] {
        for g in &garbage {
            let c = Client::connect(&stack.portal_socket).await.unwrap();
            let ack = c
                .call(event, std::slice::from_ref(g), ACK)
                .await
                .unwrap_or_else(|e| panic!("{event} {g}: {e}"));
            assert_eq!(ack.len(), 2, "{event} {g}: {ack:?}");
            assert_eq!(ack[0], "error", "{event} {g}: {ack:?}");
        }
    }
    // login with every garbage payload: an error ack each (and the socket is closed)
    for g in &garbage {
        let c = Client::connect(&stack.portal_socket).await.unwrap();
        let ack = c.call("login", std::slice::from_ref(g), ACK).await.unwrap();
        assert_eq!(ack[0], "error", "{g}: {ack:?}");
        assert!(
            ack[1].as_str().is_some_and(|s| !s.is_empty()),
            "a clear reason: {ack:?}"
        );
    }
    // logged in: wrong types for text and the media requests
    let token = stack.token(&room, "typed", "presenter").await;
    let c = Client::connect(&stack.portal_socket).await.unwrap();
    let ack = c
        .call("login", &[json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "conclave-e2e", "version": "1"}}})], ACK)
        .await
        .unwrap();
    assert_eq!(ack[0], "ok");
    for g in &garbage {
        for event in ["text", "publish", "subscribe", "soac"] {
            let ack = c.call(event, std::slice::from_ref(g), ACK).await.unwrap();
            assert_eq!(ack[0], "error", "{event} {g}: {ack:?}");
        }
        let ack = c
            .call("text", &[json!({"to": "all", "message": g})], ACK)
            .await
            .unwrap();
        if g.is_string() || g.is_null() {
            assert_eq!(ack[0], "ok");
        } else {
            assert_eq!(ack, vec![json!("error"), json!("Invalid message")]);
        }
    }
    let ack = c
        .call(
            "text",
            &[json!({"to": "all", "message": "x".repeat(3000)})],
            ACK,
        )
        .await
        .unwrap();
    assert_eq!(ack[0], "error", "over 2048 characters");
    still_serving(&stack, &room).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_and_floods_hurt_nobody_else() {
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut before = Vec::new();
    for i in 0..10 {
        before.push(timed_login(&stack, &room, &format!("before{i}")).await);
    }
    // just under the 1 MiB frame limit: refused as a token, not a crash
    let c = Client::connect(&stack.portal_socket).await.unwrap();
    let big = "A".repeat(1000 * 1000);
    let ack = c.call("login", &[json!({"token": big, "protocol": "1.2", "userAgent": {"sdk": {"type": "x", "version": "1"}}})], ACK).await.unwrap();
    assert_eq!(ack, vec![json!("error"), json!("Invalid token: too long")]);
    // over the limit: that socket is closed
    let c = Client::connect(&stack.portal_socket).await.unwrap();
    c.send_raw(&format!("42[\"login\",\"{}\"]", "B".repeat(1100 * 1024)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.closed(), "a frame over max_payload closes its socket");

    // a flood of events from one socket while others log in
    let flooder = Client::connect(&stack.portal_socket).await.unwrap();
    let flood = tokio::spawn(async move {
        for i in 0..5000 {
            flooder.send_raw(&format!(
                "42{i}[\"text\",{{\"to\":\"all\",\"message\":\"flood\"}}]"
            ));
            if i % 500 == 0 {
                tokio::task::yield_now().await;
            }
        }
        flooder
    });
    let mut during = Vec::new();
    for i in 0..10 {
        during.push(timed_login(&stack, &room, &format!("during{i}")).await);
    }
    let flooder = flood.await.unwrap();
    // half-open handshakes: WebSockets that never send the namespace CONNECT
    let mut half_open = Vec::new();
    for _ in 0..50 {
        let tcp = tokio::net::TcpStream::connect(&stack.portal_socket)
            .await
            .unwrap();
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            stack.portal_socket
        );
        if let Ok((ws, _)) = tokio_tungstenite::client_async(url, tcp).await {
            half_open.push(ws);
        }
    }
    for i in 0..5 {
        during.push(timed_login(&stack, &room, &format!("halfopen{i}")).await);
    }
    before.sort();
    during.sort();
    let p50 = |v: &Vec<Duration>| v[v.len() / 2];
    eprintln!(
        "FAULT-TIMING hostile: login p50 before {:?}, during flood and half-open sockets {:?} (max {:?})",
        p50(&before),
        p50(&during),
        during.last().unwrap()
    );
    assert!(
        during.last().unwrap() < &Duration::from_secs(2),
        "logins stay quick: {during:?}"
    );
    drop(half_open);
    drop(flooder);
    stack.assert_participants(&room, &[]).await;
}

/// Engine.IO's heartbeat (engineioxide's, patched: its wake-up is a
/// `Notify` and its task holds the job once, patches/README.md): a client
/// that stops answering pings is closed once the ping timeout has passed,
/// and one that answers them stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed_and_one_that_answers_is_not() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let stack = stack(&["portal.ping_interval=1", "portal.ping_timeout=1"]).await;
    let room = stack.room(-1).await;
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        stack.portal_socket
    );
    let (mut silent, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    match silent.next().await {
        Some(Ok(Message::Text(t))) => assert!(t.as_str().starts_with('0'), "open: {t}"),
        other => panic!("no open packet: {other:?}"),
    }
    silent
        .send(Message::Text("40".into()))
        .await
        .expect("namespace");
    let answering = Client::connect(&stack.portal_socket)
        .await
        .expect("connect");
    let started = Instant::now();
    let mut pings = 0;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), silent.next()).await {
            Err(_) => break false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break true,
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => pings += 1,
            Ok(Some(Ok(_))) => {}
        }
    };
    assert!(closed, "a client that answers no ping is closed");
    assert!(pings >= 1, "it was pinged first");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed within the interval and the timeout (1 s + 1 s), not later: {:?}",
        started.elapsed()
    );
    // the client that answers outlives several intervals and timeouts
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!answering.closed(), "a client that answers pings stays");
    still_serving(&stack, &room).await;
}
