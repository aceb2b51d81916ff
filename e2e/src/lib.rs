//! What the end-to-end tests share: the whole stack as real processes on
//! loopback ports (cluster manager, management, a conference agent spawning
//! conference nodes, portal), started as [`Topology`]; real Socket.IO
//! clients from PyPI (python-socketio 5.x and 4.x) driven through
//! `clients/driver.py`; and gRPC helpers to look inside.

use conclave_common::grpc::Channel;
use conclave_common::purpose::Purpose;
use conclave_common::token::JoinToken;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::conference::v1 as conf;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use conclave_proto::portal::v1 as portal_pb;
use conclave_proto::portal::v1::portal_client::PortalClient;
use conclave_stack::testing::grpc;
use conclave_stack::{Options, Topology};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const KEY: &str = "e2e-test-service-key";

/// Logs every test stack keeps: info, plus each RPC's line in its span
/// (method and trace id).
const LOG: &str = "info,conclave_common::grpc=debug";

/// A test's stack: the [`Topology`] every launcher starts, on free ports,
/// with a data directory of its own, and helpers to look inside it.
pub struct Stack {
    topology: Option<Topology>,
    data_dir: PathBuf,
}

impl std::ops::Deref for Stack {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        self.topology.as_ref().expect("a running stack")
    }
}

