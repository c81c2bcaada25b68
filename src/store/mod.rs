//! The embedded database: whole operations, each in one redb transaction.
//! Reads block briefly: point reads run in place on the async worker, lists
//! on actix's blocking pool.
//! Writes are async: they go to the group-commit writer (`commit.rs`) and
//! return once the commit holding them is on disk (`Durability::Immediate`),
//! so a caller that answers 2xx afterwards has its change on disk.

mod backend;
pub mod backup;
mod bytes;
mod commit;
mod events;
pub mod export;
mod file;
mod handle;
mod indexes;
mod last_seen;
mod list;
pub mod postgres;
mod reads;
mod record;
pub mod tables;
mod wal;
mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction,
};

pub use backend::{DeviceList, Store};
pub use events::{EventPage, EventQuery, StoredEvent};
pub use indexes::StatusCounts;
pub use list::{DeviceCursor, ListQuery, Order, Page};
pub use webhooks::{Attempt, Next, Recorded as DeliveryRecorded, Scheduled, DELIVERIES_KEPT};

use serde::{Deserialize, Serialize};

use crate::auth::device_key::{self, KeyHash};
use crate::devices::{id, Device, DevicePatch, DeviceStatus, IfMatch, Millis, NewDevice};
use crate::error::{ApiError, StartupError};
use crate::events::{EventBus, EventType};
use crate::idempotency::{self, Fingerprint, KeyId};
use crate::webhooks::{Delivery, Webhook, WebhookPatch};
use commit::{Shared, Writer};
use events::Recorded;
use handle::DbHandle;
use indexes::Indexed;
use last_seen::LastSeen;
use tables::{
    DEVICES, EVENTS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, ID_MAX, INDEXES_OMITTED_KEY, KEY_INDEX,
    LAST_SEEN, LOCATION_INDEX, META, NAME_INDEX, SCHEMA_VERSION, SCHEMA_VERSION_KEY, STATUS_INDEX,
    TENANT_COUNTS, WEBHOOKS, WEBHOOK_DELIVERIES,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no such device")]
    NotFound,
    #[error("the device is revoked")]
    Revoked,
    #[error("the If-Match precondition failed")]
    PreconditionFailed,
    #[error("the tenant has reached its device quota of {0}")]
    QuotaExceeded(u64),
    /// Another instance kept an answer under the same `Idempotency-Key`
    /// while this request ran (PostgreSQL: the claim of a key is per
    /// instance, the kept answer is shared).
    #[error("a request with this Idempotency-Key ran at the same time")]
    IdempotencyRace,
    #[error("the tenant has reached its webhook quota of {0}")]
    WebhookQuotaExceeded(u64),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An earlier I/O failure left the open database refusing all work.
    #[error("storage: a previous I/O failure needs the database reopened")]
    Latched,
    #[error("storage: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::PreviousIo => StoreError::Latched,
            redb::Error::Io(_) => StoreError::Unavailable(e.to_string()),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Revoked => ApiError::DeviceRevokedConflict,
            StoreError::PreconditionFailed => ApiError::PreconditionFailed,
            StoreError::QuotaExceeded(quota) => ApiError::QuotaExceeded(quota),
            StoreError::IdempotencyRace => ApiError::IdempotencyConflict(
                "a request with this Idempotency-Key is still running",
            ),
            StoreError::WebhookQuotaExceeded(quota) => ApiError::WebhookQuotaExceeded(quota),
            StoreError::Unavailable(detail) => {
                log::warn!("storage unavailable: {detail}");
                ApiError::StorageUnavailable
            }
            StoreError::Latched => ApiError::StorageUnavailable,
            StoreError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// A device as stored (value of `DEVICES`; its encodings: `record.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeviceRecord {
    name: String,
    status: DeviceStatus,
    location_ids: Vec<String>,
    pim_enabled: bool,
    pim_segment_ids: Vec<String>,
    created_ms: u64,
    updated_ms: u64,
    version: u64,
    /// Hex SHA-256 of the current API key.
    key_hash: String,
    /// Hex SHA-256 of the key replaced by the last rotation, while it has a
    /// grace period (API.md §3), and when that ends (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_key_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev_key_expires_ms: Option<u64>,
    /// The id of the device's last event: the head of its chain of events
    /// (`store/events.rs`). Absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_event: Option<String>,
}

/// A device's keys as stored: the current one and, after a rotation with a
/// grace period, the previous one with the end of its grace (Unix ms).
struct Keys {
    current: String,
    previous: Option<(String, u64)>,
}

impl DeviceRecord {
    fn keys(&self) -> Keys {
        Keys {
            current: self.key_hash.clone(),
            previous: self.prev_key_hash.clone().zip(self.prev_key_expires_ms),
        }
    }

    /// Whether `hash` is this device's key at `now`: `Some(false)` for the
    /// current key, `Some(true)` for the previous one within its grace.
    fn key_status(&self, hash: &KeyHash, now: Millis) -> Option<bool> {
        let hex = device_key::to_hex(hash);
        if self.key_hash == hex {
            return Some(false);
        }
        let in_grace = self.prev_key_hash.as_deref() == Some(hex.as_str())
            && self.prev_key_expires_ms.is_some_and(|end| now.0 < end);
        in_grace.then_some(true)
    }

