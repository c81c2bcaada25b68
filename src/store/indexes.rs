//! The secondary tables of `DEVICES`: the status, location and name indexes
//! and the per-tenant status counts. Every write that adds or changes a device calls
//! `insert` or `change` in its own transaction, so the indexes and counts are
//! exactly as durable and as consistent as the device rows they describe.

use std::hash::{BuildHasher, Hash, RandomState};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::tables::{DEVICES, KEY_INDEX, LOCATION_INDEX, NAME_INDEX, STATUS_INDEX, TENANT_COUNTS};
use super::wal::{LogTxn, Logged};
use super::{DeviceRecord, StoreError, StoreResult};
use crate::auth::device_key;
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

/// The name index, opened by the caller (the writer shares it per batch).
pub type Names<'t> = Logged<'t, 't, (&'static str, &'static str), &'static [u8]>;

/// Indexes and counts a device that did not exist before.
pub fn insert(
    txn: &LogTxn<'_>,
    names: &mut Names<'_>,
    tenant: &str,
    id: &str,
    new: Indexed,
) -> StoreResult<()> {
    txn.open_table(STATUS_INDEX)?
        .insert((tenant, status_code(new.status), id), ())?;
    let mut locations = txn.open_table(LOCATION_INDEX)?;
    for location in new.location_ids {
        locations.insert((tenant, location.as_str(), id), ())?;
    }
    names.insert((tenant, id), new.name.to_lowercase().as_bytes())?;
    adjust_count(txn, tenant, new.status, 1)
}

