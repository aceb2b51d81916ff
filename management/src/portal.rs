//! Finding the portal a token sends its client to (OWT §14.2): schedule a
//! `portal` worker for the token code, retrying within a budget, and derive
//! the host and TLS flag the client will use.

use conclave_common::grpc::Channel;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use std::time::Duration;
use tonic::Code;

/// What a failed attempt costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time: costs 4.
    Timeout,
    /// An error answer: costs 1.
    Error,
}

/// OWT's attempt budget for scheduling a portal.
#[derive(Debug)]
pub struct RetryBudget {
    left: i64,
}

impl RetryBudget {
    pub fn new(budget: u32) -> Self {
        RetryBudget {
            left: i64::from(budget),
        }
    }

    /// Charge a failure; true while another attempt may be made.
    pub fn charge(&mut self, failure: Failure) -> bool {
        self.left -= match failure {
            Failure::Timeout => 4,
            Failure::Error => 1,
        };
        self.left > 0
    }
}

/// Where the client connects: `via_host` when set (its scheme gives the TLS
/// flag), else `hostname` (or `ip`) and port with the portal's `ssl` flag.
///
/// OWT drops the first 8 or 7 characters of `via_host` whether or not it
/// starts with a scheme; Conclave strips only a scheme that is there.
pub fn portal_host(info: &pb::WorkerInfo) -> (String, bool) {
    let via = info.via_host.trim();
    if !via.is_empty() {
        if let Some(rest) = via.strip_prefix("https://") {
            return (rest.to_string(), true);
        }
        return (
            via.strip_prefix("http://").unwrap_or(via).to_string(),
            false,
        );
    }
    let host = if info.hostname.is_empty() {
        &info.ip
    } else {
        &info.hostname
    };
    (format!("{host}:{}", info.port), info.ssl)
}

/// Schedule a portal for `code`; `None` when the budget is spent.
pub async fn schedule_portal(
    client: &mut ClusterManagerClient<Channel>,
    code: &str,
    preference: pb::Preference,
    reserve_ms: u64,
    budget: u32,
    retry_interval: Duration,
) -> Option<pb::WorkerInfo> {
    let mut budget = RetryBudget::new(budget);
    loop {
        let req = pb::ScheduleRequest {
            purpose: conclave_common::purpose::Purpose::Portal.to_string(),
            task: code.to_string(),
            preference: Some(preference.clone()),
            reserve_time_ms: reserve_ms.min(i64::MAX as u64) as i64,
        };
        let failure = match client.schedule(req).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                tracing::debug!(portal = %reply.id, %code, "portal scheduled");
                return Some(reply.info.unwrap_or_default());
            }
            Err(status) if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                Failure::Timeout
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), "scheduling a portal failed");
                Failure::Error
            }
        };
        if !budget.charge(failure) {
            tracing::warn!(%code, "no portal could be scheduled");
            return None;
        }
        tokio::time::sleep(retry_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_errors_and_timeouts() {
        let mut b = RetryBudget::new(60);
        for _ in 0..59 {
            assert!(b.charge(Failure::Error));
        }
        assert!(!b.charge(Failure::Error));
        let mut b = RetryBudget::new(60);
        for _ in 0..14 {
            assert!(b.charge(Failure::Timeout));
        }
        assert!(!b.charge(Failure::Timeout));
        let mut b = RetryBudget::new(1);
        assert!(!b.charge(Failure::Error));
    }

    fn info(via: &str, host: &str, ip: &str, port: u32, ssl: bool) -> pb::WorkerInfo {
        pb::WorkerInfo {
            via_host: via.into(),
            hostname: host.into(),
            ip: ip.into(),
            port,
            ssl,
            ..Default::default()
        }
    }

    #[test]
    fn host_comes_from_via_host_first() {
        assert_eq!(
            portal_host(&info(
                "https://conf.example.com",
                "h",
                "1.2.3.4",
                8080,
                false
            )),
            ("conf.example.com".into(), true)
        );
        assert_eq!(
            portal_host(&info("http://conf.example.com:81", "h", "", 8080, true)),
            ("conf.example.com:81".into(), false)
        );
        assert_eq!(
            portal_host(&info("conf.example.com", "", "", 0, true)),
            ("conf.example.com".into(), false)
        );
    }

    #[test]
    fn host_falls_back_to_hostname_then_ip() {
        assert_eq!(
            portal_host(&info("", "portal-1", "10.0.0.2", 8080, true)),
            ("portal-1:8080".into(), true)
        );
        assert_eq!(
            portal_host(&info("", "", "10.0.0.2", 8443, false)),
            ("10.0.0.2:8443".into(), false)
        );
    }
}