    fn into_device(self, id: &str, last_seen: Option<Millis>) -> Device {
        Device {
            id: id.to_string(),
            name: self.name,
            status: self.status,
            location_ids: self.location_ids,
            pim_enabled: self.pim_enabled,
            pim_segment_ids: self.pim_segment_ids,
            created_at: Millis(self.created_ms),
            updated_at: Millis(self.updated_ms),
            last_seen_at: last_seen,
            version: self.version,
        }
    }

    fn from_device(device: &Device, keys: Keys) -> DeviceRecord {
        let (prev_key_hash, prev_key_expires_ms) = keys.previous.unzip();
        DeviceRecord {
            name: device.name.clone(),
            status: device.status,
            location_ids: device.location_ids.clone(),
            pim_enabled: device.pim_enabled,
            pim_segment_ids: device.pim_segment_ids.clone(),
            created_ms: device.created_at.0,
            updated_ms: device.updated_at.0,
            version: device.version,
            key_hash: keys.current,
            prev_key_hash,
            prev_key_expires_ms,
            last_event: None,
        }
    }
}

/// A device after a read-modify-write, and whether it changed (and so has
/// an event).
struct Modified {
    device: Device,
    grace_end: Option<Millis>,
    changed: bool,
}

/// What a read-modify-write did to a device.
enum Change {
    None,
    Fields,
    /// A new key; the old one keeps working for this many milliseconds.
    Key(KeyHash, u64),
}

/// Seals the answer to a write once the write has made the device (and,
/// for a rotation, knows when the old key's grace ends).
pub type Sealer = Box<dyn FnOnce(&Device, Option<Millis>) -> Result<Vec<u8>, String> + Send>;

/// An `Idempotency-Key`'s answer to keep with the write it answers.
pub struct Remember {
    pub id: KeyId,
    pub fingerprint: Fingerprint,
    pub seal: Sealer,
}

impl Remember {
    /// The sealed answer for the device a write made, in either store.
    fn sealed(self, device: &Device, grace_end: Option<Millis>) -> StoreResult<Vec<u8>> {
        (self.seal)(device, grace_end)
            .map_err(|e| StoreError::Internal(format!("sealing an idempotent answer: {e}")))
    }
}

/// An answer kept for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub stored_at: Millis,
    pub fingerprint: Fingerprint,
    pub sealed: Vec<u8>,
}

impl Remembered {
    fn encode(&self) -> Vec<u8> {
        [
            self.stored_at.0.to_be_bytes().as_slice(),
            &self.fingerprint,
            &self.sealed,
        ]
        .concat()
    }

    fn decode(bytes: &[u8]) -> StoreResult<Remembered> {
        if bytes.len() < 40 {
            return Err(StoreError::Internal("a short idempotency record".into()));
        }
        let (at, rest) = bytes.split_at(8);
        let (fingerprint, sealed) = rest.split_at(32);
        Ok(Remembered {
            stored_at: Millis(u64::from_be_bytes(at.try_into().unwrap_or_default())),
            fingerprint: fingerprint.try_into().unwrap_or_default(),
            sealed: sealed.to_vec(),
        })
    }
}

/// At most this many expired records go in one housekeeping commit.
const PRUNE_BATCH: usize = 1_000;

/// Who makes a change: the tenant, and the token's `sub` to name as the
/// event's actor. A bare tenant id is a change without an actor.
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    pub tenant: &'a str,
    pub actor: Option<&'a str>,
}

impl<'a> From<&'a str> for Author<'a> {
    fn from(tenant: &'a str) -> Self {
        Author {
            tenant,
            actor: None,
        }
    }
}

impl<'a> From<&'a String> for Author<'a> {
    fn from(tenant: &'a String) -> Self {
        Author::from(tenant.as_str())
    }
}

/// How long events are kept unless `set_event_retention` says otherwise: 90 days.
pub const DEFAULT_EVENT_RETENTION_MS: u64 = 90 * 86_400 * 1000;

/// The device a key belongs to.
#[derive(Debug)]
pub struct KeyOwner {
    pub tenant: String,
    pub device: Device,
    /// The key is the previous one, still within its grace period.
    pub deprecated: bool,
}

pub struct Embedded {
    inner: Arc<Inner>,
    /// How many batches the write-ahead log held that opening the file
    /// applied (`wal.rs`): a server stopped without its last checkpoint.
    replayed: u64,
    writer: Writer,
}

/// What readers and the writer thread share.
struct Inner {
    db: DbHandle,
    seen: LastSeen,
    /// Wakes long polls after a commit that added events.
    bus: EventBus,
    /// Each tenant's last event id, so that recording one reads no range.
    event_ids: events::LastIds,
    /// `events.retention`, in milliseconds.
    event_retention_ms: AtomicU64,
    /// The snapshot point reads share between commits.
    reads: reads::Reads,
}

