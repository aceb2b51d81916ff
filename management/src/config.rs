//! Management configuration: the one place its defaults are set and
//! documented. Times are in milliseconds. `management --print-config` prints
//! the effective values.

use conclave_common::config::ClusterLink;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (`management.v1.Management`, health, reflection).
    /// Default "0.0.0.0:7000"; port 0 picks a free port.
    pub listen: String,
    /// The key tokens are signed with, shared with every portal. No default:
    /// an empty key is refused at start-up. Prefer CONCLAVE_SERVICE_KEY or
    /// service_key_file over writing it into a file others can read.
    pub service_key: String,
    /// A file holding the service key, read when service_key is empty. Default "".
    pub service_key_file: String,
    /// Directory of the embedded database (created on first start), used
    /// when `store.url` is empty. Default "data/management".
    pub data_dir: String,
    /// The database: the embedded SQLite file by default, PostgreSQL with
    /// `store.url` (several replicas on one database).
    pub store: crate::store::StoreConfig,
    pub cluster: ClusterLink,
    pub token: TokenConfig,
    /// OWT's REST API (rooms, tokens, participants, services) with MAuth.
    pub rest: RestConfig,
    /// Prometheus `/metrics` ("" = off). Default "0.0.0.0:9700".
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
            listen: "0.0.0.0:7000".into(),
            service_key: String::new(),
            service_key_file: String::new(),
            data_dir: "data/management".into(),
            store: crate::store::StoreConfig::default(),
            cluster: ClusterLink::default(),
            token: TokenConfig::default(),
            rest: RestConfig::default(),
            log: LogConfig::default(),
            trace: TraceConfig::default(),
            tls: conclave_common::tls::ServiceTls::default(),
            metrics: conclave_common::metrics::MetricsConfig::on("0.0.0.0:9700"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// How long a token can be consumed after it was created. Default 180000 (3 minutes, OWT).
    pub lifetime: u64,
    /// How long the scheduled portal is reserved for the token. Default 60000 (OWT).
    pub portal_reserve_time: u64,
    /// Retry budget for scheduling a portal: each failed attempt costs 1, a
    /// timed-out one 4; when it is spent CreateToken fails with "Failed to get
    /// portal". Default 60 (OWT).
    pub portal_schedule_budget: u32,
    /// Pause between portal scheduling attempts. Default 1000 (OWT).
    pub portal_schedule_retry_interval: u64,
    /// Sign what a token grants (room, user, role, origin, code) into it as
    /// `claims`, so that a portal joins the room while the token is being
    /// consumed instead of after. OWT's clients and portal ignore the
    /// field. Off: tokens are OWT's byte for byte, and portals take the
    /// longer path (consume, then join). Default true.
    pub sign_claims: bool,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            lifetime: 180_000,
            portal_reserve_time: 60_000,
            portal_schedule_budget: 60,
            portal_schedule_retry_interval: 1000,
            sign_claims: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Listen address of the REST API ("" = off). Default "0.0.0.0:3000"
    /// (OWT's port); port 0 picks a free port.
    pub listen: String,
    /// Largest request body accepted; larger ones get 400/1201. Default
    /// 102400 (OWT's body parser's 100 KiB).
    pub max_body: usize,
    /// Refuse a MAuth header whose timestamp is more than `replay_window`
    /// ms from now, or whose cnonce this service already used in the window
    /// (OWT wrote this check but left it off). Default true.
    pub replay_protection: bool,
    /// Default 300000 (5 minutes either way, for clock skew).
    pub replay_window: u64,
    /// Most cnonces remembered at once; past it, new headers are refused
    /// until old ones age out. Default 1000000 (about 100 MB at most).
    pub replay_capacity: usize,
    /// The super service's id: it may manage services over REST and owns the
    /// rooms created over gRPC. Default "000000000000000000000000".
    pub super_service_id: String,
    /// The super service's MAuth key ("" = it cannot sign in over REST).
    /// Prefer CONCLAVE_REST__SUPER_SERVICE_KEY or super_service_key_file.
    /// Default "".
    pub super_service_key: String,
    /// A file holding that key, read when super_service_key is empty. Default "".
    pub super_service_key_file: String,
    /// Serve https: `cert` and `key` PEM files, reloaded when they change or
    /// on SIGHUP. Default: plaintext.
    pub tls: conclave_common::tls::ServerTls,
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            listen: "0.0.0.0:3000".into(),
            max_body: 100 * 1024,
            replay_protection: true,
            replay_window: 300_000,
            replay_capacity: 1_000_000,
            super_service_id: "000000000000000000000000".into(),
            super_service_key: String::new(),
            super_service_key_file: String::new(),
            tls: conclave_common::tls::ServerTls::default(),
        }
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-management";

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
