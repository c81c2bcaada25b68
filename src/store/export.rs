//! `devicehub export` and `devicehub import` (docs/EXPORT.md): the whole
//! store as NDJSON, in a format that names things as the API does, so that
//! another backend can read and write it.
//!
//! Export reads one read transaction (one consistent snapshot) and writes
//! each row as it goes: its memory does not grow with the store. Import
//! checks every line and writes everything in one write transaction, so a
//! file with one bad line writes nothing. The secondary tables (key index,
//! status and location indexes, counts, the event indexes) are not in the
//! file: import builds them from the devices and events.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;

use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, TableError, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::last_seen::LastSeen;
use super::tables::{
    DEVICES, EVENTS, ID_MAX, KEY_INDEX, LAST_SEEN, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY,
    WEBHOOKS,
};
use super::webhooks::WebhookRecord;
use super::{indexes, write_txn, DeviceRecord, Embedded, StoreError};
use crate::auth::device_key;
use crate::auth::token::is_tenant_id;
use crate::devices::{
    id, is_tag, DeviceName, DeviceStatus, Millis, MAX_GRACE_PERIOD_SECONDS, TAGS_MAX_ENTRIES,
};
use crate::events::{self, EventType};
use crate::webhooks::{self, WebhookPatch};

/// The header's `kind`: names the format.
pub const FORMAT: &str = "devicehub-export";
/// The format version this build writes and reads. A new kind of line
/// (webhooks) is added under the same version; the version changes only
/// when an existing kind's fields change meaning.
pub const VERSION: u64 = 1;
/// A longer line is refused without being read into memory whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// redb's page cache while `export_file` reads a file (its default is 1 GiB).
const EXPORT_CACHE_BYTES: usize = 16 << 20;

/// Which file `Embedded::export_file` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The configured database (`storage.path`) of a stopped server.
    Live,
    /// A backup snapshot (`--from`).
    Snapshot,
}

impl Source {
    /// How errors name the file.
    fn key(self) -> &'static str {
        match self {
            Source::Live => "storage.path",
            Source::Snapshot => "--from",
        }
    }
}

/// The database `export_file` reads.
/// The file at `path` opened for writing, repaired by redb if it must be,
/// with what its write-ahead log holds applied (`wal.rs`).
fn open_replayed(path: &Path) -> Result<Opened, DatabaseError> {
    let (db, durable) = super::file::create(path)?;
    super::wal::open(path, &db, &durable).map_err(|e| {
        DatabaseError::Storage(redb::StorageError::Io(io::Error::other(format!(
            "write-ahead log: {e}"
        ))))
    })?;
    Ok(Opened::Repaired(db))
}

enum Opened {
    ReadOnly(ReadOnlyDatabase),
    /// Opened for writing, only so that redb could repair it.
    Repaired(Database),
}

impl Opened {
    fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            Opened::ReadOnly(db) => db.begin_read(),
            Opened::Repaired(db) => db.begin_read(),
        }
    }
}

/// What an export wrote or an import read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    pub devices: u64,
    pub events: u64,
    pub webhooks: u64,
}

impl Transferred {
    /// Lines between the header and the end line.
    fn records(&self) -> u64 {
        self.devices + self.events + self.webhooks
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database cannot be opened or is not one this build reads.
    #[error("{0}")]
    Open(String),
    #[error("cannot write the export: {0}")]
    Write(#[from] io::Error),
    #[error(transparent)]
    Embedded(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line of the input is wrong; nothing was written.
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("the store already holds {0}: import only into an empty store (nothing was written)")]
    NotEmpty(&'static str),
    #[error(transparent)]
    Embedded(#[from] StoreError),
}

/// redb's errors, through `StoreError` (which sorts I/O from the rest).
macro_rules! via_store {
    ($target:ty: $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                StoreError::from(e).into()
            }
        }
    )*};
}
via_store!(ExportError: redb::StorageError, redb::TableError, redb::TransactionError);
via_store!(ImportError: redb::StorageError, redb::TableError, redb::CommitError);
via_store!(Fault: redb::StorageError, redb::TableError);

/// Why a line was not taken: the line is wrong, or the store failed.
enum Fault {
    Bad(String),
    Embedded(StoreError),
}

impl From<String> for Fault {
    fn from(reason: String) -> Self {
        Fault::Bad(reason)
    }
}

impl From<&str> for Fault {
    fn from(reason: &str) -> Self {
        Fault::Bad(reason.to_string())
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Embedded(e)
    }
}

/// Line 1.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    kind: String,
    version: u64,
    exported_at: String,
    /// The one tenant exported (`--tenant`), or null for all of them.
    tenant: Option<String>,
    /// The program and version that wrote the file (informative).
    generator: String,
}

