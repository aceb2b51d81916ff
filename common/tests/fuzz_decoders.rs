//! Property tests (bounded fuzzing) of the join-token decoder: whatever a
//! client sends, decoding and verifying return a value or an error, never
//! panic; and every valid token survives the round trip.

use base64::Engine;
use conclave_common::token::JoinToken;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,600}") {
        if let Ok(t) = JoinToken::decode(&text) {
            let _ = t.verify("key");
        }
    }

    #[test]
    fn arbitrary_base64_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let text = base64::engine::general_purpose::STANDARD.encode(&bytes);
        if let Ok(t) = JoinToken::decode(&text) {
            let _ = t.verify("key");
        }
    }

    #[test]
    fn json_shaped_garbage_never_panics(id in any::<String>(), host in any::<String>(), secure in any::<bool>(), sig in any::<String>(), n in any::<f64>()) {
        let b64 = base64::engine::general_purpose::STANDARD;
        for json in [
            serde_json::json!({"tokenId": id, "host": host, "secure": secure, "signature": sig}),
            serde_json::json!({"tokenId": n, "host": [host], "secure": "yes", "signature": null}),
            serde_json::json!([id, host]),
        ] {
            if let Ok(t) = JoinToken::decode(&b64.encode(json.to_string())) {
                prop_assert!(t.verify("key").is_err() || t.signature == JoinToken::signature("key", &t.token_id, &t.host));
            }
        }
    }

    #[test]
    fn valid_tokens_round_trip(id in "[a-f0-9]{24}", host in "[a-z0-9.-]{1,40}:[0-9]{2,5}", secure in any::<bool>()) {
        let t = JoinToken::new("key", &id, &host, secure);
        let back = JoinToken::decode(&t.encode()).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert!(back.verify("key").is_ok());
    }
}
