//! The secondary tables of `DEVICES`: the status, location and name indexes
//! and the per-tenant status counts. Every write that adds or changes a device calls
//! `insert` or `change` in its own transaction, so the indexes and counts are
//! exactly as durable and as consistent as the device rows they describe.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::tables::{DEVICES, KEY_INDEX, LOCATION_INDEX, NAME_INDEX, STATUS_INDEX, TENANT_COUNTS};
use super::{DeviceRecord, StoreError, StoreResult};
use crate::devices::DeviceStatus;

/// How a status is spelled in index and count keys.
pub fn status_code(status: DeviceStatus) -> u8 {
    match status {
        DeviceStatus::Active => 0,
        DeviceStatus::Inactive => 1,
        DeviceStatus::Revoked => 2,
    }
}

/// How many of a tenant's devices have each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub active: u64,
    pub inactive: u64,
    pub revoked: u64,
}

impl StatusCounts {
    pub fn total(&self) -> u64 {
        self.active + self.inactive + self.revoked
    }

    pub(crate) fn slot(&mut self, status: DeviceStatus) -> &mut u64 {
        match status {
            DeviceStatus::Active => &mut self.active,
            DeviceStatus::Inactive => &mut self.inactive,
            DeviceStatus::Revoked => &mut self.revoked,
        }
    }
}

/// What the indexes know of one device.
#[derive(Clone, Copy)]
pub struct Indexed<'a> {
    pub name: &'a str,
    pub status: DeviceStatus,
    pub location_ids: &'a [String],
}

/// Indexes and counts a device that did not exist before.
pub fn insert(txn: &WriteTransaction, tenant: &str, id: &str, new: Indexed) -> StoreResult<()> {
    txn.open_table(STATUS_INDEX)?
        .insert((tenant, status_code(new.status), id), ())?;
    let mut locations = txn.open_table(LOCATION_INDEX)?;
    for location in new.location_ids {
        locations.insert((tenant, location.as_str(), id), ())?;
    }
    txn.open_table(NAME_INDEX)?
        .insert((tenant, id), new.name.to_lowercase().as_bytes())?;
    adjust_count(txn, tenant, new.status, 1)
}

/// Moves a device's index entries and counts from `old` to `new`.
pub fn change(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    old: Indexed,
    new: Indexed,
) -> StoreResult<()> {
    if old.name != new.name {
        txn.open_table(NAME_INDEX)?
            .insert((tenant, id), new.name.to_lowercase().as_bytes())?;
    }
    if old.status != new.status {
        let mut statuses = txn.open_table(STATUS_INDEX)?;
        statuses.remove((tenant, status_code(old.status), id))?;
        statuses.insert((tenant, status_code(new.status), id), ())?;
        adjust_count(txn, tenant, old.status, -1)?;
        adjust_count(txn, tenant, new.status, 1)?;
    }
    if old.location_ids != new.location_ids {
        let mut locations = txn.open_table(LOCATION_INDEX)?;
        for gone in old
            .location_ids
            .iter()
            .filter(|l| !new.location_ids.contains(l))
        {
            locations.remove((tenant, gone.as_str(), id))?;
        }
        for added in new
            .location_ids
            .iter()
            .filter(|l| !old.location_ids.contains(l))
        {
            locations.insert((tenant, added.as_str(), id), ())?;
        }
    }
    Ok(())
}

fn adjust_count(
    txn: &WriteTransaction,
    tenant: &str,
    status: DeviceStatus,
    delta: i64,
) -> StoreResult<()> {
    let mut counts = txn.open_table(TENANT_COUNTS)?;
    let key = (tenant, status_code(status));
    let current = counts.get(key)?.map(|v| v.value()).unwrap_or(0);
    let next = current
        .checked_add_signed(delta)
        .ok_or_else(|| StoreError::Internal(format!("device count of {tenant:?} underflows")))?;
    if next == 0 {
        counts.remove(key)?;
    } else {
        counts.insert(key, next)?;
    }
    Ok(())
}

