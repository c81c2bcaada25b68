//! Device check-ins kept in memory, so that `/api/device/me` costs no disk
//! write but once a minute per device.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::devices::Millis;

/// A stored check-in is refreshed at most this often per device.
pub const PERSIST_INTERVAL_MS: u64 = 60_000;

#[derive(Default)]
pub struct LastSeen {
    /// tenant → device id → check-in state.
    by_tenant: Mutex<HashMap<String, HashMap<String, Seen>>>,
}

#[derive(Clone, Copy)]
struct Seen {
    at: Millis,
    persisted: Option<Millis>,
}

pub struct Recorded {
    /// The check-in time to show from now on.
    pub at: Millis,
    /// Set when this check-in should be written to disk now.
    pub persist_due: Option<Millis>,
}

impl LastSeen {
    pub fn get(&self, tenant: &str, device_id: &str) -> Option<Millis> {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.get(tenant)?.get(device_id).map(|s| s.at)
    }

    /// The last check-in could not be written: write the next one.
    pub fn persist_failed(&self, tenant: &str, device_id: &str) {
        let mut map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = map.get_mut(tenant).and_then(|m| m.get_mut(device_id)) {
            seen.persisted = None;
        }
    }

    pub fn record(&self, tenant: &str, device_id: &str, now: Millis) -> Recorded {
        let mut map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before allocating: a known device costs no allocation.
        if map.get(tenant).is_none_or(|m| !m.contains_key(device_id)) {
            map.entry(tenant.to_string()).or_default().insert(
                device_id.to_string(),
                Seen {
                    at: now,
                    persisted: None,
                },
            );
        }
        let Some(seen) = map.get_mut(tenant).and_then(|m| m.get_mut(device_id)) else {
            // Inserted just above under the same lock; never taken.
            return Recorded {
                at: now,
                persist_due: None,
            };
        };
        seen.at = seen.at.max(now);
        let due = match seen.persisted {
            None => true,
            Some(p) => seen.at.0.saturating_sub(p.0) >= PERSIST_INTERVAL_MS,
        };
        if due {
            seen.persisted = Some(seen.at);
        }
        Recorded {
            at: seen.at,
            persist_due: due.then_some(seen.at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_at_most_once_a_minute_but_shows_every_check_in() {
        let seen = LastSeen::default();
        assert_eq!(
            seen.record("t", "d", Millis(1_000)).persist_due,
            Some(Millis(1_000))
        );
        let second = seen.record("t", "d", Millis(30_000));
        assert_eq!(second.persist_due, None);
        assert_eq!(seen.get("t", "d"), Some(Millis(30_000)));
        assert_eq!(seen.record("t", "d", Millis(60_999)).persist_due, None);
        assert_eq!(
            seen.record("t", "d", Millis(61_000)).persist_due,
            Some(Millis(61_000))
        );
        assert_eq!(seen.get("other", "d"), None);
    }
}
