//! Rooms as OWT's REST API shows and takes them (reference §1.3, OWT §13):
//! `_id` as the id, OWT's field names, and OWT's defaults for every field,
//! including the media settings Conclave keeps without using.
//!
//! Creating fills each missing or falsy top-level field with its default, as
//! OWT does, and each view with the default view's fields. `PUT` replaces
//! the top-level fields it names (OWT's `Object.assign`), and the result is
//! checked as a whole. Unknown fields are dropped, as mongoose's strict mode
//! drops them. Wrong types are refused with a message naming the field.

use crate::room::{InvalidRoom, MediaPermission, Notifying, Role, Room, View};
use serde_json::{Map, Value, json};

/// The top-level media settings kept as given.
const MEDIA_KEYS: [&str; 5] = [
    "mediaIn",
    "mediaOut",
    "transcoding",
    "sip",
    "enableBandwidthAdaptation",
];

fn audio_formats(out: bool) -> Value {
    let aac = if out {
        json!({"codec": "aac", "sampleRate": 48000, "channelNum": 2})
    } else {
        json!({"codec": "aac"})
    };
    json!([
        {"codec": "opus", "sampleRate": 48000, "channelNum": 2},
        {"codec": "isac", "sampleRate": 16000},
        {"codec": "isac", "sampleRate": 32000},
        {"codec": "g722", "sampleRate": 16000, "channelNum": 1},
        {"codec": "pcma"},
        {"codec": "pcmu"},
        aac,
        {"codec": "ac3"},
        {"codec": "nellymoser"},
        {"codec": "ilbc"}
    ])
}

/// OWT's default for one of [`MEDIA_KEYS`] (`None`: no default, e.g. `sip`).
fn media_default(key: &str) -> Option<Value> {
    Some(match key {
        "mediaIn" => json!({
            "audio": audio_formats(false),
            "video": [{"codec": "h264"}, {"codec": "vp8"}, {"codec": "vp9"}]
        }),
        "mediaOut" => json!({
            "audio": audio_formats(true),
            "video": {
                "format": [
                    {"codec": "vp8"},
                    {"codec": "h264", "profile": "CB"},
                    {"codec": "h264", "profile": "B"},
                    {"codec": "vp9"}
                ],
                "parameters": {
                    "resolution": ["x3/4", "x2/3", "x1/2", "x1/3", "x1/4", "hd1080p", "hd720p", "svga", "vga", "qvga", "cif"],
                    "framerate": [6, 12, 15, 24, 30, 48, 60],
                    "bitrate": ["x0.8", "x0.6", "x0.4", "x0.2"],
                    "keyFrameInterval": [100, 30, 5, 2, 1]
                }
            }
        }),
        "transcoding" => json!({
            "audio": true,
            "video": {
                "format": true,
                "parameters": {"resolution": true, "framerate": true, "bitrate": true, "keyFrameInterval": true}
            }
        }),
        "enableBandwidthAdaptation" => json!(false),
        _ => return None,
    })
}

fn default_view_audio() -> Value {
    json!({"format": {"codec": "opus", "sampleRate": 48000, "channelNum": 2}, "vad": true})
}

fn default_view_video() -> Value {
    json!({
        "format": {"codec": "vp8"},
        "parameters": {"resolution": {"width": 640, "height": 480}, "framerate": 24, "keyFrameInterval": 100},
        "maxInput": 16,
        "motionFactor": 0.8,
        "bgColor": {"r": 0, "g": 0, "b": 0},
        "keepActiveInputPrimary": false,
        "layout": {"fitPolicy": "letterbox", "templates": {"base": "fluid", "custom": []}}
    })
}

/// `given` laid over `default`: objects merge key by key, anything else
/// given replaces the default.
fn merge(default: Value, given: &Value) -> Value {
    match (default, given) {
        (Value::Object(mut d), Value::Object(g)) => {
            for (k, v) in g {
                let merged = match d.remove(k) {
                    Some(dv) => merge(dv, v),
                    None => v.clone(),
                };
                d.insert(k.clone(), merged);
            }
            Value::Object(d)
        }
        (_, g) => g.clone(),
    }
}

