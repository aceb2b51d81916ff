//! Following the cluster manager's `Watch` stream (OWT's monitoring topic):
//! one subscription that survives manager restarts. Portals watch conference
//! agents and nodes, conference nodes watch portals.

use crate::grpc::{self, Channel, GrpcError};
use crate::purpose::Purpose;
use conclave_proto::cluster::v1 as pb;
use conclave_proto::cluster::v1::cluster_event::Kind;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long to wait before subscribing again after the stream ended.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// After subscribing again, how long a worker known before may take to show
/// up on the manager (rejoining it after a restart or a failover) before it
/// is reported lost: a keep-alive period, a recovery's join retries, and
/// room for a loaded machine.
const REJOIN_GRACE: Duration = Duration::from_secs(5);

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
    /// The watch is back after a gap (a new leader, a restarted manager):
    /// lost workers were reported just before this, but a node exit that
    /// fell into the gap was not; a watcher that acts on node exits checks
    /// the nodes it relies on now.
    Resumed,
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

    /// The workers of the watched purposes, once the manager is in service
    /// (before, workers may still be rejoining it and the list be short)
    /// and every worker of `known` is listed again, or [`REJOIN_GRACE`]
    /// after it went in service: a live worker that was slow to rejoin (a
    /// loaded machine) is not taken for a lost one.
    async fn workers_in_service(
        &self,
        known: BTreeSet<String>,
        shutdown: &CancellationToken,
    ) -> Option<BTreeSet<String>> {
        let mut in_service_since = None;
        loop {
            let mut all = BTreeSet::new();
            let mut in_service = true;
            let purposes: Vec<String> = if self.purposes.is_empty() {
                vec!["all".into()]
            } else {
                self.purposes.iter().map(|p| p.to_string()).collect()
            };
            for purpose in purposes {
                let reply = self
                    .manager
                    .clone()
                    .get_workers(grpc::request(
                        pb::GetWorkersRequest { purpose },
                        Duration::from_secs(2),
                    ))
                    .await
                    .ok()?
                    .into_inner();
                in_service &= reply.state == "in-service";
                all.extend(reply.workers);
            }
            if in_service {
                let since = *in_service_since.get_or_insert_with(tokio::time::Instant::now);
                if known.is_subset(&all) || since.elapsed() >= REJOIN_GRACE {
                    return Some(all);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Call `on_change` for every event until `shutdown`, subscribing again
    /// (after a second) whenever the stream ends or the manager cannot be
    /// reached: a restarted manager, or a newly elected one, is followed
    /// without a gap in service. Events can fall in the gap between two
    /// streams, so after subscribing again the watcher reads the worker
    /// lists once the manager is in service, and reports as lost every
    /// worker it knew that is still not listed [`REJOIN_GRACE`] later.
    pub async fn run(self, shutdown: CancellationToken, mut on_change: impl FnMut(ClusterChange)) {
        let request = pb::WatchRequest {
            purposes: self.purposes.iter().map(|p| p.to_string()).collect(),
        };
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut first = true;
        loop {
            let mut client = self.manager.clone();
            let subscribed = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = client.watch(request.clone()) => s,
            };
            match subscribed {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    let again = !first;
                    first = false;
                    let recheck = self.workers_in_service(known.clone(), &shutdown);
                    tokio::pin!(recheck);
                    let mut rechecked = false;
                    loop {
                        let item = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            listed = &mut recheck, if !rechecked => {
                                rechecked = true;
                                if let Some(listed) = listed {
                                    if again {
                                        for worker in known.difference(&listed) {
                                            tracing::warn!(%worker, "a worker is gone since the watch was interrupted");
                                            on_change(ClusterChange::WorkerLost {
                                                worker: worker.clone(),
                                                reason: "gone while the watch was interrupted".into(),
                                            });
                                        }
                                        on_change(ClusterChange::Resumed);
                                    }
                                    known = listed;
                                }
                                continue;
                            }
                            item = stream.next() => item,
                        };
                        match item {
                            Some(Ok(event)) => {
                                if let Some(change) = ClusterChange::from_event(event) {
                                    match &change {
                                        ClusterChange::WorkerJoined { worker } => {
                                            known.insert(worker.clone());
                                        }
                                        ClusterChange::WorkerLost { worker, .. } => {
                                            known.remove(worker);
                                        }
                                        ClusterChange::NodeExited { .. }
                                        | ClusterChange::Resumed => {}
                                    }
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
