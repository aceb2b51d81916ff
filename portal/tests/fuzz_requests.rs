//! Property tests (bounded fuzzing) of what the portal parses from clients:
//! reconnection tickets and login requests (dialect, user agent). Arbitrary
//! input yields a value or an error string, never a panic.

use base64::Engine;
use portal::dialect;
use portal::ticket::{Tickets, derive_key};
use proptest::prelude::*;
use serde_json::Value;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        any::<i64>().prop_map(|i| serde_json::json!(i)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("1.0"),
            Just("1.1"),
            Just("1.2"),
            Just("3.5"),
            Just("JavaScript"),
            Just("C++")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("protocol".to_string()),
                    Just("userAgent".to_string()),
                    Just("sdk".to_string()),
                    Just("type".to_string()),
                    Just("version".to_string()),
                    Just("token".to_string()),
                    ".{0,8}".prop_map(String::from)
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn login_requests_never_panic(info in arb_json()) {
        if let Ok(p) = dialect::protocol(&info) {
            let _ = dialect::user_agent(&info, p);
            let room = portal::login::Json::of(&info);
            let _ = dialect::login_result(p, "id", "u", "r", &info, &room, None);
            let _ = dialect::translate(p, "participant", info.clone());
            let _ = dialect::translate(p, "text", info.clone());
        }
    }

    #[test]
    fn tickets_never_panic(text in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..400), json in arb_json()) {
        let t = Tickets::new(derive_key("k"), 600_000);
        let b64 = base64::engine::general_purpose::STANDARD;
        let _ = t.check(&text, 1);
        let _ = t.check(&b64.encode(&bytes), 1);
        let _ = t.check(&b64.encode(json.to_string()), i64::MAX);
    }

    #[test]
    fn a_tampered_ticket_is_never_accepted(flip in 0usize..200, bit in 0u8..8) {
        let t = Tickets::new(derive_key("k"), 600_000);
        let good = t.issue("participant", "room", 1_000);
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&good).unwrap();
        let i = flip % raw.len();
        raw[i] ^= 1 << bit;
        let bad = base64::engine::general_purpose::STANDARD.encode(&raw);
        if let Ok(ticket) = t.check(&bad, 2_000) {
            // only a flip that kept the JSON and every signed field identical can pass
            prop_assert_eq!(ticket.participant_id, "participant");
        }
    }
}