/// The room as OWT's REST API returns it.
pub fn room_json(room: &Room) -> Value {
    let mut o = Map::new();
    o.insert("_id".into(), json!(room.id));
    o.insert("name".into(), json!(room.name));
    o.insert("inputLimit".into(), json!(room.input_limit));
    o.insert("participantLimit".into(), json!(room.participant_limit));
    o.insert("selectActiveAudio".into(), json!(room.select_active_audio));
    o.insert(
        "roles".into(),
        Value::Array(room.roles.iter().map(role_json).collect()),
    );
    o.insert(
        "views".into(),
        Value::Array(room.views.iter().map(view_json).collect()),
    );
    for key in MEDIA_KEYS {
        if let Some(v) = room.media.get(key).cloned().or_else(|| media_default(key)) {
            o.insert(key.into(), v);
        }
    }
    o.insert(
        "notifying".into(),
        json!({
            "participantActivities": room.notifying.participant_activities,
            "streamChange": room.notifying.stream_change,
        }),
    );
    o.insert("__v".into(), json!(0));
    Value::Object(o)
}

fn permission_json(p: &MediaPermission) -> Value {
    json!({"audio": p.audio, "video": p.video})
}

fn role_json(r: &Role) -> Value {
    json!({
        "role": r.role,
        "publish": permission_json(&r.publish),
        "subscribe": permission_json(&r.subscribe),
    })
}

fn view_json(v: &View) -> Value {
    if let Some(owt) = &v.owt {
        return owt.clone();
    }
    json!({
        "label": v.label,
        "audio": if v.audio { default_view_audio() } else { json!(false) },
        "video": if v.video { default_view_video() } else { json!(false) },
    })
}

fn invalid(m: impl Into<String>) -> InvalidRoom {
    InvalidRoom(m.into())
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, InvalidRoom> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{field} must be an object")))
}

fn boolean(v: &Value, field: &str) -> Result<bool, InvalidRoom> {
    v.as_bool()
        .ok_or_else(|| invalid(format!("{field} must be a boolean")))
}

fn limit(v: &Value, field: &str) -> Result<i32, InvalidRoom> {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .or_else(|| {
            // JavaScript numbers: 5.0 is 5
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < f64::from(i32::MAX))
                .map(|f| f as i32)
        })
        .ok_or_else(|| invalid(format!("{field} must be an integer")))
}

fn permission(v: Option<&Value>, field: &str) -> Result<MediaPermission, InvalidRoom> {
    let Some(v) = v else {
        return Ok(MediaPermission::default());
    };
    if v == &Value::Bool(false) {
        return Ok(MediaPermission::default());
    }
    let o = object(v, field)?;
    let flag = |k: &str| {
        o.get(k)
            .map(|x| boolean(x, &format!("{field}.{k}")))
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    Ok(MediaPermission {
        audio: flag("audio")?,
        video: flag("video")?,
    })
}

fn roles(v: &Value) -> Result<Vec<Role>, InvalidRoom> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid("roles must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("roles[{i}]");
            let o = object(r, &field)?;
            let role = o
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{field}.role must be a string")))?;
            Ok(Role {
                role: role.to_string(),
                publish: permission(o.get("publish"), &format!("{field}.publish"))?,
                subscribe: permission(o.get("subscribe"), &format!("{field}.subscribe"))?,
            })
        })
        .collect()
}

fn views(v: &Value) -> Result<Vec<View>, InvalidRoom> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid("views must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let field = format!("views[{i}]");
            let given = object(v, &field)?;
            let label = match given.get("label") {
                None => "common".to_string(),
                Some(l) => l
                    .as_str()
                    .ok_or_else(|| invalid(format!("{field}.label must be a string")))?
                    .to_string(),
            };
            let mut view = Map::new();
            view.insert("label".into(), json!(label));
            let mut part = |key: &str, default: Value| -> Result<bool, InvalidRoom> {
                let value = match given.get(key) {
                    None | Some(Value::Bool(true)) => default,
                    Some(Value::Bool(false)) => json!(false),
                    Some(g @ Value::Object(_)) => merge(default, g),
                    Some(_) => {
                        return Err(invalid(format!("{field}.{key} must be an object or false")));
                    }
                };
                let on = value != json!(false);
                view.insert(key.into(), value);
                Ok(on)
            };
            let audio = part("audio", default_view_audio())?;
            let video = part("video", default_view_video())?;
            Ok(View {
                label,
                audio,
                video,
                owt: Some(Value::Object(view)),
            })
        })
        .collect()
}

