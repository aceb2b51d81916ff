//! Reaching the conference node that serves a room (OWT §14.7
//! `getRoomController`): the cluster manager names the agent the room is
//! scheduled on, the agent names the node.

use conclave_common::grpc::Channel;
use conclave_proto::agent::v1 as agent;
use conclave_proto::cluster::v1 as cluster;
use conclave_proto::cluster::v1::cluster_manager_client::ClusterManagerClient;
use conclave_proto::conference::v1 as conf;
use conclave_proto::conference::v1::conference_client::ConferenceClient;
use std::time::Duration;
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No node serves the room (OWT's `Room is inactive`).
    #[error("Room is inactive")]
    Inactive,
    /// A call failed; the status from the cluster, agent or node.
    #[error("{0}")]
    Rpc(tonic::Status),
}

#[derive(Clone)]
pub struct RoomNodes {
    cluster: ClusterManagerClient<Channel>,
    deadline: Duration,
}

impl RoomNodes {
    pub fn new(cluster: ClusterManagerClient<Channel>, deadline: Duration) -> RoomNodes {
        RoomNodes { cluster, deadline }
    }

    /// A client of the node serving `room`.
    pub async fn conference(&self, room: &str) -> Result<ConferenceClient<Channel>, NodeError> {
        let inactive = |s: tonic::Status| match s.code() {
            Code::NotFound => NodeError::Inactive,
            _ => NodeError::Rpc(s),
        };
        let mut cluster = self.cluster.clone();
        let worker_id = cluster
            .get_scheduled(cluster::GetScheduledRequest {
                purpose: conclave_common::purpose::Purpose::Conference.to_string(),
                task: room.to_string(),
            })
            .await
            .map_err(inactive)?
            .into_inner()
            .worker_id;
        let endpoint = cluster
            .get_worker_attr(cluster::GetWorkerAttrRequest { worker_id })
            .await
            .map_err(inactive)?
            .into_inner()
            .info
            .unwrap_or_default()
            .grpc_endpoint;
        let channel = conclave_common::grpc::channel(&endpoint, self.deadline)
            .map_err(|e| NodeError::Rpc(tonic::Status::unavailable(e.to_string())))?;
        let node = agent::node_manager_client::NodeManagerClient::new(channel)
            .query_node(agent::QueryNodeRequest {
                room: room.to_string(),
            })
            .await
            .map_err(inactive)?
            .into_inner();
        let channel = conclave_common::grpc::channel(&node.endpoint, self.deadline)
            .map_err(|e| NodeError::Rpc(tonic::Status::unavailable(e.to_string())))?;
        Ok(ConferenceClient::new(channel))
    }

    /// The room's participants; none while the room is not live.
    pub async fn participants(
        &self,
        room: &str,
    ) -> Result<Vec<conf::ParticipantDetail>, NodeError> {
        let mut node = match self.conference(room).await {
            Ok(node) => node,
            Err(NodeError::Inactive) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let reply = node
            .get_participants(conf::GetParticipantsRequest {})
            .await
            .map_err(NodeError::Rpc)?
            .into_inner();
        if reply.room_id != room {
            // the node moved on to another room (or none) meanwhile
            return Ok(Vec::new());
        }
        Ok(reply.participants)
    }

    pub async fn control(
        &self,
        room: &str,
        participant: &str,
        changes: Vec<conf::PermissionChange>,
    ) -> Result<conf::ParticipantDetail, NodeError> {
        let reply = self
            .conference(room)
            .await?
            .control_participant(conf::ControlParticipantRequest {
                participant_id: participant.to_string(),
                changes,
            })
            .await
            .map_err(NodeError::Rpc)?;
        Ok(reply.into_inner().participant.unwrap_or_default())
    }

    /// Drop a participant: its client gets `drop`, the others `leave`.
    pub async fn drop_participant(
        &self,
        room: &str,
        participant: &str,
    ) -> Result<conf::ParticipantDetail, NodeError> {
        let reply = self
            .conference(room)
            .await?
            .drop_participant(conf::DropParticipantRequest {
                participant_id: participant.to_string(),
                reason: "Dropped by the application (REST API)".into(),
            })
            .await
            .map_err(NodeError::Rpc)?;
        Ok(reply.into_inner().participant.unwrap_or_default())
    }

    /// A deleted room that is live is destroyed on its node (OWT §14.7): the
    /// node ends and portals drop its participants. A room that is not live,
    /// or a node that does not answer, is only logged.
    pub async fn destroy(&self, room: &str) {
        let result = async {
            self.conference(room)
                .await?
                .destroy(conf::DestroyRequest {})
                .await
                .map_err(NodeError::Rpc)
        }
        .await;
        match result {
            Ok(_) => tracing::info!(%room, "live room destroyed"),
            Err(NodeError::Inactive) => tracing::debug!(%room, "the deleted room was not live"),
            Err(e) => tracing::warn!(%room, error = %e, "destroying the deleted room failed"),
        }
    }
}
