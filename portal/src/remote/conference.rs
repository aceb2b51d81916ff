//! Conference nodes over gRPC: join, leave, text, and the seat calls
//! (detach, reattach) that let any portal take a participant over.

use super::batch::Batches;
use super::grpc::Channels;
use crate::login::Json;
use crate::remote::{
    Admission, ClientSpec, Controller, Deadlines, Joiner, Kept, RemoteError, Restorable, Seat,
};
use conclave_common::grpc::{Channel, request};
use conclave_common::sync::Locked;
use conclave_proto::conference::v1 as conf;
use conclave_proto::conference::v1::conference_client::ConferenceClient;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Conference nodes: join, leave, text. Joins tell the node which portal
/// holds the participant (this one's worker id and `portal.v1` address).
pub struct ConferenceRemote {
    pub(super) channels: Channels,
    pub(super) deadlines: Deadlines,
    pub(super) portal_worker: OnceLock<String>,
    pub(super) portal_endpoint: OnceLock<String>,
    /// Per node, confirmations that come while one is on its way go
    /// together in the next `Confirm`.
    pub(super) confirmations: Mutex<HashMap<Controller, Arc<Confirmations>>>,
}

type Confirmations = Batches<String, Result<(), RemoteError>>;

/// Nodes whose confirmation queues are kept when none is in use (a node
/// serves one room; queues of nodes no login uses any more go).
const KEPT_QUEUES: usize = 256;

fn media(m: Option<conf::MediaPermission>) -> Value {
    let m = m.unwrap_or_default();
    json!({"audio": m.audio, "video": m.video})
}

/// The client's form of a permission.
fn permission_json(p: Option<conf::Permission>) -> Value {
    p.map(|p| json!({"publish": media(p.publish), "subscribe": media(p.subscribe)}))
        .unwrap_or_else(|| json!({}))
}

/// The node's form of a permission the client was given.
fn permission_pb(p: &Value) -> conf::Permission {
    let media = |m: &Value| conf::MediaPermission {
        audio: m["audio"].as_bool().unwrap_or(false),
        video: m["video"].as_bool().unwrap_or(false),
    };
    conf::Permission {
        publish: Some(media(&p["publish"])),
        subscribe: Some(media(&p["subscribe"])),
    }
}

fn client_pb(c: &ClientSpec) -> conf::ClientSpec {
    conf::ClientSpec {
        protocol: c.protocol.clone(),
        sdk_type: c.sdk_type.clone(),
        reconnection: c.reconnection,
        token_code: c.token_code.clone(),
        message_buffer_size: c.message_buffer_size.min(u32::MAX as usize) as u32,
    }
}

impl ConferenceRemote {
    fn client(&self, controller: &Controller) -> Result<ConferenceClient<Channel>, RemoteError> {
        Ok(ConferenceClient::new(
            self.channels.to(&controller.endpoint, &controller.node)?,
        ))
    }