/// A device with everything needed to restore it exactly.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeviceLine {
    kind: String,
    tenant: String,
    id: String,
    name: String,
    status: DeviceStatus,
    location_ids: Vec<String>,
    pim_enabled: bool,
    pim_segment_ids: Vec<String>,
    created_at: String,
    updated_at: String,
    last_seen_at: Option<String>,
    /// Bumped by every change; the ETag is made from it.
    version: u64,
    /// Hex SHA-256 of the current API key.
    key_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_key_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_key_grace_ends_at: Option<String>,
}

/// An event as stored: the JSON the feed serves, byte for byte.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine<'a> {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    tenant: String,
    id: String,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// What import reads inside an event.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created_at: String,
    device_id: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: EventObject,
}

#[derive(Deserialize)]
struct EventObject {
    id: String,
}

/// A webhook with its signing secret and its place in the event feed.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookLine {
    kind: String,
    tenant: String,
    id: String,
    url: String,
    events: Vec<String>,
    description: String,
    enabled: bool,
    created_at: String,
    updated_at: String,
    /// `whsec_…`: receivers keep verifying signatures after the move.
    secret: String,
    /// The last event given to the webhook (or the tenant's last one when
    /// it was made): it gets the events after this one. Null before the
    /// tenant's first event.
    cursor: Option<String>,
}

/// The last line: how many lines came between it and the header, so a
/// truncated file is refused.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    kind: String,
    records: u64,
}

/// Any line, for its `kind` alone.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    version: Option<serde_json::Value>,
}

impl Embedded {
    /// Writes the store (or one tenant of it) to `out` in the export format,
    /// from one read transaction. A check-in this process holds in memory
    /// counts as written.
    pub fn export_to<W: Write>(
        &self,
        out: &mut W,
        tenant: Option<&str>,
    ) -> Result<Transferred, ExportError> {
        let (_db, txn) = self.inner.db.begin_read(|_| Ok(()))?;
        write_export(&txn, out, tenant, Some(&self.inner.seen))
    }

    /// Exports the database file at `path`, a stopped server's store or a
    /// backup snapshot (`source`). A file a running server holds is refused.
    pub fn export_file<W: Write>(
        path: &Path,
        source: Source,
        out: &mut W,
        tenant: Option<&str>,
    ) -> Result<Transferred, ExportError> {
        let what = source.key();
        let shown = path.display();
        let mut builder = Database::builder();
        // One pass over the file: a larger cache would only grow with it.
        builder.set_cache_size(EXPORT_CACHE_BYTES);
        let opened = match builder.open_read_only(path) {
            // A server stopped before its last checkpoint left batches in
            // its write-ahead log: they are applied first, as its next
            // start would.
            Ok(db) if source == Source::Live && super::wal::pending(path, &db).unwrap_or(false) => {
                drop(db);
                open_replayed(path)
            }
            Ok(db) => Ok(Opened::ReadOnly(db)),
            // A server that stopped without closing the file leaves it to be
            // repaired by whoever opens it next for writing, as the server's
            // own next start would. A snapshot is never repaired.
            Err(DatabaseError::RepairAborted) if source == Source::Live => open_replayed(path),
            Err(e) => Err(e),
        };
        let db = opened.map_err(|e| {
            ExportError::Open(match e {
                DatabaseError::DatabaseAlreadyOpen => format!(
                    "{what}: {shown} is locked by a running devicehub server: stop it first, or export its latest backup snapshot with --from"
                ),
                DatabaseError::RepairAborted => format!(
                    "{what}: {shown} was not closed cleanly; export does not repair a snapshot"
                ),
                DatabaseError::Storage(redb::StorageError::Io(io))
                    if io.kind() != io::ErrorKind::InvalidData =>
                {
                    format!("{what}: cannot read {shown}: {io}")
                }
                other => format!("{what}: {shown} is not a devicehub database ({other})"),
            })
        })?;
        let txn = db.begin_read().map_err(StoreError::from)?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value()),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(StoreError::from(e).into()),
        };
        match version {
            // Versions 1 and 2 store devices the same way; they lack only
            // tables that export does not read (or, for 1 and 2, events).
            Some(v) if (1..=SCHEMA_VERSION).contains(&v) => {}
            Some(other) => {
                return Err(ExportError::Open(format!(
                    "{what}: {shown} has layout version {other}, this build reads up to {SCHEMA_VERSION}"
                )))
            }
            None => {
                return Err(ExportError::Open(format!(
                    "{what}: {shown} is not a devicehub database (no layout version)"
                )))
            }
        }
        write_export(&txn, out, tenant, None)
    }

    /// Reads an export from `input` into this store, which must hold no
    /// device and no event. Every line is checked; the first bad one is
    /// reported by number and nothing is written. The indexes, counts and
    /// event tables are built from the rows in the same transaction.
    pub fn import_from<R: BufRead>(&self, input: R) -> Result<Transferred, ImportError> {
        let txn = self.inner.db.run(write_txn)?;
        if !txn.open_table(DEVICES)?.is_empty()? {
            return Err(ImportError::NotEmpty("devices"));
        }
        if !txn.open_table(EVENTS)?.is_empty()? {
            return Err(ImportError::NotEmpty("events"));
        }
        if !txn.open_table(WEBHOOKS)?.is_empty()? {
            return Err(ImportError::NotEmpty("webhooks"));
        }
        let read = Importer::new(&txn)?.run(input)?;
        indexes::rebuild(&txn, indexes::Keys::Kept)?;
        txn.commit()?;
        // Reported as imported only once it is on disk (`file.rs`).
        self.inner.db.wait_synced()?;
        self.inner.reads.changed();
        self.inner.event_ids.forget();
        Ok(read)
    }
}

