//! Listing a tenant's devices: one walk over the cheapest table for the
//! query (the location index, the status index, the name index for a search
//! by name alone, or the devices themselves),
//! in either order, resumable after any device id.
//!
//! A `DeviceCursor` owns a read transaction, so a list is one consistent
//! snapshot however long its client takes to read it, and hands out the
//! matching devices a batch at a time: an unlimited list is streamed without
//! ever holding the tenant in memory.

use std::ops::Bound;
use std::sync::Arc;

use redb::{Database, ReadOnlyTable, ReadTransaction};

use super::indexes::status_code;
use super::tables::{DEVICES, ID_MAX, LAST_SEEN, LOCATION_INDEX, NAME_INDEX, STATUS_INDEX};
use super::{DeviceRecord, Inner, StoreResult};
use crate::devices::{Device, DeviceStatus, Millis};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (creation order).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// What a list asks for (already validated).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<DeviceStatus>,
    pub location_id: Option<String>,
    /// Devices whose name contains this; already lower-cased.
    pub name_contains: Option<String>,
    /// Devices never seen, or last seen before this.
    pub last_seen_before: Option<Millis>,
    /// Devices last seen at or after this.
    pub last_seen_after: Option<Millis>,
    pub order: Order,
    pub limit: Option<usize>,
    pub starting_after: Option<String>,
}

impl ListQuery {
    fn matches(&self, record: &DeviceRecord) -> bool {
        if self.status.is_some_and(|s| s != record.status) {
            return false;
        }
        if let Some(location) = &self.location_id {
            if !record.location_ids.iter().any(|l| l == location) {
                return false;
            }
        }
        if let Some(needle) = &self.name_contains {
            if !record.name.to_lowercase().contains(needle.as_str()) {
                return false;
            }
        }
        true
    }

    pub(crate) fn seen_matches(&self, last_seen: Option<Millis>) -> bool {
        if let Some(before) = self.last_seen_before {
            if last_seen.is_some_and(|seen| seen >= before) {
                return false;
            }
        }
        if let Some(after) = self.last_seen_after {
            if last_seen.is_none_or(|seen| seen < after) {
                return false;
            }
        }
        true
    }
}

/// One page of a limited list.
#[derive(Debug)]
pub struct Page {
    pub devices: Vec<Device>,
    pub has_more: bool,
}

/// A list in progress over one snapshot of the store.
pub struct DeviceCursor {
    inner: Arc<Inner>,
    txn: ReadTransaction,
    tenant: String,
    query: ListQuery,
    /// The last device id visited: the walk resumes after it.
    after: Option<String>,
    ended: bool,
    // Keeps the database handle from being reopened under the snapshot.
    _db: Arc<Database>,
}

impl DeviceCursor {
    pub(super) fn new(
        inner: Arc<Inner>,
        db: Arc<Database>,
        txn: ReadTransaction,
        tenant: &str,
        query: ListQuery,
    ) -> DeviceCursor {
        DeviceCursor {
            inner,
            txn,
            tenant: tenant.to_string(),
            after: query.starting_after.clone(),
            query,
            ended: false,
            _db: db,
        }
    }