fn notifying(v: &Value) -> Result<Notifying, InvalidRoom> {
    let o = object(v, "notifying")?;
    let flag = |k: &str| {
        o.get(k)
            .map(|x| boolean(x, &format!("notifying.{k}")))
            .transpose()
            .map(|b| b.unwrap_or(true))
    };
    Ok(Notifying {
        participant_activities: flag("participantActivities")?,
        stream_change: flag("streamChange")?,
    })
}

/// Whether a value counts as absent in OWT's "fill the falsy fields".
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Apply OWT room fields onto `room`, then check the result.
fn apply(room: &mut Room, fields: &Map<String, Value>) -> Result<(), InvalidRoom> {
    for (key, value) in fields {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "name" => {
                room.name = value
                    .as_str()
                    .ok_or_else(|| invalid("name must be a string"))?
                    .to_string()
            }
            "inputLimit" => room.input_limit = limit(value, key)?,
            "participantLimit" => room.participant_limit = limit(value, key)?,
            "selectActiveAudio" => room.select_active_audio = boolean(value, key)?,
            "roles" if !falsy(value) => room.roles = roles(value)?,
            "views" if !falsy(value) => room.views = views(value)?,
            "notifying" => room.notifying = notifying(value)?,
            "enableBandwidthAdaptation" => {
                boolean(value, key)?;
                room.media.insert(key.clone(), value.clone());
            }
            "mediaIn" | "mediaOut" | "transcoding" | "sip" if !falsy(value) => {
                object(value, key)?;
                room.media.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    room.validate()?;
    check_media_out(room)
}

/// OWT refuses a view whose formats the room cannot send
/// (`MediaOut conflicts with View Setting`).
fn check_media_out(room: &Room) -> Result<(), InvalidRoom> {
    let media_out = room_json(room)["mediaOut"].clone();
    let offers = |list: &Value, format: &Value| {
        let Some(format) = format.as_object() else {
            return true;
        };
        list.as_array().is_some_and(|l| {
            l.iter().any(|offered| {
                offered.as_object().is_some_and(|o| {
                    format
                        .iter()
                        .filter(|(k, _)| k.as_str() != "profile" || o.contains_key("profile"))
                        .all(|(k, v)| o.get(k) == Some(v))
                })
            })
        })
    };
    for view in &room.views {
        let v = view_json(view);
        let audio_ok = !view.audio || offers(&media_out["audio"], &v["audio"]["format"]);
        let video_ok = !view.video || offers(&media_out["video"]["format"], &v["video"]["format"]);
        if !audio_ok || !video_ok {
            return Err(invalid("MediaOut conflicts with View Setting"));
        }
    }
    Ok(())
}

/// `POST /rooms`: `{name, options?}` (reference §1.3).
pub fn create(body: &Value, service: &str) -> Result<Room, InvalidRoom> {
    let body = body
        .as_object()
        .ok_or_else(|| invalid("Invalid request body"))?;
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err(invalid("Invalid request body")),
    };
    let options = match body.get("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(invalid("Invalid room option")),
    };
    let mut room = Room::with_defaults(name.clone());
    room.service = service.to_string();
    apply(&mut room, &options)?;
    room.name = name;
    room.validate()?;
    Ok(room)
}

/// `PUT /rooms/{room}`: the named top-level fields replace the room's.
pub fn update(room: &Room, body: &Value) -> Result<Room, InvalidRoom> {
    let fields = body
        .as_object()
        .ok_or_else(|| invalid("Bad room configuration"))?;
    let mut updated = room.clone();
    apply(&mut updated, fields)?;
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_room_shows_owts_defaults() {
        let room = create(&json!({"name": "sampleRoom"}), "svc").unwrap();
        let j = room_json(&room);
        assert_eq!(j["_id"], json!(room.id));
        assert_eq!(j["name"], "sampleRoom");
        assert_eq!(j["inputLimit"], -1);
        assert_eq!(j["participantLimit"], -1);
        assert_eq!(j["roles"].as_array().unwrap().len(), 5);
        assert_eq!(
            j["roles"][1],
            json!({"role": "viewer", "publish": {"audio": false, "video": false}, "subscribe": {"audio": true, "video": true}})
        );
        assert_eq!(j["views"][0]["label"], "common");
        assert_eq!(j["views"][0]["audio"]["format"]["codec"], "opus");
        assert_eq!(
            j["views"][0]["video"]["parameters"]["resolution"],
            json!({"width": 640, "height": 480})
        );
        assert_eq!(j["mediaIn"]["video"].as_array().unwrap().len(), 3);
        assert_eq!(
            j["mediaOut"]["video"]["parameters"]["keyFrameInterval"],
            json!([100, 30, 5, 2, 1])
        );
        assert_eq!(j["transcoding"]["video"]["parameters"]["bitrate"], true);
        assert_eq!(j["enableBandwidthAdaptation"], false);
        assert_eq!(
            j["notifying"],
            json!({"participantActivities": true, "streamChange": true})
        );
        assert!(j.get("sip").is_none());
        assert_eq!(room.service, "svc");
    }

    #[test]
    fn options_are_taken_and_views_filled_with_defaults() {
        let room = create(
            &json!({"name": "r", "options": {
                "participantLimit": 3,
                "roles": [{"role": "host", "publish": {"audio": true, "video": true}, "subscribe": {"audio": true, "video": true}}],
                "views": [{"label": "hd", "video": {"parameters": {"resolution": {"width": 1280, "height": 720}}}}, {"label": "voice", "video": false}],
                "sip": {"sipServer": "sip.example.com", "username": "u", "password": "p"},
                "unknownField": 1
            }}),
            "",
        )
        .unwrap();
        assert_eq!(room.participant_limit, 3);
        assert!(room.has_role("host") && !room.has_role("presenter"));
        let j = room_json(&room);
        assert_eq!(
            j["views"][0]["video"]["parameters"]["resolution"]["width"],
            1280
        );
        assert_eq!(j["views"][0]["video"]["parameters"]["framerate"], 24);
        assert_eq!(j["views"][1]["video"], false);
        assert!(!room.views[1].video && room.views[1].audio);
        assert_eq!(j["sip"]["sipServer"], "sip.example.com");
        assert!(j.get("unknownField").is_none());
        // the stored form survives a round trip through JSON
        let back: Room = serde_json::from_str(&serde_json::to_string(&room).unwrap()).unwrap();
        assert_eq!(back, room);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let err = |body: Value| create(&body, "").unwrap_err().0;
        assert_eq!(err(json!("room")), "Invalid request body");
        assert_eq!(err(json!({})), "Invalid request body");
        assert_eq!(err(json!({"name": ""})), "Invalid request body");
        assert_eq!(err(json!({"name": 5})), "Invalid request body");
        assert_eq!(
            err(json!({"name": "r", "options": 1})),
            "Invalid room option"
        );
        assert!(
            err(json!({"name": "r", "options": {"participantLimit": "many"}}))
                .contains("participantLimit")
        );
        assert!(
            err(json!({"name": "r", "options": {"roles": [{"publish": {}}]}}))
                .contains("roles[0].role")
        );
        assert!(
            err(json!({"name": "r", "options": {"views": [{"audio": 3}]}}))
                .contains("views[0].audio")
        );
        assert!(
            err(json!({"name": "r", "options": {"notifying": {"streamChange": "yes"}}}))
                .contains("notifying.streamChange")
        );
        assert!(err(json!({"name": "r", "options": {"mediaIn": [1]}})).contains("mediaIn"));
        assert!(
            err(json!({"name": "r", "options": {"participantLimit": 1e12}}))
                .contains("participantLimit")
        );
        assert_eq!(
            err(
                json!({"name": "r", "options": {"views": [{"video": {"format": {"codec": "av1"}}}]}})
            ),
            "MediaOut conflicts with View Setting"
        );
    }

    #[test]
    fn put_replaces_named_fields_only() {
        let room = create(&json!({"name": "r"}), "svc").unwrap();
        let updated = update(
            &room,
            &json!({"name": "renamed", "participantLimit": 2, "_id": "other", "__v": 9}),
        )
        .unwrap();
        assert_eq!(updated.id, room.id);
        assert_eq!(updated.service, "svc");
        assert_eq!(updated.name, "renamed");
        assert_eq!(updated.participant_limit, 2);
        assert_eq!(updated.roles, room.roles);
        assert!(update(&room, &json!([1])).is_err());
        assert!(update(&room, &json!({"name": ""})).is_err());
        assert!(update(&room, &json!({"roles": "all"})).is_err());
    }
}
