//! Reconnection tickets (OWT §10.6, improved as issue 6 asks):
//! `base64(JSON{participantId, ticketId, notBefore, notAfter, room, signature})`
//! with `signature = base64(hex(HMAC-SHA256(key, "participantId,ticketId,notBefore,notAfter,room")))`.
//!
//! Unlike OWT the signature covers `ticketId`, the key is configurable and
//! shared by portals (by default it is derived from the service key), a
//! ticket names the participant's room so that any portal can find its seat,
//! and a ticket serves one relogin only (the seat's node remembers spent
//! tickets, across portals). Clients treat tickets as opaque.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conclave_common::token::{constant_time_eq, sign};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Longest ticket string accepted.
pub const MAX_TICKET_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub participant_id: String,
    pub ticket_id: String,
    /// Milliseconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The participant's room: a relogin on another portal finds its seat there.
    #[serde(default)]
    pub room: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("Invalid reconnection ticket")]
    Malformed,
    #[error("Ticket is expired")]
    Expired,
    #[error("Invalid reconnection ticket signature")]
    BadSignature,
    #[error("Ticket has been used")]
    Used,
}

/// The default ticket key: derived from the service key, so every portal of
/// a deployment shares it without more configuration.
pub fn derive_key(service_key: &str) -> String {
    sign(service_key, "conclave reconnection ticket key")
}

/// Issues and checks tickets; remembers which have served a relogin.
pub struct Tickets {
    key: String,
    lifetime_ms: i64,
    used: HashMap<String, i64>,
}

impl Tickets {
    pub fn new(key: String, lifetime_ms: i64) -> Self {
        Tickets {
            key,
            lifetime_ms,
            used: HashMap::new(),
        }
    }

    fn signature(&self, t: &Ticket) -> String {
        sign(
            &self.key,
            &format!(
                "{},{},{},{},{}",
                t.participant_id, t.ticket_id, t.not_before, t.not_after, t.room
            ),
        )
    }

    /// A new ticket for `participant` of `room`, valid from `now_ms` for the lifetime.
    pub fn issue(&self, participant: &str, room: &str, now_ms: i64) -> String {
        use rand::Rng;
        let id: u64 = rand::rng().random();
        let mut t = Ticket {
            participant_id: participant.to_string(),
            ticket_id: format!("{id:016x}"),
            not_before: now_ms,
            not_after: now_ms + self.lifetime_ms,
            room: room.to_string(),
            signature: String::new(),
        };
        t.signature = self.signature(&t);
        STANDARD.encode(serde_json::to_string(&t).expect("ticket serializes"))
    }

    /// Decode and check a ticket string (window, signature, reuse) without
    /// spending it.
    pub fn check(&self, text: &str, now_ms: i64) -> Result<Ticket, TicketError> {
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::Malformed);
        }
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| TicketError::Malformed)?;
        let t: Ticket = serde_json::from_slice(&bytes).map_err(|_| TicketError::Malformed)?;
        if t.not_before > now_ms || t.not_after < now_ms {
            return Err(TicketError::Expired);
        }
        if !constant_time_eq(&self.signature(&t), &t.signature) {
            return Err(TicketError::BadSignature);
        }
        if self.used.contains_key(&t.ticket_id) {
            return Err(TicketError::Used);
        }
        Ok(t)
    }

    /// A ticket served a relogin: it cannot serve another.
    pub fn spend(&mut self, t: &Ticket, now_ms: i64) {
        self.used.retain(|_, not_after| *not_after >= now_ms);
        self.used.insert(t.ticket_id.clone(), t.not_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFE: i64 = 600_000;

    fn tickets() -> Tickets {
        Tickets::new(derive_key("service-key"), LIFE)
    }

    fn decode(text: &str) -> Ticket {
        serde_json::from_slice(&STANDARD.decode(text).unwrap()).unwrap()
    }

    fn encode(t: &Ticket) -> String {
        STANDARD.encode(serde_json::to_string(t).unwrap())
    }

    #[test]
    fn issued_tickets_check_inside_their_window_only() {
        let t = tickets();
        let text = t.issue("p1", "r1", 1_000);
        let json = String::from_utf8(STANDARD.decode(&text).unwrap()).unwrap();
        let order: Vec<usize> = [
            "participantId",
            "ticketId",
            "notBefore",
            "notAfter",
            "signature",
        ]
        .iter()
        .map(|k| json.find(&format!("\"{k}\"")).unwrap())
        .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "OWT's key order: {json}"
        );
        assert_eq!(t.check(&text, 1_000).unwrap().participant_id, "p1");
        assert_eq!(
            t.check(&text, 1_000 + LIFE).unwrap().not_after,
            1_000 + LIFE
        );
        assert_eq!(t.check(&text, 999), Err(TicketError::Expired));
        assert_eq!(t.check(&text, 1_001 + LIFE), Err(TicketError::Expired));
    }

    #[test]
    fn tampering_any_field_is_refused() {
        let t = tickets();
        let good = decode(&t.issue("p1", "r1", 1_000));
        let cases: [&dyn Fn(&mut Ticket); 6] = [
            &|x| x.participant_id = "p2".into(),
            &|x| x.ticket_id = "other".into(),
            &|x| x.not_before -= 1,
            &|x| x.not_after += 1,
            &|x| x.room = "another room".into(),
            &|x| x.signature = x.signature.replace('M', "N"),
        ];
        for tamper in cases {
            let mut bad = good.clone();
            tamper(&mut bad);
            assert_eq!(
                t.check(&encode(&bad), 2_000),
                Err(TicketError::BadSignature),
                "{bad:?}"
            );
        }
        let other_key = Tickets::new(derive_key("another-service"), LIFE);
        assert_eq!(
            other_key.check(&encode(&good), 2_000),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn a_ticket_serves_one_relogin() {
        let mut t = tickets();
        let text = t.issue("p1", "r1", 1_000);
        let ticket = t.check(&text, 2_000).unwrap();
        t.spend(&ticket, 2_000);
        assert_eq!(t.check(&text, 2_001), Err(TicketError::Used));
        // another ticket for the same participant still works
        assert!(t.check(&t.issue("p1", "r1", 2_000), 2_001).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let t = tickets();
        for text in [
            "",
            "%%%",
            &STANDARD.encode("not json"),
            &STANDARD.encode("[1]"),
            &STANDARD.encode(r#"{"participantId":1}"#),
            &"A".repeat(MAX_TICKET_LEN + 1),
        ] {
            assert_eq!(t.check(text, 0), Err(TicketError::Malformed), "{text}");
        }
        let huge = STANDARD.encode(r#"{"participantId":"p","ticketId":"t","notBefore":1e400,"notAfter":2,"signature":"s"}"#);
        assert_eq!(t.check(&huge, 0), Err(TicketError::Malformed));
    }

    #[test]
    fn the_default_key_is_shared_by_portals_with_one_service_key() {
        assert_eq!(derive_key("k"), derive_key("k"));
        assert_ne!(derive_key("k"), derive_key("k2"));
        let a = Tickets::new(derive_key("k"), LIFE);
        let b = Tickets::new(derive_key("k"), LIFE);
        assert!(b.check(&a.issue("p", "r1", 5), 6).is_ok());
    }
}
