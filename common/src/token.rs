//! Join tokens as OWT encodes and signs them (reference §14.2–14.3), shared by
//! management (which issues them) and portals (which check them).
//!
//! A token is `base64(JSON{tokenId, host, secure, signature})` with
//! `signature = base64(hex(HMAC-SHA256(key, tokenId + "," + host + "," + webTransportUrl)))`.
//! With WebTransport off, OWT concatenates JavaScript's `undefined`, so the
//! signed text ends in `,undefined`; Conclave does the same, which keeps OWT
//! clients and tokens interchangeable.
//!
//! Conclave's management adds one field OWT does not have: `claims`, what
//! the token grants (room, user, role, origin and the token code), signed
//! with the same key. A portal that finds them can join the room while the
//! token is being consumed instead of after. OWT's clients read only `host`,
//! `secure` and `webTransportUrl` and pass the token on unchanged, and OWT's
//! portal ignores the field, so tokens stay interchangeable.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A development-only service key, used by the local stack. Services accept
/// it but log a warning.
pub const DEV_SERVICE_KEY: &str = "conclave-development-key-do-not-use-in-production";

/// Longest token string a portal will try to decode.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// `base64(hex(HMAC-SHA256(key, message)))`, OWT's signature format.
pub fn sign(key: &str, message: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(message.as_bytes());
    STANDARD.encode(hex::encode(mac.finalize().into_bytes()))
}

/// Compare two signatures in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a service key is unusable, or a warning about it.
pub fn check_service_key(key: &str) -> Result<bool, &'static str> {
    if key.trim().is_empty() {
        return Err(
            "the service key is empty: set service_key (CONCLAVE_SERVICE_KEY) or service_key_file",
        );
    }
    Ok(key == DEV_SERVICE_KEY)
}

/// The service key from configuration: `key` itself, or the trimmed content
/// of `file` when `key` is empty. An empty result is refused; the development
/// key is accepted with a warning.
pub fn load_service_key(key: &str, file: &str) -> Result<String, String> {
    let key = if key.is_empty() && !file.is_empty() {
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read service_key_file {file}: {e}"))?
            .trim()
            .to_string()
    } else {
        key.to_string()
    };
    if check_service_key(&key)? {
        tracing::warn!(
            "using the development service key: anyone can forge tokens; set CONCLAVE_SERVICE_KEY in production"
        );
    }
    Ok(key)
}

/// An optional secret from configuration: `key` itself, or the trimmed
/// content of `file` when `key` is empty; "" when neither is set.
pub fn load_optional_key(key: &str, file: &str) -> Result<String, String> {
    if key.is_empty() && !file.is_empty() {
        return std::fs::read_to_string(file)
            .map(|k| k.trim().to_string())
            .map_err(|e| format!("cannot read {file}: {e}"));
    }
    Ok(key.to_string())
}

/// The decoded form of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinToken {
    pub token_id: String,
    pub host: String,
    pub secure: bool,
    pub signature: String,
    /// What the token grants, signed (Conclave's management; absent in
    /// OWT's tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Claims>,
}

/// What a token grants, as management recorded it; what `ConsumeToken`
/// answers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Claims {
    pub room: String,
    pub user: String,
    pub role: String,
    /// The token code: the portal's cluster task for the login.
    pub code: String,
    pub isp: String,
    pub region: String,
    /// `sign(key, JSON [tokenId, host, room, user, role, code, isp, region])`.
    pub signature: String,
}

impl Claims {
    /// `claims` signed for the token `token_id` served at `host`.
    pub fn signed(mut self, key: &str, token_id: &str, host: &str) -> Claims {
        self.signature = self.signature_for(key, token_id, host);
        self
    }

