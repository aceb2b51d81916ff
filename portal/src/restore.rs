//! No seat lost when a conference node or agent is lost (issue 16): the
//! portal rebuilds each room it holds participants of on a fresh node, with
//! the participants as it knows them (`Conference.Restore`), instead of
//! dropping them as OWT does. Several portals restoring one room converge on
//! one node through the scheduler (the room's task or reservation names one
//! agent) and the agent's pool (one node per room). Only when no agent can
//! host the room within `portal.restore_timeout` are they dropped.

use crate::connection::State;
use crate::portal::Portal;
use crate::remote::{ClientSpec, Controller, RemoteError, Restorable};
use conclave_common::cluster_watch::ClusterChange;
use conclave_common::sync::Locked;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Pause between attempts to rebuild a room.
const RETRY: Duration = Duration::from_millis(200);

/// Participants per `Restore` call.
const RESTORE_CHUNK: usize = 500;

/// The drop reason when a room cannot be rebuilt anywhere.
pub const NO_HOST: &str = "No conference agent can host the room";

impl Portal {
    /// A conference node exited or an agent was lost (OWT §9.5 dropped its
    /// participants): every room of it that has participants here is
    /// rebuilt elsewhere.
    pub fn controller_lost(self: &Arc<Self>, change: &ClusterChange) {
        let (lost, participants) = match change {
            ClusterChange::NodeExited { node, .. } => {
                (node, self.delivery.with(|r| r.on_controller(node, &[])))
            }
            ClusterChange::WorkerLost { worker, .. } => {
                (worker, self.delivery.with(|r| r.on_agent(worker)))
            }
            ClusterChange::Resumed => {
                let portal = self.clone();
                tokio::spawn(async move { portal.check_controllers().await });
                return;
            }
            ClusterChange::WorkerJoined { .. } => return,
        };
        if participants.is_empty() {
            return;
        }
        let mut rooms: BTreeMap<(String, Controller), Vec<String>> = BTreeMap::new();
        self.delivery.with(|r| {
            for p in participants {
                if let Some(c) = r.client(&p) {
                    rooms
                        .entry((c.room.clone(), c.controller.clone()))
                        .or_default()
                        .push(p);
                }
            }
        });
        tracing::warn!(%lost, rooms = rooms.len(), "conference lost; rebuilding its rooms on another node");
        for ((room, old), ids) in rooms {
            let portal = self.clone();
            self.restoring.locked().insert(room.clone());
            tokio::spawn(async move {
                portal.restore_room(&room, &old, ids).await;
                portal.restoring.locked().remove(&room);
            });
        }
    }

    /// After a gap in the cluster watch (a new leader, a restarted
    /// manager), where a node exit may have gone unheard, before a drain,
    /// and every `portal.node_check_interval`: every node this portal's participants are on is asked which
    /// room it serves, and one with nothing listening, or serving another
    /// room or none, is taken for exited and its rooms are rebuilt (awaited).
    /// A node that does not answer in time (stalled) is left to its agent,
    /// whose report of the exit then comes over the watch.
    pub(crate) async fn check_controllers(&self) {
        let controllers: BTreeMap<Controller, String> = self.delivery.with(|r| {
            r.clients()
                .map(|c| (c.controller.clone(), c.room.clone()))
                .collect()
        });
        for (controller, room) in controllers {
            if self.is_restoring(&room) {
                continue;
            }
            let gone = match self.remotes.served_room(&controller).await {
                Ok(served) => served != room,
                Err(RemoteError::Unreachable { .. }) => true,
                Err(_) => false,
            };
            if gone {
                tracing::warn!(%room, node = %controller.node, "a node this portal's participants are on is gone");
                self.rebuild_rooms_of(&controller).await;
            }
        }
    }

    /// Nothing listens at a node this portal's participants are on (a call
    /// to it found no server): its exit may have gone unheard (a cluster
    /// watch that missed it), so its rooms are rebuilt now, as for a
    /// reported exit, unless they are being rebuilt already. Awaited.
    pub(crate) async fn rebuild_rooms_of(&self, node: &Controller) {
        let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
        self.delivery.with(|r| {
            for c in r.clients().filter(|c| &c.controller == node) {
                rooms
                    .entry(c.room.clone())
                    .or_default()
                    .push(c.participant.clone());
            }
        });
        for (room, ids) in rooms {
            if !self.restoring.locked().insert(room.clone()) {
                continue;
            }
            tracing::warn!(%room, node = %node.node, "its node does not answer; rebuilding the room on another node");
            self.restore_room(&room, node, ids).await;
            self.restoring.locked().remove(&room);
        }
    }

    /// Whether a room of this portal is being rebuilt.
    pub(crate) fn is_restoring(&self, room: &str) -> bool {
        self.restoring.locked().contains(room)
    }