    pub async fn join(
        &self,
        controller: &Controller,
        room: &str,
        joiner: &Joiner,
    ) -> Result<Admission, RemoteError> {
        let request = request(
            conf::JoinRequest {
                room_id: room.to_string(),
                participant: Some(conf::ParticipantSpec {
                    id: joiner.participant.clone(),
                    user: joiner.user.clone(),
                    role: joiner.role.clone(),
                    portal: self.portal_worker.get().cloned().unwrap_or_default(),
                    origin: Some(conf::Origin {
                        isp: joiner.origin.isp.clone(),
                        region: joiner.origin.region.clone(),
                    }),
                    portal_endpoint: self.portal_endpoint.get().cloned().unwrap_or_default(),
                    client: Some(client_pb(&joiner.client)),
                }),
                pending: joiner.pending,
            },
            self.deadlines.join,
        );
        let reply = self
            .client(controller)?
            .join(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "join", s))?
            .into_inner();
        let room = Json::parse(reply.room).ok_or_else(|| {
            RemoteError::Refused("the conference answered an unreadable room".into())
        })?;
        let permission = permission_json(reply.permission);
        Ok(Admission { permission, room })
    }

    pub async fn restore(
        &self,
        controller: &Controller,
        room: &str,
        participants: &[Restorable],
    ) -> Result<Vec<String>, RemoteError> {
        let portal = self.portal_worker.get().cloned().unwrap_or_default();
        let portal_endpoint = self.portal_endpoint.get().cloned().unwrap_or_default();
        let request = request(
            conf::RestoreRequest {
                room_id: room.to_string(),
                participants: participants
                    .iter()
                    .map(|p| conf::RestoredParticipant {
                        participant: Some(conf::ParticipantSpec {
                            id: p.participant.clone(),
                            user: p.user.clone(),
                            role: p.role.clone(),
                            portal: portal.clone(),
                            origin: None,
                            portal_endpoint: portal_endpoint.clone(),
                            client: Some(client_pb(&p.client)),
                        }),
                        permission: Some(permission_pb(&p.permission)),
                        seq: p.seq,
                        detached_ms: p
                            .detached
                            .map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64),
                        rebuild: p.rebuild,
                    })
                    .collect(),
            },
            self.deadlines.join,
        );
        let reply = self
            .client(controller)?
            .restore(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "restore", s))?;
        Ok(reply.into_inner().restored)
    }

    pub async fn served_room(&self, controller: &Controller) -> Result<String, RemoteError> {
        let request = request(conf::GetParticipantsRequest {}, self.deadlines.rpc);
        let reply = self
            .client(controller)?
            .get_participants(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "getParticipants", s))?;
        Ok(reply.into_inner().room_id)
    }

    /// Confirm one participant's pending join; under load, with the others
    /// that came meanwhile for the same node.
    pub async fn confirm_one(
        &self,
        controller: &Controller,
        participant: &str,
    ) -> Result<(), RemoteError> {
        let queue = {
            let mut queues = self.confirmations.locked();
            if queues.len() >= KEPT_QUEUES && !queues.contains_key(controller) {
                queues.retain(|_, q| Arc::strong_count(q) > 1);
            }
            queues
                .entry(controller.clone())
                .or_insert_with(|| {
                    Arc::new(Batches::gathering(
                        || {
                            Err(RemoteError::Unreachable {
                                target: "conference".into(),
                            })
                        },
                        self.deadlines.confirm_window,
                    ))
                })
                .clone()
        };
        queue
            .call(participant.to_string(), |ids| async move {
                let n = ids.len();
                let outcome = self.confirm(controller, ids).await;
                vec![outcome; n]
            })
            .await
    }

    pub async fn confirm(
        &self,
        controller: &Controller,
        participants: Vec<String>,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::ConfirmRequest {
                participant_ids: participants,
            },
            self.deadlines.rpc,
        );
        match self.client(controller)?.confirm(request).await {
            Ok(_) => Ok(()),
            // a node of an older release: it told the others at the join
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
            Err(s) => Err(RemoteError::from_status(&controller.node, "confirm", s)),
        }
    }

    pub async fn leave(
        &self,
        controller: &Controller,
        participant: &str,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::LeaveRequest {
                participant_id: participant.to_string(),
            },
            self.deadlines.rpc,
        );
        self.client(controller)?
            .leave(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "leave", s))?;
        Ok(())
    }

    pub async fn detach(
        &self,
        controller: &Controller,
        participant: &str,
        window: Duration,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::DetachRequest {
                participant_id: participant.to_string(),
                window_ms: window.as_millis().min(u64::MAX as u128) as u64,
            },
            self.deadlines.rpc,
        );
        self.client(controller)?
            .detach(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "detach", s))?;
        Ok(())
    }

    pub async fn reattach(
        &self,
        controller: &Controller,
        participant: &str,
        ticket_id: &str,
    ) -> Result<Seat, RemoteError> {
        let request = request(
            conf::ReattachRequest {
                participant_id: participant.to_string(),
                portal: self.portal_worker.get().cloned().unwrap_or_default(),
                portal_endpoint: self.portal_endpoint.get().cloned().unwrap_or_default(),
                ticket_id: ticket_id.to_string(),
            },
            self.deadlines.join,
        );
        let reply = self
            .client(controller)?
            .reattach(request)
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::NotFound {
                    RemoteError::Refused("Client does NOT exist".into())
                } else {
                    RemoteError::from_status(&controller.node, "reattach", s)
                }
            })?
            .into_inner();
        let participant = reply.participant.unwrap_or_default();
        let permission = permission_json(participant.permission);
        let client = reply.client.unwrap_or_default();
        let me = self.portal_endpoint.get().map(String::as_str);
        let (previous_portal, previous_endpoint) =
            if me == Some(reply.previous_portal_endpoint.as_str()) {
                (String::new(), String::new())
            } else {
                (reply.previous_portal, reply.previous_portal_endpoint)
            };
        Ok(Seat {
            room: reply.room_id,
            user: participant.user,
            role: participant.role,
            permission,
            client: ClientSpec {
                protocol: client.protocol,
                sdk_type: client.sdk_type,
                reconnection: client.reconnection,
                token_code: client.token_code,
                message_buffer_size: client.message_buffer_size as usize,
            },
            previous_portal,
            previous_endpoint,
            messages: reply
                .messages
                .into_iter()
                .map(|m| Kept {
                    seq: m.seq,
                    event: m.event,
                    data: serde_json::from_str(&m.data).unwrap_or(Value::Null),
                    missed: m.missed,
                })
                .collect(),
        })
    }

    pub async fn text(
        &self,
        controller: &Controller,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<(), RemoteError> {
        let request = request(
            conf::TextRequest {
                from: from.to_string(),
                to: to.to_string(),
                message: message.to_string(),
            },
            self.deadlines.text,
        );
        self.client(controller)?
            .text(request)
            .await
            .map_err(|s| RemoteError::from_status(&controller.node, "text", s))?;
        Ok(())
    }
}
