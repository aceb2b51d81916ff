//! The gRPC adapter: `conference.v1.Conference` over the [`Conference`] core.

use crate::conference::{
    Conference, ConferenceError, JoinRequest, Participant, PortalRef, Restoring,
};
use crate::notifier::Notifier;
use crate::room::{Permission, RoomConfig};
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
            ConferenceError::ReconnectionNotAllowed => Status::failed_precondition(message),
            ConferenceError::TicketUsed => Status::already_exists(message),
        }
    }
}

/// How seats and their notifications are kept (from configuration).
#[derive(Debug, Clone, Copy)]
pub struct Seats {
    pub detach_window: Duration,
    pub limits: crate::mailbox::Limits,
}

#[derive(Clone)]
pub struct ConferenceService {
    state: Arc<Mutex<Conference>>,
    init: Arc<tokio::sync::Mutex<()>>,
    management: conclave_common::grpc::Failover,
    notifier: Arc<Notifier>,
    /// Cancelled to end the node (self-clean, destroy, failed room init).
    exit: CancellationToken,
    node_id: String,
    /// How long a detached seat is kept for a relogin.
    detach_window: Duration,
}

impl ConferenceService {
    pub fn new(
        management: conclave_common::grpc::Failover,
        notifier: Arc<Notifier>,
        exit: CancellationToken,
        node_id: String,
        seats: Seats,
    ) -> Self {
        let mut conference = Conference::default();
        conference.set_limits(seats.limits);
        let state = Arc::new(Mutex::new(conference));
        let settled = Arc::downgrade(&state);
        notifier.on_settled(Arc::new(move |recipients, undelivered, failed| {
            if let Some(state) = settled.upgrade() {
                state.locked().settle(recipients, undelivered, failed);
            }
        }));
        ConferenceService {
            state,
            init: Arc::new(tokio::sync::Mutex::new(())),
            management,
            notifier,
            exit,
            node_id,
            detach_window: seats.detach_window,
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
        let answer = self
            .management
            .call(|channel| {
                let req = conclave_common::grpc::request(
                    mgmt::GetRoomRequest {
                        id: room_id.to_string(),
                    },
                    conclave_common::grpc::DEFAULT_DEADLINE,
                );
                async move { ManagementClient::new(channel).get_room(req).await }
            })
            .await;
        match answer {
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

    /// A portal was lost: its participants are detached, kept for a
    /// relogin on any portal (those without reconnection leave).
    pub fn portal_lost(&self, portal_id: &str, still_held: &std::collections::HashSet<String>) {
        let (detached, deliveries) =
            self.state()
                .portal_lost(portal_id, still_held, self.detach_window, Instant::now());
        if !detached.is_empty() {
            tracing::warn!(node = %self.node_id, portal = %portal_id, count = detached.len(), "portal lost; its participants are detached");
        }
        self.notifier.send(deliveries);
        self.gauges();
    }

    /// The gRPC address of the portal `portal_id`, as its participants here
    /// name it.
    pub fn portal_endpoint(&self, portal_id: &str) -> Option<String> {
        self.state()
            .participants()
            .find(|p| p.portal.id == portal_id)
            .map(|p| p.portal.endpoint.clone())
    }

    /// Detached seats whose window is over leave; the others are told.
    /// Pending joins never confirmed are forgotten; nobody is told.
    pub fn expire_detached(&self) {
        let forgotten = self.state().expire_pending(Instant::now());
        if !forgotten.is_empty() {
            tracing::warn!(node = %self.node_id, participants = ?forgotten, "pending joins never confirmed; forgotten");
            self.gauges();
        }
        let (gone, deliveries) = self.state().expire_detached(Instant::now());
        if !gone.is_empty() {
            tracing::info!(node = %self.node_id, count = gone.len(), "no relogin in time; detached participants left");
            self.notifier.send(deliveries);
            self.gauges();
        }
    }
}

/// Most pending joins one `Confirm` names.
pub const MAX_CONFIRMS: usize = 4096;

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

fn check_room_id(room_id: &str) -> Result<(), ConferenceError> {
    if room_id.is_empty() || room_id.len() > crate::conference::MAX_FIELD_LEN {
        return Err(ConferenceError::InvalidArgument(
            "roomId must be 1 to 1024 bytes".into(),
        ));
    }
    Ok(())
}

fn permission_of(p: Option<pb::Permission>) -> Permission {
    let p = p.unwrap_or_default();
    let media = |m: Option<pb::MediaPermission>| {
        let m = m.unwrap_or_default();
        crate::room::Media {
            audio: m.audio,
            video: m.video,
        }
    };
    Permission {
        publish: media(p.publish),
        subscribe: media(p.subscribe),
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
        check_room_id(&r.room_id)?;
        let p = r
            .participant
            .ok_or_else(|| ConferenceError::InvalidArgument("participant is required".into()))?;
        conclave_common::trace::record(&[
            ("room", &r.room_id),
            ("participant", &p.id),
            ("node", &self.node_id),
        ]);
        self.ensure_room(&r.room_id).await?;
        // a pending join its portal never confirms (it died before it could
        // confirm or abort) is kept as long as a detached seat
        let pending_until = r.pending.then(|| Instant::now() + self.detach_window);
        let joined = self.state().join(JoinRequest {
            pending_until,
            id: p.id.clone(),
            user: p.user,
            role: p.role,
            portal: PortalRef {
                id: p.portal,
                endpoint: p.portal_endpoint,
            },
            client: crate::seats::client_spec(p.client),
        })?;
        tracing::info!(pending = r.pending, "participant joined");
        self.gauges();
        self.notifier.send(joined.deliveries);
        Ok(Response::new(pb::JoinReply {
            permission: Some(pb_permission(joined.permission)),
            room: joined.room,
        }))
    }

    async fn confirm(
        &self,
        req: Request<pb::ConfirmRequest>,
    ) -> Result<Response<pb::ConfirmReply>, Status> {
        let ids = req.into_inner().participant_ids;
        if ids.len() > MAX_CONFIRMS {
            return Err(ConferenceError::InvalidArgument(format!(
                "at most {MAX_CONFIRMS} participants per call"
            ))
            .into());
        }
        let deliveries = self.state().confirm(&ids);
        tracing::debug!(node = %self.node_id, count = ids.len(), "pending joins confirmed");
        self.notifier.send(deliveries);
        Ok(Response::new(pb::ConfirmReply {}))
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
        for d in &deliveries {
            tracing::trace!(from = %r.from, message = %r.message, portal = %d.portal.endpoint, recipients = ?d.recipients, "text");
        }
        // `ok` once the portals have it (or it is kept for a relogin); a
        // stalled portal delays the answer by at most one call's deadline,
        // and its recipients' mailboxes keep the text meanwhile.
        let confirmed = self.notifier.send_confirmed(deliveries);
        let _ = tokio::time::timeout(self.notifier.timeout(), confirmed).await;
        Ok(Response::new(pb::TextReply {}))
    }

    async fn get_participants(
        &self,
        _req: Request<pb::GetParticipantsRequest>,
    ) -> Result<Response<pb::GetParticipantsReply>, Status> {
        let state = self.state();
        Ok(Response::new(pb::GetParticipantsReply {
            room_id: state.room_id().unwrap_or_default().to_string(),
            participants: state
                .participants()
                .filter(|p| p.pending_until.is_none())
                .map(detail)
                .collect(),
        }))
    }

    async fn drop_participant(
        &self,
        req: Request<pb::DropParticipantRequest>,
    ) -> Result<Response<pb::DropParticipantReply>, Status> {
        let r = req.into_inner();
        let id = r.participant_id;
        let reason = if r.reason.is_empty() {
            "Dropped by the application"
        } else {
            r.reason.as_str()
        };
        let participant = self
            .state()
            .participant(&id)
            .cloned()
            .ok_or(ConferenceError::NoSuchParticipant)?;
        self.notifier
            .drop_participant(&participant.portal, &id, reason)
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

    async fn control_participant(
        &self,
        req: Request<pb::ControlParticipantRequest>,
    ) -> Result<Response<pb::ControlParticipantReply>, Status> {
        let r = req.into_inner();
        conclave_common::trace::record(&[
            ("participant", &r.participant_id),
            ("node", &self.node_id),
        ]);
        let media = |m: Option<pb::MediaPermission>| {
            let m = m.unwrap_or_default();
            crate::room::Media {
                audio: m.audio,
                video: m.video,
            }
        };
        let changes = r
            .changes
            .into_iter()
            .map(|c| {
                crate::conference::PermissionChange::from_path(&c.path, media(c.media), c.flag)
                    .ok_or_else(|| ConferenceError::InvalidArgument("Invalid json path".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (participant, portal, permission) = {
            let mut state = self.state();
            let p = state.control_permission(&r.participant_id, &changes)?;
            (
                detail(p),
                p.portal.clone(),
                serde_json::to_string(&p.permission).unwrap_or_default(),
            )
        };
        tracing::info!(node = %self.node_id, participant = %r.participant_id, "permissions changed");
        self.notifier
            .set_permission(&portal, &r.participant_id, &permission)
            .await;
        Ok(Response::new(pb::ControlParticipantReply {
            participant: Some(participant),
        }))
    }

    async fn detach(
        &self,
        req: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::DetachReply>, Status> {
        let r = req.into_inner();
        let id = r.participant_id;
        conclave_common::trace::record(&[("participant", &id), ("node", &self.node_id)]);
        let window = match r.window_ms {
            0 => self.detach_window,
            ms => Duration::from_millis(ms),
        };
        let deliveries = self.state().detach(&id, window, Instant::now())?;
        tracing::info!(node = %self.node_id, participant = %id, "participant detached");
        self.notifier.send(deliveries);
        self.gauges();
        Ok(Response::new(pb::DetachReply {}))
    }

    async fn reattach(
        &self,
        req: Request<pb::ReattachRequest>,
    ) -> Result<Response<pb::ReattachReply>, Status> {
        let r = req.into_inner();
        conclave_common::trace::record(&[
            ("participant", &r.participant_id),
            ("node", &self.node_id),
        ]);
        if r.portal.is_empty() || r.portal_endpoint.is_empty() {
            return Err(ConferenceError::InvalidArgument(
                "portal and portalEndpoint are required".into(),
            )
            .into());
        }
        let portal = PortalRef {
            id: r.portal,
            endpoint: r.portal_endpoint,
        };
        let (mut seat, room_id) = {
            let mut state = self.state();
            let seat = state.reattach(&r.participant_id, portal, &r.ticket_id, Instant::now())?;
            (seat, state.room_id().unwrap_or_default().to_string())
        };
        self.notifier.send(std::mem::take(&mut seat.deliveries));
        tracing::info!(node = %self.node_id, participant = %r.participant_id, previous = %seat.previous.id, kept = seat.messages.len(), missed = seat.messages.iter().filter(|k| k.missed).count(), last = seat.messages.last().map_or(0, |k| k.seq), "participant reattached");
        let c = &seat.participant.client;
        Ok(Response::new(pb::ReattachReply {
            participant: Some(detail(&seat.participant)),
            client: Some(pb::ClientSpec {
                protocol: c.protocol.clone(),
                sdk_type: c.sdk_type.clone(),
                reconnection: c.reconnection,
                token_code: c.token_code.clone(),
                message_buffer_size: c.message_buffer_size.min(u32::MAX as usize) as u32,
            }),
            previous_portal: seat.previous.id,
            previous_portal_endpoint: seat.previous.endpoint,
            messages: seat
                .messages
                .into_iter()
                .map(|k| pb::KeptMessage {
                    seq: k.seq,
                    event: k.notification.event.to_string(),
                    data: k.notification.data.clone(),
                    missed: k.missed,
                })
                .collect(),
            room_id,
        }))
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreReply>, Status> {
        let r = req.into_inner();
        check_room_id(&r.room_id)?;
        conclave_common::trace::record(&[("room", &r.room_id), ("node", &self.node_id)]);
        let list = r
            .participants
            .into_iter()
            .map(|rp| {
                let p = rp.participant.ok_or_else(|| {
                    ConferenceError::InvalidArgument("participant is required".into())
                })?;
                Ok(Restoring {
                    id: p.id,
                    user: p.user,
                    role: p.role,
                    portal: PortalRef {
                        id: p.portal,
                        endpoint: p.portal_endpoint,
                    },
                    client: crate::seats::client_spec(p.client),
                    permission: permission_of(rp.permission),
                    seq: rp.seq,
                    detached: (rp.detached_ms > 0).then(|| Duration::from_millis(rp.detached_ms)),
                    rebuild: rp.rebuild,
                })
            })
            .collect::<Result<Vec<_>, ConferenceError>>()?;
        self.ensure_room(&r.room_id).await?;
        let asked = list.len();
        let (restored, deliveries) = self.state().restore(list, Instant::now())?;
        tracing::info!(node = %self.node_id, room = %r.room_id, asked, restored = restored.len(), "participants restored from the room's previous node");
        self.gauges();
        self.notifier.send(deliveries);
        Ok(Response::new(pb::RestoreReply { restored }))
    }

    async fn destroy(
        &self,
        _req: Request<pb::DestroyRequest>,
    ) -> Result<Response<pb::DestroyReply>, Status> {
        tracing::info!(node = %self.node_id, "destroy requested; the node exits");
        // Its participants are dropped first, so that their portals do not
        // take the node's exit for a loss and restore the room elsewhere.
        let participants: Vec<Participant> = self.state().participants().cloned().collect();
        let drops = participants.iter().map(|p| {
            self.notifier
                .drop_participant(&p.portal, &p.id, "The room was deleted")
        });
        futures_util::future::join_all(drops).await;
        let exit = self.exit.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            exit.cancel();
        });
        Ok(Response::new(pb::DestroyReply {}))
    }
}
