//! Conference node configuration: the one place its defaults are set and
//! documented. An agent starts each node with `--node-id` and passes its own
//! `[node]` settings as `--set` flags; `CONCLAVE_*` variables reach it too.

use conclave_common::config::ClusterLink;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address. Default "0.0.0.0:0": a port the OS picks, which
    /// the node reports to its agent on stdout as `CONCLAVE_NODE_READY port=<n>`.
    pub listen: String,
    /// This node's id, `<agent worker id>_<n>`; the controller name portals
    /// match broadcasts against. Set by the agent (`--node-id`). Default "".
    pub node_id: String,
    /// host:port of the management service (room configuration); several
    /// replicas as a comma-separated list (calls fail over between them).
    /// Default "127.0.0.1:7000".
    pub management: String,
    pub cluster: ClusterLink,
    /// An idle room (no participant) is destroyed after this long and the
    /// node exits. Default 30000 (OWT).
    pub self_clean_timeout: u64,
    /// Deadline of notifications to portals. Default 2000 (OWT).
    pub portal_rpc_timeout: u64,
    /// Notifications queued per portal before new ones are dropped. Default 4096.
    pub portal_queue: usize,
    /// A participant whose connection is lost (its socket closed, its portal
    /// died or drains) keeps its seat this long for a relogin on any portal,
    /// in ms. Default 60000 (the portal's reconnection_timeout, OWT).
    pub reconnection_timeout: u64,
    /// Notifications a participant has been sent are kept this long after
    /// delivery, for a protocol-1.2 relogin reply, in ms. Default 46000
    /// (Socket.IO's ping interval + timeout + 1 s).
    pub message_keep: u64,
    /// At most this many notifications are kept per participant. Default 1024.
    pub message_buffer_size: usize,
    /// At most this many bytes of notifications are kept per participant.
    /// Default 1048576.
    pub message_buffer_bytes: usize,
    /// Exit when standard input closes, so a node never outlives its agent.
    /// The agent sets it. Default false.
    pub exit_with_stdin: bool,
    /// Prometheus `/metrics` ("" = off). Default "0.0.0.0:0".
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
            listen: "0.0.0.0:0".into(),
            node_id: String::new(),
            management: "127.0.0.1:7000".into(),
            cluster: ClusterLink::default(),
            self_clean_timeout: 30_000,
            portal_rpc_timeout: 2000,
            portal_queue: 4096,
            reconnection_timeout: 60_000,
            message_keep: 46_000,
            message_buffer_size: 1024,
            message_buffer_bytes: 1 << 20,
            exit_with_stdin: false,
            log: LogConfig::default(),
            trace: TraceConfig::default(),
            tls: conclave_common::tls::ServiceTls::default(),
            metrics: conclave_common::metrics::MetricsConfig::on("0.0.0.0:0"),
        }
    }
}

impl Config {
    pub fn seats(&self) -> crate::service::Seats {
        use std::time::Duration;
        crate::service::Seats {
            detach_window: Duration::from_millis(self.reconnection_timeout),
            limits: crate::mailbox::Limits {
                keep: Duration::from_millis(self.message_keep),
                count: self.message_buffer_size,
                bytes: self.message_buffer_bytes,
            },
        }
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-conference";

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
