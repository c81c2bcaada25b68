//! Events (API.md §7): every change to a device leaves one, written in the
//! same transaction as the change. This module is the event's shape and the
//! wake-ups of long polls; the store keeps them (`store/events.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};

use crate::devices::{as_rfc3339, Device, Millis};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Created,
    Updated,
    Revoked,
    KeyRotated,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Created,
        EventType::Updated,
        EventType::Revoked,
        EventType::KeyRotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "device.created",
            EventType::Updated => "device.updated",
            EventType::Revoked => "device.revoked",
            EventType::KeyRotated => "device.key_rotated",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// How the type is spelled in stored records (one byte).
    pub fn code(self) -> u8 {
        match self {
            EventType::Created => 1,
            EventType::Updated => 2,
            EventType::Revoked => 3,
            EventType::KeyRotated => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// An event id: `evt_` and a ULID. Within a tenant, ids increase in commit
/// order.
pub mod id {
    pub const PREFIX: &str = "evt_";

    /// The ids `parse` accepts, as a regular expression (as for device ids).
    pub const PATTERN: &str = "^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$";

    pub fn format(ulid: ulid::Ulid) -> String {
        format!("{PREFIX}{ulid}")
    }

    /// The ULID inside a well-formed id, or None.
    pub fn parse(text: &str) -> Option<ulid::Ulid> {
        crate::devices::id::parse_prefixed(PREFIX, text)
    }
}

/// An event as clients and webhooks see it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: Millis,
    pub actor: Option<&'a str>,
    pub device_id: &'a str,
    pub data: EventData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData<'a> {
    pub object: &'a Device,
    pub previous_attributes: Map<String, Value>,
}

/// The old value of each seed field that differs between `before` and
/// `after`, under its API name; never `updatedAt` or `lastSeenAt`.
pub fn previous_attributes(before: &Device, after: &Device) -> Map<String, Value> {
    let mut out = Map::new();
    if before.name != after.name {
        out.insert("name".into(), Value::from(before.name.as_str()));
    }
    if before.status != after.status {
        out.insert("status".into(), Value::from(before.status.as_str()));
    }
    if before.location_ids != after.location_ids {
        out.insert(
            "locationIds".into(),
            Value::from(before.location_ids.clone()),
        );
    }
    if before.pim_enabled != after.pim_enabled {
        out.insert("pimEnabled".into(), Value::from(before.pim_enabled));
    }
    if before.pim_segment_ids != after.pim_segment_ids {
        out.insert(
            "pimSegmentIds".into(),
            Value::from(before.pim_segment_ids.clone()),
        );
    }
    out
}

/// How many events a tenant has committed since its channel was made, by
/// type and by device (hashed into `DEVICE_BUCKETS` buckets). A waiter
/// compares the counter its filter depends on, so a commit of events it
/// does not want does not make it read the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    by_type: [u64; 4],
    by_device: [u64; DEVICE_BUCKETS],
}

const DEVICE_BUCKETS: usize = 64;

impl Default for Committed {
    fn default() -> Self {
        Committed {
            by_type: [0; 4],
            by_device: [0; DEVICE_BUCKETS],
        }
    }
}

impl Committed {
    fn add(&mut self, kind: EventType, device_id: &str) {
        self.by_type[usize::from(kind.code() - 1)] += 1;
        self.by_device[bucket(device_id)] += 1;
    }

    /// A number that grows whenever an event `filter` may match is committed.
    fn relevant(&self, filter: &Filter) -> u64 {
        match (filter.kind, &filter.device_id) {
            (_, Some(device)) => self.by_device[bucket(device)],
            (Some(kind), None) => self.by_type[usize::from(kind.code() - 1)],
            (None, None) => self.by_type.iter().sum(),
        }
    }
}

fn bucket(device_id: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    device_id.hash(&mut hasher);
    (hasher.finish() % DEVICE_BUCKETS as u64) as usize
}

/// What a waiting request wants to hear of.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<EventType>,
    pub device_id: Option<String>,
}

/// At most this many requests wait for events at once; past it, a request
/// with `waitSeconds` is answered at once with what there is.
pub const MAX_WAITING: usize = 10_000;

/// Wakes long polls when a commit adds events: one watch channel per tenant
/// that has a request waiting, signalled after the commit. A waiting request
/// is a future parked on its channel: no thread, no polling, and no read of
/// the store until an event it may want was committed.
#[derive(Default)]
pub struct EventBus {
    tenants: Mutex<HashMap<String, watch::Sender<Committed>>>,
    waiting: AtomicUsize,
    /// Wakes the webhook delivery worker (one permit is kept while it is busy).
    deliveries: Arc<Notify>,
    /// Wakes it when a webhook was added or changed: while there is none,
    /// it waits for this alone, not for every commit.
    webhooks: Arc<Notify>,
}

/// A place in line for the next commit of a tenant's events; it counts
/// towards `MAX_WAITING` until dropped.
pub struct Waiter<'a> {
    bus: &'a EventBus,
    changes: watch::Receiver<Committed>,
    filter: Filter,
    seen: u64,
}

