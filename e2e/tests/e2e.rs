//! End to end: the real binaries on loopback, real Socket.IO clients from
//! PyPI (python-socketio 5.x over Engine.IO 4, 4.x over Engine.IO 3).

use conclave_common::token::JoinToken;
use conclave_e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

const FLAVORS: [Flavor; 3] = [Flavor::Eio4Websocket, Flavor::Eio4Polling, Flavor::Eio3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_participants_login_text_and_logout_on_every_transport() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    for flavor in FLAVORS {
        let room = stack.room(-1).await;
        let mut alice = PyClient::connect(&stack, flavor).await;
        let ack = alice
            .login(&stack.token(&room, "alice", "presenter").await, "1.2")
            .await;
        assert_eq!(ack.len(), 2, "{flavor:?}: {ack:?}");
        assert_eq!(ack[0], "ok", "{flavor:?}: {ack:?}");
        let me = &ack[1];
        assert_eq!(
            me["id"],
            alice.sid.as_str(),
            "participant id is the socket id"
        );
        assert_eq!(
            (me["user"].as_str(), me["role"].as_str()),
            (Some("alice"), Some("presenter"))
        );
        assert_eq!(
            me["permission"]["publish"],
            json!({"audio": true, "video": true})
        );
        assert_eq!(me["room"]["id"], room.as_str());
        assert_eq!(me["room"]["views"], json!(["common"]));
        assert_eq!(me["room"]["streams"], json!([]));
        assert_eq!(
            me["room"]["participants"],
            json!([{"id": alice.sid, "user": "alice", "role": "presenter"}])
        );

        let mut bob = PyClient::connect(&stack, flavor).await;
        let ack = bob
            .login(&stack.token(&room, "bob", "viewer").await, "1.2")
            .await;
        assert_eq!(ack[0], "ok", "{ack:?}");
        assert_eq!(ack[1]["room"]["participants"].as_array().unwrap().len(), 2);
        let joined = alice
            .wait_event("participant", 5.0)
            .await
            .expect("alice hears bob join");
        assert_eq!(
            joined,
            json!({"action": "join", "data": {"id": bob.sid, "user": "bob", "role": "viewer"}})
        );
        assert!(
            bob.wait_event("participant", 0.3).await.is_none(),
            "nobody tells bob of himself"
        );
        stack
            .assert_participants(&room, &[&alice.sid, &bob.sid])
            .await;
        let mut tasks = stack.portal_tasks().await;
        tasks.sort();
        assert_eq!(tasks.len(), 2, "a token task per login: {tasks:?}");

        assert_eq!(
            alice
                .emit("text", vec![json!({"to": bob.sid, "message": "hi bob"})])
                .await,
            vec![json!("ok")]
        );
        let t = bob.wait_event("text", 5.0).await.unwrap();
        assert_eq!(
            t,
            json!({"from": alice.sid, "to": "me", "message": "hi bob"})
        );
        assert_eq!(
            bob.emit("text", vec![json!({"to": "all", "message": "hello all"})])
                .await,
            vec![json!("ok")]
        );
        let expected = json!({"from": bob.sid, "to": "all", "message": "hello all"});
        for c in [&mut alice, &mut bob] {
            assert_eq!(c.wait_event("text", 5.0).await.unwrap(), expected);
        }
        let err = alice
            .emit("text", vec![json!({"to": "nobody", "message": "x"})])
            .await;
        assert_eq!(
            err,
            vec![
                json!("error"),
                json!("Target participant does NOT exist: nobody")
            ]
        );
        for bad in [
            json!({"to": "", "message": "x"}),
            json!({"to": 7, "message": "x"}),
            json!({"message": "x"}),
            json!("text"),
        ] {
            let err = alice.emit("text", vec![bad]).await;
            assert_eq!(err, vec![json!("error"), json!("Invalid receiver")]);
        }

        // logout: bob leaves, alice hears it, the token task is laid down
        let ack = bob.emit("logout", vec![]).await;
        assert_eq!(ack, vec![json!("ok")]);
        let left = alice.wait_event("participant", 5.0).await.unwrap();
        assert_eq!(left, json!({"action": "leave", "data": bob.sid}));
        stack.assert_participants(&room, &[&alice.sid]).await;
        assert_eq!(stack.portal_tasks().await.len(), 1);
        assert_eq!(
            bob.emit("logout", vec![]).await,
            vec![json!("error"), json!("Illegal request")]
        );
        assert_eq!(
            bob.emit("text", vec![json!({"to": "all", "message": "x"})])
                .await,
            vec![json!("error"), json!("Illegal request")]
        );
        // a later login on the same socket works
        let ack = bob
            .login(&stack.token(&room, "bob", "viewer").await, "1.2")
            .await;
        assert_eq!(ack[0], "ok", "{ack:?}");
        assert_eq!(
            alice.wait_event("participant", 5.0).await.unwrap()["action"],
            "join"
        );
        assert_eq!(
            bob.emit("text", vec![json!({"to": alice.sid, "message": "back"})])
                .await,
            vec![json!("ok")]
        );
        assert_eq!(
            alice.wait_event("text", 5.0).await.unwrap()["message"],
            "back"
        );
        assert!(
            alice.wait_event("text", 0.3).await.is_none(),
            "no doubled handler"
        );

        // a disconnect makes the participant leave at once
        bob.disconnect().await;
        assert_eq!(
            alice.wait_event("participant", 5.0).await.unwrap()["action"],
            "leave"
        );
        alice.disconnect().await;
        stack.assert_participants(&room, &[]).await;
        assert!(stack.portal_tasks().await.is_empty());
        alice.quit().await;
        bob.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_get_owt_errors_and_leak_nothing() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(1).await;
    let refused = |ack: &[Value], reason: &str| {
        assert_eq!(ack, [json!("error"), json!(reason)], "expected `{reason}`");
    };

    // token reuse
    let token = stack.token(&room, "alice", "presenter").await;
    let mut a = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(a.login(&token, "1.2").await[0], "ok");
    let mut b = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    refused(&b.login(&token, "1.2").await, "Unknown");
    assert!(
        b.wait_disconnect(5.0).await,
        "a refused login is disconnected"
    );

    // room full (limit 1)
    let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    refused(
        &c.login(&stack.token(&room, "carol", "viewer").await, "1.2")
            .await,
        "Room is full",
    );

    // tampered signature
    let mut d = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    refused(
        &d.login(
            &tampered(&stack.token(&room, "dave", "viewer").await),
            "1.2",
        )
        .await,
        "Invalid token signature",
    );

    // unknown protocol, deprecated SDK, bad user agents
    let mut e = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    refused(
        &e.login(&stack.token(&room, "eve", "viewer").await, "9.9")
            .await,
        "Unknown client protocol",
    );
    let token = stack.token(&room, "eve", "viewer").await;
    let cases = [
        (
            json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "3.5"}}}),
            "Deprecated client version",
        ),
        (
            json!({"token": token, "protocol": "1.2"}),
            "User agent info is incorrect",
        ),
        (
            json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "", "version": "5.1"}}}),
            "User agent info is incorrect",
        ),
        // garbage payloads
        (
            json!("not an object"),
            "Invalid login request: not an object",
        ),
        (json!([1, 2]), "Invalid login request: not an object"),
        (
            json!({"protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "5.1"}}}),
            "Invalid login request: no token string",
        ),
        (
            json!({"token": "%%% not base64", "protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "5.1"}}}),
            "Invalid token: not base64",
        ),
        (
            json!({"token": "bm90IGpzb24=", "protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "5.1"}}}),
            "Invalid token: not JSON",
        ),
        (
            json!({"token": "WzEsMl0=", "protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "5.1"}}}),
            "Invalid token: missing or wrong fields",
        ),
    ];
    for (info, reason) in cases {
        let mut x = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        refused(&x.emit("login", vec![info]).await, reason);
        x.quit().await;
    }
    // no data at all
    let mut x = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    refused(
        &x.emit("login", vec![]).await,
        "Invalid login request: not an object",
    );
    x.quit().await;

    // media requests: unsupported once logged in, illegal before
    let mut f = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    for event in [
        "publish",
        "subscribe",
        "soac",
        "stream-control",
        "subscription-control",
        "unpublish",
        "unsubscribe",
    ] {
        refused(
            &f.emit(event, vec![json!({"id": "x"})]).await,
            "Illegal request",
        );
        let ack = a
            .emit(event, vec![json!({"media": null}), Value::Null])
            .await;
        assert_eq!(ack[0], "error");
        assert_eq!(
            ack[1],
            format!("{event} is not supported: this portal has no media plane")
        );
    }
    refused(
        &a.login(&stack.token(&room, "alice", "presenter").await, "1.2")
            .await,
        "Connection is in service",
    );
    stack.assert_participants(&room, &[&a.sid]).await;
    for x in [a, b, c, d, e, f] {
        x.quit().await;
    }
    stack.assert_participants(&room, &[]).await;
    assert!(stack.portal_tasks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_in_the_middle_of_a_login_leaves_no_ghost() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let watcher = stack.logged_in(&room, "watcher").await;
    for _ in 0..5 {
        let token = stack.token(&room, "ghost", "presenter").await;
        let mut g = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let info = json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "JavaScript", "version": "5.1"}}});
        g.cmd(json!({"cmd": "emit_noack", "event": "login", "args": [info]}))
            .await;
        g.disconnect().await;
        g.quit().await;
    }
    stack.assert_participants(&room, &[&watcher.sid]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.assert_participants(&room, &[&watcher.sid]).await;
    assert_eq!(stack.portal_tasks().await.len(), 1);
    watcher.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_1_1_dialects() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut old = PyClient::connect(&stack, Flavor::Eio3).await;
    let ack = old
        .login(&stack.token(&room, "old", "presenter").await, "")
        .await;
    assert_eq!(ack[0], "success", "{ack:?}");
    assert_eq!(ack[1]["clientId"], old.sid.as_str());
    assert_eq!(ack[1]["id"], room.as_str());
    assert_eq!(
        ack[1]["users"],
        json!([{"id": old.sid, "name": "old", "role": "presenter"}])
    );
    let mut android = PyClient::connect(&stack, Flavor::Eio3).await;
    let info = json!({"token": stack.token(&room, "droid", "viewer").await, "protocol": "1.1", "userAgent": {"sdk": {"type": "Android", "version": 5.0}}});
    let ack = android.emit("login", vec![info]).await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let joined = old
        .wait_event("user_join", 5.0)
        .await
        .expect("legacy join event");
    assert_eq!(
        joined,
        json!({"user": {"id": android.sid, "name": "droid", "role": "viewer"}})
    );
    assert_eq!(
        android
            .emit("text", vec![json!({"to": "all", "message": "hey"})])
            .await,
        vec![json!("ok")]
    );
    let m = old.wait_event("custom_message", 5.0).await.unwrap();
    assert_eq!(m, json!({"from": android.sid, "to": "all", "data": "hey"}));
    assert_eq!(
        android.wait_event("text", 5.0).await.unwrap()["message"],
        "hey"
    );
    // Android gets reconnection: a disconnect would wait for a relogin, a logout leaves
    assert_eq!(android.emit("logout", vec![]).await, vec![json!("ok")]);
    assert_eq!(
        old.wait_event("user_leave", 5.0).await.unwrap(),
        json!({"user": {"id": android.sid}})
    );
    assert_eq!(old.emit("logout", vec![]).await, vec![json!("success")]);
    stack.assert_participants(&room, &[]).await;
    old.quit().await;
    android.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_drop_and_grpcurl_list_clients() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut a = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    let mut b = PyClient::connect(&stack, Flavor::Eio4Polling).await;
    assert_eq!(
        a.login(&stack.token(&room, "a", "presenter").await, "1.2")
            .await[0],
        "ok"
    );
    assert_eq!(
        b.login(&stack.token(&room, "b", "presenter").await, "1.2")
            .await[0],
        "ok"
    );
    assert_eq!(
        a.wait_event("participant", 5.0).await.unwrap()["action"],
        "join"
    );
    if let Some(grpcurl) = conclave_stack::testing::grpcurl() {
        let out = std::process::Command::new(&grpcurl)
            .args([
                "-plaintext",
                "-d",
                "{}",
                &stack.portal_grpc,
                "portal.v1.Portal/ListClients",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains(&a.sid)
                && text.contains("\"state\": \"connected\""),
            "{text}"
        );
        // reflection lists exactly what the portal serves
        let (ok, list) = conclave_stack::testing::run(std::process::Command::new(grpcurl).args([
            "-plaintext",
            &stack.portal_grpc,
            "list",
        ]));
        assert!(ok, "{list}");
        assert_eq!(
            conclave_stack::testing::listed_services(&list),
            conclave_stack::testing::expected_services("portal.v1.Portal")
        );
    }
    // the conference (or an operator) drops b through the portal
    stack
        .portal_client()
        .drop(conclave_proto::portal::v1::DropRequest {
            participant_id: b.sid.clone(),
            reason: "Operator says so".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        b.wait_event("drop", 5.0).await,
        Some(json!({"reason": "Operator says so"})),
        "b gets drop, with the reason"
    );
    assert!(b.wait_disconnect(5.0).await, "then its socket closes");
    assert_eq!(
        a.wait_event("participant", 5.0).await.unwrap()["action"],
        "leave"
    );
    stack.assert_participants(&room, &[&a.sid]).await;
    // Notify and Broadcast pass data through unchanged, integers as integers
    stack
        .portal_client()
        .notify(conclave_proto::portal::v1::NotifyRequest {
            participant_id: a.sid.clone(),
            event: "stream".into(),
            data: r#"{"id":"s1","status":"add","data":{"media":{"video":{"parameters":{"resolution":{"width":640,"height":480}}}}}}"#.into(),
            seq: 0,
        })
        .await
        .unwrap();
    let s = a.wait_event("stream", 5.0).await.unwrap();
    assert_eq!(
        s["data"]["media"]["video"]["parameters"]["resolution"]["width"],
        json!(640)
    );
    assert!(s["data"]["media"]["video"]["parameters"]["resolution"]["width"].is_u64());
    let err = stack
        .portal_client()
        .notify(conclave_proto::portal::v1::NotifyRequest {
            participant_id: a.sid.clone(),
            event: "stream".into(),
            data: "{not json".into(),
            seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    a.quit().await;
    b.quit().await;
    stack.assert_participants(&room, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    if !have_clients() {
        return;
    }
    let stack = stack(&["portal.idle_timeout=500"]).await;
    let mut idle = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert!(idle.wait_disconnect(5.0).await, "closed without a login");
    let room = stack.room(-1).await;
    let mut c = stack.logged_in(&room, "c").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(c.connected().await, "logged-in connections stay");
    assert_eq!(c.emit("logout", vec![]).await, vec![json!("ok")]);
    assert!(c.wait_disconnect(5.0).await, "closed again after logout");
    idle.quit().await;
    c.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_live_room_destroys_it_and_drops_its_participants() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut a = stack.logged_in(&room, "a").await;
    stack
        .management_client()
        .delete_room(conclave_proto::management::v1::DeleteRoomRequest { id: room.clone() })
        .await
        .unwrap();
    assert!(
        a.wait_event("drop", 10.0).await.is_some(),
        "its participants are dropped"
    );
    assert!(a.wait_disconnect(5.0).await);
    stack.assert_participants(&room, &[]).await;
    assert!(stack.portal_tasks().await.is_empty());
    a.quit().await;
}

/// Management signs a token's room into it, so the portal joins while the
/// token is consumed: a replayed token's pending seat must go again with
/// nobody in the room hearing of it, and a changed claim is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_token_is_seen_by_nobody_in_the_room() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(10).await;
    let mut alice = stack.logged_in(&room, "alice").await;
    let token = stack.token(&room, "bob", "viewer").await;
    assert!(
        JoinToken::decode(&token).unwrap().claims.is_some(),
        "management signs claims by default"
    );
    let mut bob = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(bob.login(&token, "1.2").await[0], "ok");
    let joined = alice.wait_event("participant", 5.0).await.unwrap();
    assert_eq!(joined["action"], "join");
    assert_eq!(joined["data"]["id"], bob.sid);
    for _ in 0..3 {
        let mut eve = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = eve.login(&token, "1.2").await;
        assert_eq!(ack, [json!("error"), json!("Unknown")]);
        eve.quit().await;
    }
    // a claim changed and signed again with the wrong key
    let mut forged = JoinToken::decode(&stack.token(&room, "mallory", "viewer").await).unwrap();
    forged.claims.as_mut().unwrap().role = "presenter".into();
    let mut mallory = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        mallory.login(&forged.encode(), "1.2").await,
        [json!("error"), json!("Invalid token signature")]
    );
    assert!(
        alice.wait_event("participant", 1.0).await.is_none(),
        "nobody heard of the refused logins"
    );
    assert!(bob.wait_event("participant", 0.2).await.is_none());
    stack
        .assert_participants(&room, &[&alice.sid, &bob.sid])
        .await;
    // the text of a participant whose confirmation may not have arrived
    // yet reaches everyone, after its join
    let mut carol = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        carol
            .login(&stack.token(&room, "carol", "viewer").await, "1.2")
            .await[0],
        "ok"
    );
    assert_eq!(
        carol
            .emit("text", vec![json!({"to": "all", "message": "hi"})])
            .await,
        vec![json!("ok")]
    );
    assert_eq!(
        alice.wait_event("participant", 5.0).await.unwrap()["data"]["id"],
        carol.sid
    );
    assert_eq!(
        alice.wait_event("text", 5.0).await.unwrap()["message"],
        "hi"
    );
    for c in [alice, bob, carol, mallory] {
        c.quit().await;
    }
}

/// With `token.sign_claims` off the tokens are OWT's, byte for byte, and
/// the portal takes the longer path: consume, then join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owt_tokens_without_claims_still_log_in() {
    if !have_clients() {
        return;
    }
    let stack = stack_with_management(&["token.sign_claims=false"]).await;
    let room = stack.room(10).await;
    let mut alice = stack.logged_in(&room, "alice").await;
    let token = stack.token(&room, "bob", "viewer").await;
    assert!(JoinToken::decode(&token).unwrap().claims.is_none());
    let mut bob = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(bob.login(&token, "1.2").await[0], "ok");
    assert_eq!(
        alice.wait_event("participant", 5.0).await.unwrap()["data"]["id"],
        bob.sid
    );
    let mut eve = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        eve.login(&token, "1.2").await,
        [json!("error"), json!("Unknown")]
    );
    stack
        .assert_participants(&room, &[&alice.sid, &bob.sid])
        .await;
    for c in [alice, bob, eve] {
        c.quit().await;
    }
}

/// Logins in flight together into one room: each pending join is confirmed
/// (several in one `Confirm` when they come while one is on its way), and
/// the participant already there hears each join once, and nothing of a
/// replayed token among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_in_flight_together_are_each_heard_of_once() {
    use loadgen::sio::Client;
    let stack = stack(&[]).await;
    let room = stack.room(100).await;
    let addr = stack.url().trim_start_matches("http://").to_string();
    let info = |token: &str| json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "5.1"}}});
    let ack = Duration::from_secs(10);
    let watcher = Client::connect(&addr).await.unwrap();
    let token = stack.token(&room, "watcher", "presenter").await;
    watcher
        .call_ok("login", &[info(&token)], ack)
        .await
        .unwrap()
        .unwrap();
    let replayed = stack.token(&room, "first", "viewer").await;
    let mut tokens = vec![replayed.clone()];
    for i in 0..39 {
        tokens.push(stack.token(&room, &format!("user-{i}"), "viewer").await);
    }
    // the replayed token twice more, among the others
    tokens.insert(10, replayed.clone());
    tokens.insert(30, replayed);
    let mut clients = Vec::new();
    for _ in &tokens {
        clients.push(Client::connect(&addr).await.unwrap());
    }
    let infos: Vec<[Value; 1]> = tokens.iter().map(|t| [info(t)]).collect();
    let outcomes = futures_util::future::join_all(
        clients
            .iter()
            .zip(&infos)
            .map(|(c, info)| c.call("login", info, ack)),
    )
    .await;
    let mut joined = std::collections::BTreeSet::new();
    let mut refused = 0;
    for (c, outcome) in clients.iter().zip(outcomes) {
        let args = outcome.unwrap();
        match args[0].as_str() {
            Some("ok") => assert!(joined.insert(c.sid.clone())),
            _ => {
                assert_eq!(args, [json!("error"), json!("Unknown")]);
                refused += 1;
            }
        }
    }
    assert_eq!((joined.len(), refused), (40, 2));
    let mut heard = std::collections::BTreeSet::new();
    while let Some(e) = watcher
        .wait_event("participant", Duration::from_secs(2))
        .await
    {
        assert_eq!(e.data["action"], "join", "{:?}", e.data);
        let id = e.data["data"]["id"].as_str().unwrap().to_string();
        assert!(heard.insert(id.clone()), "{id} heard of twice");
    }
    assert_eq!(heard, joined);
    let mut expected: Vec<&str> = joined.iter().map(String::as_str).collect();
    expected.push(&watcher.sid);
    stack.assert_participants(&room, &expected).await;
}
