//! Portal configuration: the one place its defaults are set and documented.
//! Key names follow OWT's `portal.toml` where OWT has them.

use conclave_common::cluster_worker::ClusterConfig;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The key tokens are signed with (shared with management). No default:
    /// an empty key is refused at start-up.
    pub service_key: String,
    /// A file holding the service key, read when service_key is empty. Default "".
    pub service_key_file: String,
    /// host:port of the management service; several replicas as a
    /// comma-separated list (calls fail over between them). Default
    /// "127.0.0.1:7000".
    pub management: String,
    pub portal: PortalConfig,
    /// Prometheus `/metrics` ("" = off). Default "0.0.0.0:9702".
    pub metrics: conclave_common::metrics::MetricsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    /// OTLP export of spans (off by default).
    pub trace: TraceConfig,
    /// Mutual TLS for this service's gRPC, server and client: `ca`, `cert`
    /// and `key` PEM files. Default: none (plaintext, as the log says once).
    pub tls: conclave_common::tls::ServiceTls,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service_key: String::new(),
            service_key_file: String::new(),
            management: "127.0.0.1:7000".into(),
            portal: PortalConfig::default(),
            cluster: ClusterConfig::default(),
            log: LogConfig::default(),
            trace: TraceConfig::default(),
            tls: conclave_common::tls::ServiceTls::default(),
            metrics: conclave_common::metrics::MetricsConfig::on("0.0.0.0:9702"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// Socket.IO listen address (path /socket.io/). Default "0.0.0.0:8080".
    pub listen: String,
    /// gRPC listen address (`portal.v1.Portal`). Default "0.0.0.0:7002".
    pub grpc_listen: String,
    /// Host name clients are sent to (tokens carry it). Default "": the
    /// machine's host name.
    pub hostname: String,
    /// Address other services (conference nodes) reach this portal's gRPC
    /// server at. Default "": the first non-loopback address; a network in
    /// CIDR form ("10.0.9.0/24"): this machine's address in it.
    pub ip_address: String,
    /// Public URL in front of the portal (e.g. "https://conf.example.com");
    /// tokens then carry it instead of hostname:port. Default "".
    pub via_host: String,
    /// Clients connect with TLS (tokens carry `secure`) though TLS is
    /// terminated in front of the portal. Default false (OWT's code default);
    /// `portal.tls` implies it.
    pub ssl: bool,
    /// Serve https/wss here: `cert` and `key` PEM files, reloaded when they
    /// change (`reload_interval`) or on SIGHUP. Default: plaintext.
    pub tls: conclave_common::tls::ServerTls,
    /// Port announced in tokens; 0 = the bound Socket.IO port. Default 0.
    pub public_port: u16,
    /// Seconds between Engine.IO pings. Default 25 (Socket.IO's default).
    pub ping_interval: u64,
    /// Seconds to wait for a pong. Default 20 (Socket.IO's default).
    pub ping_timeout: u64,
    /// Largest Engine.IO packet accepted, in bytes. Default 1048576.
    pub max_payload: u64,
    /// Bytes a WebSocket reads at a time: the read buffer every idle
    /// connection holds. Default 1024 (the library's is 4096); client
    /// messages are mostly smaller, a larger one takes a few more reads.
    pub ws_read_buffer_size: usize,
    /// Allowed CORS origins; "*" allows any (with credentials). Default ["*"].
    pub cors: Vec<String>,
    /// A connection that has not logged in for this long is closed, also
    /// after a logout. Default 180000 (3 minutes, OWT). One sweep checks
    /// every connection a quarter of this apart (at most 1 s).
    pub idle_timeout: u64,
    /// Seconds a reconnection ticket is valid. Default 600 (OWT).
    pub reconnection_ticket_lifetime: u64,
    /// Seconds a disconnected client may take to relogin. Default 60 (OWT).
    pub reconnection_timeout: u64,
    /// Key reconnection tickets are signed with. Default "": derived from the
    /// service key, so all portals of a deployment share it.
    pub reconnection_key: String,
    /// Notifications kept per client while it is away, for its relogin (by
    /// its conference node, which also bounds them by bytes and keeps
    /// delivered ones 46 s for a 1.2 replay), and held behind its login or
    /// relogin answer here. Default 1024; here also at most 1 MiB of them
    /// (`outbox::OUTBOX_BYTES`, as a node keeps).
    pub message_buffer_size: usize,
    /// SDK types whose protocol-1.2 relogins are answered like 1.1 (a ticket
    /// string, then the missed messages as events): the official JavaScript
    /// SDK 5.1 cannot read the 1.2 `{ticket, messages}` reply. Default ["JavaScript"].
    pub relogin_string_reply_sdks: Vec<String>,
    /// Deadline of ClusterManager/Schedule and Management calls, in ms. Default 2000.
    pub rpc_timeout: u64,
    /// The token tasks of the logins answered within this many ms of each
    /// other are announced to the cluster manager in one `PickUpTasks`
    /// (after the answers, which do not wait for it; the token's
    /// reservation holds the portal's place meanwhile). 0: one call per
    /// login. Default 20.
    pub task_announcement_window: u64,
    /// The pending joins answered within this many ms of each other are
    /// confirmed to their node in one `Confirm` (the answers do not wait
    /// for it). Until then the room's others do not hear of the newcomer
    /// (unless it sends a request of its own) and `GetParticipants`, so the
    /// REST API's participant list, does not show it. 0: a confirmation
    /// goes out with the answer, or with the next batch when one is on its
    /// way to that node (under load they group anyway). Default 0.
    pub confirm_window: u64,
    /// Deadline of NodeManager/GetNode, in ms: it may wait for a node to be
    /// ready. Default 6000.
    pub get_node_timeout: u64,
    /// Deadline of Conference/Join, in ms. Default 6000 (OWT).
    pub join_timeout: u64,
    /// Deadline of Conference/Text, in ms. Default 4000 (OWT).
    pub text_timeout: u64,
    /// When a room's conference node or agent is lost, how long the portal
    /// keeps trying to rebuild the room on another node (schedule, get
    /// node, restore its participants) before it drops them with the reason
    /// "No conference agent can host the room", in ms. Default 3000.
    pub restore_timeout: u64,
    /// When the portal is told to stop (SIGTERM, SIGINT), how long it may
    /// spend handing its clients over (detaching each seat on its node,
    /// closing its connection so that it relogins on another portal), in
    /// ms. Clients still here then are closed as they are: their nodes
    /// keep their seats, as when a portal dies. Keep it under the
    /// orchestrator's stop grace (docker compose and Swarm here: 20 s;
    /// Helm: 30 s). Default 15000.
    pub drain_timeout: u64,
    /// How often the portal asks each conference node its participants are
    /// on which room it serves, in ms (0: never). A node exit the cluster
    /// watch did not deliver (it fell between two streams of a manager
    /// failover, or a stalled manager held the stream) is then found and
    /// its rooms rebuilt within this period. Default 5000.
    pub node_check_interval: u64,
    /// Where the load reported to the cluster comes from: "cpu" (OWT) or
    /// "clients" (logged-in clients / max_clients). Default "cpu".
    pub load: String,
    /// Clients counted as full load with load = "clients". Default 10000.
    pub max_clients: u64,
    /// ISPs and regions this portal serves (token scheduling). Default [].
    pub isps: Vec<String>,
    pub regions: Vec<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            listen: "0.0.0.0:8080".into(),
            grpc_listen: "0.0.0.0:7002".into(),
            hostname: String::new(),
            ip_address: String::new(),
            via_host: String::new(),
            ssl: false,
            tls: conclave_common::tls::ServerTls::default(),
            public_port: 0,
            ping_interval: 25,
            ping_timeout: 20,
            max_payload: 1024 * 1024,
            ws_read_buffer_size: 1024,
            cors: vec!["*".into()],
            idle_timeout: 180_000,
            reconnection_ticket_lifetime: 600,
            reconnection_timeout: 60,
            reconnection_key: String::new(),
            message_buffer_size: 1024,
            relogin_string_reply_sdks: vec!["JavaScript".into()],
            rpc_timeout: 2000,
            task_announcement_window: 20,
            confirm_window: 0,
            get_node_timeout: 6000,
            join_timeout: 6000,
            text_timeout: 4000,
            restore_timeout: 3000,
            drain_timeout: 15_000,
            node_check_interval: 5000,
            load: "cpu".into(),
            max_clients: 10_000,
            isps: Vec::new(),
            regions: Vec::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        match self.portal.load.as_str() {
            "cpu" | "clients" => {}
            other => return Err(format!("portal.load must be cpu or clients, not `{other}`")),
        }
        if self.portal.max_clients == 0 {
            return Err("portal.max_clients must be positive".into());
        }
        if self.portal.ping_interval == 0 || self.portal.ping_timeout == 0 {
            return Err("portal.ping_interval and portal.ping_timeout must be positive".into());
        }
        if self.portal.drain_timeout == 0 {
            return Err("portal.drain_timeout must be positive".into());
        }
        Ok(())
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-portal";

    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn trace(&self) -> &TraceConfig {
        &self.trace
    }

    fn tls(&self) -> Option<&conclave_common::tls::ServiceTls> {
        Some(&self.tls)
    }
}