impl Embedded {
    /// Opens (or creates) the database file, refusing one of another layout
    /// version, a damaged one, or one another process holds.
    pub fn open(path: &Path) -> Result<Embedded, StartupError> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StartupError::new(format!(
                    "storage.path: cannot create the folder {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let (db, durable) = file::create(path).map_err(|e| {
            StartupError::new(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    format!("storage.path: {shown} is locked by another running devicehub process")
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                    format!("storage.path: cannot open {shown}: {io}")
                }
                other => {
                    format!("storage.path: {shown} is not a readable devicehub database ({other})")
                }
            })
        })?;
        let inner = Arc::new(Inner {
            db: DbHandle::new(path.to_path_buf(), db, durable),
            seen: LastSeen::default(),
            bus: EventBus::default(),
            event_ids: events::LastIds::default(),
            event_retention_ms: AtomicU64::new(DEFAULT_EVENT_RETENTION_MS),
            reads: reads::Reads::new(),
        });
        inner
            .check_schema()
            .map_err(|e| StartupError::new(format!("storage.path: {shown}: {e}")))?;
        // What the log holds after the file's last checkpoint is applied
        // before anything is read or written (`wal.rs`).
        let replayed = inner.db.start_log().map_err(|e| {
            StartupError::new(format!("storage.path: {shown}: write-ahead log: {e}"))
        })?;
        let writer = Writer::start(inner.clone())
            .map_err(|e| StartupError::new(format!("cannot start the writer thread: {e}")))?;
        Ok(Embedded {
            inner,
            writer,
            replayed,
        })
    }

    /// How many logged batches opening the file applied.
    pub fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Whether no device of any tenant is stored.
    pub fn is_empty(&self) -> StoreResult<bool> {
        self.inner
            .db
            .read(|txn| Ok(txn.open_table(DEVICES)?.is_empty()?))
    }

    /// A list over one snapshot of the store, read a batch at a time.
    pub fn cursor(&self, tenant: &str, query: ListQuery) -> StoreResult<DeviceCursor> {
        let (db, txn) = self.inner.db.begin_read(|txn| {
            txn.open_table(DEVICES)?;
            txn.open_table(LAST_SEEN)?;
            Ok(())
        })?;
        Ok(DeviceCursor::new(
            self.inner.clone(),
            db,
            txn,
            tenant,
            query,
        ))
    }

    /// A whole list, or one page when `query.limit` is set.
    pub fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page> {
        let limit = query.limit.unwrap_or(usize::MAX - 1);
        self.cursor(tenant, query.clone())?.page(limit)
    }

    /// The tenant's devices counted by status: kept in every write, so this
    /// is three point reads, never a scan.
    pub fn stats(&self, tenant: &str) -> StoreResult<StatusCounts> {
        self.read(|snapshot| indexes::counts(snapshot.counts()?, tenant))
    }

    /// Every tenant's devices counted by status.
    pub fn all_stats(&self) -> StoreResult<StatusCounts> {
        self.inner.db.read(indexes::all_counts)
    }

    /// Checks that the key, status and location indexes and the counts
    /// agree with the devices.
    pub fn verify_indexes(&self) -> StoreResult<()> {
        self.inner.db.read(indexes::verify)
    }

    /// Runs a point read on the snapshot shared since the last commit
    /// (`reads.rs`); after a latched failure, once more on a new one.
    fn read<T>(&self, op: impl Fn(&reads::Snapshot) -> StoreResult<T>) -> StoreResult<T> {
        let reads = &self.inner.reads;
        let first = op(&*reads.snapshot(&self.inner.db)?);
        // The snapshot is dropped by now: a latched handle can be reopened
        // once no snapshot holds it.
        match first {
            Err(StoreError::Latched) => {
                // As `DbHandle::run` would: reopen the file, then run the
                // read once more, on a snapshot of its own.
                reads.changed();
                self.inner
                    .db
                    .read_on_handle(|db, txn| op(&reads::Snapshot::new(db.clone(), txn)))
            }
            other => other,
        }
    }

    pub fn get(&self, tenant: &str, device_id: &str) -> StoreResult<Device> {
        self.read(|snapshot| {
            let record = match snapshot.devices()?.get((tenant, device_id))? {
                Some(v) => DeviceRecord::decode(v.value())?,
                None => return Err(StoreError::NotFound),
            };
            let last_seen = self
                .inner
                .last_seen(snapshot.last_seen()?, tenant, device_id)?;
            Ok(record.into_device(device_id, last_seen))
        })
    }

    /// The device a key belongs to at `now`, with its tenant: its current
    /// key, or the previous one within its grace period (`deprecated`).
    pub fn find_by_key(&self, hash: &KeyHash, now: Millis) -> StoreResult<Option<KeyOwner>> {
        self.read(|snapshot| {
            let Some(entry) = snapshot.key_index()?.get(hash)? else {
                return Ok(None);
            };
            let (tenant, device_id) = entry.value();
            let Some(value) = snapshot.devices()?.get((tenant, device_id))? else {
                return Err(StoreError::Internal(format!(
                    "key index names a missing device {device_id}"
                )));
            };
            let record = DeviceRecord::decode(value.value())?;
            let Some(deprecated) = record.key_status(hash, now) else {
                return Ok(None);
            };
            let last_seen = self
                .inner
                .last_seen(snapshot.last_seen()?, tenant, device_id)?;
            Ok(Some(KeyOwner {
                tenant: tenant.to_string(),
                device: record.into_device(device_id, last_seen),
                deprecated,
            }))
        })
    }

    /// Registers a device whose key hashes to `key_hash`. Its id is assigned
    /// inside the write, after every id already committed for the tenant.
    /// With `quota`, a tenant that already has that many devices (revoked
    /// ones included) gets `QuotaExceeded` and nothing is written.
    pub async fn create<'a>(
        &self,
        author: impl Into<Author<'a>>,
        new: NewDevice,
        key_hash: KeyHash,
        now: Millis,
        quota: Option<u64>,
        remember: Option<Remember>,
    ) -> StoreResult<Device> {
        let author = author.into();
        let (tenant, actor) = owned(author);
        let device = self
            .writer
            .submit_shared(move |inner, shared| {
                let author = Author {
                    tenant: &tenant,
                    actor: actor.as_deref(),
                };
                let device = inner.create_in(shared, author, &new, key_hash, now, quota)?;
                if let Some(remember) = remember {
                    let (txn, _) = shared.tables()?;
                    remember_in(txn, &tenant, remember, &device, None, now)?;
                }
                Ok(device)
            })
            .await?;
        self.inner
            .bus
            .notify(author.tenant, &[(EventType::Created, &device.id)]);
        Ok(device)
    }

    /// A page of the tenant's events (API.md §7), oldest first.
    pub fn events(&self, tenant: &str, query: &EventQuery) -> StoreResult<EventPage> {
        self.inner.db.read(|txn| events::page(txn, tenant, query))
    }

    /// Whether the tenant has any event after `starting_after` (after none:
    /// any at all). A point read, cheap enough for an async worker: a long
    /// poll that is caught up parks without a trip to the blocking pool.
    pub fn has_events_after(
        &self,
        tenant: &str,
        starting_after: Option<&str>,
    ) -> StoreResult<bool> {
        let after = starting_after.unwrap_or("");
        self.inner
            .db
            .read(|txn| events::any_after(txn, tenant, after))
    }

    /// What wakes long polls on the event feed.
    pub fn event_bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// Events older than this are deleted in the background (`events.retention`).
    pub fn set_event_retention(&self, keep: std::time::Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        self.inner.event_retention_ms.store(ms, Ordering::Relaxed);
        self.writer.housekeep_within(keep / 4);
    }

    /// The answer kept for an `Idempotency-Key`, unless it has expired.
    pub fn remembered(
        &self,
        tenant: &str,
        id: &KeyId,
        now: Millis,
    ) -> StoreResult<Option<Remembered>> {
        self.inner.db.read(|txn| {
            let table = txn.open_table(IDEMPOTENCY)?;
            let Some(value) = table.get((tenant, id))? else {
                return Ok(None);
            };
            let record = Remembered::decode(value.value())?;
            let live = now.0 < record.stored_at.0.saturating_add(idempotency::KEEP_MS);
            Ok(live.then_some(record))
        })
    }

    /// Deletes what has expired (idempotency records older than 24 h, events
    /// older than `events.retention`), at most `PRUNE_BATCH` of each at a
    /// time; the writer also does this by itself every few minutes. Returns
    /// how many went.
    pub async fn prune(&self, now: Millis) -> StoreResult<usize> {
        self.writer
            .submit(move |inner, txn| inner.housekeeping(txn, now))
            .await
    }

    /// Applies `patch` unless the device is revoked (409) or `if_match` fails
    /// (412). A patch that changes nothing writes nothing.
    pub async fn update<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        patch: DevicePatch,
        if_match: Option<IfMatch>,
        now: Millis,
    ) -> StoreResult<Device> {
        let event = (author.into(), EventType::Updated);
        self.modify(event, device_id, now, move |device| {
            patched(device, &patch, if_match)
        })
        .await
        .map(|(device, _)| device)
    }

    /// Marks the device revoked; revoking it again changes nothing.
    pub async fn revoke<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        now: Millis,
    ) -> StoreResult<Device> {
        let event = (author.into(), EventType::Revoked);
        self.modify(event, device_id, now, revoked)
            .await
            .map(|(device, _)| device)
    }

    /// Replaces the device's key. The old one stops working in the same
    /// commit, or keeps working for `grace_seconds` beside the new one; a
    /// key older than that stops at once. Returns when the old key's grace
    /// ends (None without one).
    pub async fn rotate_key<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        new_hash: KeyHash,
        grace_seconds: u64,
        now: Millis,
        remember: Option<Remember>,
    ) -> StoreResult<(Device, Option<Millis>)> {
        let grace_ms = grace_ms(grace_seconds);
        let author = author.into();
        let (tenant, actor) = owned(author);
        let device_id = device_id.to_string();
        let rotated = self
            .writer
            .submit_shared(move |inner, shared| {
                let event = (EventType::KeyRotated, actor.as_deref());
                let modified =
                    inner.modify_in(shared, &tenant, &device_id, now, event, |device| {
                        if device.status == DeviceStatus::Revoked {
                            return Err(StoreError::Revoked);
                        }
                        Ok(Change::Key(new_hash, grace_ms))
                    })?;
                if let Some(remember) = remember {
                    let (device, grace_end) = (&modified.device, modified.grace_end);
                    let (txn, _) = shared.tables()?;
                    remember_in(txn, &tenant, remember, device, grace_end, now)?;
                }
                Ok(modified)
            })
            .await?;
        self.inner.bus.notify(
            author.tenant,
            &[(EventType::KeyRotated, &rotated.device.id)],
        );
        Ok((rotated.device, rotated.grace_end))
    }

    async fn modify<F>(
        &self,
        (author, kind): (Author<'_>, EventType),
        device_id: &str,
        now: Millis,
        change: F,
    ) -> StoreResult<(Device, Option<Millis>)>
    where
        F: FnOnce(&mut Device) -> StoreResult<Change> + Send + 'static,
    {
        let (tenant, actor) = owned(author);
        let device_id = device_id.to_string();
        let modified = self
            .writer
            .submit_shared(move |inner, shared| {
                let event = (kind, actor.as_deref());
                inner.modify_in(shared, &tenant, &device_id, now, event, change)
            })
            .await?;
        if modified.changed {
            self.inner
                .bus
                .notify(author.tenant, &[(kind, &modified.device.id)]);
        }
        Ok((modified.device, modified.grace_end))
    }

    /// Records a check-in: shown at once, written to disk at most once a
    /// minute per device, with whatever commit comes next (never a commit of
    /// its own per call). Never changes `updatedAt` or the ETag. A check-in
    /// that cannot be written stays in memory and is written with a later one:
    /// the device's call still succeeds.
    pub fn touch(&self, tenant: &str, device_id: &str, now: Millis) -> Millis {
        let shown = self.inner.seen.record(tenant, device_id, now);
        if let Some(due) = shown.persist_due {
            let key = (tenant.to_string(), device_id.to_string());
            let inner = self.inner.clone();
            let failed_key = key.clone();
            let queued = self.writer.enqueue(
                move |_, shared| {
                    let (_, hot) = shared.tables()?;
                    hot.last_seen
                        .insert((key.0.as_str(), key.1.as_str()), due.0)?;
                    Ok(())
                },
                move |written: StoreResult<()>| {
                    if let Err(e) = written {
                        let (tenant, device_id) = failed_key;
                        log::warn!("check-in of device {device_id} kept in memory only: {e}");
                        inner.seen.persist_failed(&tenant, &device_id);
                    }
                },
            );
            if queued.is_err() {
                self.inner.seen.persist_failed(tenant, device_id);
            }
        }
        shown.at
    }

    /// Adds a webhook (at most `MAX_PER_TENANT` per tenant). It gets the
    /// events committed after it.
    pub async fn create_webhook(
        &self,
        tenant: &str,
        new: WebhookPatch,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        let owned = tenant.to_string();
        let hook = self
            .writer
            .submit(move |_, txn| webhooks::create(txn, &owned, &new, secret, now))
            .await?;
        self.inner.bus.webhooks_changed();
        Ok(hook)
    }

    /// The tenant's webhooks, oldest first.
    pub fn webhooks(&self, tenant: &str) -> StoreResult<Vec<Webhook>> {
        self.inner.db.read(|txn| webhooks::list(txn, tenant))
    }

    pub fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Webhook> {
        self.inner.db.read(|txn| webhooks::read(txn, tenant, id))
    }

    /// Applies a PATCH; enabling a webhook again resumes its deliveries.
    pub async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        patch: WebhookPatch,
        now: Millis,
    ) -> StoreResult<Webhook> {
        let (owned, id) = (tenant.to_string(), id.to_string());
        let hook = self
            .writer
            .submit(move |_, txn| webhooks::update(txn, &owned, &id, &patch, now))
            .await?;
        self.inner.bus.webhooks_changed();
        Ok(hook)
    }

    /// Replaces the signing secret, from the next attempt on.
    pub async fn set_webhook_secret(
        &self,
        tenant: &str,
        id: &str,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.writer
            .submit(move |_, txn| webhooks::set_secret(txn, &tenant, &id, secret, now))
            .await
    }

    /// Deletes a webhook and its deliveries log; nothing more is sent to it.
    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<()> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.writer
            .submit(move |_, txn| webhooks::delete(txn, &tenant, &id))
            .await
    }

    /// A webhook's newest attempts, newest first.
    pub fn webhook_deliveries(&self, tenant: &str, id: &str) -> StoreResult<Vec<Delivery>> {
        self.inner
            .db
            .read(|txn| webhooks::deliveries(txn, tenant, id))
    }

    /// Every enabled webhook, for the delivery worker.
    pub fn webhook_schedule(&self) -> StoreResult<Vec<Scheduled>> {
        self.inner.db.read(webhooks::schedule)
    }

    /// What to send a webhook next (see `webhooks::next`).
    pub fn next_delivery(
        &self,
        tenant: &str,
        id: &str,
        read_from: Option<&str>,
        now: Millis,
    ) -> StoreResult<Next> {
        self.inner
            .db
            .read(|txn| webhooks::next(txn, tenant, id, read_from, now))
    }

    /// Records an attempt, in one commit with the cursor it moves.
    pub async fn record_delivery(
        &self,
        tenant: &str,
        id: &str,
        attempt: Attempt,
        delivery: Delivery,
        first_retry: std::time::Duration,
        now: Millis,
    ) -> StoreResult<DeliveryRecorded> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.writer
            .submit(move |_, txn| {
                webhooks::record(txn, &tenant, &id, &attempt, &delivery, first_retry, now)
            })
            .await
    }

    /// The URL and current secret of a webhook, for a test delivery.
    pub fn webhook_test_target(&self, tenant: &str, id: &str) -> StoreResult<(String, String)> {
        self.inner
            .db
            .read(|txn| webhooks::test_target(txn, tenant, id))
    }

    /// Adds a test delivery to a webhook's log (its queue is untouched).
    pub async fn log_test_delivery(
        &self,
        tenant: &str,
        id: &str,
        delivery: Delivery,
    ) -> StoreResult<()> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.writer
            .submit(move |_, txn| webhooks::log_test(txn, &tenant, &id, &delivery))
            .await
    }

    /// Every (tenant, device id, key hash) kept, for consistency checks.
    pub fn key_index_entries(&self) -> StoreResult<Vec<(String, String, KeyHash)>> {
        self.inner.db.read(|txn| {
            let index = txn.open_table(KEY_INDEX)?;
            let mut out = Vec::new();
            for entry in index.iter()? {
                let (hash, owner) = entry?;
                let (tenant, device) = owner.value();
                out.push((tenant.to_string(), device.to_string(), *hash.value()));
            }
            Ok(out)
        })
    }
}

