//! PostgreSQL (`storage.postgres_url`, API.md §9): the same operations as
//! the embedded store, for any number of instances sharing one database.
//!
//! - Every change locks its tenant's row in `devicehub_tenants` first, then
//!   takes the next device or event id after the one kept there: ids follow
//!   commit order within a tenant across instances, and an `If-Match` race
//!   has exactly one winner. The same row keeps the tenant's counts.
//! - A change, its event and its idempotent answer are one transaction
//!   (`synchronous_commit` on). PATCHes, revocations and rotations go through
//!   a group commit (`batch`): what is queued shares one transaction, one
//!   lock per tenant and one fsync. Check-ins are kept in memory and written
//!   in sorted batches with `synchronous_commit = off`.
//! - Key look-ups read the database every time (no cache), so a revocation
//!   or rotation through one instance is seen by every other at once.
//! - Events wake long polls on every instance through `NOTIFY`.

mod batch;
mod cursor;
mod reader;
pub mod schema;
mod tls;
mod transfer;
mod webhooks;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

pub use cursor::PgCursor;

use super::last_seen::LastSeen;
use super::{
    next_ulid_after, patched, registered, revoked, Author, Change, KeyOwner, ListQuery, Modified,
    Page, Remember, Remembered, StatusCounts, StoreError, StoreResult, DEFAULT_EVENT_RETENTION_MS,
    PRUNE_BATCH,
};
use crate::auth::device_key::KeyHash;
use crate::devices::{id, Device, DevicePatch, DeviceStatus, IfMatch, Millis, NewDevice};
use crate::error::StartupError;
use crate::events::{self, Event, EventBus, EventData, EventType};
use crate::idempotency::{self, KeyId};
use crate::store::{EventPage, EventQuery, StoredEvent};

/// The channel `NOTIFY` carries events on: `"<type code> <device id> <tenant>"`.
const CHANNEL: &str = "devicehub_events";

/// Connections per instance.
const POOL_SIZE: usize = 16;

/// How long a request waits for a connection before answering 503.
const WAIT: Duration = Duration::from_secs(5);

/// Check-ins written in one statement at most.
const CHECK_IN_BATCH: usize = 1_000;

/// The columns a device is read from, in `device_at`'s order.
const DEVICE_COLUMNS: &str = "id, name, status, location_ids, pim_enabled, pim_segment_ids, \
     created_ms, updated_ms, version, last_seen_ms";

/// Maps a database error: a lost or refused connection, a database that is
/// shutting down or read-only, and a transaction the database aborted so it
/// can be retried are 503; anything else is an internal error.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let unavailable = e.is_closed()
        || match e.code() {
            None => true,
            Some(code) => {
                let class = &code.code()[..2];
                // 08: connection; 53: insufficient resources; 57: operator
                // intervention (shutdown, crash recovery).
                // A serialization failure or deadlock: the client may retry.
                matches!(class, "08" | "53" | "57")
                    || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
            }
        };
    if unavailable {
        StoreError::Unavailable(format!("PostgreSQL: {e}"))
    } else {
        StoreError::Internal(format!("PostgreSQL: {e}"))
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Unavailable(format!("PostgreSQL: {other}")),
    }
}

/// A device's check-in, to be written with others.
struct CheckIn {
    tenant: String,
    device_id: String,
    at: Millis,
}

pub struct Postgres {
    pool: Pool,
    /// Point reads, on one connection per thread (`reader`).
    readers: reader::Readers,
    /// Connections of their own, for the snapshots of streamed lists.
    dialer: Arc<reader::Dialer>,
    seen: Arc<LastSeen>,
    bus: Arc<EventBus>,
    retention_ms: Arc<AtomicU64>,
    check_ins: mpsc::UnboundedSender<CheckIn>,
    /// Changes to devices, for the committer (`batch`).
    changes: mpsc::UnboundedSender<batch::Job>,
    /// This process's name in webhook claims.
    instance: String,
}

