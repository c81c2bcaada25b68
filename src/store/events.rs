//! The events kept with the changes that made them (API.md §7): written in
//! the change's own write transaction, read a page at a time as a change
//! feed, and deleted once older than `events.retention`.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::{DEVICE_EVENTS, EVENTS, EVENT_EXPIRY, ID_MAX};
use super::{random_u128, StoreError, StoreResult};
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
}

/// Writes the event of a change into the change's transaction, with an id
/// after every event already committed for the tenant.
pub(super) fn record(
    txn: &WriteTransaction,
    tenant: &str,
    what: Recorded<'_>,
    now: Millis,
) -> StoreResult<()> {
    let mut table = txn.open_table(EVENTS)?;
    let mut ulid = ulid::Ulid::from_parts(now.0, random_u128()?);
    let last = table
        .range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))?
        .next_back()
        .transpose()?
        .and_then(|(key, _)| events::id::parse(key.value().1));
    if let Some(last) = last {
        if ulid <= last {
            ulid = last
                .increment()
                .ok_or_else(|| StoreError::Internal("event id space exhausted".into()))?;
        }
    }
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
    let mut value = vec![what.kind.code()];
    serde_json::to_writer(&mut value, &event).map_err(|e| StoreError::Internal(e.to_string()))?;
    table.insert((tenant, id.as_str()), value.as_slice())?;
    txn.open_table(DEVICE_EVENTS)?
        .insert((tenant, what.device.id.as_str(), id.as_str()), ())?;
    txn.open_table(EVENT_EXPIRY)?
        .insert((now.0, tenant, id.as_str()), what.device.id.as_str())?;
    Ok(())
}

fn decode(id: &str, value: &[u8]) -> StoreResult<StoredEvent> {
    let (code, json) = value
        .split_first()
        .ok_or_else(|| StoreError::Internal(format!("empty event record {id}")))?;
    let kind = EventType::from_code(*code)
        .ok_or_else(|| StoreError::Internal(format!("event {id} has an unknown type")))?;
    Ok(StoredEvent {
        id: id.to_string(),
        kind,
        json: json.to_vec(),
    })
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
    let mut out = EventPage::default();
    let take = |event: StoredEvent, out: &mut EventPage| -> bool {
        if query.kind.is_some_and(|k| k != event.kind) {
            return true;
        }
        if out.events.len() == limit {
            out.has_more = true;
            return false;
        }
        out.events.push(event);
        true
    };
    match &query.device_id {
        Some(device) => {
            let by_device = txn.open_table(DEVICE_EVENTS)?;
            let range = by_device.range::<(&str, &str, &str)>(
                (tenant, device.as_str(), after)..=(tenant, device.as_str(), ID_MAX),
            )?;
            for entry in range {
                let (key, _) = entry?;
                let id = key.value().2;
                if id == after {
                    continue;
                }
                // Pruning removes an event and its index entry together.
                let Some(value) = table.get((tenant, id))? else {
                    continue;
                };
                if !take(decode(id, value.value())?, &mut out) {
                    break;
                }
            }
        }
        None => {
            for entry in table.range::<(&str, &str)>((tenant, after)..=(tenant, ID_MAX))? {
                let (key, value) = entry?;
                let id = key.value().1;
                if id == after {
                    continue;
                }
                if !take(decode(id, value.value())?, &mut out) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Deletes up to `max` events created before `cutoff` (Unix ms); returns
/// how many went.
pub(super) fn prune(txn: &WriteTransaction, cutoff: u64, max: usize) -> StoreResult<usize> {
    let mut expiry = txn.open_table(EVENT_EXPIRY)?;
    let mut due = Vec::new();
    for entry in expiry.range::<(u64, &str, &str)>(..(cutoff, "", ""))? {
        let (key, device) = entry?;
        let (at, tenant, id) = key.value();
        due.push((
            at,
            tenant.to_string(),
            id.to_string(),
            device.value().to_string(),
        ));
        if due.len() == max {
            break;
        }
    }
    let mut table = txn.open_table(EVENTS)?;
    let mut by_device = txn.open_table(DEVICE_EVENTS)?;
    for (at, tenant, id, device) in &due {
        expiry.remove((*at, tenant.as_str(), id.as_str()))?;
        table.remove((tenant.as_str(), id.as_str()))?;
        by_device.remove((tenant.as_str(), device.as_str(), id.as_str()))?;
    }
    Ok(due.len())
}
