//! The one-command local stack: start it, log in once with a real
//! python-socketio client, stop it with Ctrl-C (SIGINT).

use conclave_e2e::{Flavor, PyClient, free_port, have_clients};
use conclave_stack::process::ServiceProcess;
use conclave_stack::testing::workspace_bin;
use std::time::Duration;

/// Start the launcher on free ports (Socket.IO on `socket_listen`) with
/// `extra` flags and a data directory of its own for `test`; the launcher,
/// its demo token, the portal's host:port and the data directory.
fn launch(
    test: &str,
    socket_listen: &str,
    extra: &[&str],
) -> (ServiceProcess, String, String, std::path::PathBuf) {
    let data =
        std::env::temp_dir().join(format!("conclave-stack-test-{}-{test}", std::process::id()));
    let data_arg = data.display().to_string();
    let bin = workspace_bin("conclave-stack");
    let mut args = vec![
        "--any-ports",
        "--data-dir",
        &data_arg,
        "--hostname",
        "127.0.0.1",
        "--socket-listen",
        socket_listen,
    ];
    args.extend_from_slice(extra);
    let (stack, token) = ServiceProcess::start_named(
        "stack",
        bin.to_str().unwrap(),
        &args,
        &[],
        "conclave-stack ready",
        "token",
    )
    .expect("the stack starts");
    // The token carries the portal's host:port, as clients read it.
    let host = conclave_common::token::JoinToken::decode(&token)
        .expect("a real token")
        .host;
    (stack, token, host, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_stack_starts_serves_a_login_and_stops() {
    if !have_clients() {
        return;
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut stack, token, host, data) = launch("login", &listen, &[]);
    assert_eq!(host, listen, "--any-ports keeps --socket-listen");
    let url = format!("http://{host}");

    let mut client = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
    let ack = client.login_as(&token, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    assert_eq!(ack[1]["user"], "demo");
    client.quit().await;

    stack.signal("INT");
    let status = stack
        .wait_exit(Duration::from_secs(30))
        .expect("the stack stops on Ctrl-C");
    assert!(status.success(), "{status:?}");
    let mut saw_stopped = false;
    while let Ok(line) = stack.lines.try_recv() {
        saw_stopped |= line.contains("conclave-stack stopped");
    }
    assert!(saw_stopped, "it says it stopped");
    // nothing serves any more
    assert!(
        std::net::TcpStream::connect_timeout(&host.parse().unwrap(), Duration::from_millis(500))
            .is_err()
    );
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_stack_prints_a_logins_trace() {
    if !have_clients() {
        return;
    }
    let (mut stack, token, host, data) = launch("traces", "127.0.0.1:0", &["--print-traces"]);
    let mut client = PyClient::connect_url(&format!("http://{host}"), Flavor::Eio4Websocket).await;
    let ack = client.login_as(&token, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");

    // The login's trace comes out as one tree: the portal's login span at the
    // top, the other services' spans under it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut tree: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let Ok(line) = stack.lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        seen.push(line.clone());
        if line.starts_with("trace ") {
            tree.clear();
        }
        tree.push(line.clone());
        if line.starts_with("login [conclave-portal]") {
            // the whole tree follows this header line without interleaving
            while let Ok(next) = stack.lines.recv_timeout(Duration::from_millis(200)) {
                if next.starts_with('[') || next.starts_with("trace ") {
                    break;
                }
                tree.push(next);
            }
            break;
        }
    }
    let text = tree.join("\n");
    assert!(
        text.contains("login [conclave-portal]"),
        "no login trace printed:\n{}",
        seen.join("\n")
    );
    for line in [
        "  /management.v1.Management/ConsumeToken [conclave-portal]",
        "    /management.v1.Management/ConsumeToken [conclave-management]",
        "    /cluster.v1.ClusterManager/Schedule [conclave-cluster-manager]",
        "    /agent.v1.NodeManager/GetNode [conclave-conference-agent]",
        "    /conference.v1.Conference/Join [conclave-conference]",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    client.quit().await;
    stack.signal("INT");
    assert!(stack.wait_exit(Duration::from_secs(30)).is_some());
    let _ = std::fs::remove_dir_all(data);
}

/// The launcher makes a sample service for the REST API, prints how an OWT
/// application server uses it, and a shell line (openssl and curl) that
/// lists its rooms; the line works as printed, and a restart keeps the
/// same service.
#[test]
fn the_local_stack_prints_a_working_rest_call() {
    let has = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok()
    };
    if !has("curl") || !has("openssl") {
        eprintln!("SKIPPED: curl or openssl missing");
        return;
    }
    let (mut stack, _token, _host, data) = launch("rest", "127.0.0.1:0", &[]);
    let ready = |stack: &ServiceProcess| {
        stack
            .history
            .iter()
            .find(|l| l.contains("conclave-stack ready"))
            .cloned()
            .expect("the ready line")
    };
    let line = ready(&stack);
    let field = |k: &str| conclave_common::handshake::field(&line, k).expect(k);
    let (id, key, rest) = (field("service_id"), field("service_key"), field("rest"));
    let init = format!("API.init('{id}', '{key}', 'http://127.0.0.1:");
    let mut printed: Vec<String> = stack.history.clone();
    while let Ok(l) = stack.lines.recv_timeout(Duration::from_millis(300)) {
        printed.push(l);
    }
    assert!(printed.iter().any(|l| l.contains(&init)), "{printed:#?}");
    // the sample page comes first, and serves
    let own: Vec<&String> = printed
        .iter()
        .filter(|l| !l.starts_with('[') && !l.trim().is_empty())
        .collect();
    assert!(
        own[0].starts_with("Open the sample conference page: http://127.0.0.1:"),
        "{own:#?}"
    );
    let page = field("page");
    let page_addr = page.trim_start_matches("http://").trim_end_matches('/');
    let served = std::process::Command::new("curl")
        .args(["-s", &format!("http://{page_addr}/")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&served.stdout).contains("Conclave sample conference"));
    let example = printed
        .iter()
        .find(|l| l.trim_start().starts_with("ID="))
        .expect("the example line")
        .trim()
        .to_string();
    assert!(example.contains(&format!(
        "http://127.0.0.1:{}/v1/rooms",
        rest.rsplit(':').next().unwrap()
    )));
    let out = std::process::Command::new("bash")
        .args(["-c", &example])
        .output()
        .expect("bash runs");
    // the sample page made the sample room through the same API
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(listed.is_array(), "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["name"] == "sampleRoom"),
        "{listed}"
    );
    stack.signal("INT");
    assert!(stack.wait_exit(Duration::from_secs(30)).is_some());
    // started again on the same data: the same service
    let data_arg = data.display().to_string();
    let (mut again, _) = ServiceProcess::start_named(
        "stack",
        workspace_bin("conclave-stack").to_str().unwrap(),
        &[
            "--any-ports",
            "--data-dir",
            &data_arg,
            "--hostname",
            "127.0.0.1",
            "--socket-listen",
            "127.0.0.1:0",
        ],
        &[],
        "conclave-stack ready",
        "token",
    )
    .expect("the stack starts again");
    let line = ready(&again);
    assert_eq!(
        conclave_common::handshake::field(&line, "service_id"),
        Some(id)
    );
    assert_eq!(
        conclave_common::handshake::field(&line, "service_key"),
        Some(key)
    );
    again.signal("INT");
    assert!(again.wait_exit(Duration::from_secs(30)).is_some());
    let _ = std::fs::remove_dir_all(data);
}

/// `--tls`: development certificates, then everything over TLS: a client
/// that trusts only the printed CA logs in over wss, the printed REST call
/// works over https, grpcurl reaches management with the client certificate,
/// and the sample page is served over https.
#[tokio::test(flavor = "multi_thread")]
async fn the_local_stack_runs_everything_over_tls() {
    if !have_clients() {
        return;
    }
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let (mut stack, token, host, data) = launch("tls", "127.0.0.1:0", &["--tls"]);
    let line = stack
        .history
        .iter()
        .find(|l| l.contains("conclave-stack ready"))
        .cloned()
        .unwrap();
    let field = |k: &str| conclave_common::handshake::field(&line, k).expect(k);
    let ca = field("ca");
    assert!(ca.ends_with("tls/ca.pem"), "{line}");
    assert!(field("page").starts_with("https://"), "{line}");
    let trust = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("REQUESTS_CA_BUNDLE", ca.as_str()),
        ("WEBSOCKET_CLIENT_CA_BUNDLE", ca.as_str()),
    ];
    assert!(
        conclave_common::token::JoinToken::decode(&token)
            .unwrap()
            .secure
    );
    let mut client =
        PyClient::connect_url_with_env(&format!("https://{host}"), Flavor::Eio4Websocket, &trust)
            .await;
    let ack = client.login_as(&token, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    client.quit().await;

    let mut printed: Vec<String> = stack.history.clone();
    while let Ok(l) = stack.lines.recv_timeout(Duration::from_millis(300)) {
        printed.push(l);
    }
    assert!(
        printed.iter().any(|l| l.starts_with("CA certificate: ")),
        "{printed:#?}"
    );
    let example = printed
        .iter()
        .find(|l| l.trim_start().starts_with("ID="))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        example.contains("--cacert") && example.contains("https://"),
        "{example}"
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &example])
        .output()
        .unwrap();
    let listed: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert!(listed.is_array(), "{listed}");
    let dir = std::path::Path::new(&ca).parent().unwrap();
    let (ok, out) = conclave_stack::testing::run(std::process::Command::new(&grpcurl).args([
        "-cacert",
        &ca,
        "-cert",
        &dir.join("client.pem").display().to_string(),
        "-key",
        &dir.join("client-key.pem").display().to_string(),
        &field("management"),
        "list",
    ]));
    assert!(ok && out.contains("management.v1.Management"), "{out}");
    let page = std::process::Command::new("curl")
        .args(["-s", "--cacert", &ca, &field("page")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("Conclave sample conference"));
    stack.signal("INT");
    assert!(stack.wait_exit(Duration::from_secs(30)).is_some());
    let _ = std::fs::remove_dir_all(data);
}

/// Killing the launcher outright (SIGKILL: no chance to clean up) still
/// stops every service: each one's standard input is a pipe from the
/// launcher, and the kernel closes it.
#[test]
fn services_stop_when_the_launcher_is_killed() {
    let (mut stack, _token, _host, data) = launch("killed", "127.0.0.1:0", &[]);
    let ready = stack
        .history
        .iter()
        .find(|l| l.contains("conclave-stack ready"))
        .cloned()
        .expect("the ready line");
    let field = |k: &str| conclave_common::handshake::field(&ready, k).expect(k);
    let portal = field("portal");
    let addrs: Vec<String> = [
        portal.trim_start_matches("http://").to_string(),
        field("management"),
        field("cluster"),
        field("agent"),
        field("portal_grpc"),
    ]
    .into();
    let serving = |addr: &str| {
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(300))
            .is_ok()
    };
    assert!(addrs.iter().all(|a| serving(a)), "{addrs:?}");

    stack.signal("KILL");
    stack
        .wait_exit(Duration::from_secs(5))
        .expect("the launcher dies");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut still: Vec<&String> = addrs.iter().collect();
    while !still.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        still.retain(|a| serving(a));
    }
    assert!(
        still.is_empty(),
        "still serving after the launcher died: {still:?}"
    );
    let _ = std::fs::remove_dir_all(data);
}
