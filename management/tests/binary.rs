//! The real `management` binary driven by grpcurl: reflection, rooms, tokens.

use conclave_common::cluster_worker::{ClusterConfig, ClusterWorker};
use conclave_common::load::ManualLoad;
use conclave_common::token::JoinToken;
use conclave_proto::cluster::v1 as cluster;
use conclave_stack::testing::{ServiceProcess, grpcurl};
use conclave_stack::testing::{expected_services, listed_services, run};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_management");

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_creates_a_room_and_a_token() {
    let Some(grpcurl) = grpcurl() else {
        eprintln!("SKIPPED: grpcurl not found (run through scripts/test.sh, which installs it)");
        return;
    };
    let cm = cluster_manager::Config::loopback();
    let stop = CancellationToken::new();
    let manager = cluster_manager::start(cm, stop.clone()).await.unwrap();
    let manager_addr = manager.local_addr().to_string();
    let portal = ClusterWorker::join(
        ClusterConfig {
            manager: manager_addr.clone(),
            ..ClusterConfig::default()
        },
        conclave_common::purpose::Purpose::Portal,
        cluster::WorkerInfo {
            ip: "127.0.0.1".into(),
            hostname: "localhost".into(),
            port: 8080,
            max_load: 0.85,
            ..Default::default()
        },
        Arc::new(ManualLoad::new(0.1)),
    )
    .await
    .unwrap();
    let data_dir =
        std::env::temp_dir().join(format!("conclave-mgmt-bin-{}", management::room::new_id()));
    let data = data_dir.display().to_string();
    let cluster_set = format!("cluster.manager={manager_addr}");
    let data_set = format!("data_dir={data}");
    let (mut process, addr) = tokio::task::spawn_blocking(move || {
        ServiceProcess::start(
            BIN,
            &[
                "--set",
                "listen=127.0.0.1:0",
                "--set",
                "rest.listen=127.0.0.1:0",
                "--set",
                &cluster_set,
                "--set",
                &data_set,
            ],
            &[("CONCLAVE_SERVICE_KEY", "binary-test-key")],
            "gRPC server listening",
            "local_addr",
        )
    })
    .await
    .unwrap()
    .expect("management starts");

    let g = grpcurl.clone();
    let a = addr.clone();
    let call = move |method: &str, body: &str| {
        run(Command::new(&g).args([
            "-plaintext",
            "-d",
            body,
            &a,
            &format!("management.v1.Management/{method}"),
        ]))
    };
    let (ok, list) = run(Command::new(&grpcurl).args(["-plaintext", &addr, "list"]));
    assert!(ok, "{list}");
    assert_eq!(
        listed_services(&list),
        expected_services("management.v1.Management")
    );
    let (ok, out) = call("CreateRoom", r#"{"name":"demo","participantLimit":10}"#);
    assert!(ok, "{out}");
    let room: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(room["participantLimit"], 10);
    assert_eq!(room["roles"].as_array().unwrap().len(), 5);
    let room_id = room["id"].as_str().unwrap().to_string();
    // the portal's first load report may still be on its way
    let body = format!(r#"{{"roomId":"{room_id}","user":"alice","role":"presenter"}}"#);
    let mut out = String::new();
    for _ in 0..50 {
        let (ok, o) = call("CreateToken", &body);
        out = o;
        if ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    let token = JoinToken::decode(reply["token"].as_str().unwrap()).unwrap();
    assert_eq!(token.host, "localhost:8080");
    token.verify("binary-test-key").unwrap();
    let (ok, out) = call(
        "ConsumeToken",
        &format!(r#"{{"tokenId":"{}"}}"#, token.token_id),
    );
    assert!(ok && out.contains("\"user\": \"alice\""), "{out}");
    let (ok, out) = call(
        "ConsumeToken",
        &format!(r#"{{"tokenId":"{}"}}"#, token.token_id),
    );
    assert!(
        !ok && out.contains("NotFound") && out.contains("Unknown"),
        "{out}"
    );
    let (ok, out) = call("CreateRoom", r#"{"name":""}"#);
    assert!(
        !ok && out.contains("InvalidArgument") && out.contains("name"),
        "{out}"
    );

    process.signal("TERM");
    assert!(
        process
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    portal.quit().await.unwrap();
    stop.cancel();
    let _ = std::fs::remove_dir_all(data_dir);
}

#[test]
fn refuses_to_start_without_a_service_key() {
    let (ok, out) = run(Command::new(BIN)
        .args([
            "--set",
            "listen=127.0.0.1:0",
            "--set",
            "rest.listen=127.0.0.1:0",
            "--set",
            "data_dir=/tmp/conclave-never-created",
        ])
        .env_remove("CONCLAVE_SERVICE_KEY"));
    assert!(!ok);
    assert!(out.contains("service key is empty"), "{out}");
}
