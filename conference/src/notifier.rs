//! Delivery of notifications to portals (OWT's `notify` / `broadcast` /
//! `drop` RPCs). Each portal has its own queue and sender task, so a slow or
//! dead portal delays only its own participants' notifications, never a join,
//! and notifications to one portal keep their order. A notification carries
//! the trace of the request that caused it (a text, a join), so its call to
//! the portal is part of that trace.

use crate::conference::{Delivery, PortalRef};
use conclave_common::grpc::Channel;
use conclave_common::sync::Locked;
use conclave_proto::portal::v1 as pb;
use conclave_proto::portal::v1::portal_client::PortalClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A delivery, the `traceparent` of the request that queued it, and who
/// waits for its outcome.
type Queued = (Delivery, Option<String>, Option<oneshot::Sender<()>>);

/// Told how each delivery went: its recipients, those the portal could not
/// emit to, and whether the call failed altogether.
pub type Settle = Arc<dyn Fn(&[(String, u64)], &[String], bool) + Send + Sync>;

pub struct Notifier {
    /// The controller name portals match broadcasts against: this node's id.
    controller: String,
    timeout: Duration,
    capacity: usize,
    queues: Mutex<HashMap<String, mpsc::Sender<Queued>>>,
    settle: OnceLock<Settle>,
}

impl Notifier {
    pub fn new(controller: String, timeout: Duration, capacity: usize) -> Self {
        Notifier {
            controller,
            timeout,
            capacity: capacity.max(1),
            queues: Mutex::new(HashMap::new()),
            settle: OnceLock::new(),
        }
    }

    /// Where delivery outcomes go (the participants' mailboxes).
    pub fn on_settled(&self, settle: Settle) {
        let _ = self.settle.set(settle);
    }

    fn settle(&self, recipients: &[(String, u64)], undelivered: &[String], failed: bool) {
        if let Some(settle) = self.settle.get() {
            settle(recipients, undelivered, failed);
        }
    }

    fn client(&self, endpoint: &str) -> Option<PortalClient<Channel>> {
        match conclave_common::grpc::channel(endpoint, self.timeout) {
            Ok(channel) => Some(PortalClient::new(channel)),
            Err(e) => {
                tracing::warn!(portal = %endpoint, error = %e, "unusable portal endpoint");
                None
            }
        }
    }

    /// Queue deliveries; never waits.
    pub fn send(&self, deliveries: Vec<Delivery>) {
        self.queue(deliveries, false);
    }

    /// Queue deliveries; resolves once every one of them is settled: its
    /// portal answered (the message is in the portal's hands) or the call
    /// failed (the recipients' mailboxes keep it as undelivered). A text is
    /// acknowledged only then, so that a node lost right after its `ok`
    /// cannot take an acknowledged message with it.
    pub fn send_confirmed(&self, deliveries: Vec<Delivery>) -> impl Future<Output = ()> + use<> {
        let waiting = self.queue(deliveries, true);
        async move {
            for done in waiting {
                let _ = done.await;
            }
        }
    }

    /// The deadline of each call to a portal.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn queue(&self, deliveries: Vec<Delivery>, confirm: bool) -> Vec<oneshot::Receiver<()>> {
        let traceparent = conclave_common::trace::outgoing();
        let mut waiting = Vec::new();
        for delivery in deliveries {
            let done = confirm.then(|| {
                let (tx, rx) = oneshot::channel();
                waiting.push(rx);
                tx
            });
            let endpoint = delivery.portal.endpoint.clone();
            let mut queues = self.queues.locked();
            let sender = match queues.get(&endpoint) {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let Some(client) = self.client(&endpoint) else {
                        self.settle(&delivery.recipients, &[], true);
                        continue;
                    };
                    let (tx, rx) = mpsc::channel(self.capacity);
                    tokio::spawn(deliver(
                        client,
                        self.controller.clone(),
                        endpoint.clone(),
                        rx,
                        self.settle.get().cloned(),
                    ));
                    queues.insert(endpoint.clone(), tx.clone());
                    tx
                }
            };
            if let Err(e) = sender.try_send((delivery, traceparent.clone(), done)) {
                tracing::warn!(portal = %endpoint, "portal notification queue full; kept for a relogin");
                let (delivery, _, _) = e.into_inner();
                drop(queues);
                self.settle(&delivery.recipients, &[], true);
            }
        }
        waiting
    }

    /// Stop delivering to a lost portal.
    pub fn forget(&self, endpoint: &str) {
        self.queues.locked().remove(endpoint);
    }

    /// Tell a participant's portal its new permission (kept there for a
    /// restore). Failures are logged: the portal restores the older one.
    pub async fn set_permission(&self, portal: &PortalRef, participant: &str, permission: &str) {
        let Some(mut client) = self.client(&portal.endpoint) else {
            return;
        };
        let req = conclave_common::grpc::request(
            pb::SetPermissionRequest {
                participant_id: participant.to_string(),
                permission: permission.to_string(),
            },
            self.timeout,
        );
        if let Err(status) = client.set_permission(req).await {
            tracing::warn!(portal = %portal.id, %participant, error = %status.message(), "telling the portal a permission failed");
        }
    }

    /// Ask a participant's portal to drop it (client gets `drop`, socket
    /// closes). Failures are logged and swallowed, as OWT does.
    pub async fn drop_participant(&self, portal: &PortalRef, participant: &str, reason: &str) {
        let Some(mut client) = self.client(&portal.endpoint) else {
            return;
        };
        let req = conclave_common::grpc::request(
            pb::DropRequest {
                participant_id: participant.to_string(),
                reason: reason.to_string(),
            },
            self.timeout,
        );
        if let Err(status) = client.drop(req).await {
            tracing::warn!(portal = %portal.id, %participant, error = %status.message(), "drop through portal failed");
        }
    }
}

async fn deliver(
    mut client: PortalClient<Channel>,
    controller: String,
    endpoint: String,
    mut queue: mpsc::Receiver<Queued>,
    settle: Option<Settle>,
) {
    while let Some((delivery, traceparent, done)) = queue.recv().await {
        let span =
            tracing::info_span!("notify", portal = %endpoint, trace_id = tracing::field::Empty);
        let request = pb::BroadcastRequest {
            controller: controller.clone(),
            exclude_list: delivery.exclude.clone(),
            event: delivery.notification.event.to_string(),
            data: delivery.notification.data.clone(),
            recipients: delivery
                .recipients
                .iter()
                .map(|(id, seq)| pb::Recipient {
                    participant_id: id.clone(),
                    seq: *seq,
                })
                .collect(),
        };
        let call = async { client.broadcast(request).await };
        let result = conclave_common::trace::resume(traceparent.as_deref(), span, call).await;
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        conclave_common::metrics::counter!("conference_notifications_total", "outcome" => outcome)
            .increment(1);
        let (undelivered, failed) = match result {
            Ok(reply) => (reply.into_inner().undelivered, false),
            Err(status) => {
                tracing::warn!(portal = %endpoint, error = %status.message(), "notification to portal failed; kept for a relogin");
                (Vec::new(), true)
            }
        };
        if let Some(settle) = &settle {
            settle(&delivery.recipients, &undelivered, failed);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