/// Moves a device's index entries and counts from `old` to `new`.
pub fn change(
    txn: &LogTxn<'_>,
    names: &mut Names<'_>,
    tenant: &str,
    id: &str,
    old: Indexed,
    new: Indexed,
) -> StoreResult<()> {
    if old.name != new.name {
        names.insert((tenant, id), new.name.to_lowercase().as_bytes())?;
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
    txn: &LogTxn<'_>,
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

/// Whether `rebuild` also builds the key index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Kept as it is (the layout upgrade from version 1, which had it, and
    /// `import`, which writes it).
    Kept,
    /// Built from each device's current and previous key (a snapshot,
    /// which leaves it out).
    Built,
}

/// Builds the status, location and name indexes and the counts (and with
/// `Keys::Built` the key index) from `DEVICES`, replacing what they held:
/// the layout upgrade from version 1, `import`, and the restore of a
/// snapshot, which copies none of them. Each table is opened once and the
/// counts are added up in memory, so a million devices take seconds.
/// Returns how many devices were indexed; an unreadable record or key hash
/// is an error, and the transaction must then be dropped.
pub fn rebuild(txn: &WriteTransaction, keys: Keys) -> StoreResult<u64> {
    txn.delete_table(STATUS_INDEX)?;
    txn.delete_table(LOCATION_INDEX)?;
    txn.delete_table(NAME_INDEX)?;
    txn.delete_table(TENANT_COUNTS)?;
    if keys == Keys::Built {
        txn.delete_table(KEY_INDEX)?;
    }
    let devices = txn.open_table(DEVICES)?;
    let mut statuses = txn.open_table(STATUS_INDEX)?;
    let mut locations = txn.open_table(LOCATION_INDEX)?;
    let mut names = txn.open_table(NAME_INDEX)?;
    let mut key_index = match keys {
        Keys::Built => Some(txn.open_table(KEY_INDEX)?),
        Keys::Kept => None,
    };
    let mut counts = CountsByTenant::default();
    let mut owners = Vec::new();
    let mut indexed = 0;
    for entry in devices.iter()? {
        let (key, value) = entry?;
        let (tenant, id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        if let Some(key_index) = key_index.as_mut() {
            for hash in key_hashes(&record, tenant, id)? {
                owners.push((hash, tenant.to_string(), id.to_string()));
            }
            if owners.len() >= KEY_RUN {
                insert_keys(key_index, &mut owners)?;
            }
        }
        let code = status_code(record.status);
        statuses.insert((tenant, code, id), ())?;
        for location in &record.location_ids {
            locations.insert((tenant, location.as_str(), id), ())?;
        }
        names.insert((tenant, id), record.name.to_lowercase().as_bytes())?;
        counts.add(tenant, code);
        indexed += 1;
    }
    if let Some(key_index) = key_index.as_mut() {
        insert_keys(key_index, &mut owners)?;
    }
    let mut table = txn.open_table(TENANT_COUNTS)?;
    for (key, count) in counts.rows() {
        table.insert(key, count)?;
    }
    Ok(indexed)
}

/// The hashes of a device's keys: its current one, and the previous one
/// while it is kept for a grace period.
fn key_hashes(record: &DeviceRecord, tenant: &str, id: &str) -> StoreResult<Vec<[u8; 32]>> {
    let held = record.keys();
    std::iter::once(held.current)
        .chain(held.previous.map(|(hex, _)| hex))
        .map(|hex| {
            device_key::from_hex(&hex).ok_or_else(|| {
                StoreError::Internal(format!("device {tenant}/{id} has an unreadable key hash"))
            })
        })
        .collect()
}

/// Each tenant's devices counted by status code, from devices read in
/// (tenant, id) order: one entry per tenant.
#[derive(Default)]
struct CountsByTenant(Vec<(String, [u64; 3])>);

impl CountsByTenant {
    fn add(&mut self, tenant: &str, code: u8) {
        match self.0.last_mut() {
            Some((current, counted)) if current == tenant => counted[usize::from(code)] += 1,
            _ => {
                let mut counted = [0; 3];
                counted[usize::from(code)] = 1;
                self.0.push((tenant.to_string(), counted));
            }
        }
    }

    /// The rows of `TENANT_COUNTS`: one per status a tenant has devices in.
    fn rows(&self) -> impl Iterator<Item = ((&str, u8), u64)> {
        self.0.iter().flat_map(|(tenant, counted)| {
            (0u8..)
                .zip(*counted)
                .filter(|(_, count)| *count > 0)
                .map(move |(code, count)| ((tenant.as_str(), code), count))
        })
    }
}

/// Key hashes `rebuild` holds before it writes them in order: hashes are
/// random, and inserted one device at a time each lands on another page of
/// the index (2.8 s of a million; in runs of this size, about 1 s). About
/// 25 MB.
const KEY_RUN: usize = 1 << 18;

/// Writes `owners` to the key index in hash order, and empties it.
fn insert_keys(
    key_index: &mut redb::Table<'_, &'static [u8; 32], (&'static str, &'static str)>,
    owners: &mut Vec<([u8; 32], String, String)>,
) -> StoreResult<()> {
    owners.sort_unstable_by_key(|owner| owner.0);
    for (hash, tenant, id) in owners.drain(..) {
        key_index.insert(&hash, (tenant.as_str(), id.as_str()))?;
    }
    Ok(())
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
    let keyed = Keyed::new();
    let mut want = Digests::default();
    // One tenant at a time (not `CountsByTenant`), so memory stays flat
    // however many tenants the file holds.
    let mut tenant_counts: Option<(String, [u64; 3])> = None;
    for entry in txn.open_table(DEVICES)?.iter()? {
        let (key, value) = entry?;
        let (tenant, id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        for hash in key_hashes(&record, tenant, id)? {
            want.keys.add(&keyed, (hash, tenant, id));
        }
        let code = status_code(record.status);
        want.statuses.add(&keyed, (tenant, code, id));
        for location in &record.location_ids {
            want.locations.add(&keyed, (tenant, location.as_str(), id));
        }
        want.names
            .add(&keyed, (tenant, id, record.name.to_lowercase().as_bytes()));
        // Devices come in (tenant, id) order: a tenant's counts are whole
        // once the next tenant starts.
        match &mut tenant_counts {
            Some((current, counts)) if current == tenant => counts[usize::from(code)] += 1,
            _ => {
                if let Some((done, counts)) = tenant_counts.take() {
                    want.add_counts(&keyed, &done, counts);
                }
                let mut counts = [0; 3];
                counts[usize::from(code)] = 1;
                tenant_counts = Some((tenant.to_string(), counts));
            }
        }
    }
    if let Some((done, counts)) = tenant_counts.take() {
        want.add_counts(&keyed, &done, counts);
    }
    let mut found = Digests::default();
    for entry in txn.open_table(KEY_INDEX)?.iter()? {
        let (hash, owner) = entry?;
        let (t, i) = owner.value();
        found.keys.add(&keyed, (*hash.value(), t, i));
    }
    for entry in txn.open_table(STATUS_INDEX)?.iter()? {
        found.statuses.add(&keyed, entry?.0.value());
    }
    for entry in txn.open_table(LOCATION_INDEX)?.iter()? {
        found.locations.add(&keyed, entry?.0.value());
    }
    for entry in txn.open_table(NAME_INDEX)?.iter()? {
        let (key, name) = entry?;
        let (t, i) = key.value();
        found.names.add(&keyed, (t, i, name.value()));
    }
    for entry in txn.open_table(TENANT_COUNTS)?.iter()? {
        let (key, value) = entry?;
        found.counts.add(&keyed, (key.value(), value.value()));
    }
    let differ = |what: &str| {
        Err(StoreError::Internal(format!(
            "{what} disagrees with devices"
        )))
    };
    if want.keys != found.keys {
        return differ("the key index");
    }
    if want.statuses != found.statuses {
        return differ("the status index");
    }
    if want.locations != found.locations {
        return differ("the location index");
    }
    if want.names != found.names {
        return differ("the name index");
    }
    if want.counts != found.counts {
        return differ("the tenant counts");
    }
    Ok(())
}

/// The two secret hash keys of one `verify`, so that no file can be made to
/// pass it by design.
struct Keyed(RandomState, RandomState);

impl Keyed {
    fn new() -> Keyed {
        Keyed(RandomState::new(), RandomState::new())
    }
}

/// An order-free digest of a multiset of rows: how many, and the sums of two
/// keyed hashes of each. Two tables hold the same rows exactly when their
/// digests (under the same keys) agree, up to a chance of 2^-128; a digest
/// costs no memory however large the table, so `verify` checks a
/// million-device file in one pass of each table.
#[derive(Default, PartialEq, Eq)]
struct Digest {
    rows: u64,
    sums: (u64, u64),
}

impl Digest {
    fn add(&mut self, Keyed(a, b): &Keyed, row: impl Hash) {
        self.rows += 1;
        self.sums.0 = self.sums.0.wrapping_add(a.hash_one(&row));
        self.sums.1 = self.sums.1.wrapping_add(b.hash_one(&row));
    }
}

/// The digests of every table `verify` checks.
#[derive(Default)]
struct Digests {
    keys: Digest,
    statuses: Digest,
    locations: Digest,
    names: Digest,
    counts: Digest,
}

impl Digests {
    /// A tenant's count rows: one per status it has devices in.
    fn add_counts(&mut self, keyed: &Keyed, tenant: &str, counts: [u64; 3]) {
        for (code, count) in (0u8..).zip(counts) {
            if count > 0 {
                self.counts.add(keyed, ((tenant, code), count));
            }
        }
    }
}
