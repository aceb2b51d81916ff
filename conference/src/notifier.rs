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
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A delivery and the `traceparent` of the request that queued it.
type Queued = (Delivery, Option<String>);

pub struct Notifier {
    /// The controller name portals match broadcasts against: this node's id.
    controller: String,
    timeout: Duration,
    capacity: usize,
    queues: Mutex<HashMap<String, mpsc::Sender<Queued>>>,
}

impl Notifier {
    pub fn new(controller: String, timeout: Duration, capacity: usize) -> Self {
        Notifier {
            controller,
            timeout,
            capacity: capacity.max(1),
            queues: Mutex::new(HashMap::new()),
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
        let traceparent = conclave_common::trace::outgoing();
        for delivery in deliveries {
            let endpoint = match &delivery {
                Delivery::Broadcast { portal, .. } | Delivery::Notify { portal, .. } => {
                    portal.endpoint.clone()
                }
            };
            let mut queues = self.queues.locked();
            let sender = match queues.get(&endpoint) {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let Some(client) = self.client(&endpoint) else {
                        continue;
                    };
                    let (tx, rx) = mpsc::channel(self.capacity);
                    tokio::spawn(deliver(
                        client,
                        self.controller.clone(),
                        endpoint.clone(),
                        rx,
                    ));
                    queues.insert(endpoint.clone(), tx.clone());
                    tx
                }
            };
            if sender.try_send((delivery, traceparent.clone())).is_err() {
                tracing::warn!(portal = %endpoint, "portal notification queue full; notification dropped");
            }
        }
    }

    /// Stop delivering to a lost portal.
    pub fn forget(&self, endpoint: &str) {
        self.queues.locked().remove(endpoint);
    }

    /// Ask a participant's portal to drop it (client gets `drop`, socket
    /// closes). Failures are logged and swallowed, as OWT does.
    pub async fn drop_participant(&self, portal: &PortalRef, participant: &str) {
        let Some(mut client) = self.client(&portal.endpoint) else {
            return;
        };
        let req = conclave_common::grpc::request(
            pb::DropRequest {
                participant_id: participant.to_string(),
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
) {
    while let Some((delivery, traceparent)) = queue.recv().await {
        let span =
            tracing::info_span!("notify", portal = %endpoint, trace_id = tracing::field::Empty);
        let call = async {
            match delivery {
                Delivery::Broadcast {
                    exclude,
                    event,
                    data,
                    ..
                } => client
                    .broadcast(pb::BroadcastRequest {
                        controller: controller.clone(),
                        exclude_list: exclude,
                        event: event.to_string(),
                        data: data.to_string(),
                    })
                    .await
                    .map(drop),
                Delivery::Notify {
                    participant,
                    event,
                    data,
                    ..
                } => client
                    .notify(pb::NotifyRequest {
                        participant_id: participant,
                        event: event.to_string(),
                        data: data.to_string(),
                    })
                    .await
                    .map(drop),
            }
        };
        let result = conclave_common::trace::resume(traceparent.as_deref(), span, call).await;
        let outcome = if result.is_ok() { "sent" } else { "failed" };
        conclave_common::metrics::counter!("conference_notifications_total", "outcome" => outcome)
            .increment(1);
        if let Err(status) = result {
            tracing::warn!(portal = %endpoint, error = %status.message(), "notification to portal failed");
        }
    }
}
