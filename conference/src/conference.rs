//! The room controller's state (OWT §12): participants, admission (room full,
//! roles, duplicates), text routing and the notifications each change causes.
//! Plain data: methods return the deliveries to make; the service sends them.

use crate::mailbox::{Limits, Mailbox, Notification};
use crate::room::{Media, Permission, RoomConfig};
use indexmap::IndexMap;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest text message, in characters (OWT's documented cap).
pub const MAX_TEXT_CHARS: usize = 2048;
/// Longest participant id, user name, role or portal name.
pub const MAX_FIELD_LEN: usize = 1024;

/// How long a room rebuilt here keeps what it broadcasts for the
/// participants still being put back: each portal restores its own, and a
/// portal can come a few retries (of `portal.restore_timeout`, 3 s by
/// default) after another.
pub const REBUILD_BACKLOG: Duration = Duration::from_secs(10);
/// At most this many broadcasts kept for them.
pub const REBUILD_BACKLOG_COUNT: usize = 1024;

/// What a rebuilt room broadcast while its portals were putting their
/// participants back: a participant put back later was in the room all
/// along, so it gets these as if it had been here.
#[derive(Debug)]
pub(crate) struct Backlog {
    until: Instant,
    entries: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConferenceError {
    #[error("room id clash")]
    RoomIdClash,
    #[error("Controllers are not ready")]
    NotReady,
    #[error("Room is full")]
    RoomFull,
    #[error("Invalid role")]
    InvalidRole,
    #[error("Participant already in room")]
    AlreadyJoined,
    #[error("Participant has not joined")]
    NotJoined,
    #[error("Participant does NOT exist")]
    NoSuchParticipant,
    #[error("Target participant does NOT exist: {0}")]
    NoTarget(String),
    #[error("Text message is too long (at most 2048 characters)")]
    TextTooLong,
    #[error("Joining room failed: {0}")]
    JoinFailed(String),
    #[error("Reconnection is not allowed")]
    ReconnectionNotAllowed,
    #[error("Ticket has been used")]
    TicketUsed,
    #[error("{0}")]
    InvalidArgument(String),
}

/// Where a participant's portal is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortalRef {
    /// The portal's worker id.
    pub id: String,
    /// Its portal.v1.Portal gRPC address.
    pub endpoint: String,
}

/// What the portal that logged a participant in knows of its client, kept
/// here so that any portal can take the participant over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSpec {
    /// The client's protocol ("legacy", "1.0", "1.1", "1.2").
    pub protocol: String,
    pub sdk_type: String,
    /// Whether it may relogin (kept detached when its connection is lost).
    pub reconnection: bool,
    /// The token code: the cluster task of the portal that holds it.
    pub token_code: String,
    /// At most this many notifications kept for it (0: the node's bound).
    pub message_buffer_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub user: String,
    pub role: String,
    pub portal: PortalRef,
    pub permission: Permission,
    pub client: ClientSpec,
    /// Without a connection since its portal lost it: kept until then for
    /// a relogin on any portal.
    pub detached_until: Option<Instant>,
    /// Put back from the room's previous node by this rebuild (`restore`),
    /// rather than joined here: it knows the other restored ones already.
    pub restored: Option<u64>,
    /// Admitted by a pending join its portal has not confirmed yet (its
    /// token is being consumed): it holds its seat and gets the room's
    /// notifications, but nobody hears of it, and it is forgotten silently
    /// at this instant unless confirmed.
    pub pending_until: Option<Instant>,
}

/// A participant of the room's previous node, as its portal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restoring {
    pub id: String,
    pub user: String,
    pub role: String,
    pub portal: PortalRef,
    pub client: ClientSpec,
    pub permission: Permission,
    /// The highest sequence number its portal sent it.
    pub seq: u64,
    /// Its client is away: the seat is kept detached this long.
    pub detached: Option<Duration>,
    /// The portal's rebuild this comes from (nonzero).
    pub rebuild: u64,
}

/// A notification to make through a portal: to `recipients` there, each
/// with its own sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub portal: PortalRef,
    /// OWT's broadcast form, for portals that route by controller: the
    /// room's participants there except these.
    pub exclude: Vec<String>,
    pub recipients: Vec<(String, u64)>,
    pub notification: Arc<Notification>,
}

/// One change of OWT's permission patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionChange {
    Publish(Media),
    Subscribe(Media),
    PublishAudio(bool),
    PublishVideo(bool),
    SubscribeAudio(bool),
    SubscribeVideo(bool),
}

impl PermissionChange {
    fn apply(self, p: &mut Permission) {
        match self {
            PermissionChange::Publish(m) => p.publish = m,
            PermissionChange::Subscribe(m) => p.subscribe = m,
            PermissionChange::PublishAudio(b) => p.publish.audio = b,
            PermissionChange::PublishVideo(b) => p.publish.video = b,
            PermissionChange::SubscribeAudio(b) => p.subscribe.audio = b,
            PermissionChange::SubscribeVideo(b) => p.subscribe.video = b,
        }
    }

    /// From OWT's patch path and value (`media` for the two object paths,
    /// `flag` for the four leaves); `None` for another path.
    pub fn from_path(path: &str, media: Media, flag: bool) -> Option<PermissionChange> {
        Some(match path {
            "/permission/publish" => PermissionChange::Publish(media),
            "/permission/subscribe" => PermissionChange::Subscribe(media),
            "/permission/publish/audio" => PermissionChange::PublishAudio(flag),
            "/permission/publish/video" => PermissionChange::PublishVideo(flag),
            "/permission/subscribe/audio" => PermissionChange::SubscribeAudio(flag),
            "/permission/subscribe/video" => PermissionChange::SubscribeVideo(flag),
            _ => return None,
        })
    }
}

/// The outcome of a successful join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub permission: Permission,
    /// `{id, views, participants, streams}` for the joiner, as JSON text.
    pub room: String,
    pub deliveries: Vec<Delivery>,
}

