//! MAuth, the service authentication of OWT's REST API (reference §2.1),
//! parsed and checked as OWT does, plus the replay protection OWT wrote but
//! never turned on: a timestamp window and remembered cnonces.
//!
//! The header is
//! `MAuth realm=R,mauth_signature_method=HMAC_SHA256,mauth_serviceid=ID,mauth_cnonce=N,mauth_timestamp=T,mauth_signature=S[,mauth_username=U,mauth_role=ROLE]`
//! and `S = base64(hex(HMAC-SHA256(service key, T + "," + N [+ "," + U + "," + ROLE])))`,
//! with `U` signed as sent (base64) and decoded afterwards.
//!
//! OWT splits on `,` and `=` with no trimming; Conclave also trims spaces and
//! quotes around names and values, so headers OWT accepts are accepted and a
//! few it would refuse by accident are not.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The only signature method OWT knows.
pub const SIGNATURE_METHOD: &str = "HMAC_SHA256";

/// OWT's 401 message (it sets no `WWW-Authenticate` header).
pub const FAILURE_MESSAGE: &str = "WWW-Authenticate: MAuth realm=\"http://marte3.dit.upm.es\"";

/// Longest header accepted.
pub const MAX_HEADER_LEN: usize = 4096;

/// A parsed MAuth header; the fields are as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub realm: String,
    pub signature_method: String,
    pub service_id: String,
    pub cnonce: String,
    pub timestamp: String,
    pub signature: String,
    /// Base64 as sent; counts only together with `role`.
    pub username: Option<String>,
    pub role: Option<String>,
}

/// Why a request is not authenticated; all of them are OWT's one 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no MAuth authorization header")]
    Missing,
    #[error("malformed MAuth header: {0}")]
    Malformed(&'static str),
    #[error("unsupported signature method `{0}`")]
    Method(String),
    #[error("unknown service")]
    UnknownService,
    #[error("bad signature")]
    Signature,
    #[error("timestamp outside the accepted window")]
    Stale,
    #[error("replayed cnonce")]
    Replayed,
    /// The service could not be looked up: the store is unavailable. Not
    /// an authentication failure: REST answers 503.
    #[error("{0}")]
    Unavailable(String),
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

impl Header {
    /// Parse an `Authorization` value.
    pub fn parse(value: &str) -> Result<Header, AuthError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(AuthError::Malformed("too long"));
        }
        let mut h = Header::default();
        let mut saw_scheme = false;
        for (i, part) in value.split(',').enumerate() {
            let Some((name, value)) = part.split_once('=') else {
                continue;
            };
            let name = name.trim();
            let name = if i == 0 {
                // OWT slices six characters off the first name: "MAuth realm"
                let Some(rest) = name.strip_prefix("MAuth ") else {
                    return Err(AuthError::Malformed("not an MAuth header"));
                };
                saw_scheme = true;
                rest.trim()
            } else {
                match name.strip_prefix("mauth_") {
                    Some(n) => n,
                    None => continue,
                }
            };
            let value = unquote(value).to_string();
            match name {
                "realm" => h.realm = value,
                "signature_method" => h.signature_method = value,
                "serviceid" => h.service_id = value,
                "cnonce" => h.cnonce = value,
                "timestamp" => h.timestamp = value,
                "signature" => h.signature = value,
                "username" => h.username = Some(value),
                "role" => h.role = Some(value),
                _ => {}
            }
        }
        if !saw_scheme {
            return Err(AuthError::Malformed("not an MAuth header"));
        }
        if h.signature_method != SIGNATURE_METHOD {
            return Err(AuthError::Method(h.signature_method));
        }
        if h.service_id.is_empty() || h.signature.is_empty() || h.cnonce.is_empty() {
            return Err(AuthError::Malformed(
                "serviceid, cnonce and signature are required",
            ));
        }
        if h.timestamp.parse::<i64>().is_err() {
            return Err(AuthError::Malformed("timestamp is not a number"));
        }
        Ok(h)
    }

    /// The timestamp in ms since the epoch (checked by `parse`).
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp.parse().unwrap_or(0)
    }

    /// Username and role, when both were sent.
    fn user_role(&self) -> Option<(&str, &str)> {
        match (&self.username, &self.role) {
            (Some(u), Some(r)) => Some((u.as_str(), r.as_str())),
            _ => None,
        }
    }

    /// The text OWT signs.
    pub fn signed_text(&self) -> String {
        signed_text(&self.timestamp, &self.cnonce, self.user_role())
    }

    /// Whether the signature is the service key's.
    pub fn verify(&self, key: &str) -> Result<(), AuthError> {
        let expected = conclave_common::token::sign(key, &self.signed_text());
        if conclave_common::token::constant_time_eq(&expected, &self.signature) {
            Ok(())
        } else {
            Err(AuthError::Signature)
        }
    }

    /// The user and role the header vouches for (the user base64-decoded),
    /// which take precedence over a token request's body.
    pub fn user_and_role(&self) -> Option<(String, String)> {
        let (user, role) = self.user_role()?;
        let user = STANDARD.decode(user).ok()?;
        Some((String::from_utf8(user).ok()?, role.to_string()))
    }
}

