//! OWT's REST routes (reference §1.2) as data: which resource a path names.
//! `/v1` and `/v1.1` reach the same routes, trailing slashes match (Express
//! is not strict), and anything else is not a resource.

/// What may follow `rooms/{room}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Participants,
    Streams,
    StreamingIns,
    StreamingOuts,
    Recordings,
    SipCalls,
    Analytics,
    Tokens,
    Cascading,
    Bridges,
}

impl Sub {
    fn parse(s: &str) -> Option<Sub> {
        Some(match s {
            "participants" => Sub::Participants,
            "streams" => Sub::Streams,
            "streaming-ins" => Sub::StreamingIns,
            "streaming-outs" => Sub::StreamingOuts,
            "recordings" => Sub::Recordings,
            "sipcalls" => Sub::SipCalls,
            "analytics" => Sub::Analytics,
            "tokens" => Sub::Tokens,
            "cascading" => Sub::Cascading,
            "bridges" => Sub::Bridges,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Sub::Participants => "participants",
            Sub::Streams => "streams",
            Sub::StreamingIns => "streaming-ins",
            Sub::StreamingOuts => "streaming-outs",
            Sub::Recordings => "recordings",
            Sub::SipCalls => "sipcalls",
            Sub::Analytics => "analytics",
            Sub::Tokens => "tokens",
            Sub::Cascading => "cascading",
            Sub::Bridges => "bridges",
        }
    }

    /// Only lists and single items of these exist (no `/{id}` for tokens,
    /// cascading and bridges).
    fn has_items(self) -> bool {
        !matches!(self, Sub::Tokens | Sub::Cascading | Sub::Bridges)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource<'a> {
    Services,
    Service(&'a str),
    Rooms,
    Room(&'a str),
    /// `rooms/{room}/{sub}` and `rooms/{room}/{sub}/{id}`.
    Sub {
        room: &'a str,
        sub: Sub,
        id: Option<&'a str>,
    },
}

/// Longest path segment taken as an id.
pub const MAX_SEGMENT: usize = 256;

/// The resource `path` names, if any.
pub fn parse(path: &str) -> Option<Resource<'_>> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| s.len() > MAX_SEGMENT) {
        return None;
    }
    match segments.as_slice() {
        ["services"] => Some(Resource::Services),
        ["services", id] => Some(Resource::Service(id)),
        ["v1" | "v1.1", "rooms", rest @ ..] => match rest {
            [] => Some(Resource::Rooms),
            [room] => Some(Resource::Room(room)),
            [room, sub] => Some(Resource::Sub {
                room,
                sub: Sub::parse(sub)?,
                id: None,
            }),
            [room, sub, id] => {
                let sub = Sub::parse(sub)?;
                sub.has_items().then_some(Resource::Sub {
                    room,
                    sub,
                    id: Some(id),
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether OWT authenticates this path: `/v1/rooms*`, `/v1.1/rooms*`,
/// `/services*` (reference §1.1), routes or not.
pub fn needs_auth(path: &str) -> bool {
    ["/v1/rooms", "/v1.1/rooms", "/services"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The metrics label of a request: its route with ids as placeholders.
pub fn template(method: &http::Method, path: &str) -> String {
    let route = match parse(path) {
        None => "unknown".to_string(),
        Some(Resource::Services) => "/services".into(),
        Some(Resource::Service(_)) => "/services/{service}".into(),
        Some(Resource::Rooms) => "/v1/rooms".into(),
        Some(Resource::Room(_)) => "/v1/rooms/{room}".into(),
        Some(Resource::Sub { sub, id: None, .. }) => format!("/v1/rooms/{{room}}/{}", sub.name()),
        Some(Resource::Sub {
            sub, id: Some(_), ..
        }) => {
            format!("/v1/rooms/{{room}}/{}/{{id}}", sub.name())
        }
    };
    format!("{method} {route}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owts_paths_with_and_without_trailing_slashes() {
        assert_eq!(parse("/v1/rooms"), Some(Resource::Rooms));
        assert_eq!(parse("/v1/rooms/"), Some(Resource::Rooms));
        assert_eq!(parse("/v1.1/rooms/r1"), Some(Resource::Room("r1")));
        assert_eq!(
            parse("/v1/rooms/r1/participants/"),
            Some(Resource::Sub {
                room: "r1",
                sub: Sub::Participants,
                id: None
            })
        );
        assert_eq!(
            parse("/v1/rooms/r1/participants/p1/"),
            Some(Resource::Sub {
                room: "r1",
                sub: Sub::Participants,
                id: Some("p1")
            })
        );
        assert_eq!(
            parse("/v1/rooms/r1/tokens/"),
            Some(Resource::Sub {
                room: "r1",
                sub: Sub::Tokens,
                id: None
            })
        );
        assert_eq!(parse("/services/"), Some(Resource::Services));
        assert_eq!(parse("/services/s1"), Some(Resource::Service("s1")));
    }

    #[test]
    fn other_paths_are_not_resources() {
        for path in [
            "/",
            "/v2/rooms",
            "/v1/room",
            "/v1/rooms/r1/tokens/t1",
            "/v1/rooms/r1/nothing",
            "/v1/rooms/r1/participants/p1/extra",
            "/services/s1/x",
            "/v1.1/stream-engine/tokens",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
        assert_eq!(
            parse(&format!("/v1/rooms/{}", "x".repeat(MAX_SEGMENT + 1))),
            None
        );
    }

    #[test]
    fn auth_covers_owts_prefixes() {
        assert!(needs_auth("/v1/rooms"));
        assert!(needs_auth("/v1.1/rooms/x/anything"));
        assert!(needs_auth("/services"));
        assert!(!needs_auth("/v1/other"));
        assert!(!needs_auth("/"));
    }

    #[test]
    fn templates_hide_ids() {
        let get = http::Method::GET;
        assert_eq!(
            template(&get, "/v1.1/rooms/abc/participants/p9/"),
            "GET /v1/rooms/{room}/participants/{id}"
        );
        assert_eq!(
            template(&http::Method::POST, "/v1/rooms/abc/tokens/"),
            "POST /v1/rooms/{room}/tokens"
        );
        assert_eq!(template(&get, "/secret/abc"), "GET unknown");
    }
}
