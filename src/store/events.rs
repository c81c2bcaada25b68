//! The events kept with the changes that made them (API.md §7): written in
//! the change's own write transaction, read a page at a time as a change
//! feed, and deleted once older than `events.retention`.

use std::collections::HashMap;
use std::sync::Mutex;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::{EVENTS, ID_MAX};
use super::wal::Logged;
use super::{StoreError, StoreResult};
use crate::devices::{Device, Millis};
use crate::events::{self, EventType};

/// Which events a page holds.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub kind: Option<EventType>,
    pub device_id: Option<String>,
    /// At most this many (at least 1).
    pub limit: usize,
    /// Only events after this id (a well-formed event id; it need not still exist).
    pub starting_after: Option<String>,
}

/// One page of the feed, oldest first: each event as its JSON.
#[derive(Debug, Default)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub has_more: bool,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub kind: EventType,
    /// The event as clients and webhooks see it.
    pub json: Vec<u8>,
}

/// What a change tells its event.
pub struct Recorded<'a> {
    pub kind: EventType,
    pub actor: Option<&'a str>,
    pub device: &'a Device,
    /// The device before the change (None for a new one): the old values of
    /// the fields that differ are the event's `previousAttributes`.
    pub before: Option<&'a Device>,
    /// The device's event before this one (`DeviceRecord::last_event`).
    pub device_previous: Option<&'a str>,
}