/// The tenant's row, locked for the rest of the transaction.
struct TenantRow {
    last_device: String,
    last_event: String,
    counts: StatusCounts,
}

impl Postgres {
    /// Connects, migrates the schema and starts the background tasks
    /// (check-in writer, housekeeping, `LISTEN`). Fails with one line naming
    /// `storage.postgres_url` when the database cannot be reached. Must run
    /// inside the server's runtime.
    pub async fn open(
        url: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Postgres, StartupError> {
        let key = |detail: String| StartupError::new(format!("storage.postgres_url: {detail}"));
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| key(format!("not a valid PostgreSQL URL ({e})")))?;
        let tls = tls::Connector::new(ca_file)
            .map_err(|e| StartupError::new(format!("storage.postgres_ca_file: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| key(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| key(format!("cannot connect ({})", shown(&pool_error(e)))))?;
        schema::migrate(&mut client)
            .await
            .map_err(|e| key(shown(&e)))?;
        drop(client);
        let (check_ins, queue) = mpsc::unbounded_channel();
        let (changes, jobs) = mpsc::unbounded_channel();
        let dialer = Arc::new(reader::Dialer::new(config.clone(), tls.clone()));
        let store = Postgres {
            pool,
            readers: reader::Readers::new(dialer.clone()),
            dialer,
            seen: Arc::new(LastSeen::default()),
            bus: Arc::new(EventBus::default()),
            retention_ms: Arc::new(AtomicU64::new(DEFAULT_EVENT_RETENTION_MS)),
            check_ins,
            changes,
            instance: ulid::Ulid::new().to_string(),
        };
        tokio::spawn(write_check_ins(
            store.pool.clone(),
            store.seen.clone(),
            queue,
        ));
        tokio::spawn(batch::run(
            store.pool.clone(),
            store.seen.clone(),
            store.bus.clone(),
            jobs,
        ));
        tokio::spawn(housekeeping(store.pool.clone(), store.retention_ms.clone()));
        tokio::spawn(listen(config, tls, store.bus.clone()));
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    pub fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn set_event_retention(&self, keep: Duration) {
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        self.retention_ms.store(ms, Ordering::Relaxed);
    }

    /// Takes the lock that makes demo seeding happen once across instances;
    /// held until the returned connection is dropped or `unlock_demo` runs.
    pub async fn lock_demo(&self) -> StoreResult<Object> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&schema::DEMO_LOCK])
            .await
            .map_err(pg_error)?;
        Ok(client)
    }

    pub async fn unlock_demo(client: Object) {
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&schema::DEMO_LOCK])
            .await;
    }

    pub async fn is_empty(&self) -> StoreResult<bool> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT NOT EXISTS (SELECT 1 FROM devicehub_devices)", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get(0))
    }

    pub async fn get(&self, tenant: &str, device_id: &str) -> StoreResult<Device> {
        let reader = self.readers.get().await?;
        let row = reader
            .client
            .query_opt(&reader.device, &[&tenant, &device_id])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        device_at(&row, 0, &self.seen, tenant)
    }

    pub async fn stats(&self, tenant: &str) -> StoreResult<StatusCounts> {
        let reader = self.readers.get().await?;
        let row = reader
            .client
            .query_opt(&reader.counts, &[&tenant])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| counts_from_row(&r, 0)).unwrap_or_default())
    }

    pub async fn all_stats(&self) -> StoreResult<StatusCounts> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT coalesce(sum(active), 0)::bigint, coalesce(sum(inactive), 0)::bigint, \
                 coalesce(sum(revoked), 0)::bigint FROM devicehub_tenants",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(counts_from_row(&row, 0))
    }

    /// A cursor for one page: each batch is one query on a pooled connection.
    pub fn cursor(&self, tenant: &str, query: ListQuery) -> PgCursor {
        PgCursor::new(self.pool.clone(), self.seen.clone(), tenant, query)
    }

    /// A cursor over one consistent snapshot, taken now, for a streamed
    /// list: its batches read a `REPEATABLE READ` transaction on a
    /// connection of its own (outside the pool, so that streams never starve
    /// the writes), closed with the cursor.
    pub async fn snapshot(&self, tenant: &str, query: ListQuery) -> StoreResult<PgCursor> {
        let client = self.dialer.connect().await?;
        // The snapshot is taken at the transaction's first statement.
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1")
            .await
            .map_err(pg_error)?;
        Ok(self.cursor(tenant, query).holding(client))
    }

    pub async fn list(&self, tenant: &str, query: &ListQuery) -> StoreResult<Page> {
        let limit = query.limit.unwrap_or(usize::MAX - 1);
        self.cursor(tenant, query.clone()).page(limit).await
    }

    pub async fn find_by_key(&self, hash: &KeyHash, now: Millis) -> StoreResult<Option<KeyOwner>> {
        let reader = self.readers.get().await?;
        let Some(row) = reader
            .client
            .query_opt(&reader.key_owner, &[&hash.as_slice()])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        let tenant: String = row.get(0);
        let current: &[u8] = row.get(1);
        let previous: Option<&[u8]> = row.get(2);
        let expires: Option<i64> = row.get(3);
        let deprecated = if current == hash.as_slice() {
            false
        } else if previous == Some(hash.as_slice())
            && expires.is_some_and(|end| now.0 < to_u64(end))
        {
            true
        } else {
            return Ok(None);
        };
        let device = device_at(&row, 4, &self.seen, &tenant)?;
        Ok(Some(KeyOwner {
            tenant,
            device,
            deprecated,
        }))
    }

    pub async fn create(
        &self,
        author: Author<'_>,
        new: NewDevice,
        key_hash: KeyHash,
        now: Millis,
        quota: Option<u64>,
        remember: Option<Remember>,
    ) -> StoreResult<Device> {
        let tenant = author.tenant;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        let mut row = lock_new_tenant(&txn, tenant).await?;
        if let Some(quota) = quota {
            if row.counts.total() >= quota {
                return Err(StoreError::QuotaExceeded(quota));
            }
        }
        if let Some(remember) = &remember {
            // Under the tenant's lock: a registration under the same key
            // committed meanwhile through another instance is seen here.
            let kept = kept_keys(&txn, &[tenant], &[remember.id.as_slice()], now).await?;
            if !kept.is_empty() {
                return Err(StoreError::IdempotencyRace);
            }
        }
        let ulid = next_ulid_after(id::parse_prefixed(id::PREFIX, &row.last_device), now)?;
        let device = registered(id::format(ulid), &new, now);
        txn.execute(
            "INSERT INTO devicehub_devices (tenant, id, name, status, location_ids, pim_enabled, \
             pim_segment_ids, created_ms, updated_ms, version, key_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 1, $9)",
            &[
                &tenant,
                &device.id,
                &device.name,
                &device.status.as_str(),
                &device.location_ids,
                &device.pim_enabled,
                &device.pim_segment_ids,
                &to_i64(now.0),
                &key_hash.as_slice(),
            ],
        )
        .await
        .map_err(pg_error)?;
        txn.execute(
            "INSERT INTO devicehub_keys (key_hash, tenant, device_id) VALUES ($1, $2, $3)",
            &[&key_hash.as_slice(), &tenant, &device.id],
        )
        .await
        .map_err(pg_error)?;
        *row.counts.slot(device.status) += 1;
        row.last_device.clone_from(&device.id);
        let event = (EventType::Created, author.actor);
        record_event(
            &txn,
            tenant,
            &mut row,
            event,
            &device,
            serde_json::Map::new(),
            now,
        )
        .await?;
        save_tenant(&txn, tenant, &row).await?;
        if let Some(remember) = remember {
            remember_in(&txn, tenant, remember, &device, None, now).await?;
        }
        commit(txn).await?;
        self.bus.notify(tenant, &[(EventType::Created, &device.id)]);
        Ok(device)
    }

    pub async fn update(
        &self,
        author: Author<'_>,
        device_id: &str,
        patch: DevicePatch,
        if_match: Option<IfMatch>,
        now: Millis,
    ) -> StoreResult<Device> {
        let modified = self
            .modify(
                author,
                EventType::Updated,
                device_id,
                now,
                None,
                move |device| patched(device, &patch, if_match),
            )
            .await?;
        Ok(modified.device)
    }

    pub async fn revoke(
        &self,
        author: Author<'_>,
        device_id: &str,
        now: Millis,
    ) -> StoreResult<Device> {
        let modified = self
            .modify(author, EventType::Revoked, device_id, now, None, revoked)
            .await?;
        Ok(modified.device)
    }

    pub async fn rotate_key(
        &self,
        author: Author<'_>,
        device_id: &str,
        new_hash: KeyHash,
        grace_ms: u64,
        now: Millis,
        remember: Option<Remember>,
    ) -> StoreResult<(Device, Option<Millis>)> {
        let modified = self
            .modify(
                author,
                EventType::KeyRotated,
                device_id,
                now,
                remember,
                move |device| {
                    if device.status == DeviceStatus::Revoked {
                        return Err(StoreError::Revoked);
                    }
                    Ok(Change::Key(new_hash, grace_ms))
                },
            )
            .await?;
        Ok((modified.device, modified.grace_end))
    }

    /// One read-modify-write of a device, under its tenant's lock, in the
    /// committer's next batch (see `batch`); answered once that batch is
    /// committed.
    async fn modify(
        &self,
        author: Author<'_>,
        kind: EventType,
        device_id: &str,
        now: Millis,
        remember: Option<Remember>,
        edit: impl FnOnce(&mut Device) -> StoreResult<Change> + Send + 'static,
    ) -> StoreResult<Modified> {
        let stopped = || StoreError::Internal("the PostgreSQL committer stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = batch::Request {
            tenant: author.tenant.to_string(),
            actor: author.actor.map(str::to_string),
            kind,
            device_id: device_id.to_string(),
            now,
            remember,
            edit: Box::new(edit),
        };
        self.changes
            .send(batch::Job { request, reply })
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Records a check-in: shown at once by this instance, written with
    /// others at most once a minute per device.
    pub fn touch(&self, tenant: &str, device_id: &str, now: Millis) -> Millis {
        let shown = self.seen.record(tenant, device_id, now);
        if let Some(due) = shown.persist_due {
            let queued = self.check_ins.send(CheckIn {
                tenant: tenant.to_string(),
                device_id: device_id.to_string(),
                at: due,
            });
            if queued.is_err() {
                self.seen.persist_failed(tenant, device_id);
            }
        }
        shown.at
    }

    pub async fn events(&self, tenant: &str, query: &EventQuery) -> StoreResult<EventPage> {
        let client = self.client().await?;
        let mut sql = String::from(
            "SELECT id, type, body FROM devicehub_events WHERE tenant = $1 AND id > $2",
        );
        let after = query.starting_after.clone().unwrap_or_default();
        let limit = i64::try_from(query.limit.max(1)).unwrap_or(i64::MAX - 1);
        let kind = query.kind.map(|k| i16::from(k.code()));
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &after];
        if let Some(kind) = &kind {
            params.push(kind);
            sql.push_str(&format!(" AND type = ${}", params.len()));
        }
        if let Some(device) = &query.device_id {
            params.push(device);
            sql.push_str(&format!(" AND device_id = ${}", params.len()));
        }
        let fetch = limit + 1;
        params.push(&fetch);
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
        let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = client.query(&statement, &params).await.map_err(pg_error)?;
        let mut page = EventPage::default();
        for row in rows {
            if page.events.len() as i64 == limit {
                page.has_more = true;
                break;
            }
            page.events.push(stored_event(&row)?);
        }
        Ok(page)
    }

    pub async fn remembered(
        &self,
        tenant: &str,
        key: &KeyId,
        now: Millis,
    ) -> StoreResult<Option<Remembered>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT stored_ms, fingerprint, sealed FROM devicehub_idempotency \
                 WHERE tenant = $1 AND key_id = $2",
                &[&tenant, &key.as_slice()],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let stored_at = Millis(to_u64(row.get(0)));
        let fingerprint: &[u8] = row.get(1);
        let record = Remembered {
            stored_at,
            fingerprint: fingerprint
                .try_into()
                .map_err(|_| StoreError::Internal("a short idempotency fingerprint".into()))?,
            sealed: row.get(2),
        };
        let live = now.0 < stored_at.0.saturating_add(idempotency::KEEP_MS);
        Ok(live.then_some(record))
    }

    /// Deletes expired idempotency records and events (at most
    /// `PRUNE_BATCH` of each); the housekeeping task does this by itself.
    pub async fn prune(&self, now: Millis) -> StoreResult<usize> {
        prune(&self.pool, self.retention_ms.load(Ordering::Relaxed), now).await
    }

    /// Every (tenant, device id, key hash) kept, for consistency checks.
    pub async fn key_index_entries(&self) -> StoreResult<Vec<(String, String, KeyHash)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, device_id, key_hash FROM devicehub_keys ORDER BY tenant, device_id",
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                let hash: &[u8] = row.get(2);
                let hash: KeyHash = hash
                    .try_into()
                    .map_err(|_| StoreError::Internal("a key hash of the wrong length".into()))?;
                Ok((row.get(0), row.get(1), hash))
            })
            .collect()
    }

    /// Checks that each tenant's counts agree with its devices, and that
    /// every device's current key finds it.
    pub async fn verify_indexes(&self) -> StoreResult<()> {
        let client = self.client().await?;
        let miscounted = client
            .query(
                "SELECT t.tenant FROM devicehub_tenants t LEFT JOIN (SELECT tenant, \
                 count(*) FILTER (WHERE status = 'active') AS active, \
                 count(*) FILTER (WHERE status = 'inactive') AS inactive, \
                 count(*) FILTER (WHERE status = 'revoked') AS revoked \
                 FROM devicehub_devices GROUP BY tenant) c ON c.tenant = t.tenant \
                 WHERE t.active <> coalesce(c.active, 0) OR t.inactive <> coalesce(c.inactive, 0) \
                 OR t.revoked <> coalesce(c.revoked, 0)",
                &[],
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = miscounted.first() {
            let tenant: String = row.get(0);
            return Err(StoreError::Internal(format!(
                "the counts of tenant {tenant} disagree with its devices"
            )));
        }
        let unindexed = client
            .query(
                "SELECT d.id FROM devicehub_devices d LEFT JOIN devicehub_keys k \
                 ON k.key_hash = d.key_hash AND k.tenant = d.tenant AND k.device_id = d.id \
                 WHERE k.key_hash IS NULL LIMIT 1",
                &[],
            )
            .await
            .map_err(pg_error)?;
        if let Some(row) = unindexed.first() {
            let id: String = row.get(0);
            return Err(StoreError::Internal(format!(
                "device {id}'s key is missing from the key index"
            )));
        }
        Ok(())
    }

    /// Lets go of the pool's connections (for a clean stop).
    pub async fn close(&self) {
        self.pool.close();
    }
}

