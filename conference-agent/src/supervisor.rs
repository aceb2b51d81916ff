//! Conference node processes: spawning, the ready handshake (the node prints
//! `CONCLAVE_NODE_READY port=<n>` on stdout), health checks, stopping and
//! killing, and what happens when a node exits.
//!
//! A node's standard input is a pipe from the agent: the node exits when it
//! closes, so closing it is a graceful stop and no node outlives its agent.

use crate::Agent;
use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// How long a graceful stop may take before the node is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Close stdin, wait, then kill.
    Stop,
    Kill,
}

/// `--set` flags giving a node its agent's `[trace]` table: a node's spans go
/// where its agent's go.
fn trace_settings(trace: &conclave_common::telemetry::TraceConfig) -> Vec<String> {
    let mut args = Vec::new();
    let mut set = |key: &str, value: String| {
        args.push("--set".to_string());
        args.push(format!("trace.{key}={value}"));
    };
    if !trace.otlp_endpoint.is_empty() {
        set("otlp_endpoint", trace.otlp_endpoint.clone());
    }
    set("export_delay", trace.export_delay.to_string());
    set("export_timeout", trace.export_timeout.to_string());
    args
}

/// `--set` flags giving a node its agent's `[tls]` table: nodes speak
/// mutual TLS exactly when their agent does.
fn tls_settings(tls: &conclave_common::tls::ServiceTls) -> Vec<String> {
    if !tls.enabled() {
        return Vec::new();
    }
    [
        ("ca", &tls.ca),
        ("cert", &tls.cert),
        ("key", &tls.key),
        ("server_name", &tls.server_name),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .flat_map(|(k, v)| ["--set".to_string(), format!("tls.{k}={v}")])
    .collect()
}

impl Agent {
    /// Start one node process for the pool entry `id`.
    pub(crate) fn spawn_node(self: &Arc<Self>, id: String) {
        let node = &self.config.node;
        let mut cmd = Command::new(&self.node_binary);
        cmd.arg("--node-id")
            .arg(&id)
            .args(["--set", "listen=0.0.0.0:0", "--set", "exit_with_stdin=true"])
            .arg("--set")
            .arg(format!("management={}", node.management))
            .arg("--set")
            .arg(format!("cluster.manager={}", self.config.cluster.manager))
            .arg("--set")
            .arg(format!("self_clean_timeout={}", node.self_clean_timeout))
            .arg("--set")
            .arg(format!(
                "reconnection_timeout={}",
                node.reconnection_timeout
            ))
            .args(trace_settings(&self.config.trace))
            .args(tls_settings(&self.config.tls))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(node = %id, binary = %self.node_binary.display(), error = %e, "cannot start a conference node");
                self.pool().remove(&id);
                self.pause_spawning_after_failure();
                return;
            }
        };
        if let Some(pid) = child.id() {
            self.pool().set_pid(&id, pid);
        }
        tracing::info!(node = %id, pid = ?child.id(), "conference node started");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::unbounded_channel();
        self.controls().insert(id.clone(), tx);
        if let Some(stdout) = stdout {
            tokio::spawn(read_stdout(self.clone(), id.clone(), stdout));
        }
        tokio::spawn(supervise(self.clone(), id, child, stdin, rx));
    }

    /// Ask a node to stop (gracefully) or die.
    pub(crate) fn control(&self, id: &str, control: Control) {
        if let Some(tx) = self.controls().get(id) {
            let _ = tx.send(control);
        }
    }

    /// After a spawn failure, pause refills for 2 s (OWT `spawn_failed`).
    fn pause_spawning_after_failure(self: &Arc<Self>) {
        self.set_spawning(false);
        let agent = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if !agent.shutting_down() {
                agent.set_spawning(true);
                agent.fill();
            }
        });
    }
}

async fn read_stdout(agent: Arc<Agent>, id: String, stdout: tokio::process::ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.starts_with(conclave_common::handshake::NODE_READY_PREFIX) {
            match conclave_common::handshake::parse_ready(&line) {
                Some(port) => {
                    let endpoint = format!("{}:{port}", agent.advertised_host);
                    if let Some(m) = conclave_common::handshake::parse_ready_metrics(&line) {
                        agent
                            .pool()
                            .set_metrics_endpoint(&id, format!("{}:{m}", agent.advertised_host));
                    }
                    let spawned = agent.pool().node(&id).map(|n| n.spawned);
                    if let Some(spawned) = spawned {
                        conclave_common::metrics::histogram!("agent_node_start_seconds")
                            .record(spawned.elapsed().as_secs_f64());
                    }
                    if agent.pool().mark_ready(&id, endpoint.clone()) {
                        agent.update_load();
                        tracing::info!(node = %id, %endpoint, "conference node ready");
                        tokio::spawn(health_monitor(agent.clone(), id.clone(), endpoint));
                    }
                }
                None => tracing::warn!(node = %id, %line, "malformed ready line"),
            }
        } else {
            // The node's own log lines, relayed.
            // Relayed on a best-effort basis: a closed stdout must not stop
            // the reading, or the node would block on a full pipe.
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
}

async fn supervise(
    agent: Arc<Agent>,
    id: String,
    mut child: Child,
    mut stdin: Option<ChildStdin>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut asked_to_stop = false;
    let status: Option<ExitStatus> = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            c = control.recv() => match c {
                Some(Control::Stop) => {
                    asked_to_stop = true;
                    stdin.take();
                    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                        Ok(status) => break status.ok(),
                        Err(_) => {
                            tracing::warn!(node = %id, "node did not stop in time; killing it");
                            let _ = child.start_kill();
                        }
                    }
                }
                Some(Control::Kill) | None => {
                    let _ = child.start_kill();
                }
            }
        }
    };
    drop(stdin);
    agent.node_exited(&id, status, asked_to_stop).await;
}

/// Check a ready node's health; kill it after too many failures in a row
/// (a hung or stopped process answers nothing).
async fn health_monitor(agent: Arc<Agent>, id: String, endpoint: String) {
    let period = Duration::from_millis(agent.config.agent.node_check_interval.max(10));
    let limit = agent.config.agent.node_check_failures;
    let Ok(channel) = conclave_common::grpc::channel(&endpoint, period) else {
        return;
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut failures = 0;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if agent.pool().node(&id).is_none() {
            return;
        }
        let req = conclave_common::grpc::request(
            tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            },
            period,
        );
        match client.check(req).await {
            Ok(_) => failures = 0,
            Err(status) => {
                failures += 1;
                tracing::debug!(node = %id, failures, error = %status.message(), "node health check failed");
                if failures >= limit {
                    tracing::warn!(node = %id, "node unresponsive; killing it");
                    agent.control(&id, Control::Kill);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tls_settings;
    use conclave_common::tls::ServiceTls;

    #[test]
    fn nodes_get_the_agents_tls_table() {
        assert!(tls_settings(&ServiceTls::default()).is_empty());
        let tls = ServiceTls {
            ca: "/c/ca.pem".into(),
            cert: "/c/s.pem".into(),
            key: "/c/s-key.pem".into(),
            server_name: String::new(),
        };
        assert_eq!(
            tls_settings(&tls),
            [
                "--set",
                "tls.ca=/c/ca.pem",
                "--set",
                "tls.cert=/c/s.pem",
                "--set",
                "tls.key=/c/s-key.pem"
            ]
        );
        let named = ServiceTls {
            server_name: "conclave".into(),
            ..tls
        };
        assert_eq!(
            tls_settings(&named)[6..],
            ["--set", "tls.server_name=conclave"]
        );
    }
}
