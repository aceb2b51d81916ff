//! Fault injection over the real binaries on loopback: processes killed with
//! SIGKILL, restarted, paused with SIGSTOP. After each scenario the portal's
//! participants and the conference's agree and no task is orphaned. The
//! measured detection and recovery times are printed (`FAULT-TIMING` lines)
//! and written down in RELIABILITY.md.

use conclave_e2e::*;
use conclave_proto::cluster::v1 as cluster;
use conclave_stack::testing::grpc;
use serde_json::json;
use std::time::{Duration, Instant};

fn timing(scenario: &str, what: &str, d: Duration) {
    eprintln!(
        "FAULT-TIMING {scenario}: {what} {:.0} ms",
        d.as_secs_f64() * 1000.0
    );
}

async fn workers(stack: &Stack, purpose: &str) -> Vec<String> {
    stack
        .manager_client()
        .get_workers(cluster::GetWorkersRequest {
            purpose: purpose.into(),
        })
        .await
        .map(|r| r.into_inner().workers)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_manager_killed_and_restarted_under_a_trickle_of_logins() {
    if !have_clients() {
        return;
    }
    let mut stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut stayer = stack.logged_in(&room, "stayer").await;
    let agent_before = stack.room_agent(&room).await;
    // tokens made while the manager is up: logins during the outage need
    // none. Logins into a room nobody is in yet need the scheduler; logins
    // into the stayer's room join its node directly (the portal knows it).
    let fresh = stack.room(-1).await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(stack.token(&fresh, &format!("t{i}"), "viewer").await);
    }
    let served = stack.token(&room, "served", "viewer").await;

    stack.kill_manager();
    let killed = Instant::now();
    let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    let ack = c.login(&served, "1.2").await;
    assert_eq!(
        ack[0], "ok",
        "a login into a room the portal serves works without the manager: {ack:?}"
    );
    c.quit().await;
    let mut during = Vec::new();
    for token in tokens.drain(..3) {
        let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = c.login(&token, "1.2").await;
        during.push(ack);
        c.quit().await;
    }
    for ack in &during {
        assert_eq!(
            ack[0], "error",
            "logins fail while the manager is down: {ack:?}"
        );
        let reason = ack[1].as_str().unwrap();
        assert!(
            reason.starts_with("Timeout to make rpc") || reason.contains("is not reachable"),
            "a clear error: {reason}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stack.restart_manager(2000).await;
    let restarted = Instant::now();
    timing(
        "manager restart",
        "outage (kill to restart)",
        restarted - killed,
    );
    // a steady trickle: one login every 200 ms until one succeeds
    let mut first_ok = None;
    for token in tokens.iter() {
        let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = c.login(token, "1.2").await;
        c.quit().await;
        if ack[0] == "ok" {
            first_ok = Some(restarted.elapsed());
            break;
        }
        let reason = ack[1].as_str().unwrap_or_default().to_string();
        assert!(
            reason == "cluster manager is not ready."
                || reason.starts_with("Timeout")
                || reason.contains("reachable")
                || reason.contains("No scheduler"),
            "only clear errors while the cluster recovers: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_ok = first_ok.expect("logins succeed again");
    timing(
        "manager restart",
        "restart to first successful login",
        first_ok,
    );
    assert!(
        first_ok <= Duration::from_secs(4),
        "logins back within about 3 s: {first_ok:?}"
    );

    // the survivor never noticed; workers rejoined and re-announced their tasks
    assert!(stayer.connected().await);
    assert_eq!(
        stayer
            .emit("text", vec![json!({"to": "all", "message": "still here"})])
            .await,
        vec![json!("ok")]
    );
    assert_eq!(workers(&stack, "portal").await.len(), 1);
    assert_eq!(workers(&stack, "conference").await.len(), 1);
    let agent_after = stack.room_agent(&room).await;
    assert_eq!(agent_after, agent_before, "the room kept its agent");
    assert!(
        !stack.portal_tasks().await.is_empty(),
        "the portal re-announced its token tasks"
    );
    let mut ids = vec![stayer.sid.clone()];
    ids.extend(
        stack
            .clients()
            .await
            .into_iter()
            .filter(|c| c.room == room)
            .map(|c| c.participant_id)
            .filter(|p| p != &stayer.sid),
    );
    ids.sort();
    ids.dedup();
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    stack.assert_participants(&room, &expected).await;
    stack.assert_invariants(&[]).await;
    stayer.quit().await;
}

/// Issue 20, point 4: the one cluster manager paused (SIGSTOP, as a VM
/// pause) for 10 s, far past the workers' liveness bound, then resumed.
/// Its late sweep renews every deadline instead of evicting the world, and
/// workers that lost their keep-alives rejoin a manager that still knows
/// them: nobody is dropped, rooms keep their agent, logins work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_manager_paused_for_10_s_drops_nobody() {
    if !have_clients() {
        return;
    }
    let mut stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut stayers = Vec::new();
    for i in 0..3 {
        stayers.push(stack.logged_in(&room, &format!("stayer{i}")).await);
    }
    let agent_before = stack.room_agent(&room).await;
    // logins into a room nobody is in yet: they need the scheduler
    let fresh = stack.room(-1).await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(stack.token(&fresh, &format!("t{i}"), "viewer").await);
    }

    stack.processes[0].signal("STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    stack.processes[0].signal("CONT");
    let resumed = Instant::now();
    // a trickle of logins from the resume until one succeeds
    let mut first_ok = None;
    for token in tokens.iter() {
        let mut c = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        let ack = c.login(token, "1.2").await;
        c.quit().await;
        if ack[0] == "ok" {
            first_ok = Some(resumed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_ok = first_ok.expect("logins succeed again");
    timing(
        "manager paused 10 s",
        "resume to first successful login",
        first_ok,
    );
    assert!(
        first_ok <= Duration::from_secs(3),
        "logins back within 3 s of the resume: {first_ok:?}"
    );
    // nobody was dropped, and they can text
    for s in stayers.iter_mut() {
        assert!(s.wait_event("drop", 0.5).await.is_none(), "no drop");
        assert!(s.connected().await);
        assert_eq!(
            s.emit("text", vec![json!({"to": "all", "message": "still here"})])
                .await,
            vec![json!("ok")]
        );
    }
    assert_eq!(workers(&stack, "portal").await.len(), 1);
    assert_eq!(workers(&stack, "conference").await.len(), 1);
    assert_eq!(
        stack.room_agent(&room).await,
        agent_before,
        "the room kept its agent"
    );
    let late_sweep = stack
        .drain_logs(0)
        .iter()
        .any(|l| l.contains("the liveness sweep ran late"));
    assert!(late_sweep, "the manager saw its own pause");
    stack.assert_invariants(&[]).await;
    for s in stayers {
        s.quit().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_rooms_move_with_their_participants() {
    if !have_clients() {
        return;
    }
    let mut stack = stack(&[]).await;
    stack.add_agent().await;
    // wait for both agents to be schedulable
    for _ in 0..100 {
        if workers(&stack, "conference").await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // rooms land where last-used puts them: find one on each agent
    let first_agent_room = stack.room(-1).await;
    let mut a = stack.logged_in(&first_agent_room, "a").await;
    let agent = stack.room_agent(&first_agent_room).await;
    let victim = agent.clone();
    // which process is the victim (2: the first agent, 4: the added one)? its log names its worker id
    let mut victim_index = None;
    for i in [2usize, 4] {
        let logs = stack.processes[i].history.join("\n");
        if logs.contains(&victim) {
            victim_index = Some(i);
        }
    }
    let i = victim_index.expect("the room's agent is one of ours");
    let killed = Instant::now();
    stack.processes[i].signal("KILL");
    for _ in 0..200 {
        if !workers(&stack, "conference").await.contains(&victim) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost_after = killed.elapsed();
    assert!(!workers(&stack, "conference").await.contains(&victim));
    timing(
        "agent SIGKILL",
        "kill to removed by the manager",
        lost_after,
    );
    assert!(
        lost_after <= Duration::from_secs(6),
        "about 4 s: {lost_after:?}"
    );
    // its participant kept its seat: the room moved to the other agent
    // (issue 16), and a new login lands there too
    let a_sid = a.sid.clone();
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(5), || async {
            stack.conference_participants(&first_agent_room).await == [a_sid.clone()]
        })
        .await,
        "the room is rebuilt on the other agent"
    );
    timing(
        "agent SIGKILL",
        "kill to room rebuilt on the other agent",
        killed.elapsed(),
    );
    a.assert_still_seated().await;
    let b = stack.logged_in(&first_agent_room, "b").await;
    let now = stack.room_agent(&first_agent_room).await;
    assert_ne!(now, victim);
    stack
        .assert_participants(&first_agent_room, &[&a.sid, &b.sid])
        .await;
    // no orphan node of the killed agent
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orphans = std::process::Command::new("pgrep")
        .args(["-f", &format!("--node-id {victim}")])
        .output()
        .unwrap();
    assert!(
        orphans.stdout.is_empty(),
        "nodes outlived their agent: {}",
        String::from_utf8_lossy(&orphans.stdout)
    );
    stack.assert_invariants(&[i]).await;
    a.quit().await;
    b.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_portal_leaves_its_rooms_and_the_others_hear_it() {
    if !have_clients() {
        return;
    }
    let mut stack = stack(&[]).await;
    let other = stack.add_portal("b").await;
    for _ in 0..100 {
        if workers(&stack, "portal").await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let room = stack.room(-1).await;
    let mut here = stack.logged_in(&room, "here").await;
    let token = stack.token_in_region(&room, "there", "b").await;
    let host = conclave_common::token::JoinToken::decode(&token)
        .unwrap()
        .host;
    assert_eq!(host, other, "the region preference picks the second portal");
    let mut there = PyClient::connect_url(&format!("http://{other}"), Flavor::Eio4Websocket).await;
    assert_eq!(there.login(&token, "1.2").await[0], "ok");
    assert_eq!(
        here.wait_event("participant", 5.0).await.unwrap()["action"],
        "join"
    );
    let other_worker = workers(&stack, "portal")
        .await
        .into_iter()
        .find(|w| w != &stack.portal_worker)
        .unwrap();

    let killed = Instant::now();
    let last = stack.processes.len() - 1;
    stack.processes[last].signal("KILL");
    let left = here
        .wait_event("participant", 10.0)
        .await
        .expect("the others are told");
    assert_eq!(left, json!({"action": "leave", "data": there.sid}));
    let told = killed.elapsed();
    timing("portal SIGKILL", "kill to leave heard by the others", told);
    assert!(told <= Duration::from_secs(7), "about 5 s: {told:?}");
    stack.assert_participants(&room, &[&here.sid]).await;
    // the dead portal's executing token task was released with it
    let tasks = stack
        .manager_client()
        .get_tasks(cluster::GetTasksRequest {
            worker_id: other_worker,
        })
        .await;
    assert!(tasks.is_err(), "the dead portal is gone from the cluster");
    stack.assert_invariants(&[last]).await;
    here.quit().await;
    there.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_treated_as_dead_and_resuming_it_duplicates_nothing() {
    if !have_clients() {
        return;
    }
    let mut stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut a = stack.logged_in(&room, "a").await;
    let nodes = stack.nodes().await;
    let node = nodes.into_iter().find(|n| n.room == room).unwrap();
    let paused = Instant::now();
    std::process::Command::new("kill")
        .args(["-STOP", &node.pid.to_string()])
        .status()
        .unwrap();
    // the agent's health checks kill it; the room is rebuilt on a fresh
    // node with its participant (issue 16)
    let a_sid = a.sid.clone();
    let old_node = node.node_id.clone();
    assert!(
        conclave_stack::testing::eventually(Duration::from_secs(15), || async {
            stack
                .nodes()
                .await
                .iter()
                .any(|n| n.room == room && n.node_id != old_node)
                && stack.conference_participants(&room).await == [a_sid.clone()]
        })
        .await,
        "the room is rebuilt on a fresh node"
    );
    timing("node SIGSTOP", "pause to room rebuilt", paused.elapsed());
    a.assert_still_seated().await;
    std::process::Command::new("kill")
        .args(["-CONT", &node.pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = std::fs::read_to_string(format!("/proc/{}/stat", node.pid))
        .is_ok_and(|s| !s.contains(") Z"));
    assert!(!alive, "the paused node was killed, not resumed");
    let nodes = stack.nodes().await;
    assert!(
        nodes.iter().filter(|n| n.room == room).count() <= 1,
        "no duplicate room"
    );
    // a newcomer joins the rebuilt room
    let b = stack.logged_in(&room, "b").await;
    stack.assert_participants(&room, &[&a.sid, &b.sid]).await;
    stack.assert_invariants(&[]).await;
    a.quit().await;
    b.quit().await;
}

/// A room whose task another live agent executes is not given to an agent
/// that re-announces it after a rejoin (the manager restarted here; in the
/// chaos soak, an agent counted out while paused, behind an election that
/// still knew it): the manager refuses it, so the room stays where it is
/// executed, and the re-announcing agent stops its own node of the room.
/// OWT moved the task to the claimant ("worker conflicts") and left both
/// nodes serving the room, with its participants split between them. A
/// `GetNode` for that room on the refused agent is answered with the
/// reason, and no node of it takes the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_announced_room_another_agent_executes_is_refused() {
    let mut stack = stack(&[]).await;
    let room = "refused-room".to_string();
    let mut agent = conclave_proto::agent::v1::node_manager_client::NodeManagerClient::new(
        conclave_common::grpc::channel(&stack.agent, Duration::from_secs(10)).unwrap(),
    );
    let get_node = conclave_proto::agent::v1::GetNodeRequest {
        room: room.clone(),
        task: room.clone(),
    };
    let mut node = None;
    for _ in 0..100 {
        if let Ok(n) = agent.get_node(get_node.clone()).await {
            node = Some(n.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = node.expect("the agent gives the room a node");
    let agent_id = stack.room_agent(&room).await;
    let serving = |nodes: Vec<conclave_proto::agent::v1::NodeInfo>| {
        nodes
            .into_iter()
            .filter(|n| n.room == room)
            .map(|n| n.node_id)
            .collect::<Vec<_>>()
    };
    let listed = agent
        .list_nodes(conclave_proto::agent::v1::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(serving(listed), vec![node.node_id.clone()]);

    // the manager restarts; another agent executes the room before ours
    // re-announces it
    stack.kill_manager();
    stack.restart_manager(2000).await;
    let mut manager = stack.manager_client();
    let other = "conference-other@test".to_string();
    manager
        .join(cluster::JoinRequest {
            purpose: "conference".into(),
            worker_id: other.clone(),
            info: Some(cluster::WorkerInfo {
                grpc_endpoint: "127.0.0.1:9".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let reply = manager
        .pick_up_tasks(cluster::PickUpTasksRequest {
            worker_id: other.clone(),
            tasks: vec![room.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.refused.is_empty(), "first to announce: {reply:?}");
    let restarted = Instant::now();
    // keep the other agent alive while ours rejoins and re-announces
    let mut gone = false;
    while restarted.elapsed() < Duration::from_secs(15) {
        let _ = manager
            .keep_alive(cluster::KeepAliveRequest {
                worker_id: other.clone(),
            })
            .await;
        let listed = agent
            .list_nodes(conclave_proto::agent::v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        if serving(listed).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the refused agent stops its node of the room");
    timing(
        "re-announced room refused",
        "stale node stopped after the manager restart",
        restarted.elapsed(),
    );
    assert_eq!(
        stack.room_agent(&room).await,
        other,
        "the room stays with the agent executing it"
    );
    let refused = agent.get_node(get_node.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains(conclave_common::cluster_worker::SERVED_ELSEWHERE),
        "{}",
        refused.message()
    );
    // the node it took for the request stops (asynchronously)
    let refused_at = Instant::now();
    let mut serving_now = vec![String::new()];
    while refused_at.elapsed() < Duration::from_secs(10) {
        let listed = agent
            .list_nodes(conclave_proto::agent::v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        serving_now = serving(listed);
        if serving_now.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        serving_now.is_empty(),
        "no node of ours keeps the room: {serving_now:?}"
    );
    assert!(
        !grpc::tasks_of(&stack.manager, &agent_id)
            .await
            .contains(&room),
        "our agent holds no task of the room"
    );
    // the other agent lets go: the room is ours again on request
    manager
        .lay_down_task(cluster::LayDownTaskRequest {
            worker_id: other.clone(),
            task: room.clone(),
        })
        .await
        .unwrap();
    manager
        .quit(cluster::QuitRequest {
            worker_id: other.clone(),
        })
        .await
        .unwrap();
    assert!(agent.get_node(get_node).await.is_ok(), "free again");
    assert_eq!(stack.room_agent(&room).await, agent_id);
}
