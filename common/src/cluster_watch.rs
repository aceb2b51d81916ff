//! Following the cluster manager's `Watch` stream (OWT's monitoring topic):
//! one subscription that survives manager restarts. Portals watch conference
//! agents and nodes, conference nodes watch portals.

use crate::grpc::{self, Channel, GrpcError};
use crate::purpose::Purpose;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_event::Kind;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long to wait before subscribing again after the stream ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// A cluster event a watcher acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// A worker joined (or rejoined).
    WorkerJoined { worker: String },
    /// A worker quit or timed out; its tasks were released.
    WorkerLost { worker: String, reason: String },
    /// A node of an agent exited (`ReportNodeExit`).
    NodeExited {
        node: String,
        worker: String,
        reason: String,
    },
}

impl ClusterChange {
    fn from_event(e: pb::ClusterEvent) -> Option<ClusterChange> {
        match Kind::try_from(e.kind).ok()? {
            Kind::WorkerJoined => Some(ClusterChange::WorkerJoined { worker: e.id }),
            Kind::WorkerLost => Some(ClusterChange::WorkerLost {
                worker: e.id,
                reason: e.reason,
            }),
            Kind::NodeExited => Some(ClusterChange::NodeExited {
                node: e.id,
                worker: e.worker_id,
                reason: e.reason,
            }),
            Kind::Unspecified => None,
        }
    }
}

/// A subscription to the cluster events of some purposes.
pub struct ClusterWatch {
    manager: ClusterManagerClient<Channel>,
    purposes: Vec<Purpose>,
}

impl ClusterWatch {
    /// Watch `purposes` on the manager at `manager` (host:port).
    pub fn new(manager: &str, purposes: &[Purpose]) -> Result<ClusterWatch, GrpcError> {
        Ok(ClusterWatch {
            // A stream has no deadline: the channel default only bounds connecting.
            manager: ClusterManagerClient::new(grpc::channel(manager, Duration::from_secs(3600))?),
            purposes: purposes.to_vec(),
        })
    }

    /// Call `on_change` for every event until `shutdown`, subscribing again
    /// (after a second) whenever the stream ends or the manager cannot be
    /// reached: a restarted manager is followed without a gap in service.
    pub async fn run(self, shutdown: CancellationToken, mut on_change: impl FnMut(ClusterChange)) {
        let request = pb::WatchRequest {
            purposes: self.purposes.iter().map(|p| p.to_string()).collect(),
        };
        loop {
            let mut client = self.manager.clone();
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = client.watch(request.clone()) => s,
            };
            match subscribed {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        let item = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            item = stream.next() => item,
                        };
                        match item {
                            Some(Ok(event)) => {
                                if let Some(change) = ClusterChange::from_event(event) {
                                    on_change(change);
                                }
                            }
                            Some(Err(status)) => {
                                tracing::debug!(error = %status.message(), "cluster watch ended");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(error = %status.message(), "cannot watch the cluster")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            }
        }
    }

    /// Run in the background.
    pub fn spawn(
        self,
        shutdown: CancellationToken,
        on_change: impl FnMut(ClusterChange) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown, on_change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_changes() {
        let e = |kind: Kind| pb::ClusterEvent {
            kind: kind as i32,
            id: "x".into(),
            worker_id: "w".into(),
            reason: "timeout".into(),
            ..Default::default()
        };
        assert_eq!(
            ClusterChange::from_event(e(Kind::NodeExited)),
            Some(ClusterChange::NodeExited {
                node: "x".into(),
                worker: "w".into(),
                reason: "timeout".into()
            })
        );
        assert_eq!(
            ClusterChange::from_event(e(Kind::WorkerLost)),
            Some(ClusterChange::WorkerLost {
                worker: "x".into(),
                reason: "timeout".into()
            })
        );
        assert_eq!(ClusterChange::from_event(e(Kind::Unspecified)), None);
        let mut bad = e(Kind::WorkerJoined);
        bad.kind = 99;
        assert_eq!(ClusterChange::from_event(bad), None);
    }
}
