//! How a delivery is signed, and when a failed one is tried again.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// After failing this long on one event, a webhook is disabled.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(3 * 86_400);

/// `Devicehub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// keyed with the whole secret string (`whsec_…`, UTF-8).
pub fn signature(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={unix_seconds},v1={hex}")
}

/// How long to wait after the `failures`-th failed attempt (1, 2, …) on an
/// event: `first`, doubling each time, at most an hour.
pub fn retry_delay(first: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    first
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(MAX_RETRY_DELAY)
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac 'whsec_test'
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(
            signature("whsec_test", 1_700_000_001, br#"{"a":1}"#),
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#)
        );
    }

    #[test]
    fn retries_double_from_the_first_delay_up_to_an_hour() {
        let first = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(first, n).as_secs()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(retry_delay(first, u32::MAX), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(Duration::from_secs(1), 1).as_secs(), 1);
    }
}
