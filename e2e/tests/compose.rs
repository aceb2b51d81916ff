//! The stack as users run it: the image built here without pulls, `docker
//! compose up` with three conference agents, grpcurl for rooms and tokens,
//! python-socketio logins through the published port, an agent stopped, and
//! everything torn down. Runs when CONCLAVE_DOCKER_TESTS=1 (scripts/test.sh
//! sets it when a Docker engine answers); skipped with a reason otherwise.

use conclave_e2e::{Flavor, PyClient, free_port, have_clients};
use conclave_stack::testing::run;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

struct Compose {
    cli: Vec<String>,
    project: String,
    /// compose files after docker-compose.yml (overrides)
    overrides: Vec<&'static str>,
    env: Vec<(String, String)>,
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli[0]);
        c.args(&self.cli[1..]).args([
            "-p",
            &self.project,
            "-f",
            &format!("{ROOT}/docker-compose.yml"),
        ]);
        for file in &self.overrides {
            c.args(["-f", &format!("{ROOT}/{file}")]);
        }
        c.args(args).current_dir(ROOT);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let (_, out) = run(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]));
        eprintln!("compose down: {out}");
    }
}

fn grpcurl_json(grpcurl: &Path, addr: &str, method: &str, body: &str) -> Value {
    let (ok, out) = run(Command::new(grpcurl).args(["-plaintext", "-d", body, addr, method]));
    assert!(ok, "{method}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("{method}: {out}"))
}

/// The compose tests run one at a time (each is a whole stack on two
/// cores) and build the image once.
static ONE_AT_A_TIME: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);

/// Whether the docker tests run here; the image built (once) when they do.
async fn docker_tests() -> Option<tokio::sync::MutexGuard<'static, bool>> {
    if std::env::var("CONCLAVE_DOCKER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "SKIPPED: the docker compose test runs from scripts/test.sh when a Docker engine is available"
        );
        return None;
    }
    if !have_clients() {
        return None;
    }
    let mut built = ONE_AT_A_TIME.lock().await;
    if !*built {
        let (ok, out) = run(Command::new("bash").arg(format!("{ROOT}/scripts/docker-build.sh")));
        assert!(ok, "image build: {out}");
        *built = true;
    }
    Some(built)
}

