//! Device API keys: `dhk_` followed by 43 base64url characters (256 random
//! bits). The prefix lets secret scanners spot a leaked key; only its SHA-256
//! is ever stored.

use base64::Engine;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "dhk_";
const RANDOM_BYTES: usize = 32;
/// `PREFIX` plus the unpadded base64url of `RANDOM_BYTES`.
const KEY_LEN: usize = PREFIX.len() + 43;

pub type KeyHash = [u8; 32];

/// A freshly made key: shown once to the caller, then only its hash remains.
pub struct NewDeviceKey {
    pub key: String,
    pub hash: KeyHash,
}

impl NewDeviceKey {
    pub fn generate() -> Result<NewDeviceKey, getrandom::Error> {
        let mut raw = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut raw)?;
        let key = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let hash = hash(&key);
        Ok(NewDeviceKey { key, hash })
    }
}

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `candidate` has the shape of a device key; anything else is refused
/// without a database look-up.
pub fn is_well_formed(candidate: &str) -> bool {
    candidate.len() == KEY_LEN
        && candidate.starts_with(PREFIX)
        && candidate[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn to_hex(hash: &KeyHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Option<KeyHash> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_prefixed_unique_and_well_formed() {
        let a = NewDeviceKey::generate().unwrap();
        let b = NewDeviceKey::generate().unwrap();
        assert!(a.key.starts_with("dhk_"));
        assert_eq!(a.key.len(), KEY_LEN);
        assert!(is_well_formed(&a.key));
        assert_ne!(a.key, b.key);
        assert_eq!(a.hash, hash(&a.key));
    }

    #[test]
    fn malformed_keys_are_spotted() {
        let good = NewDeviceKey::generate().unwrap().key;
        assert!(!is_well_formed(&good[..good.len() - 1]));
        assert!(!is_well_formed(&good.replacen("dhk_", "dhx_", 1)));
        assert!(!is_well_formed(&format!("{}+", &good[..good.len() - 1])));
        assert!(!is_well_formed("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = hash("dhk_x");
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }
}