impl EventBus {
    /// Starts watching `tenant` for events `filter` may match: every such
    /// commit after this call wakes the waiter. None when `MAX_WAITING`
    /// requests already wait.
    pub fn watch(&self, tenant: &str, filter: Filter) -> Option<Waiter<'_>> {
        let taken = self.waiting.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.len() >= 1024 {
            tenants.retain(|_, sender| sender.receiver_count() > 0);
        }
        let changes = match tenants.get(tenant) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, changes) = watch::channel(Committed::default());
                tenants.insert(tenant.to_string(), sender);
                changes
            }
        };
        let seen = changes.borrow().relevant(&filter);
        Some(Waiter {
            bus: self,
            changes,
            filter,
            seen,
        })
    }

    /// Tells the delivery worker to look again: events were committed or a
    /// webhook changed.
    pub fn wake_deliveries(&self) {
        self.deliveries.notify_one();
    }

    /// A webhook was added or changed: wakes the delivery worker even while
    /// it waits for webhooks, not commits.
    pub fn webhooks_changed(&self) {
        self.webhooks.notify_one();
        self.wake_deliveries();
    }

    /// What `wake_deliveries` signals, for the delivery worker to wait on
    /// without holding the store.
    pub fn delivery_signal(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// What `webhooks_changed` signals.
    pub fn webhooks_signal(&self) -> Arc<Notify> {
        self.webhooks.clone()
    }

    /// Wakes whoever waits on `tenant` for one of `events` (type and device
    /// id), and the delivery worker. Called after the commit that holds them.
    pub fn notify(&self, tenant: &str, events: &[(EventType, &str)]) {
        self.wake_deliveries();
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = tenants.get(tenant) {
            if sender.receiver_count() == 0 {
                tenants.remove(tenant);
            } else {
                sender.send_modify(|committed| {
                    for (kind, device) in events {
                        committed.add(*kind, device);
                    }
                });
            }
        }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

impl Waiter<'_> {
    /// Returns once a commit has added an event the filter may match since
    /// the last call (or since `watch`).
    pub async fn changed(&mut self) {
        loop {
            if self.changes.changed().await.is_err() {
                // The sender went (no one else watched and a notify removed
                // it): nothing will wake this waiter again.
                std::future::pending::<()>().await;
            }
            let now = self.changes.borrow_and_update().relevant(&self.filter);
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.bus.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::DeviceStatus;

    fn device() -> Device {
        Device {
            id: "dev_01JD0000000000000000000000".into(),
            name: "Till 1".into(),
            status: DeviceStatus::Active,
            location_ids: vec!["loc_a".into()],
            pim_enabled: false,
            pim_segment_ids: vec![],
            created_at: Millis(1),
            updated_at: Millis(1),
            last_seen_at: None,
            version: 1,
        }
    }

    #[test]
    fn previous_attributes_hold_only_the_changed_seed_fields() {
        let before = device();
        let mut after = before.clone();
        after.updated_at = Millis(2);
        after.last_seen_at = Some(Millis(3));
        after.version = 2;
        assert!(previous_attributes(&before, &after).is_empty());
        after.name = "Till 2".into();
        after.location_ids = vec![];
        after.status = DeviceStatus::Revoked;
        let old = previous_attributes(&before, &after);
        assert_eq!(
            Value::Object(old),
            serde_json::json!({"name": "Till 1", "status": "active", "locationIds": ["loc_a"]})
        );
    }

    #[test]
    fn types_and_ids_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(EventType::from_code(t.code()), Some(t));
        }
        assert_eq!(EventType::parse("device.deleted"), None);
        let ulid = ulid::Ulid::from_string("01JDABCDEFGHJKMNPQRSTVWXYZ").unwrap();
        assert_eq!(id::parse(&id::format(ulid)), Some(ulid));
        assert_eq!(id::parse("dev_01JD0000000000000000000000"), None);
        assert_eq!(id::parse(&id::format(ulid).to_lowercase()), None);
    }

    #[test]
    fn the_bus_wakes_watchers_of_the_tenant_only_and_caps_them() {
        let bus = EventBus::default();
        let all = Filter::default();
        let a = bus.watch("a", all.clone()).unwrap();
        let b = bus.watch("b", all.clone()).unwrap();
        assert_eq!(bus.waiting(), 2);
        bus.notify("a", &[(EventType::Created, "dev_1")]);
        assert!(a.changes.has_changed().unwrap());
        assert!(!b.changes.has_changed().unwrap());
        drop(a);
        drop(b);
        assert_eq!(bus.waiting(), 0);
        let held: Vec<_> = (0..MAX_WAITING)
            .map(|_| bus.watch("c", all.clone()).unwrap())
            .collect();
        assert!(bus.watch("c", all.clone()).is_none());
        drop(held);
        assert!(bus.watch("c", all).is_some());
    }

    #[actix_web::test]
    async fn a_waiter_wakes_only_for_events_its_filter_may_match() {
        use std::time::Duration;
        let bus = EventBus::default();
        let revocations = Filter {
            kind: Some(EventType::Revoked),
            device_id: None,
        };
        let mut waiter = bus.watch("t", revocations).unwrap();
        bus.notify(
            "t",
            &[(EventType::Created, "dev_1"), (EventType::Updated, "dev_1")],
        );
        let early = actix_web::rt::time::timeout(Duration::from_millis(50), waiter.changed());
        assert!(early.await.is_err(), "woke for events it does not want");
        bus.notify("t", &[(EventType::Revoked, "dev_2")]);
        let woke = actix_web::rt::time::timeout(Duration::from_secs(5), waiter.changed());
        assert!(woke.await.is_ok());
        let one_device = Filter {
            kind: None,
            device_id: Some("dev_9".into()),
        };
        let mut waiter = bus.watch("t", one_device).unwrap();
        bus.notify("t", &[(EventType::Updated, "dev_9")]);
        let woke = actix_web::rt::time::timeout(Duration::from_secs(5), waiter.changed());
        assert!(woke.await.is_ok());
    }
}
