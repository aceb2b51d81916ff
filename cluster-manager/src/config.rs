//! Cluster manager configuration: the one place its defaults are set and
//! documented. Key names follow OWT's `cluster_manager.toml`; times are in
//! milliseconds. `cluster-manager --print-config` prints the effective values.

use crate::strategy::Strategy;
use conclave_common::telemetry::{LogConfig, TraceConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (`cluster.v1.ClusterManager`, health, reflection).
    /// Default "0.0.0.0:7001"; port 0 picks a free port.
    pub listen: String,
    pub manager: ManagerConfig,
    /// Allocation strategy per purpose.
    pub strategy: StrategyConfig,
    /// Prometheus `/metrics` ("" = off). Default "0.0.0.0:9701".
    pub metrics: conclave_common::metrics::MetricsConfig,
    pub log: LogConfig,
    /// OTLP export of spans (off by default).
    pub trace: TraceConfig,
    /// Mutual TLS for this service's gRPC, server and client: `ca`, `cert`
    /// and `key` PEM files. Default: none (plaintext, as the log says once).
    pub tls: conclave_common::tls::ServiceTls,
    /// Standby managers through an etcd election. Default: none (this
    /// manager serves alone).
    pub election: crate::election::ElectionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:7001".into(),
            manager: ManagerConfig::default(),
            strategy: StrategyConfig::default(),
            log: LogConfig::default(),
            trace: TraceConfig::default(),
            tls: conclave_common::tls::ServiceTls::default(),
            election: crate::election::ElectionConfig::default(),
            metrics: conclave_common::metrics::MetricsConfig::on("0.0.0.0:9701"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// After start, `Schedule` answers "cluster manager is not ready." for this
    /// long while workers rejoin and re-announce their tasks. Default 2000.
    /// (OWT ships 6000; workers rejoin within one keep-alive period, 800 ms, so
    /// 2000 leaves margin while keeping logins down for less after a restart.)
    pub initial_time: u64,
    /// Liveness sweep period. Default 1000.
    pub check_alive_interval: u64,
    /// Sweeps without a keep-alive after which a worker is removed. Default 3
    /// (about 4 s with the default interval).
    pub check_alive_count: u32,
    /// Reservation used when `Schedule` gives no reserve time, and kept for a
    /// task after it is laid down. Default 60000 (OWT meant this but never
    /// wired it, §17.1).
    pub schedule_reserve_time: u64,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            initial_time: 2000,
            check_alive_interval: 1000,
            check_alive_count: 3,
            schedule_reserve_time: 60_000,
        }
    }
}

/// Strategy names: last-used, least-used, most-used, round-robin,
/// randomly-pick, weight-robin. Purposes without a key use `general`.
/// Defaults are those of OWT's shipped `cluster_manager.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    /// Default "last-used".
    pub general: String,
    /// Default "last-used".
    pub portal: String,
    /// Default "last-used".
    pub conference: String,
    /// Default "last-used".
    pub webrtc: String,
    /// Default "round-robin".
    pub sip: String,
    /// Default "round-robin".
    pub streaming: String,
    /// Default "randomly-pick".
    pub recording: String,
    /// Default "most-used".
    pub audio: String,
    /// Default "least-used".
    pub video: String,
    /// Default "least-used".
    pub analytics: String,
    /// Default "last-used".
    pub eventbridge: String,
    /// Default "last-used".
    pub mediabridge: String,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        let s = |v: &str| v.to_string();
        StrategyConfig {
            general: s("last-used"),
            portal: s("last-used"),
            conference: s("last-used"),
            webrtc: s("last-used"),
            sip: s("round-robin"),
            streaming: s("round-robin"),
            recording: s("randomly-pick"),
            audio: s("most-used"),
            video: s("least-used"),
            analytics: s("least-used"),
            eventbridge: s("last-used"),
            mediabridge: s("last-used"),
        }
    }
}

impl StrategyConfig {
    pub fn name_for(&self, purpose: &str) -> &str {
        match purpose {
            "portal" => &self.portal,
            "conference" => &self.conference,
            "webrtc" => &self.webrtc,
            "sip" => &self.sip,
            "streaming" => &self.streaming,
            "recording" => &self.recording,
            "audio" => &self.audio,
            "video" => &self.video,
            "analytics" => &self.analytics,
            "eventbridge" => &self.eventbridge,
            "mediabridge" => &self.mediabridge,
            _ => &self.general,
        }
    }

    /// A fresh strategy for a purpose. Names are checked by [`Config::validate`].
    pub fn for_purpose(&self, purpose: &str) -> Strategy {
        self.name_for(purpose)
            .parse()
            .unwrap_or(Strategy::RandomlyPick)
    }

    fn all(&self) -> [(&'static str, &str); 12] {
        [
            ("general", &self.general),
            ("portal", &self.portal),
            ("conference", &self.conference),
            ("webrtc", &self.webrtc),
            ("sip", &self.sip),
            ("streaming", &self.streaming),
            ("recording", &self.recording),
            ("audio", &self.audio),
            ("video", &self.video),
            ("analytics", &self.analytics),
            ("eventbridge", &self.eventbridge),
            ("mediabridge", &self.mediabridge),
        ]
    }
}

impl Config {
    /// Listening on an OS-assigned loopback port and scheduling at once
    /// (no initial time): for tests and local tools.
    pub fn loopback() -> Self {
        Config {
            listen: "127.0.0.1:0".into(),
            metrics: conclave_common::metrics::MetricsConfig::on("127.0.0.1:0"),
            manager: ManagerConfig {
                initial_time: 0,
                ..ManagerConfig::default()
            },
            ..Config::default()
        }
    }

    /// Refuse what would misbehave at run time. Unlike OWT, which falls back
    /// to randomly-pick, an unknown strategy name is an error at start-up.
    pub fn validate(&self) -> Result<(), String> {
        for (purpose, name) in self.strategy.all() {
            name.parse::<Strategy>()
                .map_err(|e| format!("strategy.{purpose}: {e}"))?;
        }
        if self.manager.check_alive_interval == 0 {
            return Err("manager.check_alive_interval must be positive".into());
        }
        Ok(())
    }
}

impl conclave_common::cli::ServiceConfig for Config {
    const SERVICE: &'static str = "conclave-cluster-manager";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_owt() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.strategy.name_for("conference"), "last-used");
        assert_eq!(c.strategy.name_for("audio"), "most-used");
        assert_eq!(c.strategy.name_for("quic"), "last-used");
        assert_eq!(c.manager.schedule_reserve_time, 60_000);
    }

    #[test]
    fn unknown_strategy_is_refused() {
        let mut c = Config::default();
        c.strategy.video = "fastest".into();
        assert!(c.validate().unwrap_err().contains("strategy.video"));
    }
}
