//! The real `cluster-manager` binary: start-up on an OS-assigned port, grpcurl
//! against its reflection, health, SIGTERM shutdown.

use conclave_stack::testing::{ServiceProcess, grpcurl};
use conclave_stack::testing::{expected_services, listed_services, run};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cluster-manager");

fn start() -> (ServiceProcess, String) {
    ServiceProcess::start(
        BIN,
        &[
            "--set",
            "listen=127.0.0.1:0",
            "--set",
            "manager.initial_time=0",
        ],
        &[],
        "gRPC server listening",
        "local_addr",
    )
    .expect("cluster-manager starts")
}

#[test]
fn grpcurl_lists_services_and_schedules() {
    let Some(grpcurl) = grpcurl() else {
        eprintln!("SKIPPED: grpcurl not found (run through scripts/test.sh, which installs it)");
        return;
    };
    let (mut manager, addr) = start();
    let (ok, list) = run(Command::new(&grpcurl).args(["-plaintext", &addr, "list"]));
    assert!(ok, "{list}");
    assert_eq!(
        listed_services(&list),
        expected_services("cluster.v1.ClusterManager"),
        "reflection lists exactly what the manager serves"
    );
    let (ok, described) = run(Command::new(&grpcurl).args([
        "-plaintext",
        &addr,
        "describe",
        "cluster.v1.ScheduleRequest",
    ]));
    assert!(ok && described.contains("reserve_time_ms"), "{described}");

    let call = |method: &str, body: &str| {
        run(Command::new(&grpcurl).args([
            "-plaintext",
            "-d",
            body,
            &addr,
            &format!("cluster.v1.ClusterManager/{method}"),
        ]))
    };
    let (ok, out) = call(
        "Join",
        r#"{"purpose":"conference","workerId":"conference-agent-1@demo","info":{"ip":"10.0.0.5","port":7003,"grpcEndpoint":"10.0.0.5:7003","maxLoad":0.85}}"#,
    );
    assert!(ok && out.contains("in-service"), "{out}");
    let (ok, out) = call(
        "ReportLoad",
        r#"{"workerId":"conference-agent-1@demo","load":0.2}"#,
    );
    assert!(ok, "{out}");
    let (ok, out) = call(
        "Schedule",
        r#"{"purpose":"conference","task":"room-1","preference":{"isp":"isp","region":"region"},"reserveTimeMs":30000}"#,
    );
    assert!(ok, "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("JSON reply");
    assert_eq!(reply["id"], "conference-agent-1@demo");
    assert_eq!(reply["info"]["grpcEndpoint"], "10.0.0.5:7003");
    let (ok, out) = call(
        "GetScheduled",
        r#"{"purpose":"conference","task":"room-1"}"#,
    );
    assert!(ok && out.contains("conference-agent-1@demo"), "{out}");
    let (ok, out) = call("GetWorkers", r#"{"purpose":"all"}"#);
    assert!(ok && out.contains("conference-agent-1@demo"), "{out}");
    let (ok, out) = call(
        "Schedule",
        r#"{"purpose":"conference","task":"room-2","reserveTimeMs":-5}"#,
    );
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("reserveTimeMs"),
        "{out}"
    );
    let (ok, out) =
        run(Command::new(&grpcurl).args(["-plaintext", &addr, "grpc.health.v1.Health/Check"]));
    assert!(ok && out.contains("SERVING"), "{out}");
    manager.signal("TERM");
    assert!(
        manager
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

#[test]
fn health_check_flag_and_sigterm() {
    let (mut manager, addr) = start();
    let (ok, out) = run(Command::new(BIN).args(["--health-check", &addr]));
    assert!(ok, "{out}");
    manager.signal("TERM");
    let status = manager
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let (ok, out) = run(Command::new(BIN).args(["--health-check", &addr]));
    assert!(!ok, "nothing serves there any more: {out}");
}

#[test]
fn print_config_shows_documented_defaults_and_overrides() {
    let (ok, out) = run(Command::new(BIN)
        .args(["--print-config", "--set", "strategy.conference=round-robin"])
        .env("CONCLAVE_MANAGER__CHECK_ALIVE_COUNT", "5"));
    assert!(ok, "{out}");
    assert!(out.contains("listen = \"0.0.0.0:7001\""), "{out}");
    assert!(out.contains("check_alive_count = 5"), "{out}");
    assert!(out.contains("conference = \"round-robin\""), "{out}");
    assert!(out.contains("schedule_reserve_time = 60000"), "{out}");
    let (ok, out) =
        run(Command::new(BIN).args(["--print-config", "--set", "strategy.video=fastest"]));
    assert!(ok, "print-config does not validate: {out}");
    let (ok, out) = run(Command::new(BIN).args([
        "--set",
        "strategy.video=fastest",
        "--set",
        "listen=127.0.0.1:0",
    ]));
    assert!(!ok && out.contains("strategy.video"), "{out}");
    let (ok, out) = run(Command::new(BIN).args(["--set", "manager.nope=1"]));
    assert!(!ok && out.contains("manager.nope"), "{out}");
}
