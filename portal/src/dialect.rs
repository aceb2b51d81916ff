//! Which client dialect a login speaks (OWT §10.3), the user-agent check, and
//! how notifications are translated for older dialects.

use crate::login::Json;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// No `protocol` field: the 3.4-era dialect, acked with "success".
    Legacy,
    V1_0,
    V1_1,
    V1_2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Legacy => "legacy",
            Protocol::V1_0 => "1.0",
            Protocol::V1_1 => "1.1",
            Protocol::V1_2 => "1.2",
        }
    }

    /// The dialect named by `as_str` (a node keeps it as text).
    pub fn parse(name: &str) -> Option<Protocol> {
        [
            Protocol::Legacy,
            Protocol::V1_0,
            Protocol::V1_1,
            Protocol::V1_2,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// The status word of successful acks.
    pub fn ok_word(self) -> &'static str {
        match self {
            Protocol::Legacy => "success",
            _ => "ok",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    #[error("Unknown client protocol")]
    UnknownProtocol,
    #[error("Deprecated client version")]
    Deprecated,
    #[error("User agent info is incorrect")]
    BadUserAgent,
}

/// The SDK a client says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    pub sdk_type: String,
    pub sdk_version: String,
}

impl UserAgent {
    /// OWT issues reconnection tickets to these SDKs only.
    pub fn reconnection_enabled(&self) -> bool {
        matches!(
            self.sdk_type.as_str(),
            "JavaScript" | "C++" | "Objective-C" | "Android"
        )
    }
}

/// Pick the dialect from `login_info.protocol`.
pub fn protocol(login_info: &Value) -> Result<Protocol, DialectError> {
    match login_info.get("protocol") {
        None | Some(Value::Null) => Ok(Protocol::Legacy),
        Some(Value::String(p)) => match p.as_str() {
            "1.0" => Ok(Protocol::V1_0),
            "1.1" => Ok(Protocol::V1_1),
            "1.2" => Ok(Protocol::V1_2),
            _ => Err(DialectError::UnknownProtocol),
        },
        Some(_) => Err(DialectError::UnknownProtocol),
    }
}

/// `userAgent.sdk.{type, version}` must be present and truthy; a numeric
/// version (the Android SDK sends `5.0`) is accepted. A 1.x client claiming
/// SDK 3.5 is refused as deprecated.
pub fn user_agent(login_info: &Value, protocol: Protocol) -> Result<UserAgent, DialectError> {
    let sdk = login_info.get("userAgent").and_then(|u| u.get("sdk"));
    let version = match sdk.and_then(|s| s.get("version")) {
        Some(Value::String(v)) if !v.is_empty() => v.clone(),
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f != 0.0) => n.to_string(),
        _ => return Err(DialectError::BadUserAgent),
    };
    if protocol != Protocol::Legacy && version == "3.5" {
        return Err(DialectError::Deprecated);
    }
    let sdk_type = match sdk.and_then(|s| s.get("type")) {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err(DialectError::BadUserAgent),
    };
    Ok(UserAgent {
        sdk_type,
        sdk_version: version,
    })
}

/// A notification as the client's dialect expects it: unchanged for 1.x
/// (no stream data crosses the control plane yet), OWT's legacy event names
/// and shapes for the legacy dialect.
pub fn translate(protocol: Protocol, event: &str, data: Value) -> (String, Value) {
    if protocol != Protocol::Legacy {
        return (event.to_string(), data);
    }
    match event {
        "participant" => match data.get("action").and_then(Value::as_str) {
            Some("join") => {
                let p = &data["data"];
                (
                    "user_join".into(),
                    json!({"user": {"id": p["id"], "name": p["user"], "role": p["role"]}}),
                )
            }
            Some("leave") => ("user_leave".into(), json!({"user": {"id": data["data"]}})),
            _ => (event.to_string(), data),
        },
        "text" => (
            "custom_message".into(),
            json!({"from": data["from"], "to": data["to"], "data": data["message"]}),
        ),
        _ => (event.to_string(), data),
    }
}

