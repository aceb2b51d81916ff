//! The real `conference-agent` binary spawning real `conference` binaries,
//! reached with grpcurl; SIGTERM leaves no node behind.

mod support;

use conclave_stack::testing::{ServiceProcess, grpcurl};
use conclave_stack::testing::{expected_services, listed_services, run};
use std::process::Command;
use std::time::Duration;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_conference-agent");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_nodes_and_participants_and_sigterm_cleans_up() {
    let Some(grpcurl) = grpcurl() else {
        eprintln!("SKIPPED: grpcurl not found (run through scripts/test.sh, which installs it)");
        return;
    };
    let c = cluster("last-used").await;
    let sets = [
        "listen=127.0.0.1:0".to_string(),
        "advertised_host=127.0.0.1".to_string(),
        format!("cluster.manager={}", c.manager_addr),
        format!("node.management={}", c.management_addr),
        format!(
            "agent.conference_binary={}",
            conclave_stack::testing::workspace_bin("conference").display()
        ),
    ];
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let (mut agent, addr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::start(BIN, &args, &[], "conference agent serving", "endpoint")
    })
    .await
    .unwrap()
    .expect("agent starts");

    let nodes = |addr: &str| {
        let (ok, out) = run(Command::new(&grpcurl).args([
            "-plaintext",
            "-d",
            "{}",
            addr,
            "agent.v1.NodeManager/ListNodes",
        ]));
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        eventually(Duration::from_secs(10), || {
            let n = nodes(&addr);
            async move { n.iter().filter(|n| n["state"] == "IDLE").count() == 2 }
        })
        .await,
        "two warm nodes"
    );
    let room = create_room(&c, -1).await;
    let (ok, out) = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-d",
        &format!(r#"{{"room":"{room}","task":"{room}"}}"#),
        &addr,
        "agent.v1.NodeManager/GetNode",
    ]));
    assert!(ok, "{out}");
    let endpoint = serde_json::from_str::<serde_json::Value>(&out).unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    join(&c, &endpoint, &room, "p1", "presenter").await.unwrap();
    let (ok, out) = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-d",
        "{}",
        &endpoint,
        "conference.v1.Conference/GetParticipants",
    ]));
    assert!(
        ok && out.contains("\"id\": \"p1\"") && out.contains(&room),
        "{out}"
    );
    let (ok, out) = run(Command::new(&grpcurl).args(["-plaintext", &endpoint, "list"]));
    assert!(ok, "{out}");
    assert_eq!(
        listed_services(&out),
        expected_services("conference.v1.Conference")
    );

    let pids: Vec<u32> = nodes(&addr)
        .iter()
        .filter_map(|n| n["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(pids.len(), 3);
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(15))
        .expect("agent exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    for pid in pids {
        assert!(!alive(pid), "node {pid} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_die_with_a_killed_agent() {
    let c = cluster("last-used").await;
    let sets = [
        "listen=127.0.0.1:0".to_string(),
        "advertised_host=127.0.0.1".to_string(),
        format!("cluster.manager={}", c.manager_addr),
        format!(
            "agent.conference_binary={}",
            conclave_stack::testing::workspace_bin("conference").display()
        ),
    ];
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let (mut agent, _addr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ServiceProcess::start(BIN, &args, &[], "conference agent serving", "endpoint")
    })
    .await
    .unwrap()
    .expect("agent starts");
    let agent_pid = agent.child.id();
    // the agent's children are the nodes
    let children = || {
        std::fs::read_to_string(format!("/proc/{agent_pid}/task/{agent_pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(10), || async { children().len() == 2 }).await);
    let nodes = children();
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(5)).expect("killed");
    for pid in nodes {
        assert!(
            eventually(Duration::from_secs(5), || async move { !alive(pid) }).await,
            "node {pid} outlived a killed agent"
        );
    }
}