/// Writes an export line by line, whichever store it reads: the header
/// first, then devices, events and webhooks, then `end`.
pub(super) struct ExportWriter<'w, W: Write> {
    out: &'w mut W,
    done: Transferred,
}

impl<'w, W: Write> ExportWriter<'w, W> {
    pub(super) fn begin(out: &'w mut W, tenant: Option<&str>) -> io::Result<Self> {
        let header = Header {
            kind: FORMAT.into(),
            version: VERSION,
            exported_at: Millis::now().to_rfc3339(),
            tenant: tenant.map(str::to_string),
            generator: concat!("devicehub ", env!("CARGO_PKG_VERSION")).into(),
        };
        write_line(out, &header)?;
        Ok(ExportWriter {
            out,
            done: Transferred::default(),
        })
    }

    pub(super) fn device(
        &mut self,
        tenant: &str,
        id: &str,
        record: DeviceRecord,
        last_seen: Option<Millis>,
    ) -> io::Result<()> {
        write_line(
            self.out,
            &DeviceLine::from_record(tenant, id, record, last_seen),
        )?;
        self.done.devices += 1;
        Ok(())
    }

    /// An event as stored: its JSON, byte for byte.
    pub(super) fn event(&mut self, tenant: &str, id: &str, json: &[u8]) -> io::Result<()> {
        let out = &mut *self.out;
        out.write_all(br#"{"kind":"event","tenant":"#)?;
        serde_json::to_writer(&mut *out, tenant).map_err(io::Error::from)?;
        out.write_all(br#","id":"#)?;
        serde_json::to_writer(&mut *out, id).map_err(io::Error::from)?;
        out.write_all(br#","event":"#)?;
        out.write_all(json)?;
        out.write_all(b"}\n")?;
        self.done.events += 1;
        Ok(())
    }

    pub(super) fn webhook(
        &mut self,
        tenant: &str,
        id: &str,
        record: WebhookRecord,
    ) -> io::Result<()> {
        write_line(self.out, &WebhookLine::from_record(tenant, id, record))?;
        self.done.webhooks += 1;
        Ok(())
    }

    pub(super) fn end(self) -> io::Result<Transferred> {
        write_line(
            self.out,
            &EndLine {
                kind: "end".into(),
                records: self.done.records(),
            },
        )?;
        self.out.flush()?;
        Ok(self.done)
    }
}

/// A device as an export holds it, for another store to load.
pub struct DeviceRow {
    pub(super) tenant: String,
    pub(super) id: String,
    pub(super) record: DeviceRecord,
    pub(super) last_seen: Option<Millis>,
}

/// An event as an export holds it.
pub struct EventRow {
    pub(super) tenant: String,
    pub(super) id: String,
    pub(super) device_id: String,
    pub(super) kind: EventType,
    pub(super) created: Millis,
    pub(super) json: Vec<u8>,
}

/// Everything an (imported, so checked) store holds, row by row.
#[derive(Default)]
pub struct Rows {
    pub(super) devices: Vec<DeviceRow>,
    pub(super) events: Vec<EventRow>,
    pub(super) webhooks: Vec<(String, String, WebhookRecord)>,
}

impl Embedded {
    /// Every row, in key order: what `import_into_postgres` copies after
    /// this (scratch) store has checked an import.
    pub fn rows(&self) -> Result<Rows, StoreError> {
        let (_db, txn) = self.inner.db.begin_read(|_| Ok(()))?;
        let mut rows = Rows::default();
        let seen = txn.open_table(LAST_SEEN)?;
        for row in txn.open_table(DEVICES)?.range::<(&str, &str)>(..)? {
            let (key, value) = row?;
            let (tenant, id) = key.value();
            rows.devices.push(DeviceRow {
                tenant: tenant.to_string(),
                id: id.to_string(),
                record: DeviceRecord::decode(value.value())?,
                last_seen: seen.get((tenant, id))?.map(|v| Millis(v.value())),
            });
        }
        for row in txn.open_table(EVENTS)?.range::<(&str, &str)>(..)? {
            let (key, value) = row?;
            let (tenant, id) = key.value();
            let stored = super::events::decode_stored(id, value.value())?;
            let head: EventHead = serde_json::from_slice(&stored.json)
                .map_err(|e| StoreError::Internal(format!("event {id}: {e}")))?;
            let created =
                parse_time("createdAt", &head.created_at).map_err(StoreError::Internal)?;
            rows.events.push(EventRow {
                tenant: tenant.to_string(),
                id: id.to_string(),
                device_id: head.device_id,
                kind: stored.kind,
                created,
                json: stored.json,
            });
        }
        for row in txn.open_table(WEBHOOKS)?.range::<(&str, &str)>(..)? {
            let (key, value) = row?;
            let (tenant, id) = key.value();
            rows.webhooks.push((
                tenant.to_string(),
                id.to_string(),
                WebhookRecord::decode(value.value())?,
            ));
        }
        Ok(rows)
    }
}

fn write_export<W: Write>(
    txn: &ReadTransaction,
    out: &mut W,
    tenant: Option<&str>,
    memory: Option<&LastSeen>,
) -> Result<Transferred, ExportError> {
    let mut writer = ExportWriter::begin(out, tenant)?;
    let devices = txn.open_table(DEVICES)?;
    let seen = open_optional(txn, LAST_SEEN)?;
    let rows = match tenant {
        Some(t) => devices.range::<(&str, &str)>((t, "")..=(t, ID_MAX))?,
        None => devices.range::<(&str, &str)>(..)?,
    };
    for row in rows {
        let (key, value) = row?;
        let (tenant, device_id) = key.value();
        let record = DeviceRecord::decode(value.value())?;
        let on_disk = match &seen {
            Some(table) => table.get((tenant, device_id))?.map(|v| Millis(v.value())),
            None => None,
        };
        let last_seen = memory.and_then(|m| m.get(tenant, device_id)).max(on_disk);
        writer.device(tenant, device_id, record, last_seen)?;
    }
    if let Some(events) = open_optional(txn, EVENTS)? {
        let rows = match tenant {
            Some(t) => events.range::<(&str, &str)>((t, "")..=(t, ID_MAX))?,
            None => events.range::<(&str, &str)>(..)?,
        };
        for row in rows {
            let (key, value) = row?;
            let (tenant, event_id) = key.value();
            let stored = super::events::decode_stored(event_id, value.value())?;
            writer.event(tenant, event_id, &stored.json)?;
        }
    }
    if let Some(hooks) = open_optional(txn, WEBHOOKS)? {
        let rows = match tenant {
            Some(t) => hooks.range::<(&str, &str)>((t, "")..=(t, ID_MAX))?,
            None => hooks.range::<(&str, &str)>(..)?,
        };
        for row in rows {
            let (key, value) = row?;
            let (tenant, id) = key.value();
            let record = WebhookRecord::decode(value.value())?;
            writer.webhook(tenant, id, record)?;
        }
    }
    Ok(writer.end()?)
}

fn write_line<W: Write, T: Serialize>(out: &mut W, line: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// A table that an older layout may not have yet.
fn open_optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl DeviceLine {
    fn from_record(
        tenant: &str,
        id: &str,
        record: DeviceRecord,
        last_seen: Option<Millis>,
    ) -> DeviceLine {
        DeviceLine {
            kind: "device".into(),
            tenant: tenant.to_string(),
            id: id.to_string(),
            name: record.name,
            status: record.status,
            location_ids: record.location_ids,
            pim_enabled: record.pim_enabled,
            pim_segment_ids: record.pim_segment_ids,
            created_at: Millis(record.created_ms).to_rfc3339(),
            updated_at: Millis(record.updated_ms).to_rfc3339(),
            last_seen_at: last_seen.map(Millis::to_rfc3339),
            version: record.version,
            key_hash: record.key_hash,
            previous_key_hash: record.prev_key_hash,
            previous_key_grace_ends_at: record
                .prev_key_expires_ms
                .map(|ms| Millis(ms).to_rfc3339()),
        }
    }

    /// Checks every field and returns what to store.
    fn into_record(self) -> Result<Checked, String> {
        if !is_tenant_id(&self.tenant) {
            return Err("tenant: must be 1-128 characters without control characters".into());
        }
        if id::parse(&self.id).is_none() {
            return Err(format!(
                "id: {:?} is not a device id (dev_ + ULID)",
                self.id
            ));
        }
        match DeviceName::new(&self.name) {
            Ok(name) if name.as_str() == self.name => {}
            Ok(_) => return Err("name: must not start or end with white space".into()),
            Err(why) => return Err(format!("name: {why}")),
        }
        check_tags("locationIds", &self.location_ids)?;
        check_tags("pimSegmentIds", &self.pim_segment_ids)?;
        let created = parse_time("createdAt", &self.created_at)?;
        let updated = parse_time("updatedAt", &self.updated_at)?;
        if updated < created {
            return Err("updatedAt: is before createdAt".into());
        }
        let last_seen = self
            .last_seen_at
            .as_deref()
            .map(|t| parse_time("lastSeenAt", t))
            .transpose()?;
        if self.version == 0 {
            return Err("version: must be at least 1".into());
        }
        let mut hashes = vec![parse_hash("keyHash", &self.key_hash)?];
        let previous = match (&self.previous_key_hash, &self.previous_key_grace_ends_at) {
            (None, None) => None,
            (Some(hex), Some(end)) => {
                let hash = parse_hash("previousKeyHash", hex)?;
                if hash == hashes[0] {
                    return Err("previousKeyHash: is the same as keyHash".into());
                }
                let end = parse_time("previousKeyGraceEndsAt", end)?;
                if end.0 > updated.0 + MAX_GRACE_PERIOD_SECONDS * 1000 {
                    return Err(
                        "previousKeyGraceEndsAt: is further after updatedAt than the longest grace period"
                            .into(),
                    );
                }
                if self.status == DeviceStatus::Revoked {
                    return Err("previousKeyHash: a revoked device has no previous key".into());
                }
                hashes.push(hash);
                Some(end)
            }
            (Some(_), None) => return Err("previousKeyHash: needs previousKeyGraceEndsAt".into()),
            (None, Some(_)) => return Err("previousKeyGraceEndsAt: needs previousKeyHash".into()),
        };
        let record = DeviceRecord {
            name: self.name,
            status: self.status,
            location_ids: self.location_ids,
            pim_enabled: self.pim_enabled,
            pim_segment_ids: self.pim_segment_ids,
            created_ms: created.0,
            updated_ms: updated.0,
            version: self.version,
            key_hash: self.key_hash,
            prev_key_hash: self.previous_key_hash,
            prev_key_expires_ms: previous.map(|m| m.0),
            // Set from the device's events once they are all read.
            last_event: None,
        };
        Ok(Checked {
            record,
            last_seen,
            hashes,
        })
    }
}

/// A device line that passed its checks.
struct Checked {
    record: DeviceRecord,
    last_seen: Option<Millis>,
    /// The current key's hash, then the previous one's if any.
    hashes: Vec<[u8; 32]>,
}

impl WebhookLine {
    fn from_record(tenant: &str, id: &str, record: WebhookRecord) -> WebhookLine {
        WebhookLine {
            kind: "webhook".into(),
            tenant: tenant.to_string(),
            id: id.to_string(),
            url: record.url,
            events: record.events,
            description: record.description,
            enabled: record.enabled,
            created_at: Millis(record.created_ms).to_rfc3339(),
            updated_at: Millis(record.updated_ms).to_rfc3339(),
            secret: record.secret,
            cursor: Some(record.cursor).filter(|c| !c.is_empty()),
        }
    }

    /// Checks every field (the API's rules for the four a client sets) and
    /// returns the record to store, with no delivery under way.
    fn into_record(self) -> Result<WebhookRecord, String> {
        if !is_tenant_id(&self.tenant) {
            return Err("tenant: must be 1-128 characters without control characters".into());
        }
        if webhooks::id::parse(&self.id).is_none() {
            return Err(format!(
                "id: {:?} is not a webhook id (wh_ + ULID)",
                self.id
            ));
        }
        let mut fields = serde_json::Map::new();
        fields.insert("url".into(), self.url.clone().into());
        fields.insert("events".into(), self.events.clone().into());
        fields.insert("description".into(), self.description.clone().into());
        fields.insert("enabled".into(), self.enabled.into());
        let checked = WebhookPatch::parse_new(&fields).map_err(|e| e.to_string())?;
        let created = parse_time("createdAt", &self.created_at)?;
        let updated = parse_time("updatedAt", &self.updated_at)?;
        if updated < created {
            return Err("updatedAt: is before createdAt".into());
        }
        if !is_webhook_secret(&self.secret) {
            return Err("secret: must be whsec_ and 43 characters of A-Z a-z 0-9 _ -".into());
        }
        if let Some(cursor) = &self.cursor {
            if events::id::parse(cursor).is_none() {
                return Err(format!(
                    "cursor: {cursor:?} is not an event id (evt_ + ULID)"
                ));
            }
        }
        Ok(WebhookRecord {
            url: checked.url.unwrap_or(self.url),
            events: checked.events.unwrap_or(self.events),
            description: checked.description.unwrap_or(self.description),
            enabled: self.enabled,
            created_ms: created.0,
            updated_ms: updated.0,
            secret: self.secret,
            cursor: self.cursor.unwrap_or_default(),
            // The retry schedule starts afresh: the next event is tried at
            // once, and a failing webhook gets its full 3 days again.
            failures: 0,
            failing_since_ms: None,
            next_attempt_ms: 0,
            next_log: 1,
        })
    }
}

/// `whsec_` and the unpadded base64url of 32 bytes, as webhooks make them.
fn is_webhook_secret(text: &str) -> bool {
    text.strip_prefix("whsec_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn check_tags(field: &str, tags: &[String]) -> Result<(), String> {
    if tags.len() > TAGS_MAX_ENTRIES {
        return Err(format!(
            "{field}: must have at most {TAGS_MAX_ENTRIES} entries"
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if !is_tag(tag) {
            return Err(format!(
                "{field}[{i}]: must be 1-64 characters of A-Z a-z 0-9 _ - . :"
            ));
        }
        if tags[..i].contains(tag) {
            return Err(format!("{field}[{i}]: {tag:?} is listed twice"));
        }
    }
    Ok(())
}

/// An RFC 3339 time to the millisecond, at or after 1970.
fn parse_time(field: &str, text: &str) -> Result<Millis, String> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{field}: {text:?} is not an RFC 3339 time"))?;
    let nanos = parsed.unix_timestamp_nanos();
    if nanos < 0 || nanos % 1_000_000 != 0 {
        return Err(format!(
            "{field}: must be at or after 1970 and exact to the millisecond"
        ));
    }
    u64::try_from(nanos / 1_000_000)
        .map(Millis)
        .map_err(|_| format!("{field}: out of range"))
}

/// 64 lower-case hex digits (a SHA-256), as export writes them.
fn parse_hash(field: &str, text: &str) -> Result<[u8; 32], String> {
    match device_key::from_hex(text) {
        Some(hash) if device_key::to_hex(&hash) == text => Ok(hash),
        _ => Err(format!(
            "{field}: must be 64 lower-case hex digits (a SHA-256)"
        )),
    }
}

/// Reads lines into one write transaction.
/// The tables stay open for the whole import: opening one per line would
/// look it up and write its root back every time.
struct Importer<'t> {
    devices: Table<'t, (&'static str, &'static str), &'static [u8]>,
    key_index: Table<'t, &'static [u8; 32], (&'static str, &'static str)>,
    last_seen: Table<'t, (&'static str, &'static str), u64>,
    events: Table<'t, (&'static str, &'static str), &'static [u8]>,
    /// Each device's last event so far: the chain's head, written into the
    /// device records at the end.
    last_events: std::collections::HashMap<(String, String), String>,
    /// Each tenant's last event id so far: events come in id order.
    last_ids: std::collections::HashMap<String, String>,
    webhooks: Table<'t, (&'static str, &'static str), &'static [u8]>,
    line: u64,
    /// The header's `tenant`: every line must belong to it.
    only: Option<String>,
    read: Transferred,
}

impl<'t> Importer<'t> {
    fn new(txn: &'t WriteTransaction) -> Result<Importer<'t>, StoreError> {
        Ok(Importer {
            devices: txn.open_table(DEVICES)?,
            key_index: txn.open_table(KEY_INDEX)?,
            last_seen: txn.open_table(LAST_SEEN)?,
            events: txn.open_table(EVENTS)?,
            last_events: Default::default(),
            last_ids: Default::default(),
            webhooks: txn.open_table(WEBHOOKS)?,
            line: 0,
            only: None,
            read: Transferred::default(),
        })
    }

    fn run<R: BufRead>(mut self, mut input: R) -> Result<Transferred, ImportError> {
        let mut buf = Vec::new();
        let mut ended = false;
        loop {
            buf.clear();
            let got = (&mut input)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| self.fail(format!("cannot read the input: {e}")))?;
            if got == 0 {
                break;
            }
            self.line += 1;
            if buf.len() > MAX_LINE_BYTES {
                return Err(self.fail(format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let text = std::str::from_utf8(&buf).map_err(|_| self.fail("not UTF-8".into()))?;
            if ended {
                return Err(self.fail("content after the end line".into()));
            }
            ended = match self.line_in(text) {
                Ok(ended) => ended,
                Err(Fault::Bad(reason)) => return Err(self.fail(reason)),
                Err(Fault::Embedded(e)) => return Err(ImportError::Embedded(e)),
            };
        }
        if self.line == 0 {
            return Err(ImportError::Line {
                line: 1,
                reason: format!("the input is empty: expected the {FORMAT} header"),
            });
        }
        if !ended {
            return Err(ImportError::Line {
                line: self.line + 1,
                reason: "the input ends without the end line: the export is incomplete".into(),
            });
        }
        self.link_devices().map_err(ImportError::Embedded)?;
        Ok(self.read)
    }

    /// Points each device record at its last event (the head of its chain).
    fn link_devices(&mut self) -> Result<(), StoreError> {
        for ((tenant, device), last) in std::mem::take(&mut self.last_events) {
            let key = (tenant.as_str(), device.as_str());
            let Some(value) = self.devices.get(key)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut record = DeviceRecord::decode(&value)?;
            record.last_event = Some(last);
            self.devices.insert(key, record.encode()?.as_slice())?;
        }
        Ok(())
    }

    fn fail(&self, reason: String) -> ImportError {
        ImportError::Line {
            line: self.line,
            reason,
        }
    }

    /// One line; true for the end line.
    fn line_in(&mut self, text: &str) -> Result<bool, Fault> {
        if text.trim().is_empty() {
            return Err("an empty line".into());
        }
        let probe: Probe = serde_json::from_str(text).map_err(json_error)?;
        let kind = probe.kind.as_deref().ok_or("no \"kind\"")?;
        if self.line == 1 {
            if kind != FORMAT {
                return Err(format!(
                    "not a devicehub export: the first line must be the {FORMAT} header"
                )
                .into());
            }
            // The version is checked before the fields, which may differ.
            match probe.version.as_ref().and_then(serde_json::Value::as_u64) {
                Some(VERSION) => {}
                Some(newer) => {
                    return Err(format!(
                        "format version {newer}: this build reads version {VERSION}"
                    )
                    .into())
                }
                None => return Err("version: must be a whole number".into()),
            }
            let header: Header = serde_json::from_str(text).map_err(json_error)?;
            if let Some(tenant) = &header.tenant {
                if !is_tenant_id(tenant) {
                    return Err(
                        "tenant: must be 1-128 characters without control characters".into(),
                    );
                }
            }
            parse_time("exportedAt", &header.exported_at)?;
            self.only = header.tenant;
            return Ok(false);
        }
        match kind {
            "device" => self.device(serde_json::from_str(text).map_err(json_error)?)?,
            "event" => self.event(serde_json::from_str(text).map_err(json_error)?)?,
            "webhook" => self.webhook(serde_json::from_str(text).map_err(json_error)?)?,
            "end" => {
                let end: EndLine = serde_json::from_str(text).map_err(json_error)?;
                let records = self.read.records();
                if end.records != records {
                    return Err(format!(
                        "the end line counts {} records, the file holds {records}",
                        end.records
                    )
                    .into());
                }
                return Ok(true);
            }
            FORMAT => return Err("a second header".into()),
            other => {
                return Err(format!(
                    "unknown kind {other:?} (this build reads device, event, webhook and end lines)"
                )
                .into())
            }
        }
        Ok(false)
    }

    fn check_tenant(&self, tenant: &str) -> Result<(), String> {
        match &self.only {
            Some(only) if only != tenant => Err(format!(
                "tenant: {tenant:?}, but the header says the export holds only {only:?}"
            )),
            _ => Ok(()),
        }
    }

    fn device(&mut self, line: DeviceLine) -> Result<(), Fault> {
        self.check_tenant(&line.tenant)?;
        let (tenant, id) = (line.tenant.clone(), line.id.clone());
        let Checked {
            record,
            last_seen,
            hashes,
        } = line.into_record()?;
        let key = (tenant.as_str(), id.as_str());
        if self.devices.get(key)?.is_some() {
            return Err(format!("device {id} of tenant {tenant:?} appears twice").into());
        }
        for hash in &hashes {
            if let Some(owner) = self.key_index.get(hash)? {
                let (_, other) = owner.value();
                return Err(format!(
                    "key hash {} is already a key of device {other}",
                    device_key::to_hex(hash)
                )
                .into());
            }
        }
        for hash in &hashes {
            self.key_index.insert(hash, key)?;
        }
        let encoded = record.encode()?;
        self.devices.insert(key, encoded.as_slice())?;
        if let Some(at) = last_seen {
            self.last_seen.insert(key, at.0)?;
        }
        self.read.devices += 1;
        Ok(())
    }

    fn event(&mut self, line: EventLine<'_>) -> Result<(), Fault> {
        self.check_tenant(&line.tenant)?;
        if !is_tenant_id(&line.tenant) {
            return Err("tenant: must be 1-128 characters without control characters".into());
        }
        let tenant = line.tenant.as_str();
        if events::id::parse(&line.id).is_none() {
            return Err(format!("id: {:?} is not an event id (evt_ + ULID)", line.id).into());
        }
        let json = line.event.get();
        let head: EventHead =
            serde_json::from_str(json).map_err(|e| format!("event: {}", json_error(e)))?;
        if head.id != line.id {
            return Err(format!("event.id: {:?} differs from id {:?}", head.id, line.id).into());
        }
        let kind = EventType::parse(&head.kind)
            .ok_or_else(|| format!("event.type: {:?} is not an event type", head.kind))?;
        parse_time("event.createdAt", &head.created_at)?;
        if head.data.object.id != head.device_id {
            return Err("event.data.object.id: differs from event.deviceId".into());
        }
        let device = head.device_id.as_str();
        if self.devices.get((tenant, device))?.is_none() {
            return Err(format!(
                "event.deviceId: device {device} of tenant {tenant:?} is not on an earlier line"
            )
            .into());
        }
        let key = (tenant, line.id.as_str());
        if self.events.get(key)?.is_some() {
            return Err(format!("event {} of tenant {tenant:?} appears twice", line.id).into());
        }
        if self
            .last_ids
            .get(tenant)
            .is_some_and(|last| last.as_str() >= line.id.as_str())
        {
            return Err(format!(
                "event {}: a tenant's events must come in id order (as exported)",
                line.id
            )
            .into());
        }
        let chain = (tenant.to_string(), device.to_string());
        let previous = self.last_events.get(&chain).map(String::as_str);
        let mut value = super::events::head(kind, previous, json.len())?;
        value.extend_from_slice(json.as_bytes());
        self.events.insert(key, value.as_slice())?;
        self.last_events.insert(chain, line.id.clone());
        self.last_ids.insert(tenant.to_string(), line.id.clone());
        self.read.events += 1;
        Ok(())
    }

    fn webhook(&mut self, line: WebhookLine) -> Result<(), Fault> {
        self.check_tenant(&line.tenant)?;
        let (tenant, id) = (line.tenant.clone(), line.id.clone());
        let record = line.into_record()?;
        let held = self
            .webhooks
            .range::<(&str, &str)>((tenant.as_str(), "")..=(tenant.as_str(), ID_MAX))?
            .count() as u64;
        if held >= webhooks::MAX_PER_TENANT {
            return Err(format!(
                "tenant {tenant:?} has more than {} webhooks",
                webhooks::MAX_PER_TENANT
            )
            .into());
        }
        let key = (tenant.as_str(), id.as_str());
        if self.webhooks.get(key)?.is_some() {
            return Err(format!("webhook {id} of tenant {tenant:?} appears twice").into());
        }
        self.webhooks.insert(key, record.encode()?.as_slice())?;
        self.read.webhooks += 1;
        Ok(())
    }
}

/// serde_json's message without its position (the line is always 1; the
/// importer gives the file's line).
fn json_error(e: serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{message} (column {})", e.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests;
