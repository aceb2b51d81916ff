//! Mutual TLS between services (issue 19): with `[tls]` in every service,
//! every gRPC server requires a client certificate from the CA and every
//! client presents one; a login crosses all of them. grpcurl reaches every
//! service with the CA and a client certificate, and is refused without.
//! One test in its own binary: this process's gRPC is set to mutual TLS too.

use conclave_e2e::*;
use conclave_stack::devcerts;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn every_service_speaks_mutual_tls_and_refuses_the_rest() {
    if !have_clients() {
        return;
    }
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let dir = std::env::temp_dir().join(format!("conclave-mtls-e2e-{}", std::process::id()));
    let certs = devcerts::generate(&dir, &[]).unwrap();
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.server.display().to_string(),
        certs.server_key.display().to_string(),
    );
    // this test process calls the services too
    assert!(
        conclave_common::grpc::configure_tls(&conclave_common::tls::ServiceTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            ..Default::default()
        })
        .unwrap()
    );
    let sets = [
        format!("tls.ca={ca}"),
        format!("tls.cert={cert}"),
        format!("tls.key={key}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let stack = stack_with(&sets, &[]).await;

    // a whole login: management, cluster manager, agent, node, portal, all over mutual TLS
    let room = stack.room(-1).await;
    let mut client = PyClient::connect(&stack, Flavor::Eio4Websocket).await;
    let ack = client
        .login(&stack.token(&room, "alice", "presenter").await, "1.2")
        .await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let node = stack
        .nodes()
        .await
        .into_iter()
        .find(|n| n.room == room)
        .expect("the room's node");

    let (client_cert, client_key) = (
        certs.client.display().to_string(),
        certs.client_key.display().to_string(),
    );
    let addrs = [
        stack.manager.clone(),
        stack.management.clone(),
        stack.agent.clone(),
        stack.portal_grpc.clone(),
        node.endpoint.clone(),
    ];
    for addr in &addrs {
        let (ok, out) = conclave_stack::testing::run(Command::new(&grpcurl).args([
            "-connect-timeout",
            "2",
            "-cacert",
            &ca,
            "-cert",
            &client_cert,
            "-key",
            &client_key,
            addr,
            "list",
        ]));
        assert!(ok && out.contains("grpc.health.v1.Health"), "{addr}: {out}");
        let (ok, out) = conclave_stack::testing::run(Command::new(&grpcurl).args([
            "-connect-timeout",
            "2",
            "-plaintext",
            addr,
            "list",
        ]));
        assert!(!ok, "plaintext to {addr} must fail: {out}");
        let (ok, out) = conclave_stack::testing::run(Command::new(&grpcurl).args([
            "-connect-timeout",
            "2",
            "-cacert",
            &ca,
            addr,
            "list",
        ]));
        assert!(!ok, "no client certificate to {addr} must fail: {out}");
    }
    // a client certificate from another CA
    let other = devcerts::generate(&dir.join("other"), &[]).unwrap();
    let (ok, out) = conclave_stack::testing::run(Command::new(&grpcurl).args([
        "-connect-timeout",
        "2",
        "-cacert",
        &ca,
        "-cert",
        &other.client.display().to_string(),
        "-key",
        &other.client_key.display().to_string(),
        &stack.management,
        "list",
    ]));
    assert!(!ok, "another CA's client certificate must fail: {out}");
    // a client certificate from the right CA whose validity has ended is
    // refused; the same one still valid is accepted
    for (name, days_ago, accepted) in [("expired", 1, false), ("current", -30, true)] {
        let (cert, key) = devcerts::issue_client_ending(&dir, name, days_ago).unwrap();
        let (ok, out) = conclave_stack::testing::run(Command::new(&grpcurl).args([
            "-connect-timeout",
            "2",
            "-cacert",
            &ca,
            "-cert",
            &cert.display().to_string(),
            "-key",
            &key.display().to_string(),
            &stack.management,
            "list",
        ]));
        assert_eq!(ok, accepted, "{name} client certificate: {out}");
    }
    // the health check binaries speak TLS from their [tls]
    let bin = conclave_stack::testing::workspace_bin("management");
    let out = Command::new(&bin)
        .args(["--health-check", &stack.management])
        .args([
            "--set",
            &format!("tls.ca={ca}"),
            "--set",
            &format!("tls.cert={client_cert}"),
            "--set",
            &format!("tls.key={client_key}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(&bin)
        .args(["--health-check", &stack.management])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a plaintext health check fails");
    client.quit().await;
    let _ = std::fs::remove_dir_all(dir);
}