/// Writes the event of a change into the change's transaction, with an id
/// after every event already committed for the tenant; returns the id, for
/// the device record to point at.
///
/// One insert, at the end of the tenant's range: the events of a device
/// are a chain (each stored with the id of the device's event before it,
/// the device record holding the last), so no second index is written, and
/// expiry follows the ids (ULIDs, in time order) instead of a third table.
/// The id comes from `last_ids`, without a read of the table. The event is
/// stored in its compact form (`compact`): the device's fields and the old
/// values, in binary, rendered to JSON when read.
pub(super) fn record(
    table: &mut Logged<'_, '_, (&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    what: Recorded<'_>,
    now: Millis,
    last_ids: &LastIds,
) -> StoreResult<String> {
    let ulid = last_ids.next(&**table, tenant, now)?;
    let id = events::id::format(ulid);
    let value = compact::encode(&what, now)?;
    table.insert((tenant, id.as_str()), value.as_slice())?;
    Ok(id)
}

/// The last event id given out in each tenant (by this process): the next
/// one is after it, so recording an event reads no range of the table (only
/// a tenant's first event since the store opened does). An id given out in
/// a batch that was then not committed stays here: ids still only grow.
/// Events are written only on the writer thread (and by `import`, into a
/// store without events, which calls `forget`).
#[derive(Default)]
pub(super) struct LastIds(Mutex<HashMap<String, ulid::Ulid>>);

impl LastIds {
    fn next(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        tenant: &str,
        now: Millis,
    ) -> StoreResult<ulid::Ulid> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ulid = match last.get_mut(tenant) {
            Some(slot) => {
                *slot = super::next_ulid_after(Some(*slot), now)?;
                return Ok(*slot);
            }
            None => super::next_ulid(table, tenant, now, events::id::PREFIX)?,
        };
        last.insert(tenant.to_string(), ulid);
        Ok(ulid)
    }

    /// Drops what is known: the next id of each tenant is read from the table.
    pub(super) fn forget(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The start of a stored event in the JSON form (what `import` writes): the
/// type code, the length of the device's previous event id and that id. The
/// event's JSON (about `json_bytes`) is written after it.
pub(super) fn head(
    kind: EventType,
    previous: Option<&str>,
    json_bytes: usize,
) -> StoreResult<Vec<u8>> {
    head_with(kind.code(), previous, json_bytes)
}

/// A stored event's first byte, the length of the previous id and that id.
fn head_with(first: u8, previous: Option<&str>, rest_bytes: usize) -> StoreResult<Vec<u8>> {
    let previous = previous.unwrap_or("").as_bytes();
    let length =
        u8::try_from(previous.len()).map_err(|_| StoreError::Internal("a long event id".into()))?;
    let mut value = Vec::with_capacity(2 + previous.len() + rest_bytes);
    value.push(first);
    value.push(length);
    value.extend_from_slice(previous);
    Ok(value)
}

/// A stored event's head, read without rendering the event. Two forms are
/// read: the JSON form (first byte the type code; the JSON as clients see
/// it follows the head) and the compact form (first byte `compact::MARK` |
/// the type code; rendered to that same JSON by `event`).
struct Head<'v> {
    kind: EventType,
    /// The device's event before this one ("" for none).
    previous: &'v str,
    body: &'v [u8],
    compact: bool,
}

impl<'v> Head<'v> {
    fn read(id: &str, value: &'v [u8]) -> StoreResult<Head<'v>> {
        let (&first, rest) = value.split_first().ok_or_else(|| undecodable(id))?;
        let (&len, rest) = rest.split_first().ok_or_else(|| undecodable(id))?;
        if rest.len() < usize::from(len) {
            return Err(undecodable(id));
        }
        let (previous, body) = rest.split_at(usize::from(len));
        Ok(Head {
            kind: EventType::from_code(first & !compact::MARK).ok_or_else(|| undecodable(id))?,
            previous: std::str::from_utf8(previous).map_err(|_| undecodable(id))?,
            body,
            compact: first & compact::MARK != 0,
        })
    }

    /// The event as clients see it.
    fn event(&self, id: &str) -> StoreResult<StoredEvent> {
        let json = match self.compact {
            false => self.body.to_vec(),
            true => compact::render(id, self.kind, self.body).ok_or_else(|| undecodable(id))?,
        };
        Ok(StoredEvent {
            id: id.to_string(),
            kind: self.kind,
            json,
        })
    }
}

fn undecodable(id: &str) -> StoreError {
    StoreError::Internal(format!("undecodable event record {id}"))
}

/// A stored event as the webhooks see it (`webhooks::next`).
pub(super) fn decode_stored(id: &str, value: &[u8]) -> StoreResult<StoredEvent> {
    Head::read(id, value)?.event(id)
}

/// Whether the tenant has any event after `after` (a point look-up at the
/// cursor): when not, every page after it is empty.
pub(super) fn any_after(txn: &ReadTransaction, tenant: &str, after: &str) -> StoreResult<bool> {
    let table = txn.open_table(EVENTS)?;
    for entry in table.range::<(&str, &str)>((tenant, after)..=(tenant, ID_MAX))? {
        if entry?.0.value().1 != after {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A page of the tenant's events after `query.starting_after`, in id order.
pub(super) fn page(
    txn: &ReadTransaction,
    tenant: &str,
    query: &EventQuery,
) -> StoreResult<EventPage> {
    let after = query.starting_after.as_deref().unwrap_or("");
    let limit = query.limit.max(1);
    let table = txn.open_table(EVENTS)?;
    let wanted = |kind: EventType| query.kind.is_none_or(|k| k == kind);
    let mut out = EventPage::default();
    // Only the events served are rendered; the others are skipped by their head.
    match &query.device_id {
        Some(device) => {
            // Walk the device's chain back from its last event to the
            // cursor, then serve it oldest first.
            let mut next = super::device_last_event(txn, tenant, device)?;
            let mut found = Vec::new();
            while let Some(id) = next.filter(|id| id.as_str() > after) {
                // An id the chain names but the table lacks was pruned, and
                // everything older with it.
                let Some(value) = table.get((tenant, id.as_str()))? else {
                    break;
                };
                let head = Head::read(&id, value.value())?;
                next = (!head.previous.is_empty()).then(|| head.previous.to_string());
                if wanted(head.kind) {
                    found.push((id, value.value().to_vec()));
                }
            }
            found.reverse();
            out.has_more = found.len() > limit;
            for (id, value) in found.iter().take(limit) {
                out.events.push(decode_stored(id, value)?);
            }
        }
        None => {
            for entry in table.range::<(&str, &str)>((tenant, after)..=(tenant, ID_MAX))? {
                let (key, value) = entry?;
                let id = key.value().1;
                if id == after {
                    continue;
                }
                let head = Head::read(id, value.value())?;
                if !wanted(head.kind) {
                    continue;
                }
                if out.events.len() == limit {
                    out.has_more = true;
                    break;
                }
                out.events.push(head.event(id)?);
            }
        }
    }
    Ok(out)
}

/// Deletes up to `max` events created before `cutoff` (Unix ms), oldest
/// first in each tenant; returns how many went. Event ids are ULIDs, whose
/// first part is the time: a tenant's expired events are the start of its
/// range.
pub(super) fn prune(txn: &WriteTransaction, cutoff: u64, max: usize) -> StoreResult<usize> {
    let before = events::id::format(ulid::Ulid::from_parts(cutoff, 0));
    let tenants = super::indexes::tenants(txn)?;
    let mut table = txn.open_table(EVENTS)?;
    let mut pruned = 0;
    for tenant in tenants {
        if pruned == max {
            break;
        }
        let mut due = Vec::new();
        for entry in table
            .range::<(&str, &str)>((tenant.as_str(), "")..(tenant.as_str(), before.as_str()))?
        {
            let (key, _) = entry?;
            due.push(key.value().1.to_string());
            if pruned + due.len() == max {
                break;
            }
        }
        for id in &due {
            table.remove((tenant.as_str(), id.as_str()))?;
        }
        pruned += due.len();
    }
    Ok(pruned)
}

/// The compact stored form of an event: after the head (`head_with`, first
/// byte `MARK` | the type code), in this order, integers little-endian,
/// strings and lists with a u16 length or count:
///
/// createdAt (u64 ms) · actor (u8 0/1, then the string) · the device: id,
/// name, status (u8, `indexes::status_code`), locationIds, pimEnabled (u8),
/// pimSegmentIds, createdAt and updatedAt (u64 ms), lastSeenAt (u8 0/1, then
/// u64 ms) · a mask of the fields in `previousAttributes` (bits `NAME` to
/// `SEGMENTS`), then each of their old values in that order.
///
/// Well under half the JSON's size, and no JSON or time formatting on the
/// writer thread; `render` makes the JSON clients see, through the same
/// `Event` serializer the JSON form was written with.
pub(super) mod compact {
    use serde_json::{Map, Value};

    use super::super::bytes::{put_list, put_str, Reader};
    use super::super::indexes::status_code;
    use super::{Recorded, StoreResult};
    use crate::devices::{Device, Millis};
    use crate::events::{Event, EventData, EventType};

    /// Set in the first byte of a compact event (type codes are below it).
    pub const MARK: u8 = 0x80;

    /// The fields `previousAttributes` may hold, by bit of the mask.
    const NAME: u8 = 1;
    const STATUS: u8 = 2;
    const LOCATIONS: u8 = 4;
    const PIM: u8 = 8;
    const SEGMENTS: u8 = 16;

    pub fn encode(what: &Recorded<'_>, now: Millis) -> StoreResult<Vec<u8>> {
        let device = what.device;
        let mut out = super::head_with(MARK | what.kind.code(), what.device_previous, 160)?;
        out.extend_from_slice(&now.0.to_le_bytes());
        match what.actor {
            Some(actor) => {
                out.push(1);
                put_str::<2>(&mut out, actor)?;
            }
            None => out.push(0),
        }
        put_str::<2>(&mut out, &device.id)?;
        put_str::<2>(&mut out, &device.name)?;
        out.push(status_code(device.status));
        put_list::<2>(&mut out, &device.location_ids)?;
        out.push(u8::from(device.pim_enabled));
        put_list::<2>(&mut out, &device.pim_segment_ids)?;
        out.extend_from_slice(&device.created_at.0.to_le_bytes());
        out.extend_from_slice(&device.updated_at.0.to_le_bytes());
        match device.last_seen_at {
            Some(at) => {
                out.push(1);
                out.extend_from_slice(&at.0.to_le_bytes());
            }
            None => out.push(0),
        }
        let Some(before) = what.before else {
            out.push(0);
            return Ok(out);
        };
        let mut mask = 0;
        let at = out.len();
        out.push(0);
        if before.name != device.name {
            mask |= NAME;
            put_str::<2>(&mut out, &before.name)?;
        }
        if before.status != device.status {
            mask |= STATUS;
            out.push(status_code(before.status));
        }
        if before.location_ids != device.location_ids {
            mask |= LOCATIONS;
            put_list::<2>(&mut out, &before.location_ids)?;
        }
        if before.pim_enabled != device.pim_enabled {
            mask |= PIM;
            out.push(u8::from(before.pim_enabled));
        }
        if before.pim_segment_ids != device.pim_segment_ids {
            mask |= SEGMENTS;
            put_list::<2>(&mut out, &before.pim_segment_ids)?;
        }
        out[at] = mask;
        Ok(out)
    }

    /// The event's JSON from its compact body (after the head); None if the
    /// body is not one.
    pub fn render(id: &str, kind: EventType, body: &[u8]) -> Option<Vec<u8>> {
        let mut r = Reader(body);
        let created_at = Millis(r.u64()?);
        let actor = match r.u8()? {
            0 => None,
            _ => Some(r.str::<2>()?),
        };
        let device = Device {
            id: r.str::<2>()?.to_string(),
            name: r.str::<2>()?.to_string(),
            status: r.status()?,
            location_ids: r.list::<2>()?,
            pim_enabled: r.u8()? != 0,
            pim_segment_ids: r.list::<2>()?,
            created_at: Millis(r.u64()?),
            updated_at: Millis(r.u64()?),
            last_seen_at: match r.u8()? {
                0 => None,
                _ => Some(Millis(r.u64()?)),
            },
            version: 0,
        };
        // Built as `events::previous_attributes` builds it.
        let mask = r.u8()?;
        let mut previous = Map::new();
        if mask & NAME != 0 {
            previous.insert("name".into(), Value::from(r.str::<2>()?));
        }
        if mask & STATUS != 0 {
            previous.insert("status".into(), Value::from(r.status()?.as_str()));
        }
        if mask & LOCATIONS != 0 {
            previous.insert("locationIds".into(), Value::from(r.list::<2>()?));
        }
        if mask & PIM != 0 {
            previous.insert("pimEnabled".into(), Value::from(r.u8()? != 0));
        }
        if mask & SEGMENTS != 0 {
            previous.insert("pimSegmentIds".into(), Value::from(r.list::<2>()?));
        }
        if !r.0.is_empty() || mask >= SEGMENTS << 1 {
            return None;
        }
        let event = Event {
            id,
            kind: kind.as_str(),
            created_at,
            actor,
            device_id: &device.id,
            data: EventData {
                object: &device,
                previous_attributes: previous,
            },
        };
        let mut json = Vec::with_capacity(512);
        serde_json::to_writer(&mut json, &event).ok()?;
        Some(json)
    }
}