/// The id of a device's last event (None for an unknown device, or one
/// without events).
fn device_last_event(
    txn: &ReadTransaction,
    tenant: &str,
    device_id: &str,
) -> StoreResult<Option<String>> {
    let devices = txn.open_table(DEVICES)?;
    let Some(value) = devices.get((tenant, device_id))? else {
        return Ok(None);
    };
    Ok(DeviceRecord::decode(value.value())?.last_event)
}

/// An author's tenant and actor, owned, for a job on the writer thread.
fn owned(author: Author<'_>) -> (String, Option<String>) {
    (author.tenant.to_string(), author.actor.map(str::to_string))
}

/// Keeps an `Idempotency-Key`'s answer in the write it answers.
fn remember_in(
    txn: &wal::LogTxn<'_>,
    tenant: &str,
    remember: Remember,
    device: &Device,
    grace_end: Option<Millis>,
    now: Millis,
) -> StoreResult<()> {
    let (id, fingerprint) = (remember.id, remember.fingerprint);
    let sealed = remember.sealed(device, grace_end)?;
    let mut table = txn.open_table(IDEMPOTENCY)?;
    let mut expiry = txn.open_table(IDEMPOTENCY_EXPIRY)?;
    // A record past its 24 h may still be here: this one replaces it.
    if let Some(old) = table.get((tenant, &id))? {
        let old = Remembered::decode(old.value())?;
        expiry.remove((old.stored_at.0, tenant, &id))?;
    }
    let record = Remembered {
        stored_at: now,
        fingerprint,
        sealed,
    };
    table.insert((tenant, &id), record.encode().as_slice())?;
    expiry.insert((now.0, tenant, &id), ())?;
    Ok(())
}

