//! Metrics and traces across the real stack: after one login and one failed
//! login every service's counters moved by exactly that, and the login is one
//! trace whose id shows in the logs of every service it touched.

use conclave_e2e::*;
use conclave_stack::trace_collector::{CollectedSpan, TraceCollector, render_tree};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

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

async fn node_metrics(stack: &Stack) -> String {
    let node = stack
        .nodes()
        .await
        .into_iter()
        .find(|n| !n.room.is_empty())
        .expect("a node serves the room");
    assert!(
        !node.metrics_endpoint.is_empty(),
        "nodes report their metrics endpoint"
    );
    scrape(&node.metrics_endpoint)
}

/// A fresh room and alice logged in to it (protocol 1.2).
async fn log_in_alice(stack: &Stack) -> (String, PyClient) {
    let room = stack.room(-1).await;
    let alice = stack.logged_in(&room, "alice").await;
    (room, alice)
}

/// The portal's one log line of the outcome of `participant`'s login.
fn outcome_line(stack: &Stack, participant: &str) -> String {
    stack
        .drain_logs(3)
        .into_iter()
        .find(|l| l.contains("login outcome") && l.contains(participant))
        .expect("one line per login outcome")
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

    let node = node_metrics(&stack).await;
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
    let (_room, alice) = log_in_alice(&stack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outcome = outcome_line(&stack, &alice.sid);
    for stage in [
        "token_check_ms=",
        "token_consumption_ms=",
        "schedule_ms=",
        "get_node_ms=",
        "join_ms=",
    ] {
        assert!(outcome.contains(stage), "{outcome}");
    }
    let trace_id: String = conclave_common::handshake::field(&outcome, "trace_id")
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

/// A collector, and a stack whose services (conference nodes included)
/// export their spans to it within 100 ms.
async fn traced_stack() -> (TraceCollector, Stack) {
    let collector = TraceCollector::start("127.0.0.1:0").await.unwrap();
    let endpoint = format!("trace.otlp_endpoint={}", collector.endpoint());
    let stack = stack_with(&[&endpoint, "trace.export_delay=100"], &[]).await;
    (collector, stack)
}

/// Wait (15 s at most) until the trace whose first span `is_root` accepts
/// has arrived whole: a server span `name` in `service` for each of
/// `expected`, and the parent of every span but the first. Prints it.
async fn whole_trace(
    collector: &TraceCollector,
    is_root: impl Fn(&CollectedSpan) -> bool,
    expected: &[(&str, &str)],
) -> (CollectedSpan, Vec<CollectedSpan>) {
    let complete = |trace: &[CollectedSpan]| {
        expected.iter().all(|(service, name)| {
            trace
                .iter()
                .any(|s| s.service == *service && s.name == *name && s.kind == "server")
        }) && trace.iter().all(|s| {
            s.parent_span_id.is_empty() || trace.iter().any(|p| p.span_id == s.parent_span_id)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let root = collector
            .spans()
            .into_iter()
            .find(|s| s.parent_span_id.is_empty() && is_root(s));
        if let Some(root) = root {
            let trace = collector.trace(&root.trace_id);
            if complete(&trace) {
                println!("{}", render_tree(&trace));
                return (root, trace);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trace never arrived whole; received:\n{}",
            render_tree(&collector.spans())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `trace.otlp_endpoint` set, one login is one exported trace: a tree
/// rooted at the portal's `login` span with a server span in each of the
/// other four services, each the child of its caller's client span, and the
/// ids each service learned as span attributes. Housekeeping calls
/// (keep-alives, load reports) are not exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_one_exported_trace_across_every_service() {
    if !have_clients() {
        return;
    }
    let (collector, stack) = traced_stack().await;
    let (room, alice) = log_in_alice(&stack).await;
    let expected = [
        (
            "conclave-management",
            "/management.v1.Management/ConsumeToken",
        ),
        (
            "conclave-cluster-manager",
            "/cluster.v1.ClusterManager/Schedule",
        ),
        ("conclave-conference-agent", "/agent.v1.NodeManager/GetNode"),
        ("conclave-conference", "/conference.v1.Conference/Join"),
    ];
    let (root, trace) = whole_trace(
        &collector,
        |s| s.name == "login" && s.attributes.get("participant") == Some(&alice.sid),
        &expected,
    )
    .await;

    // The trace id is the one on the portal's log line of the login.
    let outcome = outcome_line(&stack, &alice.sid);
    assert!(
        outcome.contains(&format!("trace_id={}", root.trace_id)),
        "{outcome} / {}",
        root.trace_id
    );
    assert!(root.parent_span_id.is_empty(), "the login starts the trace");
    assert_eq!(root.service, "conclave-portal");
    assert_eq!(root.attributes.get("room"), Some(&room));
    assert_eq!(
        trace.iter().filter(|s| s.parent_span_id.is_empty()).count(),
        1,
        "one root:\n{}",
        render_tree(&trace)
    );

    let server = |name: &str| {
        trace
            .iter()
            .find(|s| s.name == name && s.kind == "server")
            .unwrap()
    };
    for (service, name) in expected {
        let span = server(name);
        assert_eq!(span.service, service);
        let caller = trace
            .iter()
            .find(|s| s.span_id == span.parent_span_id)
            .unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.kind),
            (name, "client"),
            "{name}'s parent is its caller's client span"
        );
    }
    let attr = |name: &str, key: &str| server(name).attributes.get(key).cloned();
    assert_eq!(
        attr("/management.v1.Management/ConsumeToken", "room"),
        Some(room.clone())
    );
    assert!(attr("/cluster.v1.ClusterManager/Schedule", "worker").is_some());
    assert_eq!(
        attr("/agent.v1.NodeManager/GetNode", "room"),
        Some(room.clone())
    );
    assert!(attr("/agent.v1.NodeManager/GetNode", "node").is_some());
    assert_eq!(
        attr("/conference.v1.Conference/Join", "participant"),
        Some(alice.sid.clone())
    );
    assert_eq!(
        attr("/conference.v1.Conference/Join", "room"),
        Some(room.clone())
    );

    // Workers kept alive and reported load all along; none of it was exported.
    let housekeeping: Vec<String> = collector
        .spans()
        .into_iter()
        .filter(|s| {
            s.name.ends_with("/KeepAlive")
                || s.name.ends_with("/ReportLoad")
                || s.name == "cluster_worker"
        })
        .map(|s| format!("{} [{}]", s.name, s.service))
        .collect();
    assert!(housekeeping.is_empty(), "{housekeeping:?}");
    alice.quit().await;
}

/// A text is one exported trace too: from the sender's portal through the
/// room's conference node to the receiver's portal, whose `Notify` span
/// hangs under the node's `Text`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_is_one_exported_trace_from_sender_to_receiver() {
    if !have_clients() {
        return;
    }
    let (collector, stack) = traced_stack().await;
    let (room, mut alice) = log_in_alice(&stack).await;
    let mut bob = stack.logged_in(&room, "bob").await;
    let ack = alice
        .emit("text", vec![json!({"to": bob.sid, "message": "hi bob"})])
        .await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    assert_eq!(
        bob.wait_event("text", 5.0).await.unwrap()["message"],
        "hi bob"
    );

    let (root, trace) = whole_trace(
        &collector,
        |s| s.name == "text",
        &[
            ("conclave-conference", "/conference.v1.Conference/Text"),
            ("conclave-portal", "/portal.v1.Portal/Broadcast"),
        ],
    )
    .await;
    assert_eq!(root.service, "conclave-portal");
    let span = |name: &str, kind: &str| {
        trace
            .iter()
            .find(|s| s.name == name && s.kind == kind)
            .unwrap_or_else(|| panic!("{name} ({kind}) in\n{}", render_tree(&trace)))
    };
    let parent_of = |child: &CollectedSpan| {
        trace
            .iter()
            .find(|s| s.span_id == child.parent_span_id)
            .unwrap()
            .clone()
    };
    // portal Broadcast (server, the text to one recipient) <- node's client call <- the node's queued
    // `notify` <- the node's Text (server)
    let notify = span("/portal.v1.Portal/Broadcast", "server");
    let call = parent_of(notify);
    assert_eq!(
        (call.service.as_str(), call.kind),
        ("conclave-conference", "client")
    );
    let queued = parent_of(&call);
    assert_eq!(queued.name, "notify");
    assert_eq!(
        parent_of(&queued).span_id,
        span("/conference.v1.Conference/Text", "server").span_id
    );
    alice.quit().await;
    bob.quit().await;
}

/// A collector that cannot be reached costs nothing but the lost spans:
/// logins go through, and every service still stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_does_not_hold_up_logins_or_shutdown() {
    if !have_clients() {
        return;
    }
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("trace.otlp_endpoint=http://{dead}");
    // An export deadline longer than the wait for a stop below: a service that
    // waited on its exporter at shutdown would not stop in time.
    let mut stack = stack_with(
        &[
            &endpoint,
            "trace.export_delay=50",
            "trace.export_timeout=30000",
        ],
        &[],
    )
    .await;
    let room = stack.room(-1).await;
    for user in ["alice", "bob"] {
        let mut client = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
        assert_eq!(
            client
                .login(&stack.token(&room, user, "presenter").await, "1.2")
                .await[0],
            "ok"
        );
        client.quit().await;
    }
    // The portal says, once, that its spans go nowhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut warned = Vec::new();
    while warned.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        warned = stack
            .drain_logs(3)
            .into_iter()
            .filter(|l| l.contains("exporting spans failed"))
            .collect();
    }
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains(&dead.to_string()), "{}", warned[0]);
    let processes = std::mem::take(&mut stack.processes);
    tokio::task::spawn_blocking(move || {
        for mut p in processes.into_iter().rev() {
            let started = std::time::Instant::now();
            p.signal("TERM");
            let status = p.wait_exit(Duration::from_secs(10));
            assert!(
                status.is_some_and(|s| s.success()),
                "{status:?} after {:?}",
                started.elapsed()
            );
        }
    })
    .await
    .unwrap();
}

/// GET `path` on `addr`: the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    assert!(text.contains(" 200 "), "{text}");
    text.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Prometheus finds the conference nodes through the cluster manager's
/// HTTP service discovery (`/sd/nodes`, deploy/prometheus/prometheus.yml):
/// the room's node is a target labelled with its agent, id and room, and
/// serves the conference metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conference_nodes_are_discovered_through_the_cluster_manager() {
    if !have_clients() {
        return;
    }
    let stack = stack(&[]).await;
    let room = stack.room(-1).await;
    let alice = stack.logged_in(&room, "alice").await;
    let node = stack
        .nodes()
        .await
        .into_iter()
        .find(|n| n.room == room)
        .expect("the room's node");
    let groups: Vec<Value> =
        serde_json::from_str(&http_get(&stack.metrics_addr(0), "/sd/nodes")).unwrap();
    let group = groups
        .iter()
        .find(|g| g["labels"]["room"] == room.as_str())
        .unwrap_or_else(|| panic!("the room's node is a target: {groups:?}"));
    assert_eq!(group["labels"]["node"], node.node_id.as_str());
    assert_eq!(
        group["labels"]["agent"],
        stack.room_agent(&room).await.as_str()
    );
    assert_eq!(group["targets"], json!([node.metrics_endpoint]));
    let target = group["targets"][0].as_str().unwrap();
    let text = scrape(target);
    assert_eq!(
        metric(&text, "conference_participants", &[]),
        Some(1.0),
        "{text}"
    );
    alice.quit().await;
}