impl std::ops::DerefMut for Stack {
    fn deref_mut(&mut self) -> &mut Topology {
        self.topology.as_mut().expect("a running stack")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // portals and agents first, so nodes exit with their agent
        drop(self.topology.take());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Start the stack. `extra_portal` adds portal `--set` flags.
pub async fn stack(extra_portal: &[&str]) -> Stack {
    stack_with(&[], extra_portal).await
}

/// A stack whose every service (and every conference node, through its
/// agent) also gets the `--set` flags `all`.
pub async fn stack_with(all: &[&str], extra_portal: &[&str]) -> Stack {
    launch(all, extra_portal, &[]).await
}

/// A stack whose conference agent (and through it every node) also gets
/// the `--set` flags `agent`.
pub async fn stack_with_agent(agent: &[&str], extra_portal: &[&str]) -> Stack {
    launch(&[], extra_portal, agent).await
}

/// A stack whose portal gets `portal` and management gets `management` flags.
pub async fn stack_with_portal_and_management(portal: &[&str], management: &[&str]) -> Stack {
    launch_with(&[], portal, &[], management).await
}

/// A stack whose management service also gets the `--set` flags `management`.
pub async fn stack_with_management(management: &[&str]) -> Stack {
    launch_with(&[], &[], &[], management).await
}

async fn launch(all: &[&str], extra_portal: &[&str], extra_agent: &[&str]) -> Stack {
    launch_with(all, extra_portal, extra_agent, &[]).await
}

async fn launch_with(
    all: &[&str],
    extra_portal: &[&str],
    extra_agent: &[&str],
    management: &[&str],
) -> Stack {
    launch_edited(all, extra_portal, extra_agent, management, |_| {}).await
}

/// A trickle of logins at `url` (EIO4 WebSocket, protocol 1.2), one every
/// `pause`, each with the next token `token` gives, until one succeeds:
/// how long after `since` it did, or `None` after `limit` (or when the
/// tokens run out).
pub async fn until_a_login_succeeds(
    url: &str,
    since: std::time::Instant,
    limit: Duration,
    pause: Duration,
    mut token: impl FnMut() -> Option<String>,
) -> Option<Duration> {
    while since.elapsed() < limit {
        let Some(t) = token() else {
            tokio::time::sleep(pause).await;
            continue;
        };
        let mut c = PyClient::connect_url(url, Flavor::Eio4Websocket).await;
        let ack = c.login_as(&t, "1.2", "JavaScript").await;
        c.quit().await;
        if ack[0] == "ok" {
            return Some(since.elapsed());
        }
        tokio::time::sleep(pause).await;
    }
    None
}

/// A stack with the usual test settings, then `edit` applied to its
/// options (settings for the manager, listen addresses, ...).
pub async fn stack_edited(edit: impl FnOnce(&mut Options)) -> Stack {
    launch_edited(&[], &[], &[], &[], edit).await
}

async fn launch_edited(
    all: &[&str],
    extra_portal: &[&str],
    extra_agent: &[&str],
    management: &[&str],
    edit: impl FnOnce(&mut Options),
) -> Stack {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data_dir = std::env::temp_dir().join(format!("conclave-e2e-{}-{n}", std::process::id()));
    let mut options = Options::on_free_ports(data_dir.clone());
    options.service_key = KEY.into();
    options.env = vec![("RUST_LOG".into(), LOG.into())];
    options.all = all.iter().map(|s| s.to_string()).collect();
    options.management = management.iter().map(|s| s.to_string()).collect();
    options.agent = vec![
        "cluster.report_load_interval=100".into(),
        "agent.maxProcesses=64".into(),
    ];
    options
        .agent
        .extend(extra_agent.iter().map(|s| s.to_string()));
    options.portal = vec!["cluster.report_load_interval=100".into()];
    options
        .portal
        .extend(extra_portal.iter().map(|s| s.to_string()));
    edit(&mut options);
    let topology = Topology::launch(options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Stack {
        topology: Some(topology),
        data_dir,
    }
}

impl Stack {
    /// Kill the cluster manager (SIGKILL) and return once it is gone.
    pub fn kill_manager(&mut self) {
        let m = &mut self.processes[0];
        m.signal("KILL");
        m.wait_exit(Duration::from_secs(5))
            .expect("the manager dies");
    }

    /// Start a cluster manager again on the same address (after
    /// [`kill_manager`](Self::kill_manager)), with OWT-like initial time.
    pub async fn restart_manager(&mut self, initial_time_ms: u64) {
        let sets = vec![format!("manager.initial_time={initial_time_ms}")];
        self.blocking(move |t| t.restart_manager(&sets).map(drop))
            .await;
    }

    /// Start the cluster manager again on its address with these `--set`
    /// flags (after it was killed).
    pub async fn restart_manager_with(&mut self, sets: Vec<String>) {
        self.blocking(move |t| t.restart_manager(&sets).map(drop))
            .await;
    }

    /// Another conference agent in the cluster; its gRPC address.
    pub async fn add_agent(&mut self) -> String {
        self.blocking(|t| t.add_agent(&[])).await
    }

    /// Another portal serving `region`; its Socket.IO address.
    pub async fn add_portal(&mut self, region: &str) -> String {
        let sets = vec![format!("portal.regions=[\"{region}\"]")];
        self.blocking(move |t| t.add_portal(&sets)).await
    }

    /// Another portal with these `--set` flags; its Socket.IO address.
    pub async fn add_portal_with(&mut self, sets: Vec<String>) -> String {
        self.blocking(move |t| t.add_portal(&sets)).await
    }

    /// Another conference agent with these `--set` flags; its gRPC address.
    pub async fn add_agent_with(&mut self, sets: Vec<String>) -> String {
        self.blocking(move |t| t.add_agent(&sets)).await
    }

    /// Another management replica with the first one's settings (a shared
    /// `store.url`); its gRPC address.
    pub async fn add_management(&mut self) -> String {
        self.blocking(|t| t.add_management(&[])).await
    }

    /// Run a blocking topology change off the async runtime.
    async fn blocking<T: Send + 'static>(
        &mut self,
        change: impl FnOnce(&mut Topology) -> Result<T, conclave_stack::TopologyError> + Send + 'static,
    ) -> T {
        let mut topology = self.topology.take().expect("a running stack");
        let (topology, result) = tokio::task::spawn_blocking(move || {
            let result = change(&mut topology);
            (topology, result)
        })
        .await
        .unwrap();
        self.topology = Some(topology);
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A token placed by region preference (with [`add_portal`](Self::add_portal)).
    pub async fn token_in_region(&self, room: &str, user: &str, region: &str) -> String {
        self.management_client()
            .create_token(mgmt::CreateTokenRequest {
                room_id: room.into(),
                user: user.into(),
                role: "presenter".into(),
                preference: Some(mgmt::Preference {
                    isp: String::new(),
                    region: region.into(),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// The invariants every fault scenario ends with: no process of the stack
    /// died unless the test killed it (`killed` indexes `processes`); every
    /// worker the manager lists, and so every owner of an executing task, is
    /// a live process of ours; no `conference` process belongs to a dead or
    /// unknown agent.
    pub async fn assert_invariants(&mut self, killed: &[usize]) {
        for (i, p) in self.processes.iter_mut().enumerate() {
            let exited = p.child.try_wait().ok().flatten();
            if killed.contains(&i) {
                continue;
            }
            assert!(exited.is_none(), "process {i} died: {exited:?}");
        }
        let mut m = self.manager_client();
        let workers = m
            .get_workers(cluster::GetWorkersRequest {
                purpose: "all".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .workers;
        let live_logs: String = self
            .processes
            .iter()
            .enumerate()
            .filter(|(i, _)| !killed.contains(i))
            .map(|(_, p)| p.history.join("\n"))
            .collect();
        for w in &workers {
            assert!(
                live_logs.contains(w.as_str()),
                "worker {w} is listed but is none of the live processes"
            );
            // its tasks are answered, so their owner is known and alive
            m.get_tasks(cluster::GetTasksRequest {
                worker_id: w.clone(),
            })
            .await
            .unwrap();
        }
        let agents: Vec<&String> = workers
            .iter()
            .filter(|w| w.starts_with("conference-"))
            .collect();
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ps.stdout).lines() {
            let Some(rest) = line.split("--node-id ").nth(1) else {
                continue;
            };
            let node = rest.split_whitespace().next().unwrap_or_default();
            let Some((agent, _)) = node.rsplit_once('_') else {
                continue;
            };
            // nodes of other test stacks running in parallel belong to their own agents
            if self
                .processes
                .iter()
                .any(|p| p.history.iter().any(|l| l.contains(agent)))
            {
                assert!(
                    agents.iter().any(|a| *a == agent),
                    "orphan conference node {node}"
                );
            }
        }
    }

    /// Where the `i`th process (0 cluster manager, 1 management, 2 agent,
    /// 3 portal) serves `/metrics`.
    pub fn metrics_addr(&self, i: usize) -> String {
        self.processes[i]
            .history
            .iter()
            .find(|l| l.contains("metrics listening"))
            .and_then(|l| conclave_common::handshake::field(l, "local_addr"))
            .expect("the service logs its metrics address")
    }

    /// Log lines a process printed since the last call (its nodes' too, for the agent).
    pub fn drain_logs(&self, i: usize) -> Vec<String> {
        let mut out = self.processes[i].history.clone();
        while let Ok(l) = self.processes[i].lines.try_recv() {
            out.push(l);
        }
        out
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.portal_socket)
    }

    pub fn management_client(&self) -> ManagementClient<Channel> {
        grpc::management(&self.management)
    }

    pub fn portal_client(&self) -> PortalClient<Channel> {
        grpc::portal(&self.portal_grpc)
    }

    pub async fn room(&self, limit: i32) -> String {
        grpc::create_room(&self.management, "e2e", limit).await
    }

    /// A client connected over Engine.IO 4 WebSocket and logged in to `room`
    /// as presenter `user` with protocol 1.2.
    pub async fn logged_in(&self, room: &str, user: &str) -> PyClient {
        let mut client = PyClient::connect(self, Flavor::Eio4Websocket).await;
        let ack = client
            .login(&self.token(room, user, "presenter").await, "1.2")
            .await;
        assert_eq!(ack[0], "ok", "{user}'s login: {ack:?}");
        client
    }

    /// The conference nodes of the stack's first agent (`ListNodes`).
    pub async fn nodes(&self) -> Vec<conclave_proto::agent::v1::NodeInfo> {
        grpc::node_manager(&self.agent)
            .list_nodes(conclave_proto::agent::v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
    }

    /// The conference agent the cluster manager has `room` scheduled on.
    pub async fn room_agent(&self, room: &str) -> String {
        grpc::scheduled(&self.manager, Purpose::Conference, room)
            .await
            .unwrap()
    }

    pub async fn token(&self, room: &str, user: &str, role: &str) -> String {
        grpc::create_token(&self.management, room, user, role).await
    }

    pub async fn clients(&self) -> Vec<portal_pb::ClientInfo> {
        self.portal_client()
            .list_clients(portal_pb::ListClientsRequest {})
            .await
            .unwrap()
            .into_inner()
            .clients
    }

    /// The portal's tasks as the cluster manager holds them. A login's
    /// token task is announced after its answer, with the others of
    /// `portal.task_announcement_window` (20 ms): this waits that out first.
    pub async fn portal_tasks(&self) -> Vec<String> {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        grpc::tasks_of(&self.manager, &self.portal_worker).await
    }

    /// Participant ids the room's conference node holds (empty if none
    /// serves it), asking every agent of the cluster.
    pub async fn conference_participants(&self, room: &str) -> Vec<String> {
        let mut m = self.manager_client();
        let agents = m
            .get_workers(cluster::GetWorkersRequest {
                purpose: Purpose::Conference.to_string(),
            })
            .await
            .map(|r| r.into_inner().workers)
            .unwrap_or_default();
        for id in agents {
            let Ok(attr) = m
                .get_worker_attr(cluster::GetWorkerAttrRequest { worker_id: id })
                .await
            else {
                continue;
            };
            let endpoint = attr.into_inner().info.unwrap_or_default().grpc_endpoint;
            let Ok(node) = grpc::node_manager(&endpoint)
                .query_node(conclave_proto::agent::v1::QueryNodeRequest { room: room.into() })
                .await
            else {
                continue;
            };
            let endpoint = node.into_inner().endpoint;
            let mut ids: Vec<String> = grpc::conference(&endpoint)
                .get_participants(conf::GetParticipantsRequest {})
                .await
                .map(|r| {
                    r.into_inner()
                        .participants
                        .into_iter()
                        .map(|p| p.id)
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            return ids;
        }
        vec![]
    }

    /// No participant leaked: the portal's clients for `room` and the
    /// conference's participants are the same set, equal to `expected`.
    pub async fn assert_participants(&self, room: &str, expected: &[&str]) {
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        let mut last = (vec![], vec![]);
        for _ in 0..100 {
            let mut portal: Vec<String> = self
                .clients()
                .await
                .into_iter()
                .filter(|c| c.room == room)
                .map(|c| c.participant_id)
                .collect();
            portal.sort();
            let conference = self.conference_participants(room).await;
            if portal == expected && conference == expected {
                return;
            }
            last = (portal, conference);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        panic!(
            "participants of {room}: portal {:?}, conference {:?}, expected {expected:?}",
            last.0, last.1
        );
    }
}

/// Connect to the portal at `url` and log in with `token` as `sdk`,
/// `protocol`: (client, participant id, reconnection ticket or "").
pub async fn logged_in_at(
    url: &str,
    token: &str,
    flavor: Flavor,
    protocol: &str,
    sdk: &str,
) -> (PyClient, String, String) {
    let mut c = PyClient::connect_url(url, flavor).await;
    let ack = c.login_as(token, protocol, sdk).await;
    assert_eq!(ack[0], "ok", "{ack:?}");
    let ticket = ack[1]["reconnectionTicket"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id = c.sid.clone();
    (c, id, ticket)
}

/// A TCP port free on loopback right now.
pub use conclave_stack::testing::free_port;

/// Tamper with a token's signature.
pub fn tampered(token: &str) -> String {
    let mut t = JoinToken::decode(token).unwrap();
    t.host = "evil.example.com:8080".into();
    t.encode()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// python-socketio 5.x, WebSocket only (as the C++ SDK connects).
    Eio4Websocket,
    /// python-socketio 5.x, polling then upgrade (as the JS SDK connects).
    Eio4Polling,
    /// python-socketio 4.x over Engine.IO 3 (as the Android SDK).
    Eio3,
}

pub struct PyClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pub sid: String,
}

fn python(flavor: Flavor) -> Option<String> {
    let var = if flavor == Flavor::Eio3 {
        "CONCLAVE_PY_EIO3"
    } else {
        "CONCLAVE_PY_EIO4"
    };
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{var} is required under CI=true: run the tests through scripts/test.sh");
            }
            None
        }
    }
}

/// Whether the Python clients are installed (scripts/test.sh does it).
pub fn have_clients() -> bool {
    let ok = python(Flavor::Eio4Websocket).is_some() && python(Flavor::Eio3).is_some();
    if !ok {
        eprintln!("SKIPPED: python-socketio clients not installed (run through scripts/test.sh)");
    }
    ok
}

impl PyClient {
    pub async fn spawn(flavor: Flavor) -> PyClient {
        Self::spawn_with_env(flavor, &[]).await
    }

    /// A client process with extra environment (e.g. the CA it trusts).
    pub async fn spawn_with_env(flavor: Flavor, env: &[(&str, &str)]) -> PyClient {
        let py = python(flavor).expect("python client");
        let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/driver.py");
        let mut child = Command::new(py)
            .arg(driver)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        PyClient {
            child,
            stdin,
            lines,
            sid: String::new(),
        }
    }

    pub async fn cmd(&mut self, cmd: Value) -> Value {
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("driver answers")
            .unwrap()
            .expect("driver alive");
        serde_json::from_str(&reply).unwrap()
    }

    /// Spawn a client of `flavor` and connect it to the stack's portal.
    pub async fn connect(stack: &Stack, flavor: Flavor) -> PyClient {
        Self::connect_url(&stack.url(), flavor).await
    }

    /// Spawn a client of `flavor` and connect it to `url`.
    pub async fn connect_url(url: &str, flavor: Flavor) -> PyClient {
        Self::connect_url_with_env(url, flavor, &[]).await
    }

    /// As [`connect_url`](Self::connect_url), with extra environment.
    pub async fn connect_url_with_env(url: &str, flavor: Flavor, env: &[(&str, &str)]) -> PyClient {
        let mut c = PyClient::spawn_with_env(flavor, env).await;
        let transports = match flavor {
            Flavor::Eio4Polling => json!(["polling", "websocket"]),
            Flavor::Eio4Websocket => json!(["websocket"]),
            Flavor::Eio3 => json!(["polling", "websocket"]),
        };
        let r = c
            .cmd(json!({"cmd": "connect", "url": url, "transports": transports}))
            .await;
        assert_eq!(r["ok"], true, "{r}");
        c.sid = r["sid"].as_str().unwrap_or_default().to_string();
        c
    }

    /// Emit with an ack; the ack's arguments.
    pub async fn emit(&mut self, event: &str, args: Vec<Value>) -> Vec<Value> {
        self.emit_within(event, args, 10).await
    }

    /// As [`emit`](Self::emit), waiting up to `secs` for the ack (under
    /// [`cmd`](Self::cmd)'s own 30 s).
    pub async fn emit_within(&mut self, event: &str, args: Vec<Value>, secs: u64) -> Vec<Value> {
        let r = self
            .cmd(json!({"cmd": "emit", "event": event, "args": args, "timeout": secs}))
            .await;
        match r.get("ack") {
            Some(Value::Array(a)) => a.clone(),
            _ => panic!("no ack for {event}: {r}"),
        }
    }

    /// Log in as an SDK that OWT gives no reconnection (a disconnect leaves at once).
    pub async fn login(&mut self, token: &str, protocol: &str) -> Vec<Value> {
        self.login_as(token, protocol, "conclave-e2e").await
    }

    /// Log in as `sdk_type` ("JavaScript", "C++", ... get reconnection tickets).
    pub async fn login_as(&mut self, token: &str, protocol: &str, sdk_type: &str) -> Vec<Value> {
        self.login_within(token, protocol, sdk_type, 10).await
    }

    /// As [`login_as`](Self::login_as), waiting up to `secs` for the answer.
    pub async fn login_within(
        &mut self,
        token: &str,
        protocol: &str,
        sdk_type: &str,
        secs: u64,
    ) -> Vec<Value> {
        let mut info =
            json!({"token": token, "userAgent": {"sdk": {"type": sdk_type, "version": "5.1"}}});
        if !protocol.is_empty() {
            info["protocol"] = json!(protocol);
        }
        self.emit_within("login", vec![info], secs).await
    }

    /// Still in the room: no `drop` within half a second, and a text to
    /// everyone is acked `ok`.
    pub async fn assert_still_seated(&mut self) {
        assert!(self.wait_event("drop", 0.5).await.is_none(), "dropped");
        assert_eq!(
            self.emit("text", vec![json!({"to": "all", "message": "still here"})])
                .await,
            vec![json!("ok")],
            "a text from a seated participant"
        );
    }

    pub async fn wait_event(&mut self, event: &str, timeout_s: f64) -> Option<Value> {
        let r = self
            .cmd(json!({"cmd": "wait_event", "event": event, "timeout": timeout_s}))
            .await;
        if r.get("timeout").is_some() {
            None
        } else {
            Some(r["data"].clone())
        }
    }

    pub async fn events(&mut self) -> Vec<Value> {
        self.cmd(json!({"cmd": "events"})).await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn connected(&mut self) -> bool {
        self.cmd(json!({"cmd": "state"})).await["connected"] == true
    }

    pub async fn wait_disconnect(&mut self, timeout_s: f64) -> bool {
        self.cmd(json!({"cmd": "wait_disconnect", "timeout": timeout_s}))
            .await
            .get("disconnected")
            .is_some()
    }

    pub async fn disconnect(&mut self) {
        self.cmd(json!({"cmd": "disconnect"})).await;
    }

    pub async fn quit(mut self) {
        let _ = self.cmd(json!({"cmd": "quit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