    /// Appends up to `max_found` matching devices to `out`, looking at no
    /// more than `max_visited` stored devices; false once the walk has
    /// reached the end of the tenant (nothing more can match).
    pub fn next_batch(
        &mut self,
        max_found: usize,
        max_visited: usize,
        out: &mut Vec<Device>,
    ) -> StoreResult<bool> {
        if self.ended || max_found == 0 {
            return Ok(!self.ended);
        }
        let devices = self.txn.open_table(DEVICES)?;
        let seen = self.txn.open_table(LAST_SEEN)?;
        let tenant = self.tenant.as_str();
        let mut found = 0;
        let mut visited = 0;
        // The last id visited, in one buffer reused for every device.
        let mut last_id = String::new();
        // Looks at one device (None: one the name index has ruled out);
        // false when the batch is full.
        let mut visit = |id: &str, bytes: Option<&[u8]>| -> StoreResult<bool> {
            visited += 1;
            last_id.clear();
            last_id.push_str(id);
            let Some(bytes) = bytes else {
                return Ok(visited < max_visited);
            };
            if self
                .query
                .name_contains
                .as_deref()
                .is_some_and(|needle| surely_lacks(bytes, needle))
            {
                return Ok(visited < max_visited);
            }
            let record = DeviceRecord::decode(bytes)?;
            if self.query.matches(&record) {
                let last_seen = self.inner.last_seen(&seen, tenant, id)?;
                if self.query.seen_matches(last_seen) {
                    out.push(record.into_device(id, last_seen));
                    found += 1;
                }
            }
            Ok(found < max_found && visited < max_visited)
        };
        let (low, high) = id_bounds(self.query.order, self.after.as_deref());
        let order = self.query.order;
        let stopped = if let Some(location) = &self.query.location_id {
            let index = self.txn.open_table(LOCATION_INDEX)?;
            let range = index.range::<(&str, &str, &str)>((
                low.map(|id| (tenant, location.as_str(), id)),
                high.map(|id| (tenant, location.as_str(), id)),
            ))?;
            walk(range, order, |entry| {
                let id = entry.0.value().2;
                by_id(&devices, tenant, id, &mut visit)
            })?
        } else if let Some(status) = self.query.status {
            let index = self.txn.open_table(STATUS_INDEX)?;
            let code = status_code(status);
            let range = index.range::<(&str, u8, &str)>((
                low.map(|id| (tenant, code, id)),
                high.map(|id| (tenant, code, id)),
            ))?;
            walk(range, order, |entry| {
                let id = entry.0.value().2;
                by_id(&devices, tenant, id, &mut visit)
            })?
        } else if let Some(needle) = &self.query.name_contains {
            // A search by name alone reads the compact lower-case names and
            // only the records of the devices whose names contain `needle`.
            let names = self.txn.open_table(NAME_INDEX)?;
            let finder = memchr::memmem::Finder::new(needle.as_bytes());
            let range = names
                .range::<(&str, &str)>((low.map(|id| (tenant, id)), high.map(|id| (tenant, id))))?;
            walk(range, order, |entry| {
                let (key, name) = entry;
                let id = key.value().1;
                if finder.find(name.value()).is_some() {
                    by_id(&devices, tenant, id, &mut visit)
                } else {
                    visit(id, None)
                }
            })?
        } else {
            let range = devices
                .range::<(&str, &str)>((low.map(|id| (tenant, id)), high.map(|id| (tenant, id))))?;
            walk(range, order, |entry| {
                let (key, value) = entry;
                visit(key.value().1, Some(value.value()))
            })?
        };
        if visited > 0 {
            self.after = Some(last_id);
        }
        self.ended = !stopped;
        Ok(stopped)
    }

    /// Collects a limited page: `limit` devices and whether more exist.
    pub fn page(mut self, limit: usize) -> StoreResult<Page> {
        let mut devices = Vec::new();
        self.next_batch(limit.saturating_add(1), usize::MAX, &mut devices)?;
        let has_more = devices.len() > limit;
        devices.truncate(limit);
        Ok(Page { devices, has_more })
    }
}