impl Inner {
    /// Deletes expired records, at most `PRUNE_BATCH` of each kind per call.
    fn housekeeping(&self, txn: &WriteTransaction, now: Millis) -> StoreResult<usize> {
        let keep = self.event_retention_ms.load(Ordering::Relaxed);
        let events = events::prune(txn, now.0.saturating_sub(keep), PRUNE_BATCH)?;
        Ok(events + self.prune_idempotency(txn, now)?)
    }

    fn prune_idempotency(&self, txn: &WriteTransaction, now: Millis) -> StoreResult<usize> {
        let cutoff = now.0.saturating_sub(idempotency::KEEP_MS);
        let mut expiry = txn.open_table(IDEMPOTENCY_EXPIRY)?;
        let mut table = txn.open_table(IDEMPOTENCY)?;
        let mut due = Vec::new();
        for entry in expiry.range::<(u64, &str, &[u8; 32])>(..(cutoff, "", &[0u8; 32]))? {
            let (key, _) = entry?;
            let (at, tenant, id) = key.value();
            due.push((at, tenant.to_string(), *id));
            if due.len() == PRUNE_BATCH {
                break;
            }
        }
        for (at, tenant, id) in &due {
            expiry.remove((*at, tenant.as_str(), id))?;
            table.remove((tenant.as_str(), id))?;
        }
        Ok(due.len())
    }

