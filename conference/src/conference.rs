//! The room controller's state (OWT §12): participants, admission (room full,
//! roles, duplicates), text routing and the notifications each change causes.
//! Plain data: methods return the deliveries to make; the service sends them.

use crate::room::{Permission, RoomConfig};
use indexmap::IndexMap;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// Longest text message, in characters (OWT's documented cap).
pub const MAX_TEXT_CHARS: usize = 2048;
/// Longest participant id, user name, role or portal name.
pub const MAX_FIELD_LEN: usize = 1024;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub user: String,
    pub role: String,
    pub portal: PortalRef,
    pub permission: Permission,
}

/// A notification to make through a portal.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// To every participant of this room on `portal`, except `exclude`.
    Broadcast {
        portal: PortalRef,
        exclude: Vec<String>,
        event: &'static str,
        data: Value,
    },
    /// To one participant.
    Notify {
        portal: PortalRef,
        participant: String,
        event: &'static str,
        data: Value,
    },
}

/// The outcome of a successful join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub permission: Permission,
    /// `{id, views, participants, streams}` for the joiner.
    pub room: Value,
    pub deliveries: Vec<Delivery>,
}

pub struct JoinRequest {
    pub id: String,
    pub user: String,
    pub role: String,
    pub portal: PortalRef,
}

#[derive(Default)]
pub struct Conference {
    room: Option<RoomConfig>,
    participants: IndexMap<String, Participant>,
    idle_since: Option<Instant>,
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

    fn room(&self) -> Result<&RoomConfig, ConferenceError> {
        self.room.as_ref().ok_or(ConferenceError::NotReady)
    }

    /// Distinct portals of the participants, in join order.
    fn portals(&self) -> Vec<PortalRef> {
        let mut seen: Vec<PortalRef> = Vec::new();
        for p in self.participants.values() {
            if !seen.contains(&p.portal) {
                seen.push(p.portal.clone());
            }
        }
        seen
    }

    fn broadcast(&self, exclude: &[String], event: &'static str, data: Value) -> Vec<Delivery> {
        self.portals()
            .into_iter()
            .map(|portal| Delivery::Broadcast {
                portal,
                exclude: exclude.to_vec(),
                event,
                data: data.clone(),
            })
            .collect()
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
        let notify = room.notify_participants;
        let participant = Participant {
            id: req.id.clone(),
            user: req.user,
            role: req.role,
            portal: req.portal,
            permission,
        };
        let info =
            json!({"id": participant.id, "user": participant.user, "role": participant.role});
        self.participants.insert(req.id.clone(), participant);
        self.idle_since = None;
        let deliveries = if notify {
            self.broadcast(
                std::slice::from_ref(&req.id),
                "participant",
                json!({"action": "join", "data": info}),
            )
        } else {
            Vec::new()
        };
        Ok(Joined {
            permission,
            room: self.room_info()?,
            deliveries,
        })
    }

    /// `{id, views, participants, streams}`; no media yet, so no streams.
    pub fn room_info(&self) -> Result<Value, ConferenceError> {
        let room = self.room()?;
        let participants: Vec<Value> = self
            .participants
            .values()
            .map(|p| json!({"id": p.id, "user": p.user, "role": p.role}))
            .collect();
        Ok(json!({
            "id": room.id,
            "views": room.views,
            "participants": participants,
            "streams": [],
        }))
    }

