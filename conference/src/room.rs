//! What the controller needs of a room's configuration (OWT §13), read from
//! management on the first join.

use conclave_proto::management::v1 as mgmt;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Media {
    pub audio: bool,
    pub video: bool,
}

/// What a role may publish and subscribe; sent to clients as `permission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Permission {
    pub publish: Media,
    pub subscribe: Media,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    pub role: String,
    pub permission: Permission,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub id: String,
    /// <= 0 means unlimited.
    pub participant_limit: i32,
    pub roles: Vec<RoleDef>,
    /// View labels.
    pub views: Vec<String>,
    /// Tell participants when others join and leave.
    pub notify_participants: bool,
}

impl RoomConfig {
    pub fn permission_of(&self, role: &str) -> Option<Permission> {
        self.roles
            .iter()
            .find(|r| r.role == role)
            .map(|r| r.permission)
    }
}

fn media(m: Option<mgmt::MediaPermission>) -> Media {
    m.map(|m| Media {
        audio: m.audio,
        video: m.video,
    })
    .unwrap_or_default()
}

impl From<mgmt::Room> for RoomConfig {
    fn from(room: mgmt::Room) -> Self {
        RoomConfig {
            id: room.id,
            participant_limit: room.participant_limit,
            roles: room
                .roles
                .into_iter()
                .map(|r| RoleDef {
                    role: r.role,
                    permission: Permission {
                        publish: media(r.publish),
                        subscribe: media(r.subscribe),
                    },
                })
                .collect(),
            views: room.views.into_iter().map(|v| v.label).collect(),
            notify_participants: room.notifying.is_none_or(|n| n.participant_activities),
        }
    }
}