    fn signature_for(&self, key: &str, token_id: &str, host: &str) -> String {
        // a JSON array: no field's text can pass for another's
        let fields = [
            token_id,
            host,
            &self.room,
            &self.user,
            &self.role,
            &self.code,
            &self.isp,
            &self.region,
        ];
        sign(
            key,
            &serde_json::to_string(&fields).expect("strings serialize"),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Invalid token: too long")]
    TooLong,
    #[error("Invalid token: not base64")]
    NotBase64,
    #[error("Invalid token: not JSON")]
    NotJson,
    #[error("Invalid token: missing or wrong fields")]
    BadFields,
    #[error("Invalid token signature")]
    BadSignature,
}

impl JoinToken {
    /// A signed token for `token_id` served by the portal at `host`.
    pub fn new(key: &str, token_id: &str, host: &str, secure: bool) -> Self {
        JoinToken {
            token_id: token_id.to_string(),
            host: host.to_string(),
            secure,
            signature: Self::signature(key, token_id, host),
            claims: None,
        }
    }

    /// The token with what it grants signed into it.
    pub fn with_claims(mut self, key: &str, claims: Claims) -> Self {
        self.claims = Some(claims.signed(key, &self.token_id, &self.host));
        self
    }

    /// The signature OWT computes when WebTransport is off.
    pub fn signature(key: &str, token_id: &str, host: &str) -> String {
        sign(key, &format!("{token_id},{host},undefined"))
    }

    /// `base64(JSON)` in OWT's field order.
    pub fn encode(&self) -> String {
        STANDARD.encode(serde_json::to_string(self).expect("token serializes"))
    }

    /// Decode the client's token string. Accepts standard base64 with or
    /// without padding, and tolerates surrounding white space.
    pub fn decode(text: &str) -> Result<JoinToken, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| TokenError::NotBase64)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::NotJson)?;
        serde_json::from_value(value).map_err(|_| TokenError::BadFields)
    }

    /// Check the signature, and the claims' if any, with `key`, in
    /// constant time.
    pub fn verify(&self, key: &str) -> Result<(), TokenError> {
        let expected = Self::signature(key, &self.token_id, &self.host);
        if !constant_time_eq(&expected, &self.signature) {
            return Err(TokenError::BadSignature);
        }
        if let Some(claims) = &self.claims {
            let expected = claims.signature_for(key, &self.token_id, &self.host);
            if !constant_time_eq(&expected, &claims.signature) {
                return Err(TokenError::BadSignature);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with Python:
    //   hmac.new(b'conclave-test-key', b'5f1d7a0c9b3e4a2d8c6f0b1a,portal.example.com:8080,undefined',
    //            hashlib.sha256).hexdigest(), then base64 of that hex text;
    //   the token is base64(json.dumps({...}, separators=(',', ':'))).
    const KEY: &str = "conclave-test-key";
    const TOKEN_ID: &str = "5f1d7a0c9b3e4a2d8c6f0b1a";
    const HOST: &str = "portal.example.com:8080";
    const SIGNATURE: &str =
        "ZmM1MWJhY2U5NDM0YjYyMTZmODNjNjdmNDU2ZTQzM2U1ODZjMGYwOWZmNzQxZDg0NGRkOTA2NjZmMzVhYmQ1Yw==";
    const TOKEN: &str = "eyJ0b2tlbklkIjoiNWYxZDdhMGM5YjNlNGEyZDhjNmYwYjFhIiwiaG9zdCI6InBvcnRhbC5leGFtcGxlLmNvbTo4MDgwIiwic2VjdXJlIjpmYWxzZSwic2lnbmF0dXJlIjoiWm1NMU1XSmhZMlU1TkRNMFlqWXlNVFptT0ROak5qZG1ORFUyWlRRek0yVTFPRFpqTUdZd09XWm1OelF4WkRnME5HUmtPVEEyTmpabU16VmhZbVExWXc9PSJ9";

    #[test]
    fn matches_the_independent_test_vector() {
        assert_eq!(JoinToken::signature(KEY, TOKEN_ID, HOST), SIGNATURE);
        let token = JoinToken::new(KEY, TOKEN_ID, HOST, false);
        assert_eq!(token.encode(), TOKEN);
        let decoded = JoinToken::decode(TOKEN).unwrap();
        assert_eq!(decoded, token);
        decoded.verify(KEY).unwrap();
    }

    #[test]
    fn tampering_any_field_breaks_the_signature() {
        let token = JoinToken::new(KEY, TOKEN_ID, HOST, false);
        let mut t = token.clone();
        t.token_id.push('0');
        assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        let mut t = token.clone();
        t.host = "evil.example.com:8080".into();
        assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        let mut t = token.clone();
        t.signature = t.signature.replace('Z', "Y");
        assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        assert_eq!(token.verify("other-key"), Err(TokenError::BadSignature));
    }

    fn claims() -> Claims {
        Claims {
            room: "room-1".into(),
            user: "u, with a comma".into(),
            role: "presenter".into(),
            code: "42".into(),
            isp: "isp".into(),
            region: "region".into(),
            signature: String::new(),
        }
    }

    #[test]
    fn claims_ride_along_and_keep_the_owt_signature() {
        let plain = JoinToken::new(KEY, TOKEN_ID, HOST, false);
        let token = plain.clone().with_claims(KEY, claims());
        // OWT's part is untouched: an OWT portal checks it as before
        assert_eq!(token.signature, SIGNATURE);
        let decoded = JoinToken::decode(&token.encode()).unwrap();
        assert_eq!(decoded, token);
        decoded.verify(KEY).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(token.encode()).unwrap()).unwrap();
        assert_eq!(json["host"], HOST);
        assert_eq!(json["claims"]["room"], "room-1");
        // without claims the token is OWT's, byte for byte
        assert_eq!(plain.encode(), TOKEN);
    }

    #[test]
    fn tampering_a_claim_breaks_the_signature() {
        let token = JoinToken::new(KEY, TOKEN_ID, HOST, false).with_claims(KEY, claims());
        let tampered: [fn(&mut Claims); 7] = [
            |c| c.room.push('x'),
            |c| c.user.push('x'),
            |c| c.role = "admin".into(),
            |c| c.code.push('1'),
            |c| c.isp.push('x'),
            |c| c.region.push('x'),
            |c| c.signature = c.signature.replace('Z', "Y"),
        ];
        for change in tampered {
            let mut t = token.clone();
            change(t.claims.as_mut().unwrap());
            assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        }
        // claims moved to another token id do not verify either
        let mut t = token.clone();
        t.token_id = "another".into();
        t.signature = JoinToken::signature(KEY, "another", HOST);
        assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        // fields moved between claims cannot pass for each other
        let mut t = token.clone();
        let c = t.claims.as_mut().unwrap();
        (c.isp, c.region) = ("isp\",\"region".into(), String::new());
        assert_eq!(t.verify(KEY), Err(TokenError::BadSignature));
        assert_eq!(token.verify("other-key"), Err(TokenError::BadSignature));
        // claims of the wrong shape are refused as fields
        let bad = STANDARD.encode(
            r#"{"tokenId":"t","host":"h","secure":false,"signature":"s","claims":{"room":1}}"#,
        );
        assert_eq!(JoinToken::decode(&bad), Err(TokenError::BadFields));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(JoinToken::decode("%%%"), Err(TokenError::NotBase64));
        assert_eq!(
            JoinToken::decode(&STANDARD.encode("not json")),
            Err(TokenError::NotJson)
        );
        assert_eq!(
            JoinToken::decode(&STANDARD.encode("[1,2]")),
            Err(TokenError::BadFields)
        );
        assert_eq!(
            JoinToken::decode(
                &STANDARD.encode(r#"{"tokenId":1,"host":"h","secure":false,"signature":"s"}"#)
            ),
            Err(TokenError::BadFields)
        );
        assert_eq!(
            JoinToken::decode(&"A".repeat(MAX_TOKEN_LEN + 4)),
            Err(TokenError::TooLong)
        );
        // unpadded base64 is accepted
        let unpadded = TOKEN.trim_end_matches('=');
        assert!(JoinToken::decode(unpadded).is_ok());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_service_key("").is_err());
        assert!(check_service_key("  ").is_err());
        assert_eq!(check_service_key(DEV_SERVICE_KEY), Ok(true));
        assert_eq!(check_service_key("s3cret"), Ok(false));
    }

    #[test]
    fn service_key_from_value_or_file() {
        assert_eq!(load_service_key("k", "/nonexistent").unwrap(), "k");
        assert!(load_service_key("", "").is_err());
        assert!(
            load_service_key("", "/nonexistent/key")
                .unwrap_err()
                .contains("/nonexistent/key")
        );
        let path = std::env::temp_dir().join(format!("conclave-key-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        assert_eq!(
            load_service_key("", path.to_str().unwrap()).unwrap(),
            "from-file"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