    /// Wait (bounded by `restore_timeout`) until `room` is no longer being
    /// rebuilt: a relogin during the gap then finds the new node.
    pub(crate) async fn restored(&self, room: &str) {
        let until = Instant::now() + self.restore_timeout();
        while self.is_restoring(room) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn restore_timeout(&self) -> Duration {
        Duration::from_millis(self.config.portal.restore_timeout)
    }

    /// The participants `ids`, as this portal holds them now, that are
    /// still on the lost node `old`.
    fn restorables(&self, ids: &[String], old: &Controller, rebuild: u64) -> Vec<Restorable> {
        let now = Instant::now();
        let grace = self.reconnection_grace();
        let buffer = self.config.portal.message_buffer_size;
        self.delivery.with(|r| {
            ids.iter()
                .filter_map(|id| {
                    let c = r.client(id).filter(|c| &c.controller == old)?;
                    let detached = (r.state_of(c) != State::Connected).then(|| {
                        r.connection(c.socket)
                            .and_then(|conn| conn.grace_deadline())
                            .map_or(grace, |until| until.saturating_duration_since(now))
                            .max(Duration::from_millis(1))
                    });
                    Some(Restorable {
                        participant: c.participant.clone(),
                        user: c.user.clone(),
                        role: c.role.clone(),
                        client: ClientSpec {
                            protocol: c.protocol.as_str().to_string(),
                            sdk_type: c.sdk_type.clone(),
                            reconnection: c.reconnection,
                            token_code: c.token_code.clone(),
                            message_buffer_size: buffer,
                        },
                        permission: c.permission.value(),
                        seq: c.sent.max(),
                        detached,
                        rebuild,
                    })
                })
                .collect()
        })
    }

    /// One attempt: the room's node from the scheduler and its agent, then
    /// the participants put back on it.
    async fn try_restore(
        &self,
        room: &str,
        list: &[Restorable],
    ) -> Result<(Controller, Vec<String>), RemoteError> {
        let agent = self.remotes.schedule_room(room).await?;
        let controller = self.remotes.get_node(&agent, room).await?;
        let mut restored = Vec::new();
        // a big room in several calls, each well under gRPC's message limit
        // (a retry skips those already back)
        for chunk in list.chunks(RESTORE_CHUNK) {
            restored.extend(self.remotes.restore(&controller, room, chunk).await?);
        }
        Ok((controller, restored))
    }

    async fn restore_room(&self, room: &str, old: &Controller, ids: Vec<String>) {
        let started = Instant::now();
        let deadline = started + self.restore_timeout();
        // An agent the cluster still names but that does not answer (killed,
        // not yet counted out: a text or a node check can find its node gone
        // before the manager does) is not a verdict that no agent can host
        // the room: the rebuild tries on for longer, and gives up without
        // dropping anyone; the cluster's report or the next node check
        // rebuilds the room then.
        let unreachable_deadline = started + self.restore_timeout() * 3;
        // names this rebuild, so that a node tells a retry of it from a
        // stale seat of an earlier one
        let rebuild = rand::random::<u64>().max(1);
        let list = self.restorables(&ids, old, rebuild);
        let mut attempts = 0u32;
        let outcome = loop {
            attempts += 1;
            match self.try_restore(room, &list).await {
                Ok(done) => break Ok(done),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%room, attempts, error = %e, "rebuilding the room failed; trying again");
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(RETRY.min(left)).await;
                }
                Err(e @ RemoteError::Unreachable { .. })
                    if Instant::now() < unreachable_deadline =>
                {
                    tracing::debug!(%room, attempts, error = %e, "the agent named does not answer; trying again");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => break Err(e),
            }
        };
        let (controller, restored) = match outcome {
            Ok(done) => done,
            Err(e @ RemoteError::Unreachable { .. }) => {
                tracing::warn!(%room, node = %old.node, attempts, error = %e, "the agent the cluster names for the room does not answer; its participants stay until the cluster's report or the next node check rebuilds it");
                return;
            }
            Err(e) => {
                tracing::error!(%room, node = %old.node, attempts, error = %e, participants = list.len(), "no conference agent can host the room; dropping its participants");
                conclave_common::metrics::counter!("portal_room_restores_total", "outcome" => "dropped")
                    .increment(1);
                for p in &list {
                    let still_there = self.delivery.with(|r| {
                        r.client(&p.participant)
                            .is_some_and(|c| &c.controller == old)
                    });
                    if still_there {
                        self.drop_participant(&p.participant, NO_HOST).await;
                    }
                }
                return;
            }
        };
        // Move the participants to the new node; those who left during the
        // gap leave it again, so that the others hear it.
        let gone: Vec<String> = self.delivery.with(|r| {
            list.iter()
                .filter_map(|p| match r.client(&p.participant) {
                    Some(c) if &c.controller == old => {
                        r.move_to(&p.participant, &controller, p.seq);
                        None
                    }
                    Some(_) => None,
                    None => Some(p.participant.clone()),
                })
                .collect()
        });
        for participant in &gone {
            if let Err(e) = self.remotes.leave(&controller, participant).await {
                tracing::debug!(%participant, error = %e, "leaving the rebuilt room failed");
            }
        }
        conclave_common::metrics::counter!("portal_room_restores_total", "outcome" => "restored")
            .increment(1);
        conclave_common::metrics::histogram!("portal_room_restore_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            %room,
            from = %old.node,
            to = %controller.node,
            restored = restored.len(),
            left_meanwhile = gone.len(),
            attempts,
            took_ms = started.elapsed().as_millis() as u64,
            "room rebuilt on another node; its participants keep their seats"
        );
    }
}