pub struct JoinRequest {
    pub id: String,
    pub user: String,
    pub role: String,
    pub portal: PortalRef,
    pub client: ClientSpec,
    /// A pending join, forgotten at this instant unless confirmed.
    pub pending_until: Option<Instant>,
}

#[derive(Default)]
pub struct Conference {
    room: Option<RoomConfig>,
    pub(crate) participants: IndexMap<String, Participant>,
    /// Each participant's kept notifications.
    pub(crate) mailboxes: HashMap<String, Mailbox>,
    pub(crate) limits: Limits,
    /// Reconnection tickets spent on relogins, per participant.
    pub(crate) spent_tickets: crate::seats::SpentTickets,
    pub(crate) idle_since: Option<Instant>,
    /// Set while a room rebuilt here waits for its other portals.
    pub(crate) rebuilt: Option<Backlog>,
}

fn check(field: &str, value: &str, required: bool) -> Result<(), ConferenceError> {
    if required && value.is_empty() {
        return Err(ConferenceError::InvalidArgument(format!(
            "{field} must not be empty"
        )));
    }
    if value.len() > MAX_FIELD_LEN {
        return Err(ConferenceError::InvalidArgument(format!(
            "{field} is longer than {MAX_FIELD_LEN} bytes"
        )));
    }
    Ok(())
}

impl Conference {
    pub fn room_id(&self) -> Option<&str> {
        self.room.as_ref().map(|r| r.id.as_str())
    }

    /// Load the room this node serves; a node serves one room only.
    pub fn init(&mut self, config: RoomConfig, now: Instant) -> Result<(), ConferenceError> {
        match &self.room {
            Some(r) if r.id == config.id => Ok(()),
            Some(_) => Err(ConferenceError::RoomIdClash),
            None => {
                self.room = Some(config);
                self.idle_since = Some(now);
                Ok(())
            }
        }
    }

    /// Whether `room_id` may be served here (not yet serving, or serving it).
    pub fn accepts(&self, room_id: &str) -> Result<bool, ConferenceError> {
        match &self.room {
            None => Ok(false),
            Some(r) if r.id == room_id => Ok(true),
            Some(_) => Err(ConferenceError::RoomIdClash),
        }
    }

    pub fn participants(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values()
    }

    pub(crate) fn room(&self) -> Result<&RoomConfig, ConferenceError> {
        self.room.as_ref().ok_or(ConferenceError::NotReady)
    }

    /// How participants' notifications are kept.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Give `event` to `to` (participant ids): each gets its next sequence
    /// number; the attached ones get a delivery through their portal (one
    /// per portal), the detached ones find it at their relogin.
    pub(crate) fn deliver(
        &mut self,
        to: &[String],
        exclude: &[String],
        event: &'static str,
        data: &Value,
    ) -> Vec<Delivery> {
        let notification = Notification::new(event, data);
        let now = Instant::now();
        let mut deliveries: Vec<Delivery> = Vec::new();
        for id in to {
            let Some(p) = self.participants.get(id) else {
                continue;
            };
            let attached = p.detached_until.is_none();
            let mut limits = self.limits;
            if p.client.message_buffer_size > 0 {
                limits.count = limits.count.min(p.client.message_buffer_size);
            }
            if !self.mailboxes.contains_key(id) {
                self.mailboxes.insert(id.clone(), Mailbox::new(limits));
            }
            let Some(mailbox) = self.mailboxes.get_mut(id) else {
                continue;
            };
            let seq = mailbox.push(notification.clone(), attached, now);
            if !attached {
                continue;
            }
            match deliveries.iter_mut().find(|d| d.portal == p.portal) {
                Some(d) => d.recipients.push((id.clone(), seq)),
                None => deliveries.push(Delivery {
                    portal: p.portal.clone(),
                    exclude: exclude.to_vec(),
                    recipients: vec![(id.clone(), seq)],
                    notification: notification.clone(),
                }),
            }
        }
        deliveries
    }

    /// `event` to everyone but `exclude`.
    fn broadcast(&mut self, exclude: &[String], event: &'static str, data: Value) -> Vec<Delivery> {
        let to: Vec<String> = self
            .participants
            .keys()
            .filter(|id| !exclude.contains(id))
            .cloned()
            .collect();
        self.deliver(&to, exclude, event, &data)
    }

    /// Keep a broadcast for participants a rebuild has yet to put back.
    fn backlog(&mut self, event: &'static str, data: &Value) {
        let now = Instant::now();
        if let Some(b) = self.rebuilt.as_mut()
            && now < b.until
            && b.entries.len() < REBUILD_BACKLOG_COUNT
        {
            b.entries.push((event, data.clone()));
        }
    }

    /// A portal answered for a delivery: which recipients it could not
    /// reach (all of them when the call failed).
    pub fn settle(&mut self, recipients: &[(String, u64)], undelivered: &[String], failed: bool) {
        for (id, seq) in recipients {
            tracing::trace!(participant = %id, seq, delivered = !failed && !undelivered.contains(id), "settled");
            if let Some(m) = self.mailboxes.get_mut(id) {
                m.settle(*seq, !failed && !undelivered.contains(id));
            }
        }
    }

