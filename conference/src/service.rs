//! The gRPC adapter: `conference.v1.Conference` over the [`Conference`] core.

use crate::conference::{Conference, ConferenceError, JoinRequest, Participant, PortalRef};
use crate::notifier::Notifier;
use crate::room::{Permission, RoomConfig};
use conclave_common::grpc::Channel;
use conclave_common::sync::Locked;
use conclave_proto::conference::v1 as pb;
use conclave_proto::management::v1 as mgmt;
use conclave_proto::management::v1::management_client::ManagementClient;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

impl From<ConferenceError> for Status {
    fn from(e: ConferenceError) -> Status {
        let message = e.to_string();
        match e {
            ConferenceError::RoomIdClash | ConferenceError::NotReady => {
                Status::failed_precondition(message)
            }
            ConferenceError::RoomFull => Status::resource_exhausted(message),
            ConferenceError::InvalidRole
            | ConferenceError::TextTooLong
            | ConferenceError::InvalidArgument(_) => Status::invalid_argument(message),
            ConferenceError::AlreadyJoined => Status::already_exists(message),
            ConferenceError::NotJoined
            | ConferenceError::NoSuchParticipant
            | ConferenceError::NoTarget(_) => Status::not_found(message),
            ConferenceError::JoinFailed(_) => Status::unavailable(message),
        }
    }
}

#[derive(Clone)]
pub struct ConferenceService {
    state: Arc<Mutex<Conference>>,
    init: Arc<tokio::sync::Mutex<()>>,
    management: ManagementClient<Channel>,
    notifier: Arc<Notifier>,
    /// Cancelled to end the node (self-clean, destroy, failed room init).
    exit: CancellationToken,
    node_id: String,
}

