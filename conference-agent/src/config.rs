//! Conference agent configuration: the one place its defaults are set and
//! documented. Key names follow OWT's `agent.toml` where OWT has them; times
//! are in milliseconds.

use conclave_common::cluster_worker::ClusterConfig;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (`agent.v1.NodeManager`). Default "0.0.0.0:7003".
    pub listen: String,
    /// The host others reach this agent and its nodes at. Default "": the
    /// first non-loopback address of the machine (what another container can
    /// reach); a network in CIDR form ("10.0.9.0/24", an overlay network):
    /// this machine's address in it; set "127.0.0.1" for a single-machine
    /// stack.
    pub advertised_host: String,
    pub agent: AgentConfig,
    /// Membership in the cluster (`cluster.manager` is the manager's address).
    pub cluster: ClusterConfig,
    /// Settings handed to every conference node.
    pub node: NodeConfig,
    /// Prometheus `/metrics` ("" = off). Default "0.0.0.0:9703".
    pub metrics: conclave_common::metrics::MetricsConfig,
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
            listen: "0.0.0.0:7003".into(),
            advertised_host: String::new(),
            agent: AgentConfig::default(),
            cluster: ClusterConfig::default(),
            node: NodeConfig::default(),
            log: LogConfig::default(),
            trace: TraceConfig::default(),
            tls: conclave_common::tls::ServiceTls::default(),
            metrics: conclave_common::metrics::MetricsConfig::on("0.0.0.0:9703"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Most nodes at once; -1 (or 0) = unlimited. Default -1 (OWT).
    #[serde(rename = "maxProcesses")]
    pub max_processes: i64,
    /// Idle nodes kept warm. Default 2 (OWT).
    #[serde(rename = "prerunProcesses")]
    pub prerun_processes: u32,
    /// The `conference` binary; "" = next to this agent's executable. Default "".
    pub conference_binary: String,
    /// How long GetNode waits for a node to be ready. Default 5000.
    pub node_ready_timeout: u64,
    /// Node health check period. Default 1000.
    pub node_check_interval: u64,
    /// Failed health checks in a row after which a node is killed. Default 3.
    pub node_check_failures: u32,
    /// Where the load comes from: "auto" (nodes in use / maxProcesses when
    /// bounded, else CPU), "nodes" or "cpu". Default "auto".
    pub load: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_processes: -1,
            prerun_processes: 2,
            conference_binary: String::new(),
            node_ready_timeout: 5000,
            node_check_interval: 1000,
            node_check_failures: 3,
            load: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// host:port of the management service. Default "127.0.0.1:7000".
    pub management: String,
    /// Idle time after which a room's node exits. Default 30000 (OWT).
    pub self_clean_timeout: u64,
    /// How long a participant whose connection is lost keeps its seat for
    /// a relogin on any portal, in ms. Default 60000 (the portal's
    /// reconnection_timeout).
    pub reconnection_timeout: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            management: "127.0.0.1:7000".into(),
            self_clean_timeout: 30_000,
            reconnection_timeout: 60_000,
        }
    }
}

impl Config {
    pub fn max_processes(&self) -> Option<usize> {
        (self.agent.max_processes > 0).then_some(self.agent.max_processes as usize)
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.agent.load.as_str() {
            "auto" | "cpu" => Ok(()),
            "nodes" if self.max_processes().is_some() => Ok(()),
            "nodes" => Err("agent.load = \"nodes\" needs a positive agent.maxProcesses".into()),
            other => Err(format!(
                "agent.load must be auto, nodes or cpu, not `{other}`"
            )),
        }
    }

    /// The load is nodes in use / maxProcesses.
    pub fn counts_nodes(&self) -> bool {
        self.agent.load == "nodes" || (self.agent.load == "auto" && self.max_processes().is_some())
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-conference-agent";

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