    /// Admit a participant (OWT §12.3): room full, role, duplicate id.
    pub fn join(&mut self, req: JoinRequest) -> Result<Joined, ConferenceError> {
        check("participant.id", &req.id, true)?;
        check("participant.user", &req.user, false)?;
        check("participant.role", &req.role, true)?;
        check("participant.portal", &req.portal.id, true)?;
        check("participant.portalEndpoint", &req.portal.endpoint, true)?;
        let room = self.room()?;
        if room.participant_limit > 0 && self.participants.len() >= room.participant_limit as usize
        {
            return Err(ConferenceError::RoomFull);
        }
        let permission = room
            .permission_of(&req.role)
            .ok_or(ConferenceError::InvalidRole)?;
        if self.participants.contains_key(&req.id) {
            return Err(ConferenceError::AlreadyJoined);
        }
        let participant = Participant {
            id: req.id.clone(),
            user: req.user,
            role: req.role,
            portal: req.portal,
            permission,
            client: req.client,
            detached_until: None,
            restored: None,
            pending_until: req.pending_until,
        };
        self.participants.insert(req.id.clone(), participant);
        self.idle_since = None;
        let deliveries = if req.pending_until.is_some() {
            Vec::new()
        } else {
            self.announce(&req.id)
        };
        Ok(Joined {
            permission,
            room: self.room_info_for(&req.id)?,
            deliveries,
        })
    }

    /// Tell everyone but `id` that it joined.
    fn announce(&mut self, id: &str) -> Vec<Delivery> {
        let notify = self.room.as_ref().is_some_and(|r| r.notify_participants);
        let Some(p) = self.participants.get(id).filter(|_| notify) else {
            return Vec::new();
        };
        let info = json!({"id": p.id, "user": p.user, "role": p.role});
        self.broadcast(
            &[id.to_string()],
            "participant",
            json!({"action": "join", "data": info}),
        )
    }

    /// Pending joins whose portal confirmed them (their tokens were
    /// consumed): the others hear of them now. Ids not pending here
    /// (unknown, gone, confirmed already) are skipped.
    pub fn confirm<S: AsRef<str>>(&mut self, ids: &[S]) -> Vec<Delivery> {
        let mut deliveries = Vec::new();
        for id in ids {
            deliveries.extend(self.seated(id.as_ref()));
        }
        deliveries
    }

    /// Confirm `id` if its join is pending: a request of its own (or a
    /// relogin) shows that its portal answered its login, whether or not
    /// the confirmation arrived first.
    pub(crate) fn seated(&mut self, id: &str) -> Vec<Delivery> {
        match self.participants.get_mut(id) {
            Some(p) if p.pending_until.is_some() => {
                p.pending_until = None;
                self.announce(id)
            }
            _ => Vec::new(),
        }
    }

    /// Pending joins never confirmed in time (their portal died or could
    /// not abort them): forgotten, and nobody is told.
    pub fn expire_pending(&mut self, now: Instant) -> Vec<String> {
        let ids = self.due(|p| p.pending_until, now);
        for id in &ids {
            let _ = self.leave(id, now);
        }
        ids
    }

    /// The participants whose `deadline` has come by `now`.
    pub(crate) fn due(
        &self,
        deadline: fn(&Participant) -> Option<Instant>,
        now: Instant,
    ) -> Vec<String> {
        self.participants
            .values()
            .filter(|p| deadline(p).is_some_and(|until| now >= until))
            .map(|p| p.id.clone())
            .collect()
    }

    /// How many joins are pending.
    pub fn pending(&self) -> usize {
        self.participants
            .values()
            .filter(|p| p.pending_until.is_some())
            .count()
    }