    fn check_schema(&self) -> StoreResult<()> {
        self.db.run(|db| {
            let txn = write_txn(db)?;
            {
                let mut meta = txn.open_table(META)?;
                let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
                match found {
                    Some(SCHEMA_VERSION) => {}
                    Some(1) => {
                        // The first release's layout: build the indexes and
                        // counts once, in this one transaction.
                        let indexed = indexes::rebuild(&txn, indexes::Keys::Kept)?;
                        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                        log::info!(
                            "storage: upgraded the layout from version 1 to {SCHEMA_VERSION} ({indexed} devices indexed)"
                        );
                    }
                    Some(old @ (2 | 3)) => {
                        // Layout 2 had no events: the event tables start
                        // empty (opened below), so the feed starts here.
                        // Neither 2 nor 3 had the name index: built once,
                        // in this one transaction.
                        let named = indexes::rebuild_names(&txn)?;
                        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                        log::info!(
                            "storage: upgraded the layout from version {old} to {SCHEMA_VERSION} ({named} device names indexed)"
                        );
                    }
                    Some(4) => {
                        // Layout 4 differs only in how device records are
                        // encoded: its JSON records still read, and each is
                        // rewritten in the binary form when its device
                        // next changes (`record.rs`).
                        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                        log::info!("storage: upgraded the layout from version 4 to {SCHEMA_VERSION}");
                    }
                    Some(other) => {
                        return Err(StoreError::Internal(format!(
                            "layout version {other} is not supported by this build (it reads version {SCHEMA_VERSION})"
                        )))
                    }
                    None => {
                        meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                    }
                }
                if meta.get(INDEXES_OMITTED_KEY)?.is_some() {
                    // A snapshot (restored): its indexes and counts are
                    // built from its devices, once, in this transaction.
                    let indexed = indexes::rebuild(&txn, indexes::Keys::Built)?;
                    meta.remove(INDEXES_OMITTED_KEY)?;
                    log::info!("storage: built the indexes of a snapshot ({indexed} devices)");
                }
                txn.open_table(DEVICES)?;
                txn.open_table(KEY_INDEX)?;
                txn.open_table(LAST_SEEN)?;
                txn.open_table(STATUS_INDEX)?;
                txn.open_table(LOCATION_INDEX)?;
                txn.open_table(NAME_INDEX)?;
                txn.open_table(TENANT_COUNTS)?;
                txn.open_table(IDEMPOTENCY)?;
                txn.open_table(IDEMPOTENCY_EXPIRY)?;
                txn.open_table(EVENTS)?;
                txn.open_table(WEBHOOKS)?;
                txn.open_table(WEBHOOK_DELIVERIES)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The check-in time to show: the newer of memory and `stored` (the
    /// `LAST_SEEN` table, opened in a read or a write transaction).
    fn last_seen(
        &self,
        stored: &impl ReadableTable<(&'static str, &'static str), u64>,
        tenant: &str,
        device_id: &str,
    ) -> StoreResult<Option<Millis>> {
        let on_disk = stored.get((tenant, device_id))?.map(|v| Millis(v.value()));
        Ok(self.seen.get(tenant, device_id).max(on_disk))
    }

    fn create_in(
        &self,
        shared: &mut Shared<'_>,
        Author { tenant, actor }: Author<'_>,
        new: &NewDevice,
        key_hash: KeyHash,
        now: Millis,
        quota: Option<u64>,
    ) -> StoreResult<Device> {
        let (txn, hot) = shared.tables()?;
        if let Some(quota) = quota {
            let held = indexes::counts(&*txn.open_table(TENANT_COUNTS)?, tenant)?.total();
            if held >= quota {
                return Err(StoreError::QuotaExceeded(quota));
            }
        }
        let ulid = next_ulid(&*hot.devices, tenant, now, id::PREFIX)?;
        let device = registered(id::format(ulid), new, now);
        let keys = Keys {
            current: device_key::to_hex(&key_hash),
            previous: None,
        };
        let what = Recorded {
            kind: EventType::Created,
            actor,
            device: &device,
            before: None,
            device_previous: None,
        };
        let mut record = DeviceRecord::from_device(&device, keys);
        let event = events::record(&mut hot.events, tenant, what, now, &self.event_ids)?;
        record.last_event = Some(event);
        hot.devices
            .insert((tenant, device.id.as_str()), record.encode()?.as_slice())?;
        txn.open_table(KEY_INDEX)?
            .insert(&key_hash, (tenant, device.id.as_str()))?;
        indexes::insert(
            txn,
            &mut hot.names,
            tenant,
            &device.id,
            Indexed {
                name: &device.name,
                status: device.status,
                location_ids: &device.location_ids,
            },
        )?;
        Ok(device)
    }

    /// One read-modify-write of a device: `change` edits it in place and says
    /// what it changed; a change bumps the version and `updatedAt`. A refusal
    /// returns before anything is written. Also returns when the previous
    /// key's grace ends, if it has one.
    fn modify_in(
        &self,
        shared: &mut Shared<'_>,
        tenant: &str,
        device_id: &str,
        now: Millis,
        (kind, actor): (EventType, Option<&str>),
        change: impl FnOnce(&mut Device) -> StoreResult<Change>,
    ) -> StoreResult<Modified> {
        let (txn, hot) = shared.tables()?;
        let record = match hot.devices.get((tenant, device_id))? {
            Some(v) => DeviceRecord::decode(v.value())?,
            None => return Err(StoreError::NotFound),
        };
        let mut keys = record.keys();
        let last_event = record.last_event.clone();
        let last_seen = self.last_seen(&*hot.last_seen, tenant, device_id)?;
        let mut device = record.into_device(device_id, last_seen);
        let before = device.clone();
        let change = change(&mut device)?;
        if let Change::None = change {
            let grace_end = keys.previous.map(|(_, end)| Millis(end));
            return Ok(Modified {
                device,
                grace_end,
                changed: false,
            });
        }
        indexes::change(
            txn,
            &mut hot.names,
            tenant,
            device_id,
            Indexed {
                name: &before.name,
                status: before.status,
                location_ids: &before.location_ids,
            },
            Indexed {
                name: &device.name,
                status: device.status,
                location_ids: &device.location_ids,
            },
        )?;
        device.version += 1;
        device.updated_at = now.max(device.updated_at);
        // Opened only for a change that needs it (a key rotation or a
        // revocation): opening a table costs about 5,000 instructions on
        // the writer thread, which every write waits for.
        let keyed = matches!(change, Change::Key(..)) || device.status == DeviceStatus::Revoked;
        let mut key_index = match keyed {
            true => Some(txn.open_table(KEY_INDEX)?),
            false => None,
        };
        let unopened = || StoreError::Internal("the key index is not open".into());
        let mut forget = |hex: &str| -> StoreResult<()> {
            if let Some(hash) = device_key::from_hex(hex) {
                key_index.as_mut().ok_or_else(unopened)?.remove(&hash)?;
            }
            Ok(())
        };
        if let Change::Key(new_hash, grace_ms) = change {
            // A device holds at most two keys: the one before the current
            // one ends now, whatever was left of its grace.
            if let Some((older, _)) = keys.previous.take() {
                forget(&older)?;
            }
            if grace_ms > 0 {
                keys.previous = Some((keys.current.clone(), now.0 + grace_ms));
            } else {
                forget(&keys.current)?;
            }
            keys.current = device_key::to_hex(&new_hash);
            key_index
                .as_mut()
                .ok_or_else(unopened)?
                .insert(&new_hash, (tenant, device_id))?;
        } else if device.status == DeviceStatus::Revoked {
            // Revocation ends both keys; the current one's hash stays so the
            // device can be told it is revoked.
            if let Some((older, _)) = keys.previous.take() {
                forget(&older)?;
            }
        }
        let grace_end = keys.previous.as_ref().map(|(_, end)| Millis(*end));
        let what = Recorded {
            kind,
            actor,
            device: &device,
            before: Some(&before),
            device_previous: last_event.as_deref(),
        };
        let mut record = DeviceRecord::from_device(&device, keys);
        let event = events::record(&mut hot.events, tenant, what, now, &self.event_ids)?;
        record.last_event = Some(event);
        hot.devices
            .insert((tenant, device_id), record.encode()?.as_slice())?;
        Ok(Modified {
            device,
            grace_end,
            changed: true,
        })
    }
}

/// A PATCH's change, in either store: refused for a revoked device (409) or
/// a failed `If-Match` (412); nothing when it changes no field.
fn patched(
    device: &mut Device,
    patch: &DevicePatch,
    if_match: Option<IfMatch>,
) -> StoreResult<Change> {
    if device.status == DeviceStatus::Revoked {
        return Err(StoreError::Revoked);
    }
    if if_match.is_some_and(|m| !m.matches(&device.etag())) {
        return Err(StoreError::PreconditionFailed);
    }
    Ok(if patch.apply(device) {
        Change::Fields
    } else {
        Change::None
    })
}

/// A revocation's change, in either store: a second one changes nothing.
fn revoked(device: &mut Device) -> StoreResult<Change> {
    if device.status == DeviceStatus::Revoked {
        return Ok(Change::None);
    }
    device.status = DeviceStatus::Revoked;
    Ok(Change::Fields)
}

/// The device a registration makes: version 1, never seen.
fn registered(id: String, new: &NewDevice, now: Millis) -> Device {
    Device {
        id,
        name: new.name.as_str().to_string(),
        status: new.status,
        location_ids: new.location_ids.to_vec(),
        pim_enabled: new.pim_enabled,
        pim_segment_ids: new.pim_segment_ids.to_vec(),
        created_at: now,
        updated_at: now,
        last_seen_at: None,
        version: 1,
    }
}

/// A new ULID for `tenant` at `now`, after the last id in the tenant's range
/// of `table` (ids `prefix` + ULID): ids follow commit order even when the
/// clock steps back.
fn next_ulid(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    now: Millis,
    prefix: &str,
) -> StoreResult<ulid::Ulid> {
    let last = table
        .range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))?
        .next_back()
        .transpose()?
        .and_then(|(key, _)| id::parse_prefixed(prefix, key.value().1));
    next_ulid_after(last, now)
}

/// A new ULID at `now`, after `last` (the newest id of its kind in the
/// tenant) even when the clock steps back. A new millisecond draws fresh
/// random bits; within `last`'s millisecond (or before it) the new id is
/// `last` plus one, ULID's monotonic order. Under load most events of a
/// tenant share a millisecond with the one before, so most cost no call
/// for random bytes (a system call each).
fn next_ulid_after(last: Option<ulid::Ulid>, now: Millis) -> StoreResult<ulid::Ulid> {
    match last {
        Some(last) if now.0 <= last.timestamp_ms() => last
            .increment()
            .ok_or_else(|| StoreError::Internal("the id space is exhausted".into())),
        _ => Ok(ulid::Ulid::from_parts(now.0, random_u128()?)),
    }
}

/// A rotation's grace period in milliseconds, capped at the contract's
/// maximum.
fn grace_ms(grace_seconds: u64) -> u64 {
    grace_seconds.min(crate::devices::MAX_GRACE_PERIOD_SECONDS) * 1000
}

fn random_u128() -> StoreResult<u128> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Internal(e.to_string()))?;
    // A ULID has 80 random bits.
    Ok(u128::from_le_bytes(bytes) & ((1u128 << 80) - 1))
}

fn write_txn(db: &Database) -> StoreResult<WriteTransaction> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

#[cfg(test)]
mod tests;
