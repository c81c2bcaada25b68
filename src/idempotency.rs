//! `Idempotency-Key` (API.md §3): a registration or rotation retried with the
//! same key, path and body within 24 hours gets the first answer again, the
//! one-time `apiKey` included, and nothing is written twice.
//!
//! The database never holds the Idempotency-Key itself, only its SHA-256
//! (`KeyId`), and the stored answer is sealed with ChaCha20-Poly1305 under a
//! key derived from the Idempotency-Key by HKDF-SHA256. Someone who reads the
//! database without the Idempotency-Key learns no device key from it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The header's name.
pub const HEADER: &str = "Idempotency-Key";
/// How long an answer is kept for replays.
pub const KEEP_MS: u64 = 24 * 60 * 60 * 1000;
pub const MIN_CHARS: usize = 16;
pub const MAX_CHARS: usize = 255;

/// A well-formed Idempotency-Key: 16-255 visible ASCII characters.
#[derive(Clone)]
pub struct IdempotencyKey(String);

/// Where an answer is kept: SHA-256 of the Idempotency-Key.
pub type KeyId = [u8; 32];

/// SHA-256 of the request's method, path and body: a replay must match it.
pub type Fingerprint = [u8; 32];

impl IdempotencyKey {
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, ApiError> {
        let shape_ok = (MIN_CHARS..=MAX_CHARS).contains(&value.len())
            && value.iter().all(|b| (0x21..=0x7e).contains(b));
        if !shape_ok {
            return Err(ApiError::invalid(
                HEADER,
                format!("must be {MIN_CHARS}-{MAX_CHARS} visible ASCII characters"),
            ));
        }
        // Checked above: ASCII only.
        Ok(IdempotencyKey(String::from_utf8_lossy(value).into_owned()))
    }

    pub fn id(&self) -> KeyId {
        Sha256::digest(self.0.as_bytes()).into()
    }

    fn cipher(&self, tenant: &str) -> ChaCha20Poly1305 {
        let hkdf = Hkdf::<Sha256>::new(Some(tenant.as_bytes()), self.0.as_bytes());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit, so this cannot fail.
        let _ = hkdf.expand(b"devicehub idempotency answer v1", &mut key);
        ChaCha20Poly1305::new(&Key::from(key))
    }

    /// Encrypts `answer` for storage: nonce, then ciphertext and tag. The
    /// tenant and key id are bound in as associated data, so a sealed answer
    /// cannot be moved to another slot.
    pub fn seal(&self, tenant: &str, answer: &Answer) -> Result<Vec<u8>, String> {
        let plain = serde_json::to_vec(answer).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let aad = associated_data(tenant, &self.id());
        let sealed = self
            .cipher(tenant)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| "sealing failed".to_string())?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn open(&self, tenant: &str, sealed: &[u8]) -> Result<Answer, String> {
        if sealed.len() < 12 {
            return Err("a sealed answer is too short".into());
        }
        let (nonce, body) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| "a bad nonce".to_string())?;
        let aad = associated_data(tenant, &self.id());
        let plain = self
            .cipher(tenant)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| "a sealed answer does not open".to_string())?;
        serde_json::from_slice(&plain).map_err(|e| e.to_string())
    }
}

fn associated_data(tenant: &str, id: &KeyId) -> Vec<u8> {
    [tenant.as_bytes(), &[0], id.as_slice()].concat()
}

pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Fingerprint {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update([0]);
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    hash.finalize().into()
}

/// The first answer, as replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    /// Response headers worth repeating (`ETag`, `Location`).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Requests under way, by (tenant, key id): a second one under the same key
/// while the first runs is a conflict.
#[derive(Default, Clone)]
pub struct InFlight {
    running: Arc<Mutex<HashSet<(String, KeyId)>>>,
}

/// A request's claim on its key; dropping it ends the claim.
pub struct Claim {
    slot: (String, KeyId),
    running: Arc<Mutex<HashSet<(String, KeyId)>>>,
}

impl InFlight {
    /// Claims the key, or None while another request holds it.
    pub fn claim(&self, tenant: &str, id: KeyId) -> Option<Claim> {
        let slot = (tenant.to_string(), id);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(slot.clone()).then(|| Claim {
            slot,
            running: self.running.clone(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn keys_are_16_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(&[b'a'; 16]).is_ok());
        assert!(IdempotencyKey::parse(&[b'~'; 255]).is_ok());
        for bad in [
            &b"fifteen-chars.."[..],
            &[b'a'; 256][..],
            b"has a space in it!",
            b"tab\there-and-more-text",
            "caf\u{e9}-caf\u{e9}-caf\u{e9}-x".as_bytes(),
        ] {
            let err = IdempotencyKey::parse(bad).err().unwrap().to_string();
            assert!(err.starts_with("Idempotency-Key: "), "{err}");
        }
    }

    #[test]
    fn a_sealed_answer_opens_only_with_its_key_tenant_and_slot() {
        let answer = Answer {
            status: 201,
            headers: vec![("ETag".into(), "\"x-1\"".into())],
            body: r#"{"apiKey":"dhk_secret"}"#.into(),
        };
        let k = key("0123456789abcdef-one");
        let sealed = k.seal("acme", &answer).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("dhk_secret"));
        assert_eq!(k.open("acme", &sealed).unwrap(), answer);
        assert!(k.open("globex", &sealed).is_err(), "another tenant");
        assert!(key("0123456789abcdef-two").open("acme", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open("acme", &tampered).is_err());
        assert_ne!(k.seal("acme", &answer).unwrap(), sealed, "fresh nonce");
    }

    #[test]
    fn a_key_is_claimed_by_one_request_at_a_time() {
        let inflight = InFlight::default();
        let id = key("0123456789abcdef-one").id();
        let claim = inflight.claim("acme", id).unwrap();
        assert!(inflight.claim("acme", id).is_none());
        assert!(inflight.claim("globex", id).is_some());
        drop(claim);
        assert!(inflight.claim("acme", id).is_some());
    }

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let a = fingerprint("POST", "/p", b"{}");
        assert_eq!(a, fingerprint("POST", "/p", b"{}"));
        assert_ne!(a, fingerprint("POST", "/q", b"{}"));
        assert_ne!(a, fingerprint("POST", "/p", b"{ }"));
    }
}
