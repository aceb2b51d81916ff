//! Room configuration (OWT §13): the fields the control plane uses, OWT's
//! defaults, and the validation that keeps bad configurations out of the store.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest room name, role name or view label accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Most roles or views a room may define.
pub const MAX_ENTRIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MediaPermission {
    pub audio: bool,
    pub video: bool,
}

impl MediaPermission {
    pub fn both() -> Self {
        MediaPermission {
            audio: true,
            video: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub role: String,
    pub publish: MediaPermission,
    pub subscribe: MediaPermission,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub label: String,
    pub audio: bool,
    pub video: bool,
    /// The view as OWT's REST API describes it (formats, layout), kept as
    /// given and shown back; `None`: OWT's default view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owt: Option<Value>,
}

impl Default for View {
    fn default() -> Self {
        View {
            label: "common".into(),
            audio: true,
            video: true,
            owt: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notifying {
    pub participant_activities: bool,
    pub stream_change: bool,
}

impl Default for Notifying {
    fn default() -> Self {
        Notifying {
            participant_activities: true,
            stream_change: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: String,
    pub name: String,
    /// -1 (or any value <= 0) means unlimited.
    pub participant_limit: i32,
    pub input_limit: i32,
    pub roles: Vec<Role>,
    pub views: Vec<View>,
    pub notifying: Notifying,
    pub select_active_audio: bool,
    /// The service that owns the room; "" for the default service (the
    /// super service), which owns the rooms created over gRPC.
    #[serde(default)]
    pub service: String,
    /// OWT's media settings (`mediaIn`, `mediaOut`, `transcoding`, `sip`,
    /// `enableBandwidthAdaptation`): kept and shown over REST, unused
    /// without a media plane. Missing keys show OWT's defaults.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub media: Map<String, Value>,
}

/// OWT's five default roles.
pub fn default_roles() -> Vec<Role> {
    let none = MediaPermission::default();
    let audio = MediaPermission {
        audio: true,
        video: false,
    };
    let video = MediaPermission {
        audio: false,
        video: true,
    };
    let role = |name: &str, publish: MediaPermission, subscribe: MediaPermission| Role {
        role: name.to_string(),
        publish,
        subscribe,
    };
    vec![
        role(
            "presenter",
            MediaPermission::both(),
            MediaPermission::both(),
        ),
        role("viewer", none.clone(), MediaPermission::both()),
        role("audio_only_presenter", audio.clone(), audio),
        role("video_only_viewer", none, video),
        role("sip", MediaPermission::both(), MediaPermission::both()),
    ]
}

/// A configuration error; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRoom(pub String);

impl Room {
    /// A new room named `name` with OWT's defaults: unlimited participants
    /// and inputs, the five default roles, one view `common`, both
    /// notifications on.
    pub fn with_defaults(name: String) -> Room {
        Room {
            id: new_id(),
            name,
            participant_limit: -1,
            input_limit: -1,
            roles: default_roles(),
            views: vec![View::default()],
            notifying: Notifying::default(),
            select_active_audio: false,
            service: String::new(),
            media: Map::new(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.role == role)
    }

    /// Check a configuration before it is stored.
    pub fn validate(&self) -> Result<(), InvalidRoom> {
        let bad = |m: String| Err(InvalidRoom(m));
        if self.name.trim().is_empty() {
            return bad("name must not be empty".into());
        }
        if self.name.chars().count() > MAX_NAME_LEN {
            return bad(format!("name is longer than {MAX_NAME_LEN} characters"));
        }
        for (field, value) in [
            ("participantLimit", self.participant_limit),
            ("inputLimit", self.input_limit),
        ] {
            if value < -1 {
                return bad(format!(
                    "{field} must be -1 (unlimited) or at least 0, got {value}"
                ));
            }
        }
        if self.roles.is_empty() {
            return bad("roles must not be empty".into());
        }
        if self.roles.len() > MAX_ENTRIES {
            return bad(format!("roles: at most {MAX_ENTRIES} roles"));
        }
        for (i, r) in self.roles.iter().enumerate() {
            if r.role.trim().is_empty() {
                return bad(format!("roles[{i}].role must not be empty"));
            }
            if r.role.chars().count() > MAX_NAME_LEN {
                return bad(format!(
                    "roles[{i}].role is longer than {MAX_NAME_LEN} characters"
                ));
            }
            if self.roles[..i].iter().any(|o| o.role == r.role) {
                return bad(format!("roles: duplicate role name `{}`", r.role));
            }
        }
        if self.views.is_empty() {
            return bad("views must not be empty".into());
        }
        if self.views.len() > MAX_ENTRIES {
            return bad(format!("views: at most {MAX_ENTRIES} views"));
        }
        for (i, v) in self.views.iter().enumerate() {
            if v.label.trim().is_empty() {
                return bad(format!("views[{i}].label must not be empty"));
            }
            if v.label.chars().count() > MAX_NAME_LEN {
                return bad(format!(
                    "views[{i}].label is longer than {MAX_NAME_LEN} characters"
                ));
            }
            if self.views[..i].iter().any(|o| o.label == v.label) {
                return bad(format!("views: duplicate label `{}`", v.label));
            }
        }
        Ok(())
    }
}

/// A random id in the shape of a MongoDB ObjectId (24 hex digits), as OWT's
/// room and token ids are: URL-safe and familiar to OWT users.
pub fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        Room::with_defaults("demo".into())
    }

    #[test]
    fn defaults_are_owts() {
        let r = room();
        r.validate().unwrap();
        let names: Vec<_> = r.roles.iter().map(|r| r.role.as_str()).collect();
        assert_eq!(
            names,
            [
                "presenter",
                "viewer",
                "audio_only_presenter",
                "video_only_viewer",
                "sip"
            ]
        );
        assert_eq!(r.roles[1].publish, MediaPermission::default());
        assert_eq!(
            r.roles[3].subscribe,
            MediaPermission {
                audio: false,
                video: true
            }
        );
        assert_eq!(r.views[0].label, "common");
        assert!(r.notifying.participant_activities && r.notifying.stream_change);
    }

    #[test]
    fn ids_are_24_hex_and_distinct() {
        let a = new_id();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_id());
    }

    #[test]
    fn invalid_configurations_name_the_field() {
        let check = |f: &dyn Fn(&mut Room), field: &str| {
            let mut r = room();
            f(&mut r);
            let err = r.validate().unwrap_err().0;
            assert!(err.contains(field), "`{err}` should name {field}");
        };
        check(&|r| r.name = " ".into(), "name");
        check(&|r| r.name = "x".repeat(MAX_NAME_LEN + 1), "name");
        check(&|r| r.participant_limit = -2, "participantLimit");
        check(&|r| r.input_limit = -5, "inputLimit");
        check(&|r| r.roles.clear(), "roles");
        check(
            &|r| r.roles[1].role = "presenter".into(),
            "duplicate role name `presenter`",
        );
        check(&|r| r.roles[0].role = "".into(), "roles[0].role");
        check(&|r| r.views.clear(), "views");
        check(
            &|r| r.views.push(View::default()),
            "duplicate label `common`",
        );
        check(&|r| r.views[0].label = "".into(), "views[0].label");
    }

    #[test]
    fn limits_of_zero_and_positive_are_fine() {
        let mut r = room();
        r.participant_limit = 0;
        r.input_limit = 3;
        r.validate().unwrap();
    }
}
