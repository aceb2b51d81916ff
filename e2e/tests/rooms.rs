//! No seat lost when a conference node or agent dies (issue 16): the room is
//! rebuilt on a fresh node by the portals that hold its participants, who
//! keep their ids and see nothing. Real binaries, two portals, a room of 20
//! python-socketio clients announcing the C++ SDK (tickets, 1.2), half on
//! each portal; texts flow throughout and every one is counted.

use conclave_common::purpose::Purpose;
use conclave_e2e::*;
use conclave_proto::agent::v1 as agent_pb;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::conference::v1 as conf;
use conclave_stack::testing::grpc;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ROOM_SIZE: usize = 20;

fn timing(scenario: &str, what: &str, took: Duration) {
    eprintln!(
        "ROOM-TIMING {scenario}: {what} {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
}

/// Every conference agent: (worker id, NodeManager address).
async fn agents(stack: &Stack) -> Vec<(String, String)> {
    let mut m = stack.manager_client();
    let ids = m
        .get_workers(cluster::GetWorkersRequest {
            purpose: Purpose::Conference.to_string(),
        })
        .await
        .map(|r| r.into_inner().workers)
        .unwrap_or_default();
    let mut out = Vec::new();
    for id in ids {
        if let Ok(attr) = m
            .get_worker_attr(cluster::GetWorkerAttrRequest {
                worker_id: id.clone(),
            })
            .await
        {
            out.push((id, attr.into_inner().info.unwrap_or_default().grpc_endpoint));
        }
    }
    out
}

/// The nodes serving `room` on every agent: (agent, node).
async fn room_nodes(stack: &Stack, room: &str) -> Vec<(String, agent_pb::NodeInfo)> {
    let mut out = Vec::new();
    for (agent, endpoint) in agents(stack).await {
        if let Ok(nodes) = grpc::node_manager(&endpoint)
            .list_nodes(agent_pb::ListNodesRequest {})
            .await
        {
            for n in nodes.into_inner().nodes {
                if n.room == room {
                    out.push((agent.clone(), n));
                }
            }
        }
    }
    out
}

async fn wait_workers(stack: &Stack, purpose: Purpose, n: usize) {
    let mut m = stack.manager_client();
    for _ in 0..200 {
        let count = m
            .get_workers(cluster::GetWorkersRequest {
                purpose: purpose.to_string(),
            })
            .await
            .map(|r| r.into_inner().workers.len())
            .unwrap_or(0);
        if count >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} {purpose} workers never registered");
}

struct Room {
    stack: Stack,
    room: String,
    clients: Vec<(PyClient, String)>,
    /// Texts acked `ok` (to everyone) and those refused.
    acked: Vec<String>,
    refused: Vec<String>,
    /// Every event each client received so far (the driver hands each
    /// event out once).
    seen: Vec<Vec<serde_json::Value>>,
}

/// A stack with two portals (and `agents` agents), one room of
/// `ROOM_SIZE` participants spread over both portals.
async fn room_of_twenty(agents: usize, extra_agent: &[&str]) -> Room {
    let mut stack = stack_with_agent(extra_agent, &[]).await;
    let other = stack.add_portal("b").await;
    for _ in 1..agents {
        stack
            .add_agent_with(extra_agent.iter().map(|s| s.to_string()).collect())
            .await;
    }
    wait_workers(&stack, Purpose::Portal, 2).await;
    wait_workers(&stack, Purpose::Conference, agents).await;
    let room = stack.room(-1).await;
    let mut clients = Vec::new();
    for i in 0..ROOM_SIZE {
        let (url, token) = if i % 2 == 0 {
            (
                stack.url(),
                stack.token(&room, &format!("a{i}"), "presenter").await,
            )
        } else {
            (
                format!("http://{other}"),
                stack.token_in_region(&room, &format!("b{i}"), "b").await,
            )
        };
        let (c, id, _) = logged_in_at(&url, &token, Flavor::Eio4Websocket, "1.2", "C++").await;
        clients.push((c, id));
    }
    Room {
        stack,
        room,
        clients,
        acked: Vec::new(),
        refused: Vec::new(),
        seen: vec![Vec::new(); ROOM_SIZE],
    }
}

impl Room {
    /// One text to everyone from client `from`; counted by its ack.
    async fn text(&mut self, from: usize, message: String) -> bool {
        let ack = self.clients[from]
            .0
            .emit("text", vec![json!({"to": "all", "message": message})])
            .await;
        let ok = ack == vec![json!("ok")];
        if ok {
            self.acked.push(message);
        } else {
            self.refused.push(message);
        }
        ok
    }

    /// Client `i`'s events so far.
    async fn events(&mut self, i: usize) -> &[serde_json::Value] {
        let new = self.clients[i].0.events().await;
        self.seen[i].extend(new);
        &self.seen[i]
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.clients.iter().map(|(_, id)| id.clone()).collect();
        ids.sort();
        ids
    }

    /// Text until the room works again, and until its new node lists all
    /// participants: (first text acked, all listed), from `since`.
    async fn until_recovered(&mut self, since: Instant, limit: Duration) -> (Duration, Duration) {
        let ids = self.ids();
        let (mut texted, mut listed) = (None, None);
        let mut i = 0;
        while since.elapsed() < limit && (texted.is_none() || listed.is_none()) {
            if texted.is_none() && self.text(i % ROOM_SIZE, format!("gap {i}")).await {
                texted = Some(since.elapsed());
            }
            let present = self.stack.conference_participants(&self.room).await;
            if listed.is_none() && ids.iter().all(|id| present.contains(id)) {
                listed = Some(since.elapsed());
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (
            texted.expect("texts flow again"),
            listed.expect("the new node lists every participant"),
        )
    }

    /// Every client: no `drop`, no `leave`, no join twice; every acked
    /// text exactly once; no text that was never sent.
    async fn assert_nothing_lost(&mut self) {
        let sent: BTreeSet<String> = self
            .acked
            .iter()
            .chain(self.refused.iter())
            .cloned()
            .collect();
        for i in 0..ROOM_SIZE {
            let id = self.clients[i].1.clone();
            // the last texts may still be on their way
            let mut events = Vec::new();
            for _ in 0..50 {
                events = self.events(i).await.to_vec();
                let texts = events.iter().filter(|e| e["event"] == "text").count();
                if texts >= self.acked.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                !events.iter().any(|e| e["event"] == "drop"),
                "{id} got drop: {events:?}"
            );
            let mut joins: BTreeMap<String, usize> = BTreeMap::new();
            for e in events.iter().filter(|e| e["event"] == "participant") {
                assert_ne!(e["data"]["action"], "leave", "{id} saw a leave: {e}");
                if e["data"]["action"] == "join" {
                    *joins
                        .entry(e["data"]["data"]["id"].as_str().unwrap_or("").to_string())
                        .or_default() += 1;
                }
            }
            assert!(
                joins.values().all(|n| *n == 1),
                "{id} saw a repeated join: {joins:?}"
            );
            let mut got: BTreeMap<String, usize> = BTreeMap::new();
            for e in events.iter().filter(|e| e["event"] == "text") {
                let m = e["data"]["message"].as_str().unwrap_or("").to_string();
                assert!(sent.contains(&m), "{id} got a text never sent: {m}");
                *got.entry(m).or_default() += 1;
            }
            for m in &self.acked {
                assert_eq!(got.get(m), Some(&1), "{id}: acked text {m:?} arrived once");
            }
            for m in &self.refused {
                assert!(
                    got.get(m).is_none_or(|n| *n == 1),
                    "{id}: {m:?} at most once"
                );
            }
        }
    }

    async fn quit(self) {
        for (c, _) in self.clients {
            c.quit().await;
        }
    }
}

/// Texts before, during and after the loss; the room on exactly one node.
async fn lose_and_check(
    mut r: Room,
    scenario: &str,
    lose: impl FnOnce(&mut Room, &agent_pb::NodeInfo, &str),
    limit: Duration,
    other_agent: bool,
    killed: &[usize],
    newcomer_in_gap: bool,
) {
    // a client that logs in right after the loss, during the gap
    let mut newcomer = if newcomer_in_gap {
        let token = r.stack.token(&r.room, "newcomer", "presenter").await;
        Some((
            PyClient::connect_url(&r.stack.url(), Flavor::Eio4Websocket).await,
            token,
        ))
    } else {
        None
    };
    for i in 0..5 {
        assert!(r.text(i, format!("before {i}")).await);
    }
    let nodes = room_nodes(&r.stack, &r.room).await;
    assert_eq!(nodes.len(), 1, "one node serves the room");
    let (agent, node) = nodes.into_iter().next().unwrap();
    // one participant's permission changed by the application (REST PATCH):
    // the rebuilt room must keep it
    let changed = r.clients[0].1.clone();
    grpc::conference(&node.endpoint)
        .control_participant(conf::ControlParticipantRequest {
            participant_id: changed.clone(),
            changes: vec![conf::PermissionChange {
                path: "/permission/publish/audio".into(),
                media: None,
                flag: false,
            }],
        })
        .await
        .unwrap();
    let started = Instant::now();
    lose(&mut r, &node, &agent);
    let newcomer = match newcomer.take() {
        Some((mut c, token)) => {
            let ack = c.login_as(&token, "1.2", "C++").await;
            assert_eq!(ack[0], "ok", "a login during the gap: {ack:?}");
            let id = c.sid.clone();
            let known: Vec<String> = ack[1]["room"]["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_string())
                .collect();
            timing(
                scenario,
                "login during the gap answered after",
                started.elapsed(),
            );
            Some((c, id, known))
        }
        None => None,
    };
    let (texted, listed) = r
        .until_recovered(started, limit + Duration::from_secs(5))
        .await;
    timing(scenario, "first text acked ok after", texted);
    timing(scenario, "new node lists all 20 after", listed);
    assert!(listed <= limit, "{scenario}: listed after {listed:?}");
    let acked_before_after = r.acked.len();
    for i in 0..5 {
        assert!(r.text(ROOM_SIZE - 1 - i, format!("after {i}")).await);
    }
    let nodes = room_nodes(&r.stack, &r.room).await;
    assert_eq!(nodes.len(), 1, "exactly one node for the room: {nodes:?}");
    let (new_agent, new_node) = &nodes[0];
    assert_ne!(new_node.node_id, node.node_id, "a fresh node");
    let listed = grpc::conference(&new_node.endpoint)
        .get_participants(conf::GetParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants;
    for p in &listed {
        let publish = p.permission.unwrap_or_default().publish.unwrap_or_default();
        assert_eq!(
            publish.audio,
            p.id != changed,
            "{}: the permission it had before",
            p.id
        );
        assert!(publish.video && p.role == "presenter" && !p.user.is_empty());
    }
    if other_agent {
        assert_ne!(new_agent, &agent, "on the other agent");
    }
    assert_eq!(
        r.stack.room_agent(&r.room).await,
        *new_agent,
        "the manager's task matches the placement"
    );
    if let Some((mut c, id, known)) = newcomer {
        // it knows all 20 (from its login answer or their join notices, once
        // each), the 20 heard it join once, and it gets the texts after
        let mut ids = r.ids();
        ids.push(id.clone());
        ids.sort();
        assert_eq!(
            r.stack.conference_participants(&r.room).await,
            ids,
            "it is in the rebuilt room"
        );
        let after = &r.acked[acked_before_after..];
        let mut events = Vec::new();
        for _ in 0..50 {
            events.extend(c.events().await);
            if events.iter().filter(|e| e["event"] == "text").count() >= after.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for k in known.iter().filter(|k| **k != id) {
            *seen.entry(k.clone()).or_default() += 1;
        }
        for e in events.iter().filter(|e| e["event"] == "participant") {
            assert_eq!(e["data"]["action"], "join", "{e}");
            *seen
                .entry(e["data"]["data"]["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let others: BTreeMap<String, usize> = r.ids().into_iter().map(|i| (i, 1)).collect();
        assert_eq!(seen, others, "the newcomer knows each of the 20 once");
        assert!(!events.iter().any(|e| e["event"] == "drop"));
        for m in after {
            let n = events
                .iter()
                .filter(|e| e["event"] == "text" && e["data"]["message"] == m.as_str())
                .count();
            assert_eq!(n, 1, "the newcomer got {m:?} once");
        }
        for i in 0..ROOM_SIZE {
            let other_id = r.clients[i].1.clone();
            let joins = r
                .events(i)
                .await
                .iter()
                .filter(|e| {
                    e["event"] == "participant"
                        && e["data"]["action"] == "join"
                        && e["data"]["data"]["id"] == id.as_str()
                })
                .count();
            assert_eq!(joins, 1, "{other_id} heard the newcomer join once");
        }
        c.quit().await;
    }
    r.assert_nothing_lost().await;
    eprintln!(
        "ROOM-TEXTS {scenario}: {} acked, {} refused during the gap, 0 lost",
        r.acked.len(),
        r.refused.len()
    );
    r.stack.assert_invariants(killed).await;
    r.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_room_is_rebuilt_and_nobody_notices() {
    if !have_clients() {
        return;
    }
    let r = room_of_twenty(1, &[]).await;
    lose_and_check(
        r,
        "node SIGKILL",
        |_, node, _| {
            std::process::Command::new("kill")
                .args(["-KILL", &node.pid.to_string()])
                .status()
                .unwrap();
        },
        Duration::from_secs(2),
        false,
        &[],
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_s_room_is_rebuilt_once_the_agent_kills_it() {
    if !have_clients() {
        return;
    }
    let r = room_of_twenty(1, &[]).await;
    lose_and_check(
        r,
        "node SIGSTOP",
        |_, node, _| {
            std::process::Command::new("kill")
                .args(["-STOP", &node.pid.to_string()])
                .status()
                .unwrap();
        },
        // the agent's health checks kill it first (about 3.5 s), then 2 s
        Duration::from_secs(6),
        false,
        &[],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_s_room_moves_to_the_other_agent_and_nobody_notices() {
    if !have_clients() {
        return;
    }
    let r = room_of_twenty(2, &[]).await;
    // which process is the room's agent? its log names its worker id
    let agent = r.stack.room_agent(&r.room).await;
    let index = (0..r.stack.processes.len())
        .find(|i| {
            r.stack.processes[*i]
                .history
                .iter()
                .any(|l| l.contains(&agent))
        })
        .expect("the room's agent is one of ours");
    lose_and_check(
        r,
        "agent SIGKILL",
        move |r, _, _| r.stack.processes[index].signal("KILL"),
        Duration::from_secs(5),
        true,
        &[index],
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_agent_gone_the_participants_are_dropped_with_the_reason() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut a = stack.logged_in(&room, "a").await;
    // 0 manager, 1 management, 2 the agent, 3 the portal
    let agent = 2;
    let killed = Instant::now();
    stack.processes[agent].signal("KILL");
    let dropped = a.wait_event("drop", 15.0).await.expect("dropped");
    timing("all agents SIGKILL", "drop after", killed.elapsed());
    assert_eq!(
        dropped,
        json!({"reason": "No conference agent can host the room"})
    );
    assert!(a.wait_disconnect(5.0).await);
    let logs = stack.drain_logs(3).join("\n");
    assert!(
        logs.contains("no conference agent can host the room; dropping its participants"),
        "the portal's log says why"
    );
    a.quit().await;
}

/// An agent paused past its liveness bound is counted out and its room is
/// rebuilt on the other agent, while its own node of the room, which the
/// pause did not stop, goes on running. When it resumes, its stale node
/// must not keep the room: here (one manager) the manager tells it that it
/// was dropped and it drops its nodes (OWT); behind an election, where the
/// new leader still counts it as known, the manager refuses its re-announced
/// room instead (`faults.rs`, `a_re_announced_room_another_agent_executes_is_refused`).
/// Either way the room ends on exactly one node, the one the scheduler
/// names, and nobody notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_s_stale_node_lets_go_when_it_resumes() {
    if !have_clients() {
        return;
    }
    let mut r = room_of_twenty(2, &[]).await;
    for i in 0..5 {
        assert!(r.text(i, format!("before {i}")).await);
    }
    let agent = r.stack.room_agent(&r.room).await;
    let index = (0..r.stack.processes.len())
        .find(|i| {
            r.stack.processes[*i]
                .history
                .iter()
                .any(|l| l.contains(&agent))
        })
        .expect("the room's agent is one of ours");
    let stale = room_nodes(&r.stack, &r.room).await;
    assert_eq!(stale.len(), 1, "one node serves the room");
    let stale = stale[0].1.clone();
    let started = Instant::now();
    r.stack.processes[index].signal("STOP");
    // counted out, the room rebuilt on the other agent
    let mut moved = false;
    while started.elapsed() < Duration::from_secs(15) {
        if r.stack.room_agent(&r.room).await != agent {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.stack.processes[index].signal("CONT");
    assert!(moved, "the paused agent's room moved");
    let (texted, listed) = r.until_recovered(started, Duration::from_secs(20)).await;
    timing("agent SIGSTOP", "first text acked ok after", texted);
    timing("agent SIGSTOP", "new node lists all 20 after", listed);
    // resumed: the stale node lets go, the room stays where it was rebuilt
    let resumed = Instant::now();
    let mut nodes = Vec::new();
    while resumed.elapsed() < Duration::from_secs(15) {
        nodes = room_nodes(&r.stack, &r.room).await;
        if nodes.len() == 1
            && nodes[0].1.node_id != stale.node_id
            && agents(&r.stack).await.len() == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(nodes.len(), 1, "exactly one node for the room: {nodes:?}");
    assert_ne!(nodes[0].1.node_id, stale.node_id, "not the stale one");
    timing(
        "agent SIGSTOP",
        "stale node gone after the resume",
        resumed.elapsed(),
    );
    assert_eq!(
        r.stack.room_agent(&r.room).await,
        nodes[0].0,
        "the manager's task matches the placement"
    );
    for i in 0..5 {
        assert!(r.text(ROOM_SIZE - 1 - i, format!("after {i}")).await);
    }
    r.assert_nothing_lost().await;
    r.stack.assert_invariants(&[]).await;
    r.quit().await;
}
