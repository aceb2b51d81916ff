//! Metrics and traces across the real stack: after one login and one failed
//! login every service's counters moved by exactly that, and the login is one
//! trace whose id shows in the logs of every service it touched.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;
use support::*;

/// GET http://addr/metrics.
fn scrape(addr: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The value of the sample `name{labels...}` (all given labels must match).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn node_metrics(stack: &Stack) -> String {
    let agent = conclave_proto::agent::v1::node_manager_client::NodeManagerClient::new(
        conclave_common::grpc::channel(&stack.agent, Duration::from_secs(5)).unwrap(),
    );
    let nodes = futures_executor(agent);
    let node = nodes
        .into_iter()
        .find(|n| !n.room.is_empty())
        .expect("a node serves the room");
    assert!(
        !node.metrics_endpoint.is_empty(),
        "nodes report their metrics endpoint"
    );
    scrape(&node.metrics_endpoint)
}

fn futures_executor(
    mut agent: conclave_proto::agent::v1::node_manager_client::NodeManagerClient<
        conclave_common::grpc::Channel,
    >,
) -> Vec<conclave_proto::agent::v1::NodeInfo> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            agent
                .list_nodes(conclave_proto::agent::v1::ListNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_one_login_and_one_failure() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let good = stack.token(&room, "alice", "presenter").await;
    let bad = tampered(&stack.token(&room, "mallory", "presenter").await);
    let mut alice = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(alice.login(&good, "1.2").await[0], "ok");
    let mut mallory = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        mallory.login(&bad, "1.2").await,
        vec![json!("error"), json!("Invalid token signature")]
    );
    assert!(mallory.wait_disconnect(5.0).await);
    tokio::time::sleep(Duration::from_millis(1500)).await; // a liveness sweep refreshes the cluster gauges

    let portal = scrape(&stack.metrics_addr(3));
    assert_eq!(
        metric(&portal, "portal_logins_total", &[("outcome", "ok")]),
        Some(1.0),
        "{portal}"
    );
    assert_eq!(
        metric(
            &portal,
            "portal_logins_total",
            &[("outcome", "invalid_token_signature")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&portal, "portal_participants", &[]), Some(1.0));
    assert_eq!(
        metric(&portal, "portal_sockets", &[("eio", "4")]),
        Some(1.0),
        "mallory's socket is gone"
    );
    for stage in [
        "token_check",
        "token_consumption",
        "schedule",
        "get_node",
        "join",
    ] {
        assert_eq!(
            metric(
                &portal,
                "portal_login_stage_seconds_count",
                &[("stage", stage)]
            ),
            Some(1.0),
            "{stage}: only the good login got past the signature"
        );
    }
    assert_eq!(
        metric(
            &portal,
            "grpc_client_requests_total",
            &[
                ("method", "/management.v1.Management/ConsumeToken"),
                ("code", "0")
            ]
        ),
        Some(1.0)
    );

    let management = scrape(&stack.metrics_addr(1));
    assert_eq!(
        metric(
            &management,
            "management_tokens_total",
            &[("event", "created")]
        ),
        Some(2.0),
        "{management}"
    );
    assert_eq!(
        metric(
            &management,
            "management_tokens_total",
            &[("event", "consumed")]
        ),
        Some(1.0)
    );
    assert_eq!(metric(&management, "management_rooms", &[]), Some(1.0));
    assert_eq!(
        metric(
            &management,
            "grpc_server_requests_total",
            &[
                ("method", "/management.v1.Management/ConsumeToken"),
                ("code", "0")
            ]
        ),
        Some(1.0)
    );

    let cluster = scrape(&stack.metrics_addr(0));
    // two token placements on the portal, one room placement on the agent
    assert_eq!(
        metric(&cluster, "cluster_schedule_total", &[("outcome", "ok")]),
        Some(3.0),
        "{cluster}"
    );
    assert_eq!(
        metric(
            &cluster,
            "cluster_workers",
            &[("purpose", "portal"), ("state", "available")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &cluster,
            "cluster_workers",
            &[("purpose", "conference"), ("state", "available")]
        ),
        Some(1.0)
    );

    let agent = scrape(&stack.metrics_addr(2));
    assert_eq!(
        metric(&agent, "agent_nodes", &[("state", "in_use")]),
        Some(1.0),
        "{agent}"
    );
    assert_eq!(
        metric(
            &agent,
            "grpc_server_requests_total",
            &[("method", "/agent.v1.NodeManager/GetNode"), ("code", "0")]
        ),
        Some(1.0)
    );
    assert!(metric(&agent, "agent_node_start_seconds_count", &[]).is_some_and(|n| n >= 2.0));

    let node = node_metrics(&stack);
    assert_eq!(
        metric(&node, "conference_participants", &[]),
        Some(1.0),
        "{node}"
    );
    assert_eq!(metric(&node, "conference_rooms", &[]), Some(1.0));
    assert_eq!(
        metric(
            &node,
            "grpc_server_requests_total",
            &[("method", "/conference.v1.Conference/Join"), ("code", "0")]
        ),
        Some(1.0)
    );
    alice.quit().await;
    mallory.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_one_trace_across_every_service() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let mut alice = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    assert_eq!(
        alice
            .login(&stack.token(&room, "alice", "presenter").await, "1.2")
            .await[0],
        "ok"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let portal_logs = stack.drain_logs(3);
    let outcome = portal_logs
        .iter()
        .find(|l| l.contains("login outcome") && l.contains(&alice.sid))
        .expect("one line per login outcome");
    for stage in [
        "token_check_ms=",
        "token_consumption_ms=",
        "schedule_ms=",
        "get_node_ms=",
        "join_ms=",
    ] {
        assert!(outcome.contains(stage), "{outcome}");
    }
    let trace_id: String = conclave_common::handshake::field(outcome, "trace_id")
        .expect("the login line shows its trace id")
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(trace_id.len(), 32);
    let mark = format!("trace_id={trace_id}");
    let logs: Vec<Vec<String>> = (0..3).map(|i| stack.drain_logs(i)).collect();
    for (i, service, method) in [
        (1, "management", "ConsumeToken"),
        (0, "cluster manager", "Schedule"),
        (2, "agent", "GetNode"),
        (
            2,
            "conference node (relayed by its agent)",
            "Conference/Join",
        ),
    ] {
        let logs = &logs[i];
        assert!(
            logs.iter().any(|l| l.contains(&mark) && l.contains(method)),
            "{service} has no line of trace {trace_id} for {method}:\n{}",
            logs.iter()
                .filter(|l| l.contains("trace_id"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    alice.quit().await;
}
