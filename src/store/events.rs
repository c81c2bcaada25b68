//! The events kept with the changes that made them (API.md §7): written in
//! the change's own write transaction, read a page at a time as a change
//! feed, and deleted once older than `events.retention`.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::{EVENTS, ID_MAX};
use super::{StoreError, StoreResult};
use crate::devices::{Device, Millis};
use crate::events::{self, Event, EventData, EventType};

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
    pub previous: serde_json::Map<String, serde_json::Value>,
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
/// A stored event is: the type code (1 byte), the length of the previous
/// id (1 byte) and that id, then the event's JSON.
pub(super) fn record(
    txn: &WriteTransaction,
    tenant: &str,
    what: Recorded<'_>,
    now: Millis,
) -> StoreResult<String> {
    let mut table = txn.open_table(EVENTS)?;
    let ulid = super::next_ulid(&table, tenant, now, events::id::PREFIX)?;
    let id = events::id::format(ulid);
    let event = Event {
        id: &id,
        kind: what.kind.as_str(),
        created_at: now,
        actor: what.actor,
        device_id: &what.device.id,
        data: EventData {
            object: what.device,
            previous_attributes: what.previous,
        },
    };
    let mut value = head(what.kind, what.device_previous, 640)?;
    serde_json::to_writer(&mut value, &event).map_err(|e| StoreError::Internal(e.to_string()))?;
    table.insert((tenant, id.as_str()), value.as_slice())?;
    Ok(id)
}

/// The start of a stored event: the type code, the length of the device's
/// previous event id and that id. The event's JSON (about `json_bytes`) is
/// written after it.
pub(super) fn head(
    kind: EventType,
    previous: Option<&str>,
    json_bytes: usize,
) -> StoreResult<Vec<u8>> {
    let previous = previous.unwrap_or("").as_bytes();
    let length =
        u8::try_from(previous.len()).map_err(|_| StoreError::Internal("a long event id".into()))?;
    let mut value = Vec::with_capacity(2 + previous.len() + json_bytes);
    value.push(kind.code());
    value.push(length);
    value.extend_from_slice(previous);
    Ok(value)
}

/// A stored event, and the device's event before it ("" for none).
fn decode<'v>(id: &str, value: &'v [u8]) -> StoreResult<(StoredEvent, &'v str)> {
    let bad = || StoreError::Internal(format!("undecodable event record {id}"));
    let (&code, rest) = value.split_first().ok_or_else(bad)?;
    let (&len, rest) = rest.split_first().ok_or_else(bad)?;
    if rest.len() < usize::from(len) {
        return Err(bad());
    }
    let (previous, json) = rest.split_at(usize::from(len));
    let kind = EventType::from_code(code).ok_or_else(bad)?;
    let previous = std::str::from_utf8(previous).map_err(|_| bad())?;
    Ok((
        StoredEvent {
            id: id.to_string(),
            kind,
            json: json.to_vec(),
        },
        previous,
    ))
}

/// A stored event as the webhooks see it (`webhooks::next`).
pub(super) fn decode_stored(id: &str, value: &[u8]) -> StoreResult<StoredEvent> {
    decode(id, value).map(|(event, _)| event)
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
    let wanted = |event: &StoredEvent| query.kind.is_none_or(|k| k == event.kind);
    let mut out = EventPage::default();
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
                let (event, previous) = decode(&id, value.value())?;
                next = (!previous.is_empty()).then(|| previous.to_string());
                if wanted(&event) {
                    found.push(event);
                }
            }
            found.reverse();
            out.has_more = found.len() > limit;
            found.truncate(limit);
            out.events = found;
        }
        None => {
            for entry in table.range::<(&str, &str)>((tenant, after)..=(tenant, ID_MAX))? {
                let (key, value) = entry?;
                let id = key.value().1;
                if id == after {
                    continue;
                }
                let (event, _) = decode(id, value.value())?;
                if !wanted(&event) {
                    continue;
                }
                if out.events.len() == limit {
                    out.has_more = true;
                    break;
                }
                out.events.push(event);
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
