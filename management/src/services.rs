//! Services: OWT's accounts of application servers. Each has an id, a name
//! and a key it signs MAuth headers with; rooms belong to the service that
//! created them.
//!
//! The **super service** lives in configuration, not in the store: it may
//! manage services over REST and owns the rooms created over gRPC (the
//! default service). Other services are stored with their key sealed by
//! [`KeyBox`], whose key is derived from the cluster's service key, so that
//! a copy of the database alone does not reveal them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest service name accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Longest service key accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// A service with its key in the clear, as it exists in memory only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub key: String,
}

/// A service as stored: its key sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredService {
    pub id: String,
    pub name: String,
    pub sealed_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("the key of service {0} cannot be unsealed (was the service key changed?)")]
    Unseal(String),
}

/// Check a name and key before a service is created.
pub fn validate(name: &str, key: &str) -> Result<(), ServiceError> {
    let bad = |m: &str| Err(ServiceError::Invalid(m.to_string()));
    if name.trim().is_empty() {
        return bad("name must not be empty");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return bad("name is longer than 256 characters");
    }
    if key.is_empty() {
        return bad("key must not be empty");
    }
    if key.len() > MAX_KEY_LEN {
        return bad("key is longer than 1024 bytes");
    }
    Ok(())
}

/// A new random service key: base64 of 64 random bytes (OWT's are base64 of
/// 128 pbkdf2 bytes; any string works).
pub fn new_key() -> String {
    use rand::Rng;
    let bytes: [u8; 64] = rand::rng().random();
    STANDARD.encode(bytes)
}

/// Seals and unseals service keys with XChaCha20-Poly1305 under a key
/// derived from the cluster's service key (HMAC-SHA256 with a fixed label).
/// A sealed key is `v1:` + base64(nonce ‖ ciphertext); the service id is
/// bound as associated data, so a sealed key cannot be moved to another
/// service's row.
pub struct KeyBox {
    cipher: XChaCha20Poly1305,
}

const LABEL: &[u8] = b"conclave management: service keys v1";
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

impl KeyBox {
    pub fn new(service_key: &str) -> KeyBox {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(service_key.as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(LABEL);
        let derived = mac.finalize().into_bytes();
        KeyBox {
            cipher: XChaCha20Poly1305::new_from_slice(&derived).expect("a 32-byte key"),
        }
    }

    pub fn seal(&self, service_id: &str, key: &str) -> String {
        use rand::Rng;
        let nonce: [u8; NONCE_LEN] = rand::rng().random();
        let sealed = self
            .cipher
            .encrypt(
                (&nonce).into(),
                chacha20poly1305::aead::Payload {
                    msg: key.as_bytes(),
                    aad: service_id.as_bytes(),
                },
            )
            .expect("sealing a short key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, stored: &StoredService) -> Result<Service, ServiceError> {
        let fail = || ServiceError::Unseal(stored.id.clone());
        let bytes = stored
            .sealed_key
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or_else(fail)?;
        if bytes.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        let key = self
            .cipher
            .decrypt(
                (&nonce).into(),
                chacha20poly1305::aead::Payload {
                    msg: sealed,
                    aad: stored.id.as_bytes(),
                },
            )
            .map_err(|_| fail())?;
        Ok(Service {
            id: stored.id.clone(),
            name: stored.name.clone(),
            key: String::from_utf8(key).map_err(|_| fail())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(b: &KeyBox, id: &str, key: &str) -> StoredService {
        StoredService {
            id: id.into(),
            name: "sample".into(),
            sealed_key: b.seal(id, key),
        }
    }

    #[test]
    fn sealed_keys_open_and_do_not_show_the_key() {
        let b = KeyBox::new("cluster key");
        let key = new_key();
        let s = stored(&b, "svc1", &key);
        assert!(!s.sealed_key.contains(&key));
        assert_ne!(
            s.sealed_key,
            b.seal("svc1", &key),
            "a fresh nonce each time"
        );
        assert_eq!(b.open(&s).unwrap().key, key);
    }

    #[test]
    fn another_cluster_key_or_another_row_cannot_open_it() {
        let b = KeyBox::new("cluster key");
        let s = stored(&b, "svc1", "secret");
        assert_eq!(
            KeyBox::new("other key").open(&s),
            Err(ServiceError::Unseal("svc1".into()))
        );
        let moved = StoredService {
            id: "svc2".into(),
            ..s.clone()
        };
        assert!(b.open(&moved).is_err());
        let garbage = StoredService {
            sealed_key: "v1:AAAA".into(),
            ..s
        };
        assert!(b.open(&garbage).is_err());
    }

    #[test]
    fn names_and_keys_are_checked() {
        validate("sample", "k").unwrap();
        assert!(validate(" ", "k").is_err());
        assert!(validate("sample", "").is_err());
        assert!(validate(&"n".repeat(257), "k").is_err());
        assert!(validate("sample", &"k".repeat(1025)).is_err());
        assert_eq!(new_key().len(), 88);
    }
}