    /// The room's previous node is gone: put its participants back, as their
    /// portal knows them, with their ids, users, roles and permissions.
    /// Those a retry of the same rebuild finds here are skipped. A seat
    /// here from before an earlier move (this node served the room, lost it
    /// to another while stalled, and now gets it back) is stale: it is
    /// taken over with what the portal knows now (portal, permission,
    /// connection, numbering), and nobody hears it join again. The room's
    /// participant limit does not refuse them: they held their seats before
    /// anyone who joined this node. Nobody restored hears of another
    /// restored one (they were together before); participants who joined
    /// this node meanwhile hear each newly restored one join, and each
    /// newly restored one hears of them.
    pub fn restore(
        &mut self,
        list: Vec<Restoring>,
        now: Instant,
    ) -> Result<(Vec<String>, Vec<Delivery>), ConferenceError> {
        let notify = self.room()?.notify_participants;
        for r in &list {
            check("participant.id", &r.id, true)?;
            check("participant.user", &r.user, false)?;
            check("participant.role", &r.role, true)?;
            check("participant.portal", &r.portal.id, true)?;
            check("participant.portalEndpoint", &r.portal.endpoint, true)?;
        }
        if self.rebuilt.as_ref().is_none_or(|b| now >= b.until) {
            self.rebuilt = Some(Backlog {
                until: now + REBUILD_BACKLOG,
                entries: Vec::new(),
            });
        }
        let mut restored = Vec::new();
        let mut arrived = Vec::new();
        for r in list {
            let retry = self
                .participants
                .get(&r.id)
                .map(|p| r.rebuild != 0 && p.restored == Some(r.rebuild));
            if retry == Some(true) {
                continue;
            }
            let mut limits = self.limits;
            if r.client.message_buffer_size > 0 {
                limits.count = limits.count.min(r.client.message_buffer_size);
            }
            self.mailboxes
                .insert(r.id.clone(), Mailbox::starting_at(limits, r.seq));
            restored.push(r.id.clone());
            if retry.is_none() {
                arrived.push(r.id.clone());
            }
            self.participants.insert(
                r.id.clone(),
                Participant {
                    id: r.id,
                    user: r.user,
                    role: r.role,
                    portal: r.portal,
                    permission: r.permission,
                    client: r.client,
                    detached_until: r.detached.map(|w| now + w),
                    restored: Some(r.rebuild),
                    pending_until: None,
                },
            );
        }
        if restored.is_empty() {
            return Ok((restored, Vec::new()));
        }
        self.idle_since = None;
        let mut deliveries = Vec::new();
        if notify {
            let fresh: Vec<String> = self
                .participants
                .values()
                .filter(|p| p.restored.is_none())
                .map(|p| p.id.clone())
                .collect();
            let info = |p: &Participant| json!({"id": p.id, "user": p.user, "role": p.role});
            for id in &arrived {
                let data = json!({"action": "join", "data": info(&self.participants[id])});
                deliveries.extend(self.deliver(&fresh, &[], "participant", &data));
            }
            // a pending join hears of them; they hear of it once confirmed
            let heard: Vec<String> = fresh
                .into_iter()
                .filter(|id| self.participants[id].pending_until.is_none())
                .collect();
            for id in &heard {
                let data = json!({"action": "join", "data": info(&self.participants[id])});
                deliveries.extend(self.deliver(&arrived, &[], "participant", &data));
            }
        }
        // what the room broadcast since the rebuild began, before these
        // were back
        let backlog: Vec<(&'static str, Value)> = self
            .rebuilt
            .as_ref()
            .map(|b| b.entries.clone())
            .unwrap_or_default();
        for (event, data) in backlog {
            deliveries.extend(self.deliver(&restored, &[], event, &data));
        }
        Ok((restored, deliveries))
    }

    /// `{id, views, participants, streams}`; no media yet, so no streams.
    /// Pending joins are not listed.
    pub fn room_info(&self) -> Result<String, ConferenceError> {
        self.room_info_for("")
    }

    /// [`Self::room_info`] as `joiner` sees it: itself listed, pending or not.
    fn room_info_for(&self, joiner: &str) -> Result<String, ConferenceError> {
        /// Written straight from the participants: no JSON value tree (a
        /// map and three strings per participant) built and dropped per
        /// join.
        #[derive(serde::Serialize)]
        struct RoomInfo<'a> {
            id: &'a str,
            views: &'a [String],
            participants: Vec<ParticipantInfo<'a>>,
            streams: [(); 0],
        }
        #[derive(serde::Serialize)]
        struct ParticipantInfo<'a> {
            id: &'a str,
            user: &'a str,
            role: &'a str,
        }
        let room = self.room()?;
        let info = RoomInfo {
            id: &room.id,
            views: &room.views,
            participants: self
                .participants
                .values()
                .filter(|p| p.pending_until.is_none() || p.id == joiner)
                .map(|p| ParticipantInfo {
                    id: &p.id,
                    user: &p.user,
                    role: &p.role,
                })
                .collect(),
            streams: [],
        };
        // strings and a list of them: serializing cannot fail (an empty
        // answer would be refused by the portal as unreadable, not crash)
        Ok(serde_json::to_string(&info).unwrap_or_default())
    }

    /// A participant leaves; the others are told (a pending join leaves
    /// silently: nobody heard of it).
    pub fn leave(
        &mut self,
        id: &str,
        now: Instant,
    ) -> Result<(Participant, Vec<Delivery>), ConferenceError> {
        let notify = self.room()?.notify_participants;
        let gone = self
            .participants
            .shift_remove(id)
            .ok_or(ConferenceError::NotJoined)?;
        self.mailboxes.remove(id);
        self.spent_tickets.remove(id);
        if self.participants.is_empty() {
            self.idle_since = Some(now);
        }
        let deliveries = if notify && gone.pending_until.is_none() {
            let data = json!({"action": "leave", "data": id});
            // those still to be put back knew it (only a restored one: one
            // that joined here meanwhile they never heard join)
            if gone.restored.is_some() {
                self.backlog("participant", &data);
            }
            self.broadcast(&[id.to_string()], "participant", data)
        } else {
            Vec::new()
        };
        Ok((gone, deliveries))
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.get(id)
    }

    /// Change a participant's permissions (OWT's `controlParticipant`): all
    /// changes or none. Nobody is told, as in OWT.
    pub fn control_permission(
        &mut self,
        id: &str,
        changes: &[PermissionChange],
    ) -> Result<&Participant, ConferenceError> {
        let p = self
            .participants
            .get_mut(id)
            .ok_or(ConferenceError::NoSuchParticipant)?;
        let mut permission = p.permission;
        for change in changes {
            change.apply(&mut permission);
        }
        p.permission = permission;
        Ok(p)
    }

    /// Route a text message (OWT §12.8): to one participant as `to: "me"`, or
    /// to everyone, the sender included, as `to: "all"`.
    pub fn text(
        &mut self,
        from: &str,
        to: &str,
        message: &str,
    ) -> Result<Vec<Delivery>, ConferenceError> {
        self.room()?;
        check("to", to, true)?;
        if message.chars().count() > MAX_TEXT_CHARS {
            return Err(ConferenceError::TextTooLong);
        }
        if !self.participants.contains_key(from) {
            return Err(ConferenceError::NotJoined);
        }
        // A pending target is one: its client may have its answer (and
        // its id be known) before the confirmation arrives. The text waits
        // in its mailbox, and goes with it if its join is undone.
        if to != "all" && !self.participants.contains_key(to) {
            return Err(ConferenceError::NoTarget(to.to_string()));
        }
        let mut deliveries = self.seated(from);
        if to == "all" {
            let data = json!({"from": from, "to": "all", "message": message});
            self.backlog("text", &data);
            deliveries.extend(self.broadcast(&[], "text", data));
            return Ok(deliveries);
        }
        // A detached target keeps it for its relogin.
        deliveries.extend(self.deliver(
            &[to.to_string()],
            &[],
            "text",
            &json!({"from": from, "to": "me", "message": message}),
        ));
        Ok(deliveries)
    }

    /// True once the room has been empty for `timeout` (self-clean, OWT §12.5).
    pub fn self_clean_due(&self, now: Instant, timeout: Duration) -> bool {
        self.idle_since
            .is_some_and(|since| now.duration_since(since) >= timeout)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::room::RoleDef;

    fn config(limit: i32) -> RoomConfig {
        let both = Media {
            audio: true,
            video: true,
        };
        RoomConfig {
            id: "room-1".into(),
            participant_limit: limit,
            roles: vec![
                RoleDef {
                    role: "presenter".into(),
                    permission: Permission {
                        publish: both,
                        subscribe: both,
                    },
                },
                RoleDef {
                    role: "viewer".into(),
                    permission: Permission {
                        publish: Media::default(),
                        subscribe: both,
                    },
                },
            ],
            views: vec!["common".into()],
            notify_participants: true,
        }
    }

    pub(crate) fn portal(n: u8) -> PortalRef {
        PortalRef {
            id: format!("portal-{n}"),
            endpoint: format!("127.0.0.1:70{n:02}"),
        }
    }

    pub(crate) fn req(id: &str, role: &str, p: u8) -> JoinRequest {
        JoinRequest {
            id: id.into(),
            user: format!("user-{id}"),
            role: role.into(),
            portal: portal(p),
            client: ClientSpec {
                protocol: "1.2".into(),
                sdk_type: "C++".into(),
                reconnection: true,
                token_code: format!("code-{id}"),
                message_buffer_size: 0,
            },
            pending_until: None,
        }
    }

    /// `req` as a pending join, forgotten at `until` unless confirmed.
    pub(crate) fn pending(id: &str, p: u8, until: Instant) -> JoinRequest {
        JoinRequest {
            pending_until: Some(until),
            ..req(id, "viewer", p)
        }
    }

    /// The participant ids a room info lists.
    fn listed(room: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(room).unwrap();
        v["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// (recipients, event, action, subject) of each delivery.
    fn told(ds: &[Delivery]) -> Vec<(Vec<String>, &'static str, Value)> {
        ds.iter()
            .map(|d| {
                let (_, to, event, data) = shape(d);
                (to, event, data)
            })
            .collect()
    }

    #[test]
    fn a_pending_join_holds_its_seat_and_is_heard_of_only_once_confirmed() {
        let (mut c, now) = conf(3);
        c.join(req("a", "presenter", 1)).unwrap();
        let p = c
            .join(pending("p", 2, now + Duration::from_secs(60)))
            .unwrap();
        // nobody is told; the joiner sees the room and itself
        assert!(p.deliveries.is_empty());
        assert_eq!(listed(&p.room), ["a", "p"]);
        // it is invisible to the others' snapshots
        let b = c.join(req("b", "viewer", 1)).unwrap();
        assert_eq!(listed(&b.room), ["a", "b"]);
        // ...but hears what happens from its snapshot on (b's join)
        assert_eq!(
            told(&b.deliveries)
                .iter()
                .map(|(to, ..)| to.clone())
                .collect::<Vec<_>>(),
            [vec!["a".to_string()], vec!["p".to_string()]]
        );
        // a text to it (its client may have its answer, and its id be
        // known, before the confirmation arrives) waits in its mailbox
        let ds = told(&c.text("a", "p", "hi").unwrap());
        assert_eq!(ds.len(), 1);
        assert_eq!((ds[0].0.clone(), ds[0].1), (vec!["p".to_string()], "text"));
        assert_eq!(c.pending(), 1, "a text to it does not confirm it");
        // it holds its seat: the room of 3 is full
        assert_eq!(
            c.join(req("c", "viewer", 1)).unwrap_err(),
            ConferenceError::RoomFull
        );
        assert_eq!(c.pending(), 1);
        // confirmed: the others hear it join, once
        let confirmed = c.confirm(&["p", "p", "unknown", "a"]);
        let joined =
            json!({"action": "join", "data": {"id": "p", "user": "user-p", "role": "viewer"}});
        assert_eq!(
            told(&confirmed),
            [(
                vec!["a".to_string(), "b".to_string()],
                "participant",
                joined.clone()
            )]
        );
        assert!(c.confirm(&["p"]).is_empty());
        assert_eq!(c.pending(), 0);
        assert_eq!(listed(&c.room_info().unwrap()), ["a", "p", "b"]);
    }

    #[test]
    fn a_pending_join_left_or_never_confirmed_leaves_no_trace() {
        let (mut c, now) = conf(2);
        c.join(req("a", "presenter", 1)).unwrap();
        // aborted: its token was refused
        c.join(pending("p", 2, now + Duration::from_secs(60)))
            .unwrap();
        let (_, told) = c.leave("p", now).unwrap();
        assert!(told.is_empty());
        assert!(!c.mailboxes.contains_key("p"));
        // never confirmed: forgotten at its deadline, silently, and its seat
        // is free again
        c.join(pending("q", 2, now + Duration::from_secs(5)))
            .unwrap();
        assert!(c.expire_pending(now + Duration::from_secs(4)).is_empty());
        assert_eq!(c.expire_pending(now + Duration::from_secs(5)), ["q"]);
        assert!(c.participant("q").is_none());
        c.join(req("b", "viewer", 1)).unwrap();
        // a room whose only participant was pending is idle again
        let (mut solo, now) = conf(-1);
        solo.join(pending("p", 2, now + Duration::from_secs(5)))
            .unwrap();
        assert!(!solo.self_clean_due(now + Duration::from_secs(600), Duration::from_secs(1)));
        solo.expire_pending(now + Duration::from_secs(5));
        assert!(solo.self_clean_due(now + Duration::from_secs(600), Duration::from_secs(1)));
    }

    #[test]
    fn a_pending_joins_own_requests_confirm_it() {
        let (mut c, now) = conf(-1);
        let until = now + Duration::from_secs(60);
        c.join(req("a", "presenter", 1)).unwrap();
        // its text went out before its confirmation arrived
        c.join(pending("p", 2, until)).unwrap();
        let ds = told(&c.text("p", "all", "first").unwrap());
        assert_eq!(ds[0].1, "participant");
        assert_eq!(ds[0].0, ["a"]);
        assert_eq!(ds.iter().filter(|(_, e, _)| *e == "text").count(), 2);
        assert_eq!(c.pending(), 0);
        // a text to itself before its confirmation arrived
        c.join(pending("m", 2, until)).unwrap();
        let ds = told(&c.text("m", "m", "note").unwrap());
        assert_eq!(
            ds.iter().map(|(_, e, _)| *e).collect::<Vec<_>>(),
            ["participant", "participant", "text"]
        );
        // its connection closed right after its answer: detached, and heard of
        c.join(pending("q", 2, until)).unwrap();
        let ds = told(&c.detach("q", Duration::from_secs(60), now).unwrap());
        assert_eq!(ds.len(), 2, "a and p hear q join: {ds:?}");
        assert!(c.participant("q").unwrap().detached_until.is_some());
        // its portal died before confirming; the client relogins elsewhere
        c.join(pending("r", 2, until)).unwrap();
        let (lost, _) = c.portal_lost(
            "portal-2",
            &Default::default(),
            Duration::from_secs(60),
            now,
        );
        assert_eq!(lost, ["p", "m"], "the pending join stays pending");
        let seat = c.reattach("r", portal(3), "t1", now).unwrap();
        assert!(seat.participant.pending_until.is_none());
        // (p and q are detached: their mailboxes keep it)
        let ds = told(&seat.deliveries);
        assert_eq!(ds.len(), 1, "{ds:?}");
        assert_eq!(
            (ds[0].0.clone(), ds[0].2["data"]["id"].clone()),
            (vec!["a".to_string()], json!("r"))
        );
        // a pending join leaves no `join` among restored participants' news
        c.join(pending("s", 1, until)).unwrap();
        let (_, ds) = c.restore(vec![restoring("x", 1, 0)], now).unwrap();
        assert!(
            told(&ds)
                .iter()
                .all(|(_, _, data)| data["data"]["id"] != "s"),
            "{ds:?}"
        );
    }

    /// A delivery as (portal, recipients, event, data).
    pub(crate) fn shape(d: &Delivery) -> (PortalRef, Vec<String>, &'static str, Value) {
        (
            d.portal.clone(),
            d.recipients.iter().map(|(id, _)| id.clone()).collect(),
            d.notification.event,
            serde_json::from_str(&d.notification.data).unwrap(),
        )
    }

    pub(crate) fn conf(limit: i32) -> (Conference, Instant) {
        let now = Instant::now();
        let mut c = Conference::default();
        c.init(config(limit), now).unwrap();
        (c, now)
    }

    #[test]
    fn permissions_change_by_patch_and_nobody_is_told() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "viewer", 1)).unwrap();
        let on = Media {
            audio: true,
            video: true,
        };
        let changes = [
            PermissionChange::from_path("/permission/publish", on, false).unwrap(),
            PermissionChange::from_path("/permission/publish/video", Media::default(), false)
                .unwrap(),
            PermissionChange::from_path("/permission/subscribe/audio", Media::default(), false)
                .unwrap(),
        ];
        let p = c.control_permission("a", &changes).unwrap();
        assert_eq!(
            p.permission,
            Permission {
                publish: Media {
                    audio: true,
                    video: false
                },
                subscribe: Media {
                    audio: false,
                    video: true
                },
            }
        );
        assert_eq!(c.participant("a").unwrap().permission, p_after(&c));
        assert_eq!(
            c.control_permission("nobody", &changes).unwrap_err(),
            ConferenceError::NoSuchParticipant
        );
        assert_eq!(PermissionChange::from_path("/role", on, true), None);
    }

    fn p_after(c: &Conference) -> Permission {
        c.participant("a").unwrap().permission
    }

    #[test]
    fn a_node_serves_one_room() {
        let (mut c, now) = conf(-1);
        c.init(config(-1), now).unwrap();
        let mut other = config(-1);
        other.id = "room-2".into();
        assert_eq!(c.init(other, now), Err(ConferenceError::RoomIdClash));
        assert_eq!(c.accepts("room-1"), Ok(true));
        assert_eq!(c.accepts("room-2"), Err(ConferenceError::RoomIdClash));
        assert_eq!(Conference::default().accepts("x"), Ok(false));
    }

    #[test]
    fn join_gives_permission_and_room_info_and_tells_the_others() {
        let (mut c, _) = conf(-1);
        let first = c.join(req("a", "presenter", 1)).unwrap();
        assert!(first.deliveries.is_empty(), "nobody else to tell");
        let second = c.join(req("b", "viewer", 2)).unwrap();
        assert_eq!(second.permission.publish, Media::default());
        assert!(second.permission.subscribe.video);
        assert_eq!(
            serde_json::from_str::<Value>(&second.room).unwrap(),
            json!({"id": "room-1", "views": ["common"], "streams": [],
                   "participants": [{"id": "a", "user": "user-a", "role": "presenter"},
                                    {"id": "b", "user": "user-b", "role": "viewer"}]})
        );
        // one delivery per portal hosting others, the joiner excluded
        assert_eq!(second.deliveries.len(), 1);
        let (to, recipients, event, data) = shape(&second.deliveries[0]);
        assert_eq!(
            (to, recipients, event),
            (portal(1), vec!["a".to_string()], "participant")
        );
        assert_eq!(second.deliveries[0].exclude, ["b"]);
        assert_eq!(
            data,
            json!({"action": "join", "data": {"id": "b", "user": "user-b", "role": "viewer"}})
        );
    }

    #[test]
    fn admission_rules() {
        let (mut c, _) = conf(2);
        c.join(req("a", "presenter", 1)).unwrap();
        assert_eq!(
            c.join(req("a", "viewer", 1)).unwrap_err(),
            ConferenceError::AlreadyJoined
        );
        assert_eq!(
            c.join(req("x", "admin", 1)).unwrap_err(),
            ConferenceError::InvalidRole
        );
        c.join(req("b", "viewer", 1)).unwrap();
        assert_eq!(
            c.join(req("c", "viewer", 1)).unwrap_err(),
            ConferenceError::RoomFull
        );
        let (mut unlimited, _) = conf(0);
        for i in 0..50 {
            unlimited.join(req(&format!("p{i}"), "viewer", 1)).unwrap();
        }
        let mut uninit = Conference::default();
        assert_eq!(
            uninit.join(req("a", "presenter", 1)).unwrap_err(),
            ConferenceError::NotReady
        );
        let (mut c, _) = conf(-1);
        let mut bad = req("", "presenter", 1);
        assert!(
            matches!(c.join(bad).unwrap_err(), ConferenceError::InvalidArgument(m) if m.contains("participant.id"))
        );
        bad = req("a", "presenter", 1);
        bad.user = "u".repeat(MAX_FIELD_LEN + 1);
        assert!(matches!(
            c.join(bad).unwrap_err(),
            ConferenceError::InvalidArgument(_)
        ));
    }

    #[test]
    fn silent_rooms_send_no_participant_events() {
        let now = Instant::now();
        let mut c = Conference::default();
        let mut cfg = config(-1);
        cfg.notify_participants = false;
        c.init(cfg, now).unwrap();
        c.join(req("a", "presenter", 1)).unwrap();
        assert!(
            c.join(req("b", "presenter", 1))
                .unwrap()
                .deliveries
                .is_empty()
        );
        assert!(c.leave("a", now).unwrap().1.is_empty());
    }

    #[test]
    fn leave_tells_everyone_remaining() {
        let (mut c, now) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 2)).unwrap();
        let (gone, deliveries) = c.leave("a", now).unwrap();
        assert_eq!(gone.id, "a");
        assert_eq!(deliveries.len(), 1);
        assert_eq!(
            shape(&deliveries[0]),
            (
                portal(2),
                vec!["b".to_string()],
                "participant",
                json!({"action": "leave", "data": "a"})
            )
        );
        assert_eq!(c.leave("a", now).unwrap_err(), ConferenceError::NotJoined);
        assert_eq!(
            Conference::default().leave("a", now).unwrap_err(),
            ConferenceError::NotReady
        );
    }

    #[test]
    fn text_routing() {
        let (mut c, _) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 2)).unwrap();
        c.join(req("c", "presenter", 2)).unwrap();
        let to_one = c.text("a", "b", "hi").unwrap();
        assert_eq!(to_one.len(), 1);
        assert_eq!(
            shape(&to_one[0]),
            (
                portal(2),
                vec!["b".to_string()],
                "text",
                json!({"from": "a", "to": "me", "message": "hi"})
            )
        );
        let to_all = c.text("b", "all", "hello").unwrap();
        assert_eq!(to_all.len(), 2, "one per portal, sender included");
        let everyone: Vec<String> = to_all.iter().flat_map(|d| shape(d).1).collect();
        assert_eq!(everyone, ["a", "b", "c"]);
        for d in &to_all {
            assert_eq!(
                shape(d).3,
                json!({"from": "b", "to": "all", "message": "hello"})
            );
        }
        assert_eq!(
            c.text("a", "zz", "x").unwrap_err().to_string(),
            "Target participant does NOT exist: zz"
        );
        assert_eq!(
            c.text("ghost", "all", "x").unwrap_err(),
            ConferenceError::NotJoined
        );
        assert!(c.text("a", "all", &"é".repeat(MAX_TEXT_CHARS)).is_ok());
        assert_eq!(
            c.text("a", "all", &"x".repeat(MAX_TEXT_CHARS + 1))
                .unwrap_err(),
            ConferenceError::TextTooLong
        );
        assert!(matches!(
            c.text("a", "", "x").unwrap_err(),
            ConferenceError::InvalidArgument(_)
        ));
    }

    pub(crate) fn restoring(id: &str, p: u8, seq: u64) -> Restoring {
        let r = req(id, "viewer", p);
        Restoring {
            id: r.id,
            user: r.user,
            role: r.role,
            portal: r.portal,
            client: r.client,
            permission: Permission {
                publish: Media {
                    audio: true,
                    video: false,
                },
                subscribe: Media::default(),
            },
            seq,
            detached: None,
            rebuild: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_room_keeps_ids_permissions_and_numbering_and_tells_only_newcomers() {
        let (mut c, now) = conf(2);
        c.join(req("f", "presenter", 3)).unwrap();
        let mut away = restoring("b", 2, 3);
        away.detached = Some(Duration::from_secs(30));
        let (restored, deliveries) = c.restore(vec![restoring("a", 1, 7), away], now).unwrap();
        assert_eq!(restored, ["a", "b"]);
        // the limit of 2 does not refuse seats held before
        assert_eq!(c.participants().count(), 3);
        let a = c.participant("a").unwrap();
        assert!(a.permission.publish.audio, "its own permission");
        assert!(!a.permission.publish.video);
        assert_eq!(a.restored, Some(1));
        assert!(c.participant("b").unwrap().detached_until.is_some());
        let shapes: Vec<_> = deliveries.iter().map(shape).collect();
        assert_eq!(
            shapes,
            [
                (
                    portal(3),
                    vec!["f".to_string()],
                    "participant",
                    json!({"action": "join", "data": {"id": "a", "user": "user-a", "role": "viewer"}})
                ),
                (
                    portal(3),
                    vec!["f".to_string()],
                    "participant",
                    json!({"action": "join", "data": {"id": "b", "user": "user-b", "role": "viewer"}})
                ),
                (
                    portal(1),
                    vec!["a".to_string()],
                    "participant",
                    json!({"action": "join", "data": {"id": "f", "user": "user-f", "role": "presenter"}})
                ),
            ],
            "the newcomer hears of both, a of the newcomer; b keeps it for its relogin"
        );
        assert_eq!(
            deliveries[2].recipients,
            [("a".to_string(), 8)],
            "numbering goes on above 7"
        );
        // a retry puts nobody back twice
        let (again, deliveries) = c.restore(vec![restoring("a", 1, 7)], now).unwrap();
        assert!(again.is_empty() && deliveries.is_empty());
        // admission still holds afterwards
        assert_eq!(
            c.join(req("g", "viewer", 3)).unwrap_err(),
            ConferenceError::RoomFull
        );
        // texts reach restored seats
        let to_a = c.text("f", "a", "hi").unwrap();
        assert_eq!(to_a[0].recipients, [("a".to_string(), 9)]);
        assert_eq!(
            Conference::default()
                .restore(vec![restoring("a", 1, 0)], now)
                .unwrap_err(),
            ConferenceError::NotReady
        );
        let mut bad = restoring("", 1, 0);
        bad.id.clear();
        assert!(matches!(
            c.restore(vec![bad], now).unwrap_err(),
            ConferenceError::InvalidArgument(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_seat_from_before_an_earlier_move_is_taken_over() {
        // This node served the room, stalled, lost it to another node, and
        // gets it back when that one is lost: its copy of "a" is stale
        // (detached, numbered as it was then, on an old portal).
        let (mut c, now) = conf(-1);
        c.join(req("f", "presenter", 3)).unwrap();
        c.join(req("a", "viewer", 1)).unwrap();
        c.text("f", "a", "old").unwrap();
        c.detach("a", Duration::from_secs(60), now).unwrap();
        let mut back = restoring("a", 4, 20);
        back.rebuild = 7;
        let (restored, deliveries) = c.restore(vec![back.clone()], now).unwrap();
        assert_eq!(restored, ["a"], "taken over, so counted");
        assert!(deliveries.is_empty(), "f knew a already: no second join");
        let a = c.participant("a").unwrap();
        assert_eq!(a.detached_until, None, "its portal holds it connected");
        assert_eq!(a.portal, portal(4));
        assert_eq!(a.restored, Some(7));
        let to_a = c.text("f", "a", "hi").unwrap();
        assert_eq!(
            to_a[0].recipients,
            [("a".to_string(), 21)],
            "numbered above what its portal has seen"
        );
        assert_eq!(to_a[0].portal, portal(4));
        // a retry of the same rebuild leaves it alone
        let (again, _) = c.restore(vec![back.clone()], now).unwrap();
        assert!(again.is_empty());
        assert_eq!(c.text("f", "a", "x").unwrap()[0].recipients[0].1, 22);
        // a later rebuild takes it over again
        back.rebuild = 8;
        back.seq = 40;
        let (again, _) = c.restore(vec![back], now).unwrap();
        assert_eq!(again, ["a"]);
        assert_eq!(c.text("f", "a", "y").unwrap()[0].recipients[0].1, 41);
    }

    #[tokio::test(start_paused = true)]
    async fn participants_put_back_late_get_what_the_rebuilt_room_broadcast_meanwhile() {
        let (mut c, now) = conf(-1);
        // portal 1 puts its participants back first
        c.restore(vec![restoring("a", 1, 10), restoring("b", 1, 20)], now)
            .unwrap();
        let texted = c.text("a", "all", "in the gap").unwrap();
        let told: Vec<String> = texted.iter().flat_map(|d| shape(d).1).collect();
        assert_eq!(told, ["a", "b"], "c is not back yet");
        c.leave("b", now).unwrap();
        // portal 2 comes 200 ms later
        tokio::time::advance(Duration::from_millis(200)).await;
        let (back, deliveries) = c
            .restore(vec![restoring("c", 2, 30)], Instant::now())
            .unwrap();
        assert_eq!(back, ["c"]);
        let got: Vec<_> = deliveries
            .iter()
            .map(|d| (shape(d).1, d.notification.data.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    vec!["c".to_string()],
                    json!({"from": "a", "to": "all", "message": "in the gap"}).to_string()
                ),
                (
                    vec!["c".to_string()],
                    json!({"action": "leave", "data": "b"}).to_string()
                ),
            ],
            "c was in the room all along: it gets the gap's text and b's leave, in order"
        );
        assert_eq!(deliveries[0].recipients, [("c".to_string(), 31)]);
        // once the window is over, nothing is kept
        tokio::time::advance(REBUILD_BACKLOG).await;
        c.text("a", "all", "later").unwrap();
        let (_, deliveries) = c
            .restore(vec![restoring("d", 2, 0)], Instant::now())
            .unwrap();
        assert!(deliveries.is_empty(), "{deliveries:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn restored_participants_do_not_hear_of_each_other() {
        let (mut c, now) = conf(-1);
        let (first, d1) = c.restore(vec![restoring("a", 1, 0)], now).unwrap();
        let (second, d2) = c.restore(vec![restoring("b", 2, 0)], now).unwrap();
        assert_eq!(
            (first, second),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        assert!(
            d1.is_empty() && d2.is_empty(),
            "two portals restoring one room"
        );
        // a newcomer then joins as usual and everyone hears it
        let joined = c.join(req("n", "viewer", 3)).unwrap();
        let told: Vec<String> = joined.deliveries.iter().flat_map(|d| shape(d).1).collect();
        assert_eq!(told, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn self_clean_after_the_room_stays_empty() {
        let timeout = Duration::from_secs(30);
        let mut c = Conference::default();
        assert!(
            !c.self_clean_due(Instant::now(), timeout),
            "no room, nothing to clean"
        );
        c.init(config(-1), Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(20)).await;
        c.join(req("a", "presenter", 1)).unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!c.self_clean_due(Instant::now(), timeout), "occupied");
        c.leave("a", Instant::now()).unwrap();
        tokio::time::advance(Duration::from_millis(29_999)).await;
        assert!(!c.self_clean_due(Instant::now(), timeout));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.self_clean_due(Instant::now(), timeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_nobody_joins_cleans_itself_too() {
        let mut c = Conference::default();
        c.init(config(-1), Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(c.self_clean_due(Instant::now(), Duration::from_secs(30)));
    }
}