/// The login result in the client's dialect, complete. 1.x: `{id, user,
/// role, permission, room}` and `reconnectionTicket` when the client gets
/// one; legacy: `{clientId, id: roomId, streams, users}` (legacy clients get
/// no ticket).
pub fn login_result(
    protocol: Protocol,
    id: &str,
    user: &str,
    role: &str,
    permission: &Value,
    room: &Json,
    ticket: Option<String>,
) -> Json {
    if protocol == Protocol::Legacy {
        let room = room.value();
        let users: Vec<Value> = room["participants"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| json!({"id": p["id"], "name": p["user"], "role": p["role"]}))
                    .collect()
            })
            .unwrap_or_default();
        return Json::of(
            &json!({"clientId": id, "id": room["id"], "streams": room["streams"], "users": users}),
        );
    }
    /// The reply written in one pass, the room (every participant of it) as
    /// the node wrote it.
    #[derive(serde::Serialize)]
    struct LoginResult<'a> {
        id: &'a str,
        user: &'a str,
        role: &'a str,
        permission: &'a Value,
        room: &'a Json,
        #[serde(rename = "reconnectionTicket", skip_serializing_if = "Option::is_none")]
        reconnection_ticket: Option<String>,
    }
    Json::of(&LoginResult {
        id,
        user,
        role,
        permission,
        room,
        reconnection_ticket: ticket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(protocol: Value, sdk: Value) -> Value {
        let mut v = json!({"token": "t", "userAgent": {"sdk": sdk}});
        if !protocol.is_null() {
            v["protocol"] = protocol;
        }
        v
    }

    #[test]
    fn protocol_choice() {
        let sdk = json!({"type": "JavaScript", "version": "5.1"});
        assert_eq!(
            protocol(&info(Value::Null, sdk.clone())),
            Ok(Protocol::Legacy)
        );
        assert_eq!(
            protocol(&info(json!("1.0"), sdk.clone())),
            Ok(Protocol::V1_0)
        );
        assert_eq!(
            protocol(&info(json!("1.1"), sdk.clone())),
            Ok(Protocol::V1_1)
        );
        assert_eq!(
            protocol(&info(json!("1.2"), sdk.clone())),
            Ok(Protocol::V1_2)
        );
        assert_eq!(
            protocol(&info(json!("2.0"), sdk.clone())),
            Err(DialectError::UnknownProtocol)
        );
        assert_eq!(
            protocol(&info(json!(1.2), sdk)),
            Err(DialectError::UnknownProtocol)
        );
        assert_eq!(Protocol::Legacy.ok_word(), "success");
        assert_eq!(Protocol::V1_2.ok_word(), "ok");
    }

    #[test]
    fn user_agent_checks() {
        let ua = |sdk: Value, p| user_agent(&info(Value::Null, sdk), p);
        let js = ua(
            json!({"type": "JavaScript", "version": "5.1"}),
            Protocol::V1_2,
        )
        .unwrap();
        assert!(js.reconnection_enabled());
        let android = ua(json!({"type": "Android", "version": 5.0}), Protocol::V1_1).unwrap();
        assert_eq!(android.sdk_version, "5.0");
        assert!(android.reconnection_enabled());
        for t in ["C++", "Objective-C"] {
            assert!(
                ua(json!({"type": t, "version": "5.1"}), Protocol::V1_2)
                    .unwrap()
                    .reconnection_enabled()
            );
        }
        assert!(
            !ua(json!({"type": "Python", "version": "1"}), Protocol::V1_2)
                .unwrap()
                .reconnection_enabled()
        );
        assert_eq!(
            ua(
                json!({"type": "JavaScript", "version": "3.5"}),
                Protocol::V1_2
            ),
            Err(DialectError::Deprecated)
        );
        assert!(
            ua(
                json!({"type": "JavaScript", "version": "3.5"}),
                Protocol::Legacy
            )
            .is_ok()
        );
        for bad in [
            json!({"type": "JavaScript"}),
            json!({"version": "5.1"}),
            json!({"type": "", "version": "5.1"}),
            json!({"type": 1, "version": "5.1"}),
            json!(null),
        ] {
            assert_eq!(ua(bad, Protocol::V1_2), Err(DialectError::BadUserAgent));
        }
        assert_eq!(
            user_agent(&json!({"token": "t"}), Protocol::V1_2),
            Err(DialectError::BadUserAgent)
        );
    }

    #[test]
    fn legacy_translation() {
        let (e, d) = translate(
            Protocol::Legacy,
            "participant",
            json!({"action": "join", "data": {"id": "a", "user": "u", "role": "r"}}),
        );
        assert_eq!(
            (e.as_str(), d),
            (
                "user_join",
                json!({"user": {"id": "a", "name": "u", "role": "r"}})
            )
        );
        let (e, d) = translate(
            Protocol::Legacy,
            "participant",
            json!({"action": "leave", "data": "a"}),
        );
        assert_eq!(
            (e.as_str(), d),
            ("user_leave", json!({"user": {"id": "a"}}))
        );
        let (e, d) = translate(
            Protocol::Legacy,
            "text",
            json!({"from": "a", "to": "all", "message": "m"}),
        );
        assert_eq!(
            (e.as_str(), d),
            (
                "custom_message",
                json!({"from": "a", "to": "all", "data": "m"})
            )
        );
        let data = json!({"action": "join", "data": {"id": "a"}});
        assert_eq!(
            translate(Protocol::V1_2, "participant", data.clone()),
            ("participant".into(), data)
        );
    }

    #[test]
    fn login_results() {
        let room = json!({"id": "r", "views": ["common"], "participants": [{"id": "a", "user": "u", "role": "presenter"}], "streams": []});
        // as the node writes it
        let written = Json::parse(room.to_string()).unwrap();
        let perm = json!({"publish": {"audio": true, "video": true}});
        let v12 = login_result(Protocol::V1_2, "a", "u", "presenter", &perm, &written, None);
        assert_eq!(
            v12.value(),
            json!({"id": "a", "user": "u", "role": "presenter", "permission": perm, "room": room})
        );
        // the room goes out as the node wrote it
        assert!(v12.get().contains(written.get()), "{}", v12.get());
        let with_ticket = login_result(
            Protocol::V1_1,
            "a",
            "u",
            "presenter",
            &perm,
            &written,
            Some("t".into()),
        );
        assert_eq!(with_ticket.value()["reconnectionTicket"], "t");
        let legacy = login_result(
            Protocol::Legacy,
            "a",
            "u",
            "presenter",
            &perm,
            &written,
            None,
        );
        assert_eq!(
            legacy.value(),
            json!({"clientId": "a", "id": "r", "streams": [], "users": [{"id": "a", "name": "u", "role": "presenter"}]})
        );
        assert!(Json::parse("{\"id\": ".into()).is_none(), "not JSON");
    }
}
