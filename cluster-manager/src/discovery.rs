//! Prometheus HTTP service discovery of the conference nodes, beside
//! `/metrics`: `GET /sd/nodes` asks every conference agent the manager
//! lists for its nodes (`NodeManager/ListNodes`) and answers with each
//! node's metrics address, labelled with its agent, node id and room. Nodes
//! come and go with rooms and pick their ports at start, so a static
//! scrape configuration cannot name them. A standby manager lists no agent
//! and answers `[]`, so Prometheus may be given every manager.

use crate::service::ClusterService;
use conclave_common::purpose::Purpose;
use conclave_proto::agent::v1 as agent;
use conclave_proto::agent::v1::node_manager_client::NodeManagerClient;
use serde_json::{Value, json};
use std::time::Duration;

/// How long one agent may take to list its nodes.
const LIST_DEADLINE: Duration = Duration::from_secs(2);

pub fn routes(service: ClusterService) -> axum::Router {
    axum::Router::new().route(
        "/sd/nodes",
        axum::routing::get(move || {
            let service = service.clone();
            async move { axum::Json(node_targets(&service).await) }
        }),
    )
}

/// The conference agents: (worker id, NodeManager address).
fn agents(service: &ClusterService) -> Vec<(String, String)> {
    let core = service.core();
    core.get_workers(Purpose::Conference.as_str())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| {
            let attr = core.get_worker_attr(&id).ok()?;
            Some((id, attr.info.grpc_endpoint))
        })
        .collect()
}

/// One target group per node with a metrics address.
pub fn groups(agent_id: &str, nodes: &[agent::NodeInfo]) -> Vec<Value> {
    nodes
        .iter()
        .filter(|n| !n.metrics_endpoint.is_empty())
        .map(|n| {
            json!({
                "targets": [n.metrics_endpoint],
                "labels": {"agent": agent_id, "node": n.node_id, "room": n.room},
            })
        })
        .collect()
}

async fn node_targets(service: &ClusterService) -> Vec<Value> {
    let lists = agents(service).into_iter().map(|(id, endpoint)| async move {
        let channel = match conclave_common::grpc::channel(&endpoint, LIST_DEADLINE) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(agent = %id, error = %e, "unusable agent address");
                return Vec::new();
            }
        };
        match NodeManagerClient::new(channel)
            .list_nodes(agent::ListNodesRequest {})
            .await
        {
            Ok(reply) => groups(&id, &reply.into_inner().nodes),
            Err(status) => {
                tracing::debug!(agent = %id, error = %status.message(), "listing nodes for discovery failed");
                Vec::new()
            }
        }
    });
    futures_util::future::join_all(lists)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_with_metrics_is_a_labelled_target() {
        let nodes = vec![
            agent::NodeInfo {
                node_id: "conference-1@h_0".into(),
                room: "r1".into(),
                metrics_endpoint: "10.0.0.5:41234".into(),
                ..Default::default()
            },
            agent::NodeInfo {
                node_id: "conference-1@h_1".into(),
                metrics_endpoint: String::new(),
                ..Default::default()
            },
        ];
        assert_eq!(
            groups("conference-1@h", &nodes),
            vec![json!({
                "targets": ["10.0.0.5:41234"],
                "labels": {"agent": "conference-1@h", "node": "conference-1@h_0", "room": "r1"},
            })]
        );
    }
}