/// `timestamp,cnonce[,username,role]`.
pub fn signed_text(timestamp: &str, cnonce: &str, user_role: Option<(&str, &str)>) -> String {
    match user_role {
        Some((u, r)) => format!("{timestamp},{cnonce},{u},{r}"),
        None => format!("{timestamp},{cnonce}"),
    }
}

/// The header the official REST client sends (no username or role).
pub fn client_header(service_id: &str, key: &str, cnonce: &str, timestamp_ms: i64) -> String {
    let ts = timestamp_ms.to_string();
    let signature = conclave_common::token::sign(key, &signed_text(&ts, cnonce, None));
    format!(
        "MAuth realm=http://marte3.dit.upm.es,mauth_signature_method={SIGNATURE_METHOD},mauth_serviceid={service_id},mauth_cnonce={cnonce},mauth_timestamp={ts},mauth_signature={signature}"
    )
}

/// Remembers the cnonces of a timestamp window so that a captured header
/// cannot be sent again. A header is accepted when its timestamp is within
/// `window_ms` of now and its (service, cnonce) was not seen; it is then
/// remembered for two windows, long enough to outlive its timestamp's
/// acceptance. Memory is bounded: past `capacity` remembered headers, new
/// ones are refused until old ones age out, rather than forgetting early.
pub struct ReplayGuard {
    window_ms: i64,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashSet<(String, String)>,
    /// (forget at, key), in insertion order; the times only grow.
    order: VecDeque<(i64, (String, String))>,
}