fn compose_cli() -> Vec<String> {
    if run(Command::new("docker").args(["compose", "version"])).0 {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// The env names of the host ports every project gets, in `ports` order.
const PORTS: [&str; 8] = [
    "CONCLAVE_PORTAL_PORT",
    "CONCLAVE_PORTAL_GRPC_PORT",
    "CONCLAVE_MANAGEMENT_PORT",
    "CONCLAVE_CLUSTER_PORT",
    "CONCLAVE_PORTAL2_PORT",
    "CONCLAVE_PORTAL2_GRPC_PORT",
    "CONCLAVE_REST_PORT",
    "CONCLAVE_SAMPLE_PORT",
];

/// A compose project named `name` with these override files, every host
/// port in [`PORTS`] and then in `extra` set to a free one; the ports in
/// that order.
fn project(name: &str, overrides: Vec<&'static str>, extra: &[&str]) -> (Compose, Vec<u16>) {
    let names: Vec<&str> = PORTS.iter().chain(extra).copied().collect();
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let compose = Compose {
        cli: compose_cli(),
        project: format!("{name}{}", std::process::id()),
        overrides,
        env: names
            .iter()
            .zip(&ports)
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect(),
    };
    (compose, ports)
}

fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_with_three_agents_spreads_rooms_and_survives_losing_one() {
    let Some(_one) = docker_tests().await else {
        return;
    };
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let (compose, ports) = project("conclavee2e", Vec::new(), &[]);
    let (ok, out) = run(&mut compose.cmd(&["up", "-d", "--scale", "conference-agent=3"]));
    assert!(ok, "compose up: {out}");
    let management = format!("127.0.0.1:{}", ports[2]);
    let cluster = format!("127.0.0.1:{}", ports[3]);
    let url = format!("http://localhost:{}", ports[0]);

    // every service healthy: three agents and a portal registered and schedulable
    let agents = || -> Vec<String> {
        let v = grpcurl_json(
            &grpcurl,
            &cluster,
            "cluster.v1.ClusterManager/GetWorkers",
            r#"{"purpose":"conference"}"#,
        );
        v["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w.as_str().map(String::from))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(90), || {
            let (ok, out) = run(&mut compose.cmd(&["ps"]));
            ok && out.matches("(healthy)").count() == 8 && agents().len() == 3
        }),
        "all eight containers healthy and three agents registered"
    );
    let (_, ps) = run(&mut compose.cmd(&["ps"]));
    eprintln!("{ps}");

    // internal gRPC ports are published on the host's loopback only; the
    // public ones (Socket.IO, REST with MAuth, the sample page) on every
    // interface. Only the bindings are read: no traffic to other addresses.
    let binding = |service: &str, port: &str| -> String {
        let (ok, out) = run(&mut compose.cmd(&["port", service, port]));
        assert!(ok, "compose port {service} {port}: {out}");
        out.lines()
            .rev()
            .find(|l| l.contains(':'))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for (service, port) in [
        ("cluster-manager", "7001"),
        ("management", "7000"),
        ("portal", "7002"),
        ("portal-2", "7002"),
        ("conference-agent", "7003"),
    ] {
        let b = binding(service, port);
        assert!(
            b.starts_with("127.0.0.1:"),
            "{service} {port} is bound to {b}"
        );
    }
    for (service, port) in [
        ("portal", "8080"),
        ("management", "3000"),
        ("sample", "3001"),
    ] {
        let b = binding(service, port);
        assert!(
            b.starts_with("0.0.0.0:") || b.starts_with("[::]:") || b.starts_with(":::"),
            "{service} {port} is bound to {b}"
        );
    }

    // an OWT application server's path: a service, then REST with MAuth on
    // the published port 3000
    let service = grpcurl_json(
        &grpcurl,
        &management,
        "management.v1.Management/CreateService",
        r#"{"name":"compose-app"}"#,
    );
    let rest = conclave_stack::owt_rest::OwtRest::new(
        service["id"].as_str().unwrap(),
        service["key"].as_str().unwrap(),
        &format!("127.0.0.1:{}", ports[6]),
    );
    let rest_room = rest
        .create_room("rest room", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(rest_room.status, 200, "{rest_room:?}");
    let rest_room = rest_room.json()["_id"].as_str().unwrap().to_string();
    let token = rest
        .create_token(&rest_room, "rest-user", "presenter")
        .await
        .unwrap();
    assert_eq!(token.status, 200, "{token:?}");
    let mut c = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
    let ack = c.login_as(&token.body, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let listed = rest.get_participants(&rest_room).await.unwrap().json();
    assert_eq!(listed[0]["user"], "rest-user", "{listed}");
    assert_eq!(c.emit("logout", vec![]).await[0], "ok");
    c.quit().await;
    // the sample service's page and its token route (it made its own service)
    let sample = format!("127.0.0.1:{}", ports[7]);
    let page = conclave_stack::owt_rest::raw(&sample, "GET", "/", None, "", None)
        .await
        .unwrap();
    assert!(page.body.contains("Conclave sample conference"), "{page:?}");
    let mut sample_token = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = Command::new("curl")
                .args(["-s", "-X", "POST", "-H", "Content-Type: application/json"])
                .args(["-d", r#"{"user":"page-user","role":"presenter"}"#])
                .arg(format!("http://{sample}/tokens"))
                .output();
            match out {
                Ok(o)
                    if o.status.success()
                        && conclave_common::token::JoinToken::decode(&String::from_utf8_lossy(
                            &o.stdout,
                        ))
                        .is_ok() =>
                {
                    sample_token = String::from_utf8_lossy(&o.stdout).to_string();
                    true
                }
                _ => false,
            }
        }),
        "the sample gives tokens"
    );
    let mut c = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
    let ack = c.login_as(&sample_token, "1.2", "JavaScript").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    assert_eq!(c.emit("logout", vec![]).await[0], "ok");
    c.quit().await;

    // three rooms, logged into from the host through the published port
    let mut rooms = Vec::new();
    let mut clients = Vec::new();
    let mut tickets = Vec::new();
    for i in 0..3 {
        let room = grpcurl_json(
            &grpcurl,
            &management,
            "management.v1.Management/CreateRoom",
            &format!(r#"{{"name":"room {i}"}}"#),
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut token = Value::Null;
        assert!(eventually(Duration::from_secs(30), || {
            let (ok, out) = run(Command::new(&grpcurl).args([
                "-plaintext",
                "-d",
                &format!(r#"{{"roomId":"{room}","user":"user{i}","role":"presenter"}}"#),
                &management,
                "management.v1.Management/CreateToken",
            ]));
            if ok {
                token = serde_json::from_str::<Value>(&out).unwrap()["token"].clone();
            }
            ok
        }));
        let mut c = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
        let ack = c.login_as(token.as_str().unwrap(), "1.2", "C++").await;
        assert_eq!(ack[0], "ok", "{ack:?}");
        tickets.push(ack[1]["reconnectionTicket"].as_str().unwrap().to_string());
        rooms.push(room);
        clients.push(c);
    }
    let agent_of = |room: &str| -> String {
        grpcurl_json(
            &grpcurl,
            &cluster,
            "cluster.v1.ClusterManager/GetScheduled",
            &format!(r#"{{"purpose":"conference","task":"{room}"}}"#),
        )["workerId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let placed: Vec<String> = rooms.iter().map(|r| agent_of(r)).collect();
    let mut distinct = placed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "rooms spread over the three agents: {placed:?}"
    );

    // stop the agent of room 0: its container is named by the worker id's host part
    let victim = &placed[0];
    let container = victim.rsplit('@').next().unwrap();
    let (ok, out) = run(Command::new("docker").args(["stop", "-t", "10", container]));
    assert!(ok, "docker stop {container}: {out}");
    assert!(
        eventually(Duration::from_secs(15), || agents().len() == 2),
        "the manager drops the agent"
    );
    // its room is rebuilt on another agent; its participant keeps its seat
    assert!(
        eventually(Duration::from_secs(15), || {
            let (ok, out) = run(Command::new(&grpcurl).args([
                "-plaintext",
                "-d",
                &format!(r#"{{"purpose":"conference","task":"{}"}}"#, rooms[0]),
                &cluster,
                "cluster.v1.ClusterManager/GetScheduled",
            ]));
            ok && !out.contains(victim.as_str())
        }),
        "the room moves to another agent"
    );
    for c in clients.iter_mut() {
        c.assert_still_seated().await;
    }

    // a new login to that room lands on another agent
    let token = grpcurl_json(
        &grpcurl,
        &management,
        "management.v1.Management/CreateToken",
        &format!(
            r#"{{"roomId":"{}","user":"again","role":"presenter"}}"#,
            rooms[0]
        ),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut again = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
    let ack = again.login_as(&token, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let now = agent_of(&rooms[0]);
    assert_ne!(&now, victim);
    let listed = grpcurl_json(
        &grpcurl,
        &format!("127.0.0.1:{}", ports[1]),
        "portal.v1.Portal/ListClients",
        "{}",
    );
    assert_eq!(
        listed["clients"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );

    // a client moves to the second portal with its ticket and keeps its seat
    let r = clients[1].cmd(serde_json::json!({"cmd": "cut"})).await;
    assert_eq!(r["ok"], true);
    let mut moved = PyClient::connect_url(
        &format!("http://localhost:{}", ports[4]),
        Flavor::Eio4Websocket,
    )
    .await;
    let ack = moved
        .emit("relogin", vec![serde_json::json!(tickets[1])])
        .await;
    assert_eq!(ack[0], "ok", "relogin on portal-2: {ack:?}");
    let on_second = || {
        grpcurl_json(
            &grpcurl,
            &format!("127.0.0.1:{}", ports[5]),
            "portal.v1.Portal/ListClients",
            "{}",
        )["clients"]
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(on_second(), Some(1), "portal-2 holds it");
    moved.quit().await;
    again.quit().await;
    for c in clients {
        c.quit().await;
    }

    tear_down(compose);
}

/// `compose down`, and nothing of the project left behind.
fn tear_down(compose: Compose) {
    let project = compose.project.clone();
    drop(compose);
    for (kind, field) in [
        ("ps -a", "{{.Names}}"),
        ("network ls", "{{.Name}}"),
        ("volume ls", "{{.Name}}"),
    ] {
        let mut args: Vec<&str> = kind.split(' ').collect();
        args.extend(["--format", field]);
        let (ok, out) = run(Command::new("docker").args(&args));
        assert!(ok, "docker {kind}: {out}");
        assert!(
            !out.contains(&project),
            "docker {kind} still lists {project}: {out}"
        );
    }
}

/// docker-compose.tls.yml: the one-shot `certs` service makes development
/// certificates, every gRPC call is mutual TLS (agents dialed by container
/// address, checked against the shared name), the portals serve wss, the
/// REST API and the sample page https. A python-socketio client trusting
/// only the CA logs in with a token from the sample; plaintext is refused.
#[tokio::test(flavor = "multi_thread")]
async fn compose_over_tls_with_generated_certificates() {
    let Some(_one) = docker_tests().await else {
        return;
    };
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let certs = std::env::temp_dir().join(format!("conclave-compose-certs-{}", std::process::id()));
    let (mut compose, ports) = project("conclavee2etls", vec!["docker-compose.tls.yml"], &[]);
    compose
        .env
        .push(("CONCLAVE_CERTS_DIR".into(), certs.display().to_string()));
    let (ok, out) = run(&mut compose.cmd(&["up", "-d", "--scale", "conference-agent=2"]));
    assert!(ok, "compose up: {out}");
    let path = |name: &str| certs.join(name).display().to_string();
    let (ca, client, client_key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let tls_grpcurl = |addr: &str, method: &str, body: &str| -> (bool, String) {
        run(Command::new(&grpcurl).args([
            "-cacert",
            &ca,
            "-cert",
            &client,
            "-key",
            &client_key,
            "-d",
            body,
            addr,
            method,
        ]))
    };
    let management = format!("localhost:{}", ports[2]);
    let cluster = format!("localhost:{}", ports[3]);
    let agents = || -> usize {
        let (ok, out) = tls_grpcurl(
            &cluster,
            "cluster.v1.ClusterManager/GetWorkers",
            r#"{"purpose":"conference"}"#,
        );
        if !ok {
            return 0;
        }
        serde_json::from_str::<Value>(&out).unwrap()["workers"]
            .as_array()
            .map_or(0, Vec::len)
    };
    // six long-running containers healthy (their health checks speak
    // mutual TLS), two agents registered over it
    assert!(
        eventually(Duration::from_secs(90), || {
            let (ok, out) = run(&mut compose.cmd(&["ps"]));
            ok && out.matches("(healthy)").count() == 7 && agents() == 2
        }),
        "all containers healthy and both agents registered: {}",
        run(&mut compose.cmd(&["ps"])).1
    );
    // the one-shot command wrote the CA and grpcurl's client pair on the host
    for file in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(certs.join(file).is_file(), "{file} in {}", certs.display());
    }
    // every gRPC port answers grpcurl with the CA and client certificate,
    // and refuses plaintext
    for port in [ports[1], ports[2], ports[3], ports[5]] {
        let addr = format!("localhost:{port}");
        let (ok, out) = run(Command::new(&grpcurl).args([
            "-cacert",
            &ca,
            "-cert",
            &client,
            "-key",
            &client_key,
            &addr,
            "list",
        ]));
        assert!(ok && out.contains("grpc.health.v1.Health"), "{addr}: {out}");
        let (ok, out) = run(Command::new(&grpcurl).args(["-plaintext", &addr, "list"]));
        assert!(!ok, "plaintext to {addr} answered: {out}");
    }

    // a room over mutual TLS gRPC; a login through the sample's https
    // /tokens (which calls the REST API over https) and the portal's wss,
    // trusting only the CA
    let sample = format!("localhost:{}", ports[7]);
    let mut token = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = Command::new("curl")
                .args(["-s", "--cacert", &ca, "-X", "POST"])
                .args(["-H", "Content-Type: application/json"])
                .args(["-d", r#"{"user":"tls-user","role":"presenter"}"#])
                .arg(format!("https://{sample}/tokens"))
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    token = String::from_utf8_lossy(&o.stdout).to_string();
                    conclave_common::token::JoinToken::decode(&token).is_ok()
                }
                _ => false,
            }
        }),
        "the sample gives tokens over https"
    );
    let decoded = conclave_common::token::JoinToken::decode(&token).unwrap();
    assert!(decoded.secure, "tokens say secure: {decoded:?}");
    let trust = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("REQUESTS_CA_BUNDLE", ca.as_str()),
        ("WEBSOCKET_CLIENT_CA_BUNDLE", ca.as_str()),
    ];
    let url = format!("https://localhost:{}", ports[0]);
    let mut c = PyClient::connect_url_with_env(&url, Flavor::Eio4Websocket, &trust).await;
    let ack = c.login_as(&token, "1.2", "JavaScript").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let room = ack[1]["room"]["id"].as_str().unwrap().to_string();
    // a second participant, from a token minted over mutual TLS gRPC, on
    // the other portal: the room's node (on an agent dialed by address)
    // tells the first one
    let (ok, out) = tls_grpcurl(
        &management,
        "management.v1.Management/CreateToken",
        &format!(r#"{{"roomId":"{room}","user":"grpc-user","role":"presenter"}}"#),
    );
    assert!(ok, "CreateToken: {out}");
    let token2 = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c2 = PyClient::connect_url_with_env(&url, Flavor::Eio4Polling, &trust).await;
    let ack = c2.login_as(&token2, "1.2", "C++").await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let joined = c.wait_event("participant", 10.0).await;
    assert!(
        joined.is_some_and(|e| e.to_string().contains("grpc-user")),
        "the first participant hears of the second"
    );
    for mut c in [c, c2] {
        assert_eq!(c.emit("logout", vec![]).await[0], "ok");
        c.quit().await;
    }
    tear_down(compose);
    let _ = std::fs::remove_dir_all(&certs);
}

/// docker-compose.ha.yml: etcd (an image built from this machine's Debian
/// etcd) and two cluster managers in one election, every worker given
/// both. The leading manager's container killed: the other takes over,
/// nobody logged in is dropped, logins work again.
#[tokio::test(flavor = "multi_thread")]
async fn compose_with_standby_managers_survives_killing_the_leader() {
    let Some(_one) = docker_tests().await else {
        return;
    };
    if !run(Command::new("docker").args(["image", "inspect", "conclave-etcd:local"])).0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "conclave-etcd:local is needed under CI=true (scripts/test.sh installs etcd-server)"
        );
        eprintln!(
            "SKIPPED: no conclave-etcd:local image (install etcd-server, run scripts/docker-build.sh)"
        );
        return;
    }
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let (compose, ports) = project(
        "conclavee2eha",
        vec!["docker-compose.ha.yml"],
        &["CONCLAVE_CLUSTER2_PORT"],
    );
    let (ok, out) = run(&mut compose.cmd(&["up", "-d"]));
    assert!(ok, "compose up: {out}");
    let management = format!("127.0.0.1:{}", ports[2]);
    let managers = [
        ("cluster-manager", format!("127.0.0.1:{}", ports[3])),
        ("cluster-manager-2", format!("127.0.0.1:{}", ports[8])),
    ];
    let answer = |addr: &str| {
        run(Command::new(&grpcurl).args([
            "-plaintext",
            "-d",
            r#"{"purpose":"conference"}"#,
            addr,
            "cluster.v1.ClusterManager/GetWorkers",
        ]))
    };
    // everything healthy, one manager leads with the agent registered, the
    // other names it
    let mut leader = None;
    assert!(
        eventually(Duration::from_secs(90), || {
            let (ok, out) = run(&mut compose.cmd(&["ps"]));
            if !ok || out.matches("(healthy)").count() != 7 {
                return false;
            }
            leader = managers
                .iter()
                .find(|(_, addr)| {
                    let (ok, out) = answer(addr);
                    ok && out.contains("conference-")
                })
                .cloned();
            leader.is_some()
        }),
        "healthy, with a leader: {}",
        run(&mut compose.cmd(&["ps"])).1
    );
    let (leader_service, _) = leader.unwrap();
    let (_, standby_addr) = managers.iter().find(|(s, _)| *s != leader_service).unwrap();
    let (ok, out) = answer(standby_addr);
    assert!(
        !ok && out.contains(&format!("the leader is {leader_service}:7001")),
        "the standby names the leader: {out}"
    );
    let url = format!("http://localhost:{}", ports[0]);
    let room = grpcurl_json(
        &grpcurl,
        &management,
        "management.v1.Management/CreateRoom",
        r#"{"name":"ha room"}"#,
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = |user: &str| -> Option<String> {
        let (ok, out) = run(Command::new(&grpcurl).args([
            "-plaintext",
            "-d",
            &format!(r#"{{"roomId":"{room}","user":"{user}","role":"presenter"}}"#),
            &management,
            "management.v1.Management/CreateToken",
        ]));
        ok.then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
            .and_then(|v| v["token"].as_str().map(String::from))
    };
    let mut first_token = None;
    assert!(eventually(Duration::from_secs(30), || {
        first_token = token("stayer");
        first_token.is_some()
    }));
    let mut stayer = PyClient::connect_url(&url, Flavor::Eio4Websocket).await;
    let ack = stayer
        .login_as(&first_token.unwrap(), "1.2", "JavaScript")
        .await;
    assert_eq!(ack[0], "ok", "{ack:?}");

    // kill the leader's container
    let (ok, out) = run(&mut compose.cmd(&["kill", leader_service]));
    assert!(ok, "kill {leader_service}: {out}");
    let killed = Instant::now();
    let first_ok = conclave_e2e::until_a_login_succeeds(
        &url,
        killed,
        Duration::from_secs(30),
        Duration::from_millis(200),
        || token("after"),
    )
    .await;
    let first_ok = first_ok.expect("logins work again on the other manager");
    eprintln!(
        "ELECTION-TIMING compose, leader container killed: first login {:.0} ms after",
        first_ok.as_secs_f64() * 1000.0
    );
    assert!(answer(standby_addr).0, "the other manager leads");
    stayer.assert_still_seated().await;
    stayer.quit().await;
    tear_down(compose);
}

/// A single-node swarm on loopback for `deploy/swarm/stack.yml`; dropping
/// it removes the stack and leaves the swarm, so that a machine that was
/// not a swarm manager before is not one after.
struct Swarm {
    stack: String,
}

impl Swarm {
    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.stack)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let (_, out) = run(Command::new("docker").args(["stack", "rm", &self.stack]));
        eprintln!("stack rm: {out}");
        // the stack's containers go before the network can
        eventually(Duration::from_secs(60), || {
            let (_, out) = run(Command::new("docker").args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", self.stack),
            ]));
            out.trim().is_empty()
        });
        let (_, out) = run(Command::new("docker").args(["swarm", "leave", "--force"]));
        eprintln!("swarm leave: {out}");
        let _ = run(Command::new("docker").args(["network", "rm", "docker_gwbridge"]));
    }
}

fn swarm_state() -> String {
    let (_, out) =
        run(Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]));
    out.trim().to_string()
}

/// A swarm on loopback with `secrets` created and the stack deployed from
/// `files` (deploy/swarm/...); None (skipped) when this engine is in a
/// swarm already or a published port is taken, which CI does not allow.
fn deploy_swarm(files: &[&str], secrets: &[(&str, Vec<u8>)]) -> Option<Swarm> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if swarm_state() != "inactive" {
        assert!(!ci, "CI's Docker engine is already part of a swarm");
        eprintln!("SKIPPED: this Docker engine is part of a swarm already; not touching it");
        return None;
    }
    let ports = [8080u16, 7000, 3000, 7001, 7005];
    if let Some(busy) = ports
        .iter()
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", **p)).is_err())
    {
        assert!(!ci, "port {busy} is taken; the swarm stack publishes it");
        eprintln!("SKIPPED: port {busy} is taken; the swarm stack publishes it");
        return None;
    }
    let (ok, out) = run(Command::new("docker").args([
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        "127.0.0.1:2377",
    ]));
    assert!(ok, "swarm init: {out}");
    let swarm = Swarm {
        stack: format!("conclavesw{}", std::process::id()),
    };
    for (name, value) in secrets {
        let mut child = Command::new("docker")
            .args(["secret", "create", name, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(value).unwrap();
        }
        assert!(
            child.wait().unwrap().success(),
            "docker secret create {name}"
        );
    }
    let mut deploy = Command::new("docker");
    deploy.args(["stack", "deploy", "--resolve-image", "never"]);
    for f in files {
        deploy.args(["-c", f]);
    }
    let (ok, out) = run(deploy.arg(&swarm.stack).current_dir(ROOT));
    assert!(ok, "stack deploy: {out}");
    Some(swarm)
}

/// deploy/swarm/stack.yml as README says to deploy it: a swarm on loopback,
/// the service key as a secret, `docker stack deploy`, agents scaled to 3,
/// three rooms spread over them, a python-socketio client in each; one
/// agent's container killed: Swarm starts a new task, the room moves to
/// another agent and its participant keeps its seat; then the swarm is left.
#[tokio::test(flavor = "multi_thread")]
async fn swarm_stack_scales_agents_and_replaces_a_killed_one() {
    let Some(_one) = docker_tests().await else {
        return;
    };
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let Some(swarm) = deploy_swarm(
        &["deploy/swarm/stack.yml"],
        &[("conclave_service_key", b"a-swarm-test-service-key".to_vec())],
    ) else {
        return;
    };

    // the leading manager answers on 7001 or 7005
    let leader = || -> Option<String> {
        ["127.0.0.1:7001", "127.0.0.1:7005"]
            .into_iter()
            .find(|a| {
                run(Command::new(&grpcurl).args([
                    "-plaintext",
                    "-d",
                    r#"{"purpose":"conference"}"#,
                    a,
                    "cluster.v1.ClusterManager/GetWorkers",
                ]))
                .0
            })
            .map(String::from)
    };
    let agents = || -> Vec<String> {
        let Some(cluster) = leader() else {
            return Vec::new();
        };
        let (ok, out) = run(Command::new(&grpcurl).args([
            "-plaintext",
            "-d",
            r#"{"purpose":"conference"}"#,
            &cluster,
            "cluster.v1.ClusterManager/GetWorkers",
        ]));
        if !ok {
            return Vec::new();
        }
        serde_json::from_str::<Value>(&out).unwrap_or_default()["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|w| w.as_str().map(String::from))
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(120), || agents().len() == 1),
        "the stack comes up: {}",
        run(Command::new("docker").args(["stack", "ps", "--no-trunc", &swarm.stack])).1
    );
    let (ok, out) = run(Command::new("docker").args([
        "service",
        "scale",
        "--detach",
        &format!("{}=3", swarm.service("conference-agent")),
    ]));
    assert!(ok, "service scale: {out}");
    assert!(
        eventually(Duration::from_secs(90), || agents().len() == 3),
        "three agents registered: {:?}",
        agents()
    );

    let management = "127.0.0.1:7000";
    let mut rooms = Vec::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let room = grpcurl_json(
            &grpcurl,
            management,
            "management.v1.Management/CreateRoom",
            &format!(r#"{{"name":"swarm room {i}"}}"#),
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = grpcurl_json(
            &grpcurl,
            management,
            "management.v1.Management/CreateToken",
            &format!(r#"{{"roomId":"{room}","user":"user{i}","role":"presenter"}}"#),
        )["token"]
            .as_str()
            .unwrap()
            .to_string();
        let mut c = PyClient::connect_url("http://127.0.0.1:8080", Flavor::Eio4Websocket).await;
        let ack = c.login_as(&token, "1.2", "C++").await;
        assert_eq!(ack[0], "ok", "{ack:?}");
        rooms.push(room);
        clients.push(c);
    }
    let agent_of = |room: &str| -> String {
        let cluster = leader().expect("a leading manager");
        grpcurl_json(
            &grpcurl,
            &cluster,
            "cluster.v1.ClusterManager/GetScheduled",
            &format!(r#"{{"purpose":"conference","task":"{room}"}}"#),
        )["workerId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let placed: Vec<String> = rooms.iter().map(|r| agent_of(r)).collect();
    let distinct: std::collections::BTreeSet<&String> = placed.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "rooms spread over the three agents: {placed:?}"
    );

    // kill room 0's agent: its container is its worker id's host part
    let victim = placed[0].clone();
    let container = victim.rsplit('@').next().unwrap().to_string();
    let (ok, out) = run(Command::new("docker").args(["kill", &container]));
    assert!(ok, "docker kill {container}: {out}");
    assert!(
        eventually(Duration::from_secs(30), || {
            let now = agent_of(&rooms[0]);
            !now.is_empty() && now != victim
        }),
        "the room moves to another agent"
    );
    for c in clients.iter_mut() {
        c.assert_still_seated().await;
    }
    // Swarm replaces the killed task: three agents again, the dead one gone
    assert!(
        eventually(Duration::from_secs(90), || {
            let now = agents();
            now.len() == 3 && !now.contains(&victim)
        }),
        "a new agent task replaces the killed one: {:?}",
        agents()
    );
    // Swarm shows the new task "Starting" until its health check passes,
    // which can come a few seconds after the agent has joined the manager
    let tasks = || {
        run(Command::new("docker").args([
            "service",
            "ps",
            "--format",
            "{{.DesiredState}} {{.CurrentState}}",
            &swarm.service("conference-agent"),
        ]))
        .1
    };
    let running = eventually(Duration::from_secs(60), || {
        tasks()
            .lines()
            .filter(|l| l.starts_with("Running Running"))
            .count()
            == 3
    });
    let tasks = tasks();
    eprintln!("agent tasks:\n{tasks}");
    assert!(running, "three agent tasks running: {tasks}");
    for c in clients {
        c.quit().await;
    }
    drop(swarm);
    assert_eq!(swarm_state(), "inactive", "the machine left the swarm");
}

/// deploy/swarm/stack.tls.yml over stack.yml: the CA, certificate and key
/// as Swarm secrets (made by `conclave-certs`); every gRPC port answers
/// mutual TLS only, and a python-socketio client that trusts only the CA
/// logs in over wss and texts (portal, manager, agent and node all talking
/// mutual TLS on the overlay network).
#[tokio::test(flavor = "multi_thread")]
async fn swarm_stack_over_tls_from_secrets() {
    let Some(_one) = docker_tests().await else {
        return;
    };
    let grpcurl = conclave_stack::testing::grpcurl().expect("grpcurl");
    let certs = std::env::temp_dir().join(format!("conclave-swarm-certs-{}", std::process::id()));
    let bin = conclave_stack::topology::Options::beside_this_executable().bin_dir;
    let (ok, out) = run(Command::new(bin.join("conclave-certs")).args([
        "--dir",
        &certs.display().to_string(),
        "--host",
        "conclave",
    ]));
    assert!(ok, "conclave-certs: {out}");
    let read = |name: &str| std::fs::read(certs.join(name)).unwrap();
    let Some(swarm) = deploy_swarm(
        &["deploy/swarm/stack.yml", "deploy/swarm/stack.tls.yml"],
        &[
            ("conclave_service_key", b"a-swarm-tls-service-key".to_vec()),
            ("conclave_tls_ca", read("ca.pem")),
            ("conclave_tls_cert", read("server.pem")),
            ("conclave_tls_key", read("server-key.pem")),
        ],
    ) else {
        return;
    };
    let path = |name: &str| certs.join(name).display().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client-key.pem"));
    let tls_call = |addr: &str, method: &str, body: &str| -> (bool, String) {
        run(Command::new(&grpcurl).args([
            "-cacert", &ca, "-cert", &cert, "-key", &key, "-d", body, addr, method,
        ]))
    };
    let agents = || -> usize {
        ["127.0.0.1:7001", "127.0.0.1:7005"]
            .iter()
            .find_map(|a| {
                let (ok, out) = tls_call(
                    a,
                    "cluster.v1.ClusterManager/GetWorkers",
                    r#"{"purpose":"conference"}"#,
                );
                ok.then(|| {
                    serde_json::from_str::<Value>(&out).unwrap_or_default()["workers"]
                        .as_array()
                        .map_or(0, Vec::len)
                })
            })
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(120), || agents() == 1),
        "the stack comes up over mutual TLS: {}",
        run(Command::new("docker").args(["stack", "ps", "--no-trunc", &swarm.stack])).1
    );
    // plaintext is refused on every gRPC port
    for addr in ["127.0.0.1:7000", "127.0.0.1:7001"] {
        let (ok, _) = run(Command::new(&grpcurl).args(["-plaintext", addr, "list"]));
        assert!(!ok, "{addr} refuses plaintext");
    }
    let (ok, out) = tls_call(
        "127.0.0.1:7000",
        "management.v1.Management/CreateRoom",
        r#"{"name":"swarm tls"}"#,
    );
    assert!(ok, "{out}");
    let room = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = tls_call(
        "127.0.0.1:7000",
        "management.v1.Management/CreateToken",
        &format!(r#"{{"roomId":"{room}","user":"tls","role":"presenter"}}"#),
    );
    assert!(ok, "{out}");
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let trust = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("REQUESTS_CA_BUNDLE", ca.as_str()),
    ];
    let mut c =
        PyClient::connect_url_with_env("https://localhost:8080", Flavor::Eio4Websocket, &trust)
            .await;
    // The first login of a fresh swarm starts its room's node over mutual
    // TLS while the services are still settling; on a loaded CI machine it
    // once took longer than the driver's default 10 s for an ack, so it gets
    // 25 s here (it is a check of TLS, not of speed).
    let ack = c.login_within(&token, "1.2", "C++", 25).await;
    assert_eq!(ack[0], "ok", "a login over wss: {ack:?}");
    c.assert_still_seated().await;
    c.quit().await;
    drop(swarm);
    assert_eq!(swarm_state(), "inactive", "the machine left the swarm");
    let _ = std::fs::remove_dir_all(&certs);
}