/// Whether a stored record surely has no name containing `needle` (lower
/// case), judged from its raw bytes without decoding it: a search over a
/// whole tenant then decodes only the records that match. Both stored forms
/// start with the name (`record.rs`); the judgement is made only for an
/// ASCII name (without escapes, in JSON) and an ASCII needle, where ASCII
/// case folding is Unicode's. Anything else is "maybe", left to the decoded
/// check.
fn surely_lacks(record: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    let Some(name) = stored_name(record) else {
        return false;
    };
    if needle.is_empty() || !needle.is_ascii() || !name.is_ascii() {
        return false;
    }
    !name
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The name's bytes in a stored record: the binary form's first field, or a
/// JSON record's (an earlier layout) when it has no escapes.
fn stored_name(record: &[u8]) -> Option<&[u8]> {
    if let Some(name) = super::record::binary_name(record) {
        return Some(name);
    }
    let rest = record.strip_prefix(br#"{"name":""#)?;
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    (rest[end] == b'"').then_some(&rest[..end])
}

/// The device-id part of a walk's range: after `cursor` in `order`, within
/// one tenant (and one index value).
fn id_bounds(order: Order, cursor: Option<&str>) -> (Bound<&str>, Bound<&str>) {
    match (order, cursor) {
        (_, None) => (Bound::Included(""), Bound::Included(ID_MAX)),
        (Order::Asc, Some(after)) => (Bound::Excluded(after), Bound::Included(ID_MAX)),
        (Order::Desc, Some(after)) => (Bound::Included(""), Bound::Excluded(after)),
    }
}

/// Runs `step` over a range in `order` until it returns false; true when it
/// stopped early (the range may hold more).
fn walk<I, T>(
    range: I,
    order: Order,
    mut step: impl FnMut(T) -> StoreResult<bool>,
) -> StoreResult<bool>
where
    I: DoubleEndedIterator<Item = Result<T, redb::StorageError>>,
{
    let mut run = |entry: Result<T, redb::StorageError>| -> StoreResult<bool> { step(entry?) };
    match order {
        Order::Asc => {
            for entry in range {
                if !run(entry)? {
                    return Ok(true);
                }
            }
        }
        Order::Desc => {
            for entry in range.rev() {
                if !run(entry)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Visits the device an index entry names.
fn by_id(
    devices: &ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    id: &str,
    visit: &mut impl FnMut(&str, Option<&[u8]>) -> StoreResult<bool>,
) -> StoreResult<bool> {
    match devices.get((tenant, id))? {
        Some(value) => visit(id, Some(value.value())),
        None => Err(super::StoreError::Internal(format!(
            "an index names a missing device {id}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::{stored_name, surely_lacks};

    #[test]
    fn the_raw_prefilter_never_hides_a_match() {
        let record = br#"{"name":"Front SCANNER 7","location_ids":["loc-1"]}"#;
        assert!(!surely_lacks(record, "scanner"));
        assert!(!surely_lacks(record, "front s"));
        assert!(surely_lacks(record, "loc-1"), "only the name is searched");
        assert!(surely_lacks(record, "kiosk"));
        // Not judged: non-ASCII names or needles, and escaped names.
        let kelvin = "{\"name\":\"\u{212a}iosk\"}".as_bytes();
        assert!(!surely_lacks(kelvin, "kiosk"));
        assert!(!surely_lacks(record, "\u{e9}"));
        assert!(!surely_lacks(br#"{"name":"a \"b\" c"}"#, "zzz"));
        assert!(!surely_lacks(br#"{"status":"active"}"#, "zzz"));
    }

    #[test]
    fn the_stored_name_is_the_records_first_field_in_either_form() {
        let stored = crate::store::DeviceRecord {
            name: "Scanner \"7\"".into(),
            status: crate::devices::DeviceStatus::Active,
            location_ids: vec![],
            pim_enabled: false,
            pim_segment_ids: vec![],
            created_ms: 1,
            updated_ms: 1,
            version: 1,
            key_hash: String::new(),
            prev_key_hash: None,
            prev_key_expires_ms: None,
            last_event: None,
        };
        let record = stored.encode().unwrap();
        assert_eq!(stored_name(&record), Some(&b"Scanner \"7\""[..]));
        assert!(!surely_lacks(&record, "scanner \"7"));
        assert!(surely_lacks(&record, "kiosk"));
        // A JSON record, as earlier layouts wrote them.
        let json = serde_json::to_vec(&stored).unwrap();
        assert!(json.starts_with(br#"{"name":"Scanner \"7\"""#));
        assert_eq!(
            stored_name(br#"{"name":"Plain","x":1}"#),
            Some(&b"Plain"[..])
        );
        assert_eq!(stored_name(&json), None, "an escaped name is not judged");
    }
}
