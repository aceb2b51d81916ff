//! TLS for clients (issue 19, first part): the portal serves https/wss and
//! the REST API https with PEM files, reloaded while clients stay
//! connected. python-socketio 5.x (polling and WebSocket) and 4.x clients
//! that trust only the development CA log in; plaintext is refused.

use conclave_e2e::*;
use conclave_stack::devcerts;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn first_pem_cert(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text[start..].find("-----END CERTIFICATE-----").unwrap() + start;
    text[start..end].split_whitespace().collect()
}

/// The certificate a new TLS connection to `addr` is given.
fn served_cert(addr: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    first_pem_cert(&String::from_utf8_lossy(&out.stdout))
}

#[tokio::test]
async fn portal_and_rest_serve_tls_reload_certificates_and_refuse_plaintext() {
    if !have_clients() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("conclave-tls-e2e-{}", std::process::id()));
    let certs = devcerts::generate(&dir, &[]).unwrap();
    let (cert, key) = (
        certs.server.display().to_string(),
        certs.server_key.display().to_string(),
    );
    let stack = stack_with_portal_and_management(
        &[
            &format!("portal.tls.cert={cert}"),
            &format!("portal.tls.key={key}"),
            "portal.tls.reload_interval=200",
        ],
        &[
            &format!("rest.tls.cert={cert}"),
            &format!("rest.tls.key={key}"),
        ],
    )
    .await;
    let room = stack.room(-1).await;
    let ca = certs.ca.display().to_string();
    let trust = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("REQUESTS_CA_BUNDLE", ca.as_str()),
        ("WEBSOCKET_CLIENT_CA_BUNDLE", ca.as_str()),
    ];
    let url = format!("https://{}", stack.portal_socket);

    // tokens say secure
    let token = stack.token(&room, "alice", "presenter").await;
    let decoded = conclave_common::token::JoinToken::decode(&token).unwrap();
    assert!(decoded.secure, "{decoded:?}");

    // EIO4 over wss (WebSocket, then polling) and EIO3 log in
    let mut clients = Vec::new();
    for (i, flavor) in [Flavor::Eio4Websocket, Flavor::Eio4Polling, Flavor::Eio3]
        .into_iter()
        .enumerate()
    {
        let mut c = PyClient::connect_url_with_env(&url, flavor, &trust).await;
        let token = stack.token(&room, &format!("user{i}"), "presenter").await;
        let ack = c.login(&token, "1.2").await;
        assert_eq!(ack[0], "ok", "{flavor:?}: {ack:?}");
        clients.push(c);
    }

    // plaintext to the TLS port gets no HTTP answer, and the port serves on
    let addr = stack.portal_socket.clone();
    let plain = conclave_stack::owt_rest::raw(
        &addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        None,
        "",
        None,
    )
    .await;
    assert!(
        plain.is_err() || plain.as_ref().unwrap().status == 0,
        "{plain:?}"
    );
    // and a client that does not trust the CA is refused
    let mut untrusting = PyClient::spawn(Flavor::Eio4Websocket).await;
    let r = untrusting
        .cmd(json!({"cmd": "connect", "url": url, "transports": ["websocket"]}))
        .await;
    assert_ne!(r["ok"], true, "{r}");
    untrusting.quit().await;

    // the REST API over https; plain http is refused
    let rest = stack.management_rest.clone();
    let out = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            &ca,
            &format!(
                "https://localhost:{}/v1/rooms",
                rest.rsplit(':').next().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"code\":1101"),
        "{out:?}"
    );
    let out = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{rest}/v1/rooms")])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("1101"),
        "{out:?}"
    );

    // rotation: a new certificate from the same CA; connected clients stay,
    // new connections get the new one
    let before = served_cert(&addr);
    assert_eq!(
        before,
        first_pem_cert(&std::fs::read_to_string(&certs.server).unwrap())
    );
    devcerts::issue_server(&dir, &[]).unwrap();
    let after_file = first_pem_cert(&std::fs::read_to_string(&certs.server).unwrap());
    assert_ne!(before, after_file);
    let mut rotated = false;
    for _ in 0..50 {
        if served_cert(&addr) == after_file {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new certificate is served");
    for c in &mut clients {
        let ack = c
            .emit("text", vec![json!({"to": "all", "message": "still here"})])
            .await;
        assert_eq!(ack[0], "ok", "a connected client is unaffected: {ack:?}");
    }
    let mut late = PyClient::connect_url_with_env(&url, Flavor::Eio4Websocket, &trust).await;
    let ack = late
        .login(&stack.token(&room, "late", "presenter").await, "1.2")
        .await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    late.quit().await;
    for c in clients {
        c.quit().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A misconfigured certificate stops the portal at start with the file and
/// the problem named.
#[test]
fn a_bad_certificate_is_a_clear_start_up_error() {
    let dir = std::env::temp_dir().join(format!("conclave-tls-bad-{}", std::process::id()));
    let certs = devcerts::generate(&dir, &[]).unwrap();
    let bin = conclave_stack::testing::workspace_bin("portal");
    let run = |cert: &str, key: &str| {
        let out = Command::new(&bin)
            .args([
                "--set",
                "portal.listen=127.0.0.1:0",
                "--set",
                "portal.grpc_listen=127.0.0.1:0",
            ])
            .args([
                "--set",
                &format!("portal.tls.cert={cert}"),
                "--set",
                &format!("portal.tls.key={key}"),
            ])
            .env("CONCLAVE_SERVICE_KEY", "k")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };
    let server = certs.server.display().to_string();
    let out = run(
        "/nonexistent/cert.pem",
        &certs.server_key.display().to_string(),
    );
    assert!(out.contains("/nonexistent/cert.pem"), "{out}");
    let out = run(&server, &certs.client_key.display().to_string());
    assert!(out.contains("does not belong"), "{out}");
    let out = run(&server, &server);
    assert!(out.contains("private key"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
