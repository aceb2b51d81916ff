//! The conference agent with real `conference` processes, the real cluster
//! manager and management, and a fake portal that records notifications.

mod support;

use conclave_proto::agent::v1 as agent_pb;
use conclave_proto::agent::v1::node_info::State;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_event::Kind;
use conclave_proto::conference::v1 as conf;
use serde_json::json;
use std::time::Duration;
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getnode_join_text_leave_through_real_nodes() {
    let c = cluster("last-used").await;
    let a = start_agent(agent_config(&c)).await;
    let room = create_room(&c, -1).await;
    assert_eq!(schedule_room(&c, &room).await, a.id);
    let node = get_node(&a, &room).await;
    assert_eq!(node.node_id, format!("{}_0", a.id));
    assert!(node.endpoint.starts_with("127.0.0.1:"), "{}", node.endpoint);
    assert_eq!(
        get_node(&a, &room).await,
        node,
        "the same room keeps its node"
    );
    assert_eq!(
        tasks_of(&c, &a.id).await,
        vec![room.clone()],
        "room picked up"
    );

    let first = join(&c, &node.endpoint, &room, "p1", "presenter")
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&first.room).unwrap();
    assert_eq!(info["id"], room.as_str());
    assert_eq!(info["views"], json!(["common"]));
    assert_eq!(
        info["participants"],
        json!([{"id": "p1", "user": "user-p1", "role": "presenter"}])
    );
    assert_eq!(info["streams"], json!([]));
    let perm = first.permission.unwrap();
    assert!(perm.publish.unwrap().video && perm.subscribe.unwrap().audio);
    let second = join(&c, &node.endpoint, &room, "p2", "viewer")
        .await
        .unwrap();
    assert!(!second.permission.unwrap().publish.unwrap().audio);
    let calls = c.portal.wait_for(2).await;
    assert!(
        calls.contains(&Call::Broadcast {
            controller: node.node_id.clone(),
            exclude: vec!["p2".into()],
            recipients: vec![("p1".into(), 1)],
            event: "participant".into(),
            data: json!({"action": "join", "data": {"id": "p2", "user": "user-p2", "role": "viewer"}}),
        }),
        "{calls:?}"
    );
    c.portal.clear();

    let mut node_client = conference(&node.endpoint);
    node_client
        .text(conf::TextRequest {
            from: "p1".into(),
            to: "p2".into(),
            message: "hi".into(),
        })
        .await
        .unwrap();
    node_client
        .text(conf::TextRequest {
            from: "p2".into(),
            to: "all".into(),
            message: "hello".into(),
        })
        .await
        .unwrap();
    let calls = c.portal.wait_for(2).await;
    assert_eq!(
        calls,
        vec![
            // to one: its recipient only, with its own sequence number
            Call::Broadcast {
                controller: node.node_id.clone(),
                exclude: vec![],
                recipients: vec![("p2".into(), 1)],
                event: "text".into(),
                data: json!({"from": "p1", "to": "me", "message": "hi"}),
            },
            Call::Broadcast {
                controller: node.node_id.clone(),
                exclude: vec![],
                recipients: vec![("p1".into(), 2), ("p2".into(), 2)],
                event: "text".into(),
                data: json!({"from": "p2", "to": "all", "message": "hello"}),
            },
        ]
    );
    c.portal.clear();
    let err = node_client
        .text(conf::TextRequest {
            from: "p1".into(),
            to: "nobody".into(),
            message: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Target participant does NOT exist: nobody");
    let err = node_client
        .text(conf::TextRequest {
            from: "p1".into(),
            to: "all".into(),
            message: "x".repeat(2049),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    node_client
        .leave(conf::LeaveRequest {
            participant_id: "p1".into(),
        })
        .await
        .unwrap();
    let calls = c.portal.wait_for(1).await;
    assert_eq!(
        calls,
        vec![Call::Broadcast {
            controller: node.node_id.clone(),
            exclude: vec!["p1".into()],
            recipients: vec![("p2".into(), 3)],
            event: "participant".into(),
            data: json!({"action": "leave", "data": "p1"}),
        }]
    );
    let err = node_client
        .leave(conf::LeaveRequest {
            participant_id: "p1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "Participant has not joined")
    );
    let listed = node_client
        .get_participants(conf::GetParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.room_id, room);
    assert_eq!(
        listed
            .participants
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        ["p2"]
    );

    // a second room gets another node; the first node refuses it
    let room2 = create_room(&c, -1).await;
    let err = join(&c, &node.endpoint, &room2, "p9", "presenter")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "room id clash");
    let node2 = get_node(&a, &room2).await;
    assert_ne!(node2.node_id, node.node_id);
    let q = a
        .client()
        .query_node(agent_pb::QueryNodeRequest {
            room: room2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (q.node_id, q.endpoint),
        (node2.node_id.clone(), node2.endpoint.clone())
    );
    let nodes = list_nodes(&a).await;
    let in_use: Vec<_> = nodes
        .iter()
        .filter(|n| n.state == State::InUse as i32)
        .map(|n| n.room.clone())
        .collect();
    assert_eq!(in_use.len(), 2);
    assert!(in_use.contains(&room) && in_use.contains(&room2));
    assert!(
        eventually(Duration::from_secs(10), || async {
            list_nodes(&a)
                .await
                .iter()
                .filter(|n| n.state == State::Idle as i32)
                .count()
                == 2
        })
        .await,
        "the idle pool is refilled to prerunProcesses"
    );

    // dropping a participant goes through its portal
    node_client
        .drop_participant(conf::DropParticipantRequest {
            participant_id: "p2".into(),
            reason: String::new(),
        })
        .await
        .unwrap();
    assert!(c.portal.wait_for(1).await.contains(&Call::Drop {
        participant: "p2".into()
    }));
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_limits_and_bad_input() {
    let c = cluster("last-used").await;
    let a = start_agent(agent_config(&c)).await;
    let room = create_room(&c, 1).await;
    schedule_room(&c, &room).await;
    let node = get_node(&a, &room).await;
    join(&c, &node.endpoint, &room, "p1", "presenter")
        .await
        .unwrap();
    let err = join(&c, &node.endpoint, &room, "p2", "presenter")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Room is full");
    let err = join(&c, &node.endpoint, &room, "p1", "presenter")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Room is full");
    let room2 = create_room(&c, -1).await;
    let node2 = get_node(&a, &room2).await;
    join(&c, &node2.endpoint, &room2, "p1", "presenter")
        .await
        .unwrap();
    let err = join(&c, &node2.endpoint, &room2, "p1", "viewer")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Participant already in room");
    let err = join(&c, &node2.endpoint, &room2, "p3", "admin")
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Invalid role");
    let err = join(&c, &node2.endpoint, &room2, "", "viewer")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = conference(&node2.endpoint)
        .join(conf::JoinRequest {
            room_id: room2.clone(),
            participant: None,
            pending: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut agent = a.client();
    for (room, task) in [("", "t"), ("r", ""), ("", "")] {
        let err = agent
            .get_node(agent_pb::GetNodeRequest {
                room: room.into(),
                task: task.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "Invalid task")
        );
    }
    let err = agent
        .query_node(agent_pb::QueryNodeRequest {
            room: "no-such-room".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "No such a task")
    );

    // an unknown room: the node says so and exits, and is replaced
    let ghost = get_node(&a, "000000000000000000000000").await;
    let err = join(
        &c,
        &ghost.endpoint,
        "000000000000000000000000",
        "p1",
        "presenter",
    )
    .await
    .unwrap_err();
    assert_eq!(err.message(), "Joining room failed: Room not found");
    assert!(
        eventually(Duration::from_secs(10), || async {
            !list_nodes(&a)
                .await
                .iter()
                .any(|n| n.node_id == ghost.node_id)
        })
        .await
    );
    assert!(
        !tasks_of(&c, &a.id)
            .await
            .contains(&"000000000000000000000000".to_string())
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reported_laid_down_and_replaced() {
    let c = cluster("last-used").await;
    let mut watch = manager(&c)
        .watch(cluster::WatchRequest {
            purposes: vec!["conference".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let a = start_agent(agent_config(&c)).await;
    let room = create_room(&c, -1).await;
    schedule_room(&c, &room).await;
    let node = get_node(&a, &room).await;
    join(&c, &node.endpoint, &room, "p1", "presenter")
        .await
        .unwrap();
    let pid = list_nodes(&a)
        .await
        .into_iter()
        .find(|n| n.node_id == node.node_id)
        .unwrap()
        .pid;
    assert!(alive(pid));
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();

    let exited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = watch.next().await.unwrap().unwrap();
            if e.kind == Kind::NodeExited as i32 {
                return e;
            }
        }
    })
    .await
    .expect("node exit reported on Watch");
    assert_eq!(
        (
            exited.id.as_str(),
            exited.r#type.as_str(),
            exited.reason.as_str(),
            exited.worker_id.as_str()
        ),
        (node.node_id.as_str(), "node", "abnormal", a.id.as_str())
    );
    assert!(tasks_of(&c, &a.id).await.is_empty(), "room laid down");
    assert!(
        eventually(Duration::from_secs(10), || async {
            let nodes = list_nodes(&a).await;
            !nodes.iter().any(|n| n.node_id == node.node_id)
                && nodes
                    .iter()
                    .filter(|n| n.state == State::Idle as i32)
                    .count()
                    == 2
        })
        .await,
        "pool refilled"
    );
    let fresh = get_node(&a, &room).await;
    assert_ne!(fresh.node_id, node.node_id);
    join(&c, &fresh.endpoint, &room, "p1", "presenter")
        .await
        .unwrap();
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_self_cleans_and_its_process_exits() {
    let c = cluster("last-used").await;
    let mut config = agent_config(&c);
    config.node.self_clean_timeout = 400;
    config.agent.prerun_processes = 1;
    let a = start_agent(config).await;
    let room = create_room(&c, -1).await;
    schedule_room(&c, &room).await;
    let node = get_node(&a, &room).await;
    join(&c, &node.endpoint, &room, "p1", "presenter")
        .await
        .unwrap();
    let pid = list_nodes(&a)
        .await
        .into_iter()
        .find(|n| n.node_id == node.node_id)
        .unwrap()
        .pid;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(alive(pid), "occupied rooms stay");
    conference(&node.endpoint)
        .leave(conf::LeaveRequest {
            participant_id: "p1".into(),
        })
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async move { !alive(pid) }).await,
        "the node process exits"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            !list_nodes(&a)
                .await
                .iter()
                .any(|n| n.node_id == node.node_id)
        })
        .await
    );
    assert!(
        tasks_of(&c, &a.id).await.is_empty(),
        "room laid down after self-clean"
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_rooms_by_strategy() {
    let c = cluster("round-robin").await;
    let a = start_agent(agent_config(&c)).await;
    let b = start_agent(agent_config(&c)).await;
    let m = manager(&c);
    // both schedulable before scheduling rooms
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut m = m.clone();
            let ids = [a.id.clone(), b.id.clone()];
            async move {
                let mut ok = true;
                for id in ids {
                    let attr = m
                        .get_worker_attr(cluster::GetWorkerAttrRequest { worker_id: id })
                        .await;
                    ok &= attr.is_ok_and(|a| a.into_inner().load < 0.85);
                }
                ok
            }
        })
        .await
    );
    let r1 = create_room(&c, -1).await;
    let r2 = create_room(&c, -1).await;
    let w1 = schedule_room(&c, &r1).await;
    let w2 = schedule_room(&c, &r2).await;
    assert_ne!(w1, w2, "round-robin spreads rooms");
    for (room, worker) in [(&r1, &w1), (&r2, &w2)] {
        let agent = if *worker == a.id { &a } else { &b };
        let node = get_node(agent, room).await;
        assert!(node.node_id.starts_with(worker.as_str()));
        join(&c, &node.endpoint, room, "p", "presenter")
            .await
            .unwrap();
        let scheduled = conclave_stack::testing::grpc::scheduled(
            &c.manager_addr,
            conclave_common::purpose::Purpose::Conference,
            room,
        )
        .await
        .unwrap();
        assert_eq!(&scheduled, worker);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_processes_bounds_the_pool_and_the_load() {
    let c = cluster("last-used").await;
    let mut config = agent_config(&c);
    config.agent.max_processes = 2;
    let a = start_agent(config).await;
    let r1 = create_room(&c, -1).await;
    let r2 = create_room(&c, -1).await;
    get_node(&a, &r1).await;
    get_node(&a, &r2).await;
    let err = a
        .client()
        .get_node(agent_pb::GetNodeRequest {
            room: "r3".into(),
            task: "r3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "Not found");
    assert_eq!(list_nodes(&a).await.len(), 2);
    let mut m = manager(&c);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut m = m.clone();
            let id = a.id.clone();
            async move {
                m.get_worker_attr(cluster::GetWorkerAttrRequest { worker_id: id })
                    .await
                    .is_ok_and(|r| r.into_inner().load == 1.0)
            }
        })
        .await,
        "load = nodes in use / maxProcesses"
    );
    let err = m
        .schedule(cluster::ScheduleRequest {
            purpose: "conference".into(),
            task: "r3".into(),
            preference: None,
            reserve_time_ms: 30_000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_portal_takes_its_participants_and_the_others_hear_it() {
    use conclave_common::cluster_worker::{ClusterConfig, ClusterWorker};
    let c = cluster("last-used").await;
    let a = start_agent(agent_config(&c)).await;
    let lost_portal = ClusterWorker::join(
        ClusterConfig {
            manager: c.manager_addr.clone(),
            ..ClusterConfig::default()
        },
        conclave_common::purpose::Purpose::Portal,
        cluster::WorkerInfo {
            ip: "127.0.0.1".into(),
            port: 1,
            max_load: 0.85,
            ..Default::default()
        },
        std::sync::Arc::new(conclave_common::load::ManualLoad::new(0.1)),
    )
    .await
    .unwrap();
    let room = create_room(&c, -1).await;
    let node = get_node(&a, &room).await;
    join(&c, &node.endpoint, &room, "stays", "presenter")
        .await
        .unwrap();
    let mut on_lost = spec(&c, "goes", "presenter");
    on_lost.portal = lost_portal.id().to_string();
    conference(&node.endpoint)
        .join(conf::JoinRequest {
            room_id: room.clone(),
            participant: Some(on_lost),
            pending: false,
        })
        .await
        .unwrap();
    // let the node's Watch subscription settle, then lose the portal
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.portal.clear();
    lost_portal.quit().await.unwrap();
    let calls = c.portal.wait_for(1).await;
    assert!(
        calls.contains(&Call::Broadcast {
            controller: node.node_id.clone(),
            exclude: vec!["goes".into()],
            recipients: vec![("stays".into(), 2)],
            event: "participant".into(),
            data: json!({"action": "leave", "data": "goes"}),
        }),
        "{calls:?}"
    );
    let left: Vec<String> = conference(&node.endpoint)
        .get_participants(conf::GetParticipantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .participants
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(left, ["stays"]);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_seat_is_kept_with_its_messages_and_reattached_elsewhere() {
    let c = cluster("last-used").await;
    let a = start_agent(agent_config(&c)).await;
    let room = create_room(&c, -1).await;
    schedule_room(&c, &room).await;
    let node = get_node(&a, &room).await;
    let mut away = spec(&c, "away", "presenter");
    away.client = Some(conf::ClientSpec {
        protocol: "1.2".into(),
        sdk_type: "C++".into(),
        reconnection: true,
        token_code: "code-away".into(),
        message_buffer_size: 0,
    });
    let mut node_client = conference(&node.endpoint);
    node_client
        .join(conf::JoinRequest {
            room_id: room.clone(),
            participant: Some(away),
            pending: false,
        })
        .await
        .unwrap();
    join(&c, &node.endpoint, &room, "here", "presenter")
        .await
        .unwrap();
    c.portal.wait_for(1).await;
    node_client
        .detach(conf::DetachRequest {
            participant_id: "away".into(),
            window_ms: 0,
        })
        .await
        .unwrap();
    c.portal.clear();
    node_client
        .text(conf::TextRequest {
            from: "here".into(),
            to: "away".into(),
            message: "while away".into(),
        })
        .await
        .unwrap();
    let reattach = |ticket: &str| conf::ReattachRequest {
        participant_id: "away".into(),
        portal: "portal-2".into(),
        portal_endpoint: "127.0.0.1:1".into(),
        ticket_id: ticket.into(),
    };
    let seat = node_client
        .reattach(reattach("t1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seat.room_id, room);
    assert_eq!(seat.previous_portal, PORTAL_ID);
    assert_eq!(seat.client.unwrap().token_code, "code-away");
    let kept: Vec<(u64, String, bool)> = seat
        .messages
        .iter()
        .map(|m| (m.seq, m.event.clone(), m.missed))
        .collect();
    // the join notice of `here` (delivered, within the replay window), then the text
    assert_eq!(
        kept,
        [(1, "participant".into(), false), (2, "text".into(), true)]
    );
    assert!(
        c.portal.calls().is_empty(),
        "nothing went out for the detached seat"
    );
    let err = node_client.reattach(reattach("t1")).await.unwrap_err();
    assert_eq!(err.message(), "Ticket has been used");
    let err = node_client
        .reattach(conf::ReattachRequest {
            participant_id: "nobody".into(),
            ..reattach("t2")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
