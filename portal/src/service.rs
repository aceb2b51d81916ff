//! The gRPC adapter: `portal.v1.Portal`, how conference nodes reach clients.

use crate::delivery::Outcome;
use crate::portal::Portal;
use conclave_proto::portal::v1 as pb;
use serde_json::Value;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct PortalService {
    portal: Arc<Portal>,
}

impl PortalService {
    pub fn new(portal: Arc<Portal>) -> Self {
        PortalService { portal }
    }
}

/// Notification data is JSON text, delivered unchanged (integers stay integers).
fn data(text: &str) -> Result<Value, Status> {
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("data is not JSON: {e}")))
}

fn event(name: &str) -> Result<(), Status> {
    if name.is_empty() || name.len() > 64 {
        return Err(Status::invalid_argument("event must be 1 to 64 bytes"));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::portal_server::Portal for PortalService {
    async fn notify(
        &self,
        req: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyReply>, Status> {
        let r = req.into_inner();
        event(&r.event)?;
        let data = data(&r.data)?;
        // OWT answers "ok" even when the participant is not here.
        let delivery = self.portal.delivery();
        let mut outcome = delivery.notify(&r.participant_id, &r.event, data.clone(), r.seq);
        // its node seated it here a moment ago; it is being registered (or
        // was, just after the first try): once more
        if outcome == Outcome::Absent {
            self.portal.arrived(&r.participant_id).await;
            outcome = delivery.notify(&r.participant_id, &r.event, data, r.seq);
        }
        Ok(Response::new(pb::NotifyReply {
            delivered: outcome == Outcome::Delivered,
        }))
    }

    async fn broadcast(
        &self,
        req: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastReply>, Status> {
        let r = req.into_inner();
        event(&r.event)?;
        let data = data(&r.data)?;
        if r.recipients.is_empty() {
            self.portal
                .delivery()
                .broadcast(&r.controller, &r.exclude_list, &r.event, &data);
            return Ok(Response::new(pb::BroadcastReply::default()));
        }
        let recipients: Vec<(String, u64)> = r
            .recipients
            .into_iter()
            .map(|x| (x.participant_id, x.seq))
            .collect();
        let delivery = self.portal.delivery();
        let first = delivery.deliver_to(&recipients, &r.event, &data, &r.controller);
        let mut undelivered = Vec::with_capacity(first.len());
        for participant in first {
            // Seated here by its node a moment ago: once registered, again.
            // One that was not arriving any more when asked may have
            // arrived while this waited for another: again too.
            self.portal.arrived(&participant).await;
            let seq = recipients
                .iter()
                .find(|(p, _)| *p == participant)
                .map_or(0, |(_, s)| *s);
            let again = delivery.deliver_to(
                &[(participant.clone(), seq)],
                &r.event,
                &data,
                &r.controller,
            );
            if !again.is_empty() {
                undelivered.push(participant);
            }
        }
        Ok(Response::new(pb::BroadcastReply { undelivered }))
    }

    async fn drop(&self, req: Request<pb::DropRequest>) -> Result<Response<pb::DropReply>, Status> {
        let r = req.into_inner();
        if r.participant_id == "all" {
            self.portal.drop_all(&r.reason).await;
        } else {
            self.portal
                .drop_participant(&r.participant_id, &r.reason)
                .await;
        }
        Ok(Response::new(pb::DropReply {}))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let id = req.into_inner().participant_id;
        self.portal.release(&id).await;
        Ok(Response::new(pb::ReleaseReply {}))
    }

    async fn set_permission(
        &self,
        req: Request<pb::SetPermissionRequest>,
    ) -> Result<Response<pb::SetPermissionReply>, Status> {
        let r = req.into_inner();
        let permission = data(&r.permission)?;
        if !permission.is_object() {
            return Err(Status::invalid_argument("permission must be a JSON object"));
        }
        let found = self.portal.delivery().with(|reg| {
            reg.client_mut(&r.participant_id)
                .map(|c| c.permission = crate::clients::JsonText::new(&permission))
                .is_some()
        });
        Ok(Response::new(pb::SetPermissionReply { found }))
    }

    async fn list_clients(
        &self,
        _req: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsReply>, Status> {
        let clients = self.portal.delivery().with(|r| {
            r.clients()
                .map(|c| pb::ClientInfo {
                    participant_id: c.participant.clone(),
                    room: c.room.clone(),
                    controller: c.controller.node.clone(),
                    state: r.state_of(c).as_str().to_string(),
                    user: c.user.clone(),
                    role: c.role.clone(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListClientsReply { clients }))
    }
}