impl ReplayGuard {
    pub fn new(window_ms: u64, capacity: usize) -> ReplayGuard {
        ReplayGuard {
            window_ms: window_ms.min(i64::MAX as u64 / 4) as i64,
            capacity,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Accept a header's (service, cnonce, timestamp) once.
    pub fn check(
        &self,
        service: &str,
        cnonce: &str,
        timestamp_ms: i64,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        if (now_ms.saturating_sub(timestamp_ms)).abs() > self.window_ms {
            return Err(AuthError::Stale);
        }
        let mut seen = conclave_common::sync::Locked::locked(&self.seen);
        while let Some((forget_at, _)) = seen.order.front() {
            if *forget_at > now_ms {
                break;
            }
            let (_, key) = seen.order.pop_front().expect("front exists");
            seen.set.remove(&key);
        }
        let key = (service.to_string(), cnonce.to_string());
        if seen.set.contains(&key) {
            return Err(AuthError::Replayed);
        }
        if seen.set.len() >= self.capacity {
            tracing::warn!(
                capacity = self.capacity,
                "MAuth replay guard is full; refusing until remembered cnonces age out"
            );
            return Err(AuthError::Replayed);
        }
        let forget_at = now_ms.saturating_add(2 * self.window_ms);
        // Keep the queue ordered even if the clock steps back.
        let forget_at = seen
            .order
            .back()
            .map_or(forget_at, |(last, _)| forget_at.max(*last));
        seen.set.insert(key.clone());
        seen.order.push_back((forget_at, key));
        Ok(())
    }

    /// How many headers are remembered.
    pub fn remembered(&self) -> usize {
        conclave_common::sync::Locked::locked(&self.seen).set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sample-service-key";

    #[test]
    fn the_official_clients_header_parses_and_verifies() {
        let header = client_header("5a1b", KEY, "0123456789abcdef", 1_700_000_000_000);
        assert!(!header.contains(", "));
        let h = Header::parse(&header).unwrap();
        assert_eq!(h.realm, "http://marte3.dit.upm.es");
        assert_eq!(h.service_id, "5a1b");
        assert_eq!(h.cnonce, "0123456789abcdef");
        assert_eq!(h.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(h.signature.len(), 88);
        assert!(h.signature.ends_with("=="));
        h.verify(KEY).unwrap();
        assert_eq!(h.verify("other"), Err(AuthError::Signature));
        assert_eq!(h.user_and_role(), None);
    }

    #[test]
    fn a_known_vector() {
        // printf '1700000000000,abc' | openssl dgst -sha256 -hmac key -hex, then base64 of the hex
        let h = Header {
            timestamp: "1700000000000".into(),
            cnonce: "abc".into(),
            ..Header::default()
        };
        assert_eq!(h.signed_text(), "1700000000000,abc");
        let sig = conclave_common::token::sign("key", &h.signed_text());
        assert_eq!(
            sig,
            "YWE1ZjhlY2YyY2NkOTJmZjVlODMyYTJiZTczODNmZDIwMDFmMzJlZGU1OTNlZThjNTI1NmI4OWYwZjE3MDA0YQ=="
        );
    }

    #[test]
    fn username_and_role_are_signed_as_sent_and_count_only_together() {
        let user = STANDARD.encode("Alice Ω");
        let ts = "1700000000000";
        let sig = conclave_common::token::sign(
            KEY,
            &signed_text(ts, "n1", Some((user.as_str(), "presenter"))),
        );
        let header = format!(
            "MAuth realm=r,mauth_signature_method=HMAC_SHA256,mauth_serviceid=s,mauth_cnonce=n1,mauth_timestamp={ts},mauth_signature={sig},mauth_username={user},mauth_role=presenter"
        );
        let h = Header::parse(&header).unwrap();
        h.verify(KEY).unwrap();
        assert_eq!(
            h.user_and_role(),
            Some(("Alice Ω".to_string(), "presenter".to_string()))
        );
        // only one of the two: not part of the signed text
        let only_role = Header {
            role: Some("presenter".into()),
            ..h.clone()
        };
        let only_role = Header {
            username: None,
            ..only_role
        };
        assert_eq!(only_role.signed_text(), format!("{ts},n1"));
    }

    #[test]
    fn spaces_and_quotes_are_tolerated() {
        let plain = client_header("svc", KEY, "c1", 5);
        let spaced = plain
            .replace(",mauth_", ", mauth_")
            .replace("mauth_cnonce=c1", "mauth_cnonce=\"c1\"");
        Header::parse(&spaced).unwrap().verify(KEY).unwrap();
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = client_header("svc", KEY, "c1", 5);
        assert!(matches!(
            Header::parse("Bearer abc"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(Header::parse(""), Err(AuthError::Malformed(_))));
        assert_eq!(
            Header::parse(&good.replace("HMAC_SHA256", "HMAC_SHA1")),
            Err(AuthError::Method("HMAC_SHA1".into()))
        );
        assert!(matches!(
            Header::parse(&good.replace("mauth_timestamp=5", "mauth_timestamp=soon")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            Header::parse(&good.replace("mauth_serviceid=svc", "mauth_serviceid=")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            Header::parse(&"x".repeat(MAX_HEADER_LEN + 1)),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn base64_padding_in_values_survives_the_split() {
        let h = Header::parse(&client_header("svc", KEY, "c1", 5)).unwrap();
        assert!(h.signature.ends_with("=="));
        h.verify(KEY).unwrap();
    }

    #[test]
    fn replay_guard_refuses_a_second_use_and_stale_timestamps() {
        let g = ReplayGuard::new(1000, 100);
        g.check("s", "n", 10_000, 10_000).unwrap();
        assert_eq!(g.check("s", "n", 10_000, 10_001), Err(AuthError::Replayed));
        // another service may use the same cnonce
        g.check("t", "n", 10_000, 10_001).unwrap();
        assert_eq!(g.check("s", "m", 8_999, 10_000), Err(AuthError::Stale));
        assert_eq!(g.check("s", "m", 11_001, 10_000), Err(AuthError::Stale));
        g.check("s", "m", 11_000, 10_000).unwrap();
    }

    #[test]
    fn replay_guard_forgets_only_after_the_timestamp_cannot_pass() {
        let g = ReplayGuard::new(1000, 100);
        g.check("s", "n", 10_000, 10_000).unwrap();
        // at 10_999 the old header is still in its window: still refused
        assert_eq!(g.check("s", "n", 10_000, 10_999), Err(AuthError::Replayed));
        // later it is stale anyway; the entry ages out after two windows
        assert_eq!(g.check("s", "n", 10_000, 11_001), Err(AuthError::Stale));
        g.check("s", "x", 12_000, 12_001).unwrap();
        assert_eq!(g.remembered(), 1);
    }

    #[test]
    fn replay_guard_is_bounded() {
        let g = ReplayGuard::new(1000, 2);
        g.check("s", "a", 0, 0).unwrap();
        g.check("s", "b", 0, 0).unwrap();
        assert_eq!(g.check("s", "c", 0, 0), Err(AuthError::Replayed));
        assert_eq!(g.remembered(), 2);
        g.check("s", "c", 2000, 2000).unwrap();
        assert_eq!(g.remembered(), 1);
    }
}