    /// A participant leaves; the others are told.
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
        if self.participants.is_empty() {
            self.idle_since = Some(now);
        }
        let deliveries = if notify {
            self.broadcast(
                &[id.to_string()],
                "participant",
                json!({"action": "leave", "data": id}),
            )
        } else {
            Vec::new()
        };
        Ok((gone, deliveries))
    }

    /// Remove every participant hosted on a lost portal; only the surviving
    /// portals are told.
    pub fn drop_portal(&mut self, portal_id: &str, now: Instant) -> (Vec<String>, Vec<Delivery>) {
        let ids: Vec<String> = self
            .participants
            .values()
            .filter(|p| p.portal.id == portal_id)
            .map(|p| p.id.clone())
            .collect();
        for id in &ids {
            self.participants.shift_remove(id);
        }
        if !ids.is_empty() && self.participants.is_empty() {
            self.idle_since = Some(now);
        }
        let notify = self.room.as_ref().is_some_and(|r| r.notify_participants);
        let mut deliveries = Vec::new();
        if notify {
            for id in &ids {
                deliveries.extend(self.broadcast(
                    std::slice::from_ref(id),
                    "participant",
                    json!({"action": "leave", "data": id}),
                ));
            }
        }
        (ids, deliveries)
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.get(id)
    }

    /// Route a text message (OWT §12.8): to one participant as `to: "me"`, or
    /// to everyone, the sender included, as `to: "all"`.
    pub fn text(
        &self,
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
        if to == "all" {
            return Ok(self.broadcast(
                &[],
                "text",
                json!({"from": from, "to": "all", "message": message}),
            ));
        }
        let target = self
            .participants
            .get(to)
            .ok_or_else(|| ConferenceError::NoTarget(to.to_string()))?;
        Ok(vec![Delivery::Notify {
            portal: target.portal.clone(),
            participant: to.to_string(),
            event: "text",
            data: json!({"from": from, "to": "me", "message": message}),
        }])
    }

    /// True once the room has been empty for `timeout` (self-clean, OWT §12.5).
    pub fn self_clean_due(&self, now: Instant, timeout: Duration) -> bool {
        self.idle_since
            .is_some_and(|since| now.duration_since(since) >= timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{Media, RoleDef};

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

    fn portal(n: u8) -> PortalRef {
        PortalRef {
            id: format!("portal-{n}"),
            endpoint: format!("127.0.0.1:70{n:02}"),
        }
    }

    fn req(id: &str, role: &str, p: u8) -> JoinRequest {
        JoinRequest {
            id: id.into(),
            user: format!("user-{id}"),
            role: role.into(),
            portal: portal(p),
        }
    }

    fn conf(limit: i32) -> (Conference, Instant) {
        let now = Instant::now();
        let mut c = Conference::default();
        c.init(config(limit), now).unwrap();
        (c, now)
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
        assert!(
            first.deliveries.is_empty()
                || matches!(&first.deliveries[0], Delivery::Broadcast { exclude, .. } if exclude == &["a"])
        );
        let second = c.join(req("b", "viewer", 2)).unwrap();
        assert_eq!(second.permission.publish, Media::default());
        assert!(second.permission.subscribe.video);
        assert_eq!(
            second.room,
            json!({"id": "room-1", "views": ["common"], "streams": [],
                   "participants": [{"id": "a", "user": "user-a", "role": "presenter"},
                                    {"id": "b", "user": "user-b", "role": "viewer"}]})
        );
        // one broadcast per portal hosting participants, excluding the joiner
        assert_eq!(second.deliveries.len(), 2);
        for d in &second.deliveries {
            let Delivery::Broadcast {
                exclude,
                event,
                data,
                ..
            } = d
            else {
                panic!("{d:?}")
            };
            assert_eq!(
                (exclude.as_slice(), *event),
                (&["b".to_string()][..], "participant")
            );
            assert_eq!(
                data,
                &json!({"action": "join", "data": {"id": "b", "user": "user-b", "role": "viewer"}})
            );
        }
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
        assert_eq!(
            deliveries,
            vec![Delivery::Broadcast {
                portal: portal(2),
                exclude: vec!["a".into()],
                event: "participant",
                data: json!({"action": "leave", "data": "a"}),
            }]
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
        assert_eq!(
            to_one,
            vec![Delivery::Notify {
                portal: portal(2),
                participant: "b".into(),
                event: "text",
                data: json!({"from": "a", "to": "me", "message": "hi"}),
            }]
        );
        let to_all = c.text("b", "all", "hello").unwrap();
        assert_eq!(to_all.len(), 2, "one per portal, sender included");
        for d in to_all {
            let Delivery::Broadcast { exclude, data, .. } = d else {
                panic!()
            };
            assert!(exclude.is_empty());
            assert_eq!(data, json!({"from": "b", "to": "all", "message": "hello"}));
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

    #[test]
    fn a_lost_portal_takes_its_participants() {
        let (mut c, now) = conf(-1);
        c.join(req("a", "presenter", 1)).unwrap();
        c.join(req("b", "presenter", 2)).unwrap();
        c.join(req("c", "presenter", 1)).unwrap();
        let (dropped, deliveries) = c.drop_portal("portal-1", now);
        assert_eq!(dropped, ["a", "c"]);
        assert_eq!(
            c.participants().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // the survivor on portal 2 hears of both leaves
        assert_eq!(deliveries.len(), 2);
        assert!(
            deliveries
                .iter()
                .all(|d| matches!(d, Delivery::Broadcast { portal: p, .. } if *p == portal(2)))
        );
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