/// Commits a change, timed like the embedded store's commits (one change
/// per commit here).
async fn commit(txn: Transaction<'_>) -> StoreResult<()> {
    let started = std::time::Instant::now();
    txn.commit().await.map_err(pg_error)?;
    crate::metrics::record_commit(1, started.elapsed());
    Ok(())
}

/// Which of these (tenant, `Idempotency-Key`) pairs already have a live kept
/// answer. Read under the tenants' row locks, it sees every answer another
/// instance committed before them: a second request under the same key,
/// run at the same time through another instance, is refused instead of
/// writing twice.
pub(super) async fn kept_keys(
    txn: &Transaction<'_>,
    tenants: &[&str],
    key_ids: &[&[u8]],
    now: Millis,
) -> StoreResult<std::collections::HashSet<(String, Vec<u8>)>> {
    let live_since = to_i64(now.0.saturating_sub(idempotency::KEEP_MS));
    let rows = txn
        .query(
            "SELECT tenant, key_id FROM devicehub_idempotency WHERE (tenant, key_id) IN \
             (SELECT * FROM unnest($1::text[], $2::bytea[])) AND stored_ms > $3",
            &[&tenants, &key_ids, &live_since],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A text error for a start-up line.
fn shown(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(detail) | StoreError::Internal(detail) => detail.clone(),
        other => other.to_string(),
    }
}

fn prefixed_columns(prefix: &str) -> String {
    DEVICE_COLUMNS
        .split(", ")
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn counts_from_row(row: &Row, at: usize) -> StatusCounts {
    StatusCounts {
        active: to_u64(row.get(at)),
        inactive: to_u64(row.get(at + 1)),
        revoked: to_u64(row.get(at + 2)),
    }
}

/// A device from `DEVICE_COLUMNS` starting at column `at`, with the newer of
/// the stored check-in and this instance's.
fn device_at(row: &Row, at: usize, seen: &LastSeen, tenant: &str) -> StoreResult<Device> {
    let id: String = row.get(at);
    let status: &str = row.get(at + 2);
    let status = DeviceStatus::parse(status)
        .ok_or_else(|| StoreError::Internal(format!("device {id} has an unknown status")))?;
    let stored_seen = row
        .get::<_, Option<i64>>(at + 9)
        .map(|ms| Millis(to_u64(ms)));
    let last_seen_at = seen.get(tenant, &id).max(stored_seen);
    Ok(Device {
        name: row.get(at + 1),
        status,
        location_ids: row.get(at + 3),
        pim_enabled: row.get(at + 4),
        pim_segment_ids: row.get(at + 5),
        created_at: Millis(to_u64(row.get(at + 6))),
        updated_at: Millis(to_u64(row.get(at + 7))),
        version: to_u64(row.get(at + 8)),
        last_seen_at,
        id,
    })
}

fn stored_event(row: &Row) -> StoreResult<StoredEvent> {
    let id: String = row.get(0);
    let code: i16 = row.get(1);
    let kind = u8::try_from(code)
        .ok()
        .and_then(EventType::from_code)
        .ok_or_else(|| StoreError::Internal(format!("event {id} has an unknown type")))?;
    let body: String = row.get(2);
    Ok(StoredEvent {
        id,
        kind,
        json: body.into_bytes(),
    })
}

/// Locks the tenant's row for the rest of the transaction (None: no device
/// was ever registered for it).
async fn lock_tenant(txn: &Transaction<'_>, tenant: &str) -> StoreResult<Option<TenantRow>> {
    let statement = txn
        .prepare_cached(
            "SELECT last_device, last_event, active, inactive, revoked \
             FROM devicehub_tenants WHERE tenant = $1 FOR UPDATE",
        )
        .await
        .map_err(pg_error)?;
    let row = txn
        .query_opt(&statement, &[&tenant])
        .await
        .map_err(pg_error)?;
    Ok(row.map(|row| TenantRow {
        last_device: row.get(0),
        last_event: row.get(1),
        counts: counts_from_row(&row, 2),
    }))
}

/// `lock_tenant`, making the tenant's row first if it has none.
async fn lock_new_tenant(txn: &Transaction<'_>, tenant: &str) -> StoreResult<TenantRow> {
    txn.execute(
        "INSERT INTO devicehub_tenants (tenant) VALUES ($1) ON CONFLICT (tenant) DO NOTHING",
        &[&tenant],
    )
    .await
    .map_err(pg_error)?;
    lock_tenant(txn, tenant)
        .await?
        .ok_or_else(|| StoreError::Internal("the tenant row vanished".into()))
}

async fn save_tenant(txn: &Transaction<'_>, tenant: &str, row: &TenantRow) -> StoreResult<()> {
    let statement = txn
        .prepare_cached(
            "UPDATE devicehub_tenants SET last_device = $2, last_event = $3, active = $4, \
             inactive = $5, revoked = $6 WHERE tenant = $1",
        )
        .await
        .map_err(pg_error)?;
    txn.execute(
        &statement,
        &[
            &tenant,
            &row.last_device,
            &row.last_event,
            &to_i64(row.counts.active),
            &to_i64(row.counts.inactive),
            &to_i64(row.counts.revoked),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Writes a change's event in the change's transaction, with the next id
/// after the tenant's last, and queues its `NOTIFY` (sent at commit).
async fn record_event(
    txn: &Transaction<'_>,
    tenant: &str,
    row: &mut TenantRow,
    (kind, actor): (EventType, Option<&str>),
    device: &Device,
    previous: serde_json::Map<String, serde_json::Value>,
    now: Millis,
) -> StoreResult<()> {
    let ulid = next_ulid_after(events::id::parse(&row.last_event), now)?;
    let id = events::id::format(ulid);
    let event = Event {
        id: &id,
        kind: kind.as_str(),
        created_at: now,
        actor,
        device_id: &device.id,
        data: EventData {
            object: device,
            previous_attributes: previous,
        },
    };
    let body = serde_json::to_string(&event).map_err(|e| StoreError::Internal(e.to_string()))?;
    let statement = txn
        .prepare_cached(
            "INSERT INTO devicehub_events (tenant, id, device_id, type, created_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg_error)?;
    txn.execute(
        &statement,
        &[
            &tenant,
            &id,
            &device.id,
            &i16::from(kind.code()),
            &to_i64(now.0),
            &body,
        ],
    )
    .await
    .map_err(pg_error)?;
    let message = format!("{} {} {tenant}", kind.code(), device.id);
    txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &message])
        .await
        .map_err(pg_error)?;
    row.last_event = id;
    Ok(())
}

async fn remember_in(
    txn: &Transaction<'_>,
    tenant: &str,
    remember: Remember,
    device: &Device,
    grace_end: Option<Millis>,
    now: Millis,
) -> StoreResult<()> {
    let (id, fingerprint) = (remember.id, remember.fingerprint);
    let sealed = remember.sealed(device, grace_end)?;
    txn.execute(
        "INSERT INTO devicehub_idempotency (tenant, key_id, stored_ms, fingerprint, sealed) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, key_id) DO UPDATE \
         SET stored_ms = excluded.stored_ms, fingerprint = excluded.fingerprint, \
         sealed = excluded.sealed",
        &[
            &tenant,
            &id.as_slice(),
            &to_i64(now.0),
            &fingerprint.as_slice(),
            &sealed,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn prune(pool: &Pool, retention_ms: u64, now: Millis) -> StoreResult<usize> {
    let client = pool.get().await.map_err(pool_error)?;
    let batch = to_i64(PRUNE_BATCH as u64);
    let events = client
        .execute(
            "DELETE FROM devicehub_events WHERE ctid IN (SELECT ctid FROM devicehub_events \
             WHERE created_ms < $1 LIMIT $2)",
            &[&to_i64(now.0.saturating_sub(retention_ms)), &batch],
        )
        .await
        .map_err(pg_error)?;
    let remembered = client
        .execute(
            "DELETE FROM devicehub_idempotency WHERE ctid IN (SELECT ctid FROM \
             devicehub_idempotency WHERE stored_ms < $1 LIMIT $2)",
            &[&to_i64(now.0.saturating_sub(idempotency::KEEP_MS)), &batch],
        )
        .await
        .map_err(pg_error)?;
    Ok((events + remembered) as usize)
}

/// Deletes what has expired every few minutes (sooner while a backlog lasts).
async fn housekeeping(pool: Pool, retention_ms: Arc<AtomicU64>) {
    loop {
        let keep = retention_ms.load(Ordering::Relaxed);
        let period = Duration::from_millis((keep / 4).clamp(1_000, 600_000));
        let pause = match prune(&pool, keep, Millis::now()).await {
            Ok(n) if n >= PRUNE_BATCH => Duration::from_millis(200),
            Ok(_) => period,
            Err(e) => {
                log::warn!("housekeeping: {e}");
                period
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Writes queued check-ins in batches, sorted by (tenant, device) so two
/// instances' batches lock rows in one order and cannot deadlock.
async fn write_check_ins(
    pool: Pool,
    seen: Arc<LastSeen>,
    mut queue: mpsc::UnboundedReceiver<CheckIn>,
) {
    let mut batch = Vec::with_capacity(CHECK_IN_BATCH);
    while queue.recv_many(&mut batch, CHECK_IN_BATCH).await > 0 {
        batch.sort_by(|a, b| (&a.tenant, &a.device_id).cmp(&(&b.tenant, &b.device_id)));
        batch.dedup_by(|later, kept| {
            let same = later.tenant == kept.tenant && later.device_id == kept.device_id;
            if same {
                kept.at = kept.at.max(later.at);
            }
            same
        });
        if let Err(e) = write_batch(&pool, &batch).await {
            log::warn!("{} check-ins kept in memory only: {e}", batch.len());
            for check_in in &batch {
                seen.persist_failed(&check_in.tenant, &check_in.device_id);
            }
        }
        batch.clear();
    }
}

async fn write_batch(pool: &Pool, batch: &[CheckIn]) -> StoreResult<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let txn = client.transaction().await.map_err(pg_error)?;
    txn.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg_error)?;
    let tenants: Vec<&str> = batch.iter().map(|c| c.tenant.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|c| c.device_id.as_str()).collect();
    let at: Vec<i64> = batch.iter().map(|c| to_i64(c.at.0)).collect();
    // Locked in sorted order first: the UPDATE's join may visit the rows in
    // any order, and a batch of changes (`batch`) locks several devices too.
    txn.execute(
        "SELECT 1 FROM devicehub_devices WHERE (tenant, id) IN \
         (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY tenant, id FOR UPDATE",
        &[&tenants, &ids],
    )
    .await
    .map_err(pg_error)?;
    txn.execute(
        "UPDATE devicehub_devices d SET last_seen_ms = greatest(coalesce(d.last_seen_ms, 0), v.at) \
         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(tenant, id, at) \
         WHERE d.tenant = v.tenant AND d.id = v.id",
        &[&tenants, &ids, &at],
    )
    .await
    .map_err(pg_error)?;
    txn.commit().await.map_err(pg_error)
}

/// Follows `NOTIFY` on a connection of its own and wakes this instance's
/// long polls and webhook senders for events committed by any instance.
/// Reconnects after a failure; while it is down, polls end at their deadline.
async fn listen(config: tokio_postgres::Config, tls: tls::Connector, bus: Arc<EventBus>) {
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let bus = bus.clone();
                let follower = tokio::spawn(async move {
                    loop {
                        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                        match message {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                wake(&bus, n.payload())
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                log::warn!("PostgreSQL LISTEN connection: {e}");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    log::warn!("PostgreSQL LISTEN: {e}");
                }
                // The client must live while the connection delivers.
                let _ = follower.await;
                drop(client);
            }
            Err(e) => log::debug!("PostgreSQL LISTEN connection: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn wake(bus: &EventBus, payload: &str) {
    let mut parts = payload.splitn(3, ' ');
    let (Some(code), Some(device), Some(tenant)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Some(kind) = code.parse().ok().and_then(EventType::from_code) else {
        return;
    };
    bus.notify(tenant, &[(kind, device)]);
    bus.wake_deliveries();
}