/// The tenant's counts, read from `TENANT_COUNTS` (three point reads).
pub fn counts(
    table: &impl ReadableTable<(&'static str, u8), u64>,
    tenant: &str,
) -> StoreResult<StatusCounts> {
    let mut out = StatusCounts::default();
    for status in DeviceStatus::ALL {
        *out.slot(status) = table
            .get((tenant, status_code(status)))?
            .map(|v| v.value())
            .unwrap_or(0);
    }
    Ok(out)
}

/// Every tenant's counts added up (for the `devicehub_devices` gauge).
/// Every tenant that has devices (and so may have events), once each.
pub fn tenants(txn: &WriteTransaction) -> StoreResult<Vec<String>> {
    let counts = txn.open_table(TENANT_COUNTS)?;
    let mut out: Vec<String> = Vec::new();
    for entry in counts.iter()? {
        let (key, _) = entry?;
        let tenant = key.value().0;
        if out.last().map(String::as_str) != Some(tenant) {
            out.push(tenant.to_string());
        }
    }
    Ok(out)
}

pub fn all_counts(txn: &ReadTransaction) -> StoreResult<StatusCounts> {
    let mut out = StatusCounts::default();
    for entry in txn.open_table(TENANT_COUNTS)?.iter()? {
        let (key, value) = entry?;
        let status = DeviceStatus::ALL
            .into_iter()
            .find(|s| status_code(*s) == key.value().1)
            .ok_or_else(|| StoreError::Internal("unknown status code in counts".into()))?;
        *out.slot(status) += value.value();
    }
    Ok(out)
}

/// Builds the indexes and counts from `DEVICES` (the layout upgrade from
/// version 1). Returns how many devices were indexed.
pub fn rebuild(txn: &WriteTransaction) -> StoreResult<u64> {
    let devices = txn.open_table(DEVICES)?;
    let mut indexed = 0;
    for entry in devices.iter()? {
        let (key, value) = entry?;
        let (tenant, id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        insert(
            txn,
            tenant,
            id,
            Indexed {
                name: &record.name,
                status: record.status,
                location_ids: &record.location_ids,
            },
        )?;
        indexed += 1;
    }
    Ok(indexed)
}

/// Builds the name index from `DEVICES` (the layout upgrade from versions 2
/// and 3, which had the other indexes already). Returns how many names were
/// written.
pub fn rebuild_names(txn: &WriteTransaction) -> StoreResult<u64> {
    let devices = txn.open_table(DEVICES)?;
    let mut names = txn.open_table(NAME_INDEX)?;
    let mut written = 0;
    for entry in devices.iter()? {
        let (key, value) = entry?;
        let (tenant, id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        names.insert((tenant, id), record.name.to_lowercase().as_bytes())?;
        written += 1;
    }
    Ok(written)
}

/// Compares the key, status, location and name indexes and the counts with what
/// `DEVICES` says they must hold; an error names the first difference. For
/// tests and consistency checks.
pub fn verify(txn: &ReadTransaction) -> StoreResult<()> {
    let mut keys = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    let mut locations = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut counts = std::collections::BTreeMap::<(String, u8), u64>::new();
    for entry in txn.open_table(DEVICES)?.iter()? {
        let (key, value) = entry?;
        let (tenant, id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        let held = record.keys();
        for hex in std::iter::once(held.current).chain(held.previous.map(|(hex, _)| hex)) {
            keys.insert((hex, tenant.to_string(), id.to_string()));
        }
        let code = status_code(record.status);
        statuses.insert((tenant.to_string(), code, id.to_string()));
        for location in &record.location_ids {
            locations.insert((tenant.to_string(), location.clone(), id.to_string()));
        }
        let name = record.name.to_lowercase().into_bytes();
        names.insert((tenant.to_string(), id.to_string(), name));
        *counts.entry((tenant.to_string(), code)).or_default() += 1;
    }
    let mut found_keys = BTreeSet::new();
    for entry in txn.open_table(KEY_INDEX)?.iter()? {
        let (hash, owner) = entry?;
        let (t, i) = owner.value();
        found_keys.insert((
            crate::auth::device_key::to_hex(hash.value()),
            t.to_string(),
            i.to_string(),
        ));
    }
    let mut found_statuses = BTreeSet::new();
    for entry in txn.open_table(STATUS_INDEX)?.iter()? {
        let (key, _) = entry?;
        let (t, c, i) = key.value();
        found_statuses.insert((t.to_string(), c, i.to_string()));
    }
    let mut found_locations = BTreeSet::new();
    for entry in txn.open_table(LOCATION_INDEX)?.iter()? {
        let (key, _) = entry?;
        let (t, l, i) = key.value();
        found_locations.insert((t.to_string(), l.to_string(), i.to_string()));
    }
    let mut found_names = BTreeSet::new();
    for entry in txn.open_table(NAME_INDEX)?.iter()? {
        let (key, name) = entry?;
        let (t, i) = key.value();
        found_names.insert((t.to_string(), i.to_string(), name.value().to_vec()));
    }
    let counts_table = txn.open_table(TENANT_COUNTS)?;
    let mut found_counts = std::collections::BTreeMap::new();
    for entry in counts_table.iter()? {
        let (key, value) = entry?;
        let (t, c) = key.value();
        found_counts.insert((t.to_string(), c), value.value());
    }
    let differ = |what: &str| {
        Err(StoreError::Internal(format!(
            "{what} disagrees with devices"
        )))
    };
    if keys != found_keys {
        return differ("the key index");
    }
    if statuses != found_statuses {
        return differ("the status index");
    }
    if locations != found_locations {
        return differ("the location index");
    }
    if names != found_names {
        return differ("the name index");
    }
    if counts != found_counts || counts_table.len()? != counts.len() as u64 {
        return differ("the tenant counts");
    }
    Ok(())
}