impl ConferenceService {
    pub fn new(
        management: ManagementClient<Channel>,
        notifier: Arc<Notifier>,
        exit: CancellationToken,
        node_id: String,
    ) -> Self {
        ConferenceService {
            state: Arc::new(Mutex::new(Conference::default())),
            init: Arc::new(tokio::sync::Mutex::new(())),
            management,
            notifier,
            exit,
            node_id,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, Conference> {
        self.state.locked()
    }

    /// Refresh the participants and rooms gauges.
    fn gauges(&self) {
        let (participants, rooms) = {
            let s = self.state();
            (s.participants().count(), usize::from(s.room_id().is_some()))
        };
        conclave_common::metrics::gauge!("conference_participants").set(participants as f64);
        conclave_common::metrics::gauge!("conference_rooms").set(rooms as f64);
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Load the room on first use (OWT §12.2). A failure ends the node, as in
    /// OWT: it was taken for a room it cannot serve.
    async fn ensure_room(&self, room_id: &str) -> Result<(), ConferenceError> {
        if self.state().accepts(room_id)? {
            return Ok(());
        }
        let _guard = self.init.lock().await;
        if self.state().accepts(room_id)? {
            return Ok(());
        }
        let mut client = self.management.clone();
        let req = conclave_common::grpc::request(
            mgmt::GetRoomRequest {
                id: room_id.to_string(),
            },
            conclave_common::grpc::DEFAULT_DEADLINE,
        );
        match client.get_room(req).await {
            Ok(room) => {
                let config = RoomConfig::from(room.into_inner());
                tracing::info!(node = %self.node_id, room = %room_id, "room initialised");
                self.state().init(config, Instant::now())
            }
            Err(status) => {
                let reason = if status.code() == Code::NotFound {
                    "Room not found".to_string()
                } else {
                    status.message().to_string()
                };
                tracing::error!(node = %self.node_id, room = %room_id, %reason, "room initialisation failed; the node exits");
                let exit = self.exit.clone();
                tokio::spawn(async move {
                    // let the reply go out first
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    exit.cancel();
                });
                Err(ConferenceError::JoinFailed(reason))
            }
        }
    }

    /// Drop every participant of a lost portal and tell the others.
    pub fn portal_lost(&self, portal_id: &str) {
        let (dropped, deliveries) = self.state().drop_portal(portal_id, Instant::now());
        if !dropped.is_empty() {
            tracing::warn!(node = %self.node_id, portal = %portal_id, count = dropped.len(), "portal lost; its participants left");
        }
        self.notifier.send(deliveries);
        self.gauges();
    }
}

fn pb_permission(p: Permission) -> pb::Permission {
    pb::Permission {
        publish: Some(pb::MediaPermission {
            audio: p.publish.audio,
            video: p.publish.video,
        }),
        subscribe: Some(pb::MediaPermission {
            audio: p.subscribe.audio,
            video: p.subscribe.video,
        }),
    }
}

fn detail(p: &Participant) -> pb::ParticipantDetail {
    pb::ParticipantDetail {
        id: p.id.clone(),
        user: p.user.clone(),
        role: p.role.clone(),
        permission: Some(pb_permission(p.permission)),
        portal: p.portal.id.clone(),
    }
}

#[tonic::async_trait]
impl pb::conference_server::Conference for ConferenceService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let r = req.into_inner();
        if r.room_id.is_empty() || r.room_id.len() > crate::conference::MAX_FIELD_LEN {
            return Err(
                ConferenceError::InvalidArgument("roomId must be 1 to 1024 bytes".into()).into(),
            );
        }
        let p = r
            .participant
            .ok_or_else(|| ConferenceError::InvalidArgument("participant is required".into()))?;
        conclave_common::trace::record(&[
            ("room", &r.room_id),
            ("participant", &p.id),
            ("node", &self.node_id),
        ]);
        self.ensure_room(&r.room_id).await?;
        let joined = self.state().join(JoinRequest {
            id: p.id.clone(),
            user: p.user,
            role: p.role,
            portal: PortalRef {
                id: p.portal,
                endpoint: p.portal_endpoint,
            },
        })?;
        tracing::info!("participant joined");
        self.gauges();
        self.notifier.send(joined.deliveries);
        Ok(Response::new(pb::JoinReply {
            permission: Some(pb_permission(joined.permission)),
            room: joined.room.to_string(),
        }))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        let id = req.into_inner().participant_id;
        let (_, deliveries) = self.state().leave(&id, Instant::now())?;
        tracing::info!(node = %self.node_id, participant = %id, "participant left");
        self.gauges();
        self.notifier.send(deliveries);
        Ok(Response::new(pb::LeaveReply {}))
    }

    async fn text(&self, req: Request<pb::TextRequest>) -> Result<Response<pb::TextReply>, Status> {
        let r = req.into_inner();
        let deliveries = self.state().text(&r.from, &r.to, &r.message)?;
        self.notifier.send(deliveries);
        Ok(Response::new(pb::TextReply {}))
    }

    async fn get_participants(
        &self,
        _req: Request<pb::GetParticipantsRequest>,
    ) -> Result<Response<pb::GetParticipantsReply>, Status> {
        let state = self.state();
        Ok(Response::new(pb::GetParticipantsReply {
            room_id: state.room_id().unwrap_or_default().to_string(),
            participants: state.participants().map(detail).collect(),
        }))
    }

    async fn drop_participant(
        &self,
        req: Request<pb::DropParticipantRequest>,
    ) -> Result<Response<pb::DropParticipantReply>, Status> {
        let id = req.into_inner().participant_id;
        let participant = self
            .state()
            .participant(&id)
            .cloned()
            .ok_or(ConferenceError::NoSuchParticipant)?;
        self.notifier
            .drop_participant(&participant.portal, &id)
            .await;
        // The portal's own leave may have removed it already.
        if let Ok((_, deliveries)) = self.state().leave(&id, Instant::now()) {
            self.notifier.send(deliveries);
        }
        tracing::info!(node = %self.node_id, participant = %id, "participant dropped");
        self.gauges();
        Ok(Response::new(pb::DropParticipantReply {
            participant: Some(detail(&participant)),
        }))
    }

    async fn destroy(
        &self,
        _req: Request<pb::DestroyRequest>,
    ) -> Result<Response<pb::DestroyReply>, Status> {
        tracing::info!(node = %self.node_id, "destroy requested; the node exits");
        let exit = self.exit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            exit.cancel();
        });
        Ok(Response::new(pb::DestroyReply {}))
    }
}
