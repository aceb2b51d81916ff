//! Many participants logging in at once, then random network cuts, relogins
//! and texts for a while: no participant leaks and no text is lost for those
//! who relogin within the grace period.
//!
//! The test suite runs a short version (50 participants, 10 s). The full
//! scenario of 500 participants for 60 s is opt-in:
//!     CONCLAVE_SOAK_CLIENTS=500 CONCLAVE_SOAK_SECONDS=60 bash scripts/test.sh -p portal --test soak

use conclave_e2e::*;
use loadgen::sio::Client;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const ACK: Duration = Duration::from_secs(20);

struct Member {
    id: String,
    ticket: String,
    client: Client,
    received: HashSet<String>,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Texts that arrived as events since the last call.
async fn drain(m: &mut Member) {
    let mut events = m.client.events.lock().await;
    while let Ok(e) = events.try_recv() {
        if e.name == "text"
            && let Some(id) = e.data["message"].as_str()
        {
            m.received.insert(id.to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_and_relogins_lose_nothing_and_leak_nothing() {
    let clients = env_or("CONCLAVE_SOAK_CLIENTS", 50);
    let seconds = env_or("CONCLAVE_SOAK_SECONDS", 10);
    let room_size = 50;
    let stack = stack(&[]).await;
    let rooms: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..clients.div_ceil(room_size) {
            v.push(stack.room(-1).await);
        }
        v
    };
    // give each room its node first (GetNode is idempotent; a burst of new
    // rooms would outrun the agent's two warm nodes), then everyone logs in at once
    let mut agent = conclave_proto::agent::v1::node_manager_client::NodeManagerClient::new(
        conclave_common::grpc::channel(&stack.agent, Duration::from_secs(10)).unwrap(),
    );
    for room in &rooms {
        let mut opened = false;
        for _ in 0..100 {
            let req = conclave_proto::agent::v1::GetNodeRequest {
                room: room.clone(),
                task: room.clone(),
            };
            if agent.get_node(req).await.is_ok() {
                opened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(opened, "room {room} got a node");
    }
    let mut tokens = Vec::new();
    for i in 0..clients {
        tokens.push(
            stack
                .token(&rooms[i / room_size], &format!("u{i}"), "presenter")
                .await,
        );
    }
    let started = Instant::now();
    let logins: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let addr = stack.portal_socket.clone();
            tokio::spawn(async move {
                let c = Client::connect(&addr).await.expect("connect");
                let info = json!({"token": token, "protocol": "1.2", "userAgent": {"sdk": {"type": "C++", "version": "5.1"}}});
                let ack = c.call("login", &[info], ACK).await.expect("login ack");
                assert_eq!(ack[0], "ok", "login refused: {ack:?}");
                let ticket = ack[1]["reconnectionTicket"].as_str().unwrap().to_string();
                Member {
                    id: c.sid.clone(),
                    ticket,
                    client: c,
                    received: HashSet::new(),
                }
            })
        })
        .collect();
    let mut members = Vec::new();
    for l in logins {
        members.push(l.await.expect("login task"));
    }
    eprintln!(
        "FAULT-TIMING soak: {clients} logins in parallel took {:?}",
        started.elapsed()
    );

    let mut expected: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut sent = 0usize;
    let mut relogins = 0usize;
    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let mut rng = rand::rng();
    while Instant::now() < deadline {
        let i = rng.random_range(0..members.len());
        if rng.random_bool(0.75) {
            // a text to someone in the same room
            let room = i / room_size;
            let j = room * room_size
                + rng.random_range(0..room_size.min(members.len() - room * room_size));
            if j == i {
                continue;
            }
            let id = format!("m{sent}");
            let ack = members[i]
                .client
                .call("text", &[json!({"to": members[j].id, "message": id})], ACK)
                .await
                .expect("text ack");
            assert_eq!(
                ack,
                vec![json!("ok")],
                "text from {} to {}",
                members[i].id,
                members[j].id
            );
            expected.entry(j).or_default().insert(id);
            sent += 1;
        } else {
            // a network cut, then a relogin on a new socket within the grace period
            drain(&mut members[i]).await;
            members[i].client.cut();
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..50))).await;
            let c = Client::connect(&stack.portal_socket)
                .await
                .expect("reconnect");
            let ack = c
                .call("relogin", &[json!(members[i].ticket)], ACK)
                .await
                .expect("relogin ack");
            assert_eq!(ack[0], "ok", "relogin of {}: {ack:?}", members[i].id);
            members[i].ticket = ack[1]["ticket"].as_str().unwrap().to_string();
            for m in ack[1]["messages"].as_array().cloned().unwrap_or_default() {
                if m["event"] == "text"
                    && let Some(id) = m["data"]["message"].as_str()
                {
                    members[i].received.insert(id.to_string());
                }
            }
            members[i].client = c;
            relogins += 1;
        }
    }
    // let the last notifications arrive
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut lost = Vec::new();
    for (j, m) in members.iter_mut().enumerate() {
        drain(m).await;
        for id in expected.get(&j).into_iter().flatten() {
            if !m.received.contains(id) {
                lost.push((m.id.clone(), id.clone()));
            }
        }
    }
    eprintln!(
        "FAULT-TIMING soak: {seconds} s, {sent} texts, {relogins} cut-and-relogins, {} lost",
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "texts lost: {:?}",
        &lost[..lost.len().min(20)]
    );

    // everyone logs out: nothing leaks
    for m in &members {
        let ack: Vec<Value> = m.client.call("logout", &[], ACK).await.expect("logout ack");
        assert_eq!(ack[0], "ok");
        m.client.disconnect();
    }
    for room in &rooms {
        stack.assert_participants(room, &[]).await;
    }
    assert!(
        stack.portal_tasks().await.is_empty(),
        "no token task leaked"
    );
}
