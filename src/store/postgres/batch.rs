//! Group commit for PostgreSQL changes (PATCH, revocation, key rotation):
//! the embedded store's lever (`store/commit.rs`) for this backend.
//!
//! Every change of an instance is a job for one committer task. The
//! committer takes all the jobs waiting (up to `MAX_BATCH`) and writes them
//! in ONE transaction:
//! 1. it locks the batch's tenant rows in sorted order and reads the batch's
//!    devices, locking them in sorted order too (one round trip);
//! 2. it applies each change in memory, in arrival order: a second change to
//!    a device sees the first; a refused change (404, 409, 412) writes
//!    nothing and the others go on;
//! 3. it writes the devices' final rows, the events (ids after the tenant's
//!    last, in order), the key index, the idempotent answers, the tenant rows
//!    and the `NOTIFY`s with one statement each, sent together (one round
//!    trip);
//! 4. it commits once (one fsync for the whole batch), then answers each job.
//!
//! Several instances stay correct because each batch still takes its
//! tenants' row locks, like every other write. A database error fails the
//! whole batch, each job with the same error: nothing is half-written, since
//! it is one transaction.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{
    counts_from_row, device_at, pg_error, pool_error, to_i64, to_u64, TenantRow, CHANNEL,
    DEVICE_COLUMNS,
};
use crate::devices::{Device, DeviceStatus, Millis};
use crate::events::{self, Event, EventBus, EventData, EventType};
use crate::store::last_seen::LastSeen;
use crate::store::{next_ulid_after, Change, Modified, Remember, StoreError, StoreResult};

/// At most this many changes share one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// What a change does to a device: `patched`, `revoked` or a rotation.
pub(super) type Edit = Box<dyn FnOnce(&mut Device) -> StoreResult<Change> + Send>;

/// One change to one device.
pub(super) struct Request {
    pub tenant: String,
    pub actor: Option<String>,
    pub kind: EventType,
    pub device_id: String,
    pub now: Millis,
    pub remember: Option<Remember>,
    pub edit: Edit,
}

/// A change and where its answer goes once its batch is committed.
pub(super) struct Job {
    pub request: Request,
    pub reply: oneshot::Sender<StoreResult<Modified>>,
}

/// A change's outcome, before the commit decides it.
pub(super) struct Outcome {
    tenant: String,
    kind: EventType,
    result: StoreResult<Modified>,
}

/// The committer: writes what is queued, a batch at a time, until the store
/// is dropped.
pub(super) async fn run(
    pool: Pool,
    seen: Arc<LastSeen>,
    bus: Arc<EventBus>,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (requests, replies): (Vec<Request>, Vec<_>) =
            jobs.drain(..).map(|job| (job.request, job.reply)).unzip();
        let count = requests.len();
        match write(&pool, &seen, requests).await {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    if let Ok(modified) = &outcome.result {
                        if modified.changed {
                            bus.notify(&outcome.tenant, &[(outcome.kind, &modified.device.id)]);
                        }
                    }
                    let _ = reply.send(outcome.result);
                }
            }
            Err(e) => {
                log::warn!("a batch of {count} changes was not committed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A device as the batch holds it: read once, changed in memory by each
/// change in turn, written once.
struct Held {
    device: Device,
    current_key: Vec<u8>,
    /// The previous key and when its grace ends (Unix ms).
    previous: Option<(Vec<u8>, u64)>,
    /// The version read, for the compare-and-set of the write.
    read_version: u64,
    changed: bool,
}

/// A tenant's locked row, and whether the batch changed it.
struct Locked {
    row: TenantRow,
    changed: bool,
}

/// An event to insert.
struct NewEvent {
    tenant: String,
    id: String,
    device_id: String,
    code: i16,
    created_ms: i64,
    body: String,
}

/// An idempotent answer to keep.
struct Kept {
    tenant: String,
    key_id: Vec<u8>,
    fingerprint: Vec<u8>,
    sealed: Vec<u8>,
    stored_ms: i64,
}

/// What the batch writes, gathered while its changes are applied.
#[derive(Default)]
struct Writes {
    events: Vec<NewEvent>,
    kept: Vec<Kept>,
    /// Key hashes to add to the key index: (hash, tenant, device id).
    new_keys: Vec<(Vec<u8>, String, String)>,
    /// Key hashes to remove from it.
    forget: Vec<Vec<u8>>,
    notices: Vec<String>,
}

impl Writes {
    /// A key ends: taken out of the index, or never put in when this batch
    /// added it.
    fn forget(&mut self, hash: Vec<u8>) {
        match self.new_keys.iter().position(|(added, ..)| *added == hash) {
            Some(at) => {
                self.new_keys.remove(at);
            }
            None => self.forget.push(hash),
        }
    }
}

/// Writes a batch in one transaction; the outcome of each request, in
/// order, or the error that stopped the whole batch.
async fn write(pool: &Pool, seen: &LastSeen, requests: Vec<Request>) -> StoreResult<Vec<Outcome>> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let txn = client.transaction().await.map_err(pg_error)?;
    let wanted = Wanted::of(&requests);
    let read = read(&txn, seen, &wanted).await;
    drop(wanted);
    let (mut tenants, mut devices) = read?;
    let now = requests.first().map_or(Millis(0), |r| r.now);
    let kept = kept_keys_of(&txn, keeping(&requests), now).await?;
    let mut writes = Writes::default();
    let outcomes: Vec<Outcome> = requests
        .into_iter()
        .map(|request| {
            let (tenant, kind) = (request.tenant.clone(), request.kind);
            let raced = request
                .remember
                .as_ref()
                .is_some_and(|r| kept.contains(&(tenant.clone(), r.id.to_vec())));
            let result = match raced {
                true => Err(StoreError::IdempotencyRace),
                false => apply(&mut tenants, &mut devices, &mut writes, request),
            };
            Outcome {
                tenant,
                kind,
                result,
            }
        })
        .collect();
    let changes = writes.events.len();
    if changes == 0 {
        // Nothing to write: the transaction only read (and is rolled back).
        return Ok(outcomes);
    }
    save(&txn, &tenants, &devices, &writes).await?;
    let started = std::time::Instant::now();
    txn.commit().await.map_err(pg_error)?;
    crate::metrics::record_commit(changes, started.elapsed());
    Ok(outcomes)
}

type Devices = HashMap<(String, String), Held>;

/// The batch's `Idempotency-Key`s that already have a kept answer (another
/// instance's request under the same key, committed meanwhile); none read
/// when no change keeps an answer.
async fn kept_keys_of(
    txn: &Transaction<'_>,
    (tenants, ids): (Vec<&str>, Vec<&[u8]>),
    now: Millis,
) -> StoreResult<HashSet<(String, Vec<u8>)>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    super::kept_keys(txn, &tenants, &ids, now).await
}

/// The tenants and key ids of the changes that keep an answer.
fn keeping(requests: &[Request]) -> (Vec<&str>, Vec<&[u8]>) {
    requests
        .iter()
        .filter_map(|r| Some((r.tenant.as_str(), r.remember.as_ref()?.id.as_slice())))
        .unzip()
}

/// The tenants and the (tenant, device) pairs of a batch, sorted, each once.
struct Wanted<'a> {
    tenants: Vec<&'a str>,
    pair_tenants: Vec<&'a str>,
    pair_ids: Vec<&'a str>,
}

impl<'a> Wanted<'a> {
    fn of(requests: &'a [Request]) -> Wanted<'a> {
        let mut tenants: Vec<&str> = requests.iter().map(|r| r.tenant.as_str()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        let mut pairs: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.tenant.as_str(), r.device_id.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let (pair_tenants, pair_ids) = pairs.into_iter().unzip();
        Wanted {
            tenants,
            pair_tenants,
            pair_ids,
        }
    }
}

/// Locks the batch's tenant rows, then reads and locks its devices, both in
/// sorted order so that two batches (of two instances, or a batch and a
/// check-in write) cannot deadlock. One round trip.
async fn read(
    txn: &Transaction<'_>,
    seen: &LastSeen,
    wanted: &Wanted<'_>,
) -> StoreResult<(HashMap<String, Locked>, Devices)> {
    let Wanted {
        tenants,
        pair_tenants,
        pair_ids,
    } = wanted;
    let lock = txn
        .prepare_cached(
            "SELECT tenant, last_device, last_event, active, inactive, revoked \
             FROM devicehub_tenants WHERE tenant = ANY($1) ORDER BY tenant FOR UPDATE",
        )
        .await
        .map_err(pg_error)?;
    let select = txn
        .prepare_cached(&format!(
            "SELECT tenant, key_hash, prev_key_hash, prev_key_expires_ms, {DEVICE_COLUMNS} \
             FROM devicehub_devices WHERE (tenant, id) IN \
             (SELECT * FROM unnest($1::text[], $2::text[])) ORDER BY tenant, id FOR UPDATE"
        ))
        .await
        .map_err(pg_error)?;
    // Sent together; PostgreSQL runs them in order, so the tenants are
    // locked before the devices are read. The batch's statements take arrays
    // whose lengths vary: generic plans (index look-ups for each element)
    // spare planning them again for every batch.
    let ((planned, locked), found) = both(
        both(
            txn.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan"),
            txn.query(&lock, &[tenants]),
        ),
        txn.query(&select, &[pair_tenants, pair_ids]),
    )
    .await;
    planned.map_err(pg_error)?;
    let locked = locked.map_err(pg_error)?;
    let found = found.map_err(pg_error)?;
    let tenants = locked
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                Locked {
                    row: TenantRow {
                        last_device: row.get(1),
                        last_event: row.get(2),
                        counts: counts_from_row(row, 3),
                    },
                    changed: false,
                },
            )
        })
        .collect();
    let mut devices = HashMap::with_capacity(found.len());
    for row in &found {
        let tenant: String = row.get(0);
        let device = device_at(row, 4, seen, &tenant)?;
        let previous = row
            .get::<_, Option<Vec<u8>>>(2)
            .zip(row.get::<_, Option<i64>>(3).map(to_u64));
        let held = Held {
            current_key: row.get(1),
            previous,
            read_version: device.version,
            changed: false,
            device,
        };
        devices.insert((tenant, held.device.id.clone()), held);
    }
    Ok((tenants, devices))
}

/// Applies one change in memory (see `Inner::modify_in` for the embedded
/// store's same steps). A refusal, or any failure before the change is
/// kept, leaves the batch as it was.
fn apply(
    tenants: &mut HashMap<String, Locked>,
    devices: &mut Devices,
    writes: &mut Writes,
    request: Request,
) -> StoreResult<Modified> {
    let Request {
        tenant,
        actor,
        kind,
        device_id,
        now,
        remember,
        edit,
    } = request;
    let locked = tenants.get_mut(&tenant).ok_or(StoreError::NotFound)?;
    let held = devices
        .get_mut(&(tenant.clone(), device_id))
        .ok_or(StoreError::NotFound)?;
    let before = &held.device;
    let mut device = before.clone();
    let change = edit(&mut device)?;
    let mut previous = held.previous.clone();
    if let Change::None = change {
        return Ok(Modified {
            device,
            grace_end: previous.map(|(_, end)| Millis(end)),
            changed: false,
        });
    }
    device.version += 1;
    device.updated_at = now.max(device.updated_at);
    let mut current_key = held.current_key.clone();
    let mut forget = Vec::new();
    let mut new_key = None;
    if let Change::Key(new_hash, grace_ms) = change {
        // A device holds at most two keys: the one before the current one
        // ends now, whatever was left of its grace.
        if let Some((older, _)) = previous.take() {
            forget.push(older);
        }
        if grace_ms > 0 {
            previous = Some((current_key.clone(), now.0 + grace_ms));
        } else {
            forget.push(current_key.clone());
        }
        current_key = new_hash.to_vec();
        new_key = Some(current_key.clone());
    } else if device.status == DeviceStatus::Revoked {
        // Revocation ends both keys; the current one's hash stays so the
        // device can be told it is revoked.
        if let Some((older, _)) = previous.take() {
            forget.push(older);
        }
    }
    let grace_end = previous.as_ref().map(|(_, end)| Millis(*end));
    let event_id = events::id::format(next_ulid_after(
        events::id::parse(&locked.row.last_event),
        now,
    )?);
    let event = Event {
        id: &event_id,
        kind: kind.as_str(),
        created_at: now,
        actor: actor.as_deref(),
        device_id: &device.id,
        data: EventData {
            object: &device,
            previous_attributes: events::previous_attributes(before, &device),
        },
    };
    let body = serde_json::to_string(&event).map_err(|e| StoreError::Internal(e.to_string()))?;
    let kept = match remember {
        Some(remember) => {
            let (key_id, fingerprint) = (remember.id.to_vec(), remember.fingerprint.to_vec());
            let sealed = remember.sealed(&device, grace_end)?;
            Some(Kept {
                tenant: tenant.clone(),
                key_id,
                fingerprint,
                sealed,
                stored_ms: to_i64(now.0),
            })
        }
        None => None,
    };
    // Nothing below can fail: the change is kept.
    if before.status != device.status {
        *locked.row.counts.slot(before.status) -= 1;
        *locked.row.counts.slot(device.status) += 1;
    }
    locked.row.last_event.clone_from(&event_id);
    locked.changed = true;
    if let Some(hash) = new_key {
        writes
            .new_keys
            .push((hash, tenant.clone(), device.id.clone()));
    }
    for hash in forget {
        writes.forget(hash);
    }
    writes.kept.extend(kept);
    writes
        .notices
        .push(format!("{} {} {tenant}", kind.code(), device.id));
    writes.events.push(NewEvent {
        tenant,
        id: event_id,
        device_id: device.id.clone(),
        code: i16::from(kind.code()),
        created_ms: to_i64(now.0),
        body,
    });
    held.device = device.clone();
    held.current_key = current_key;
    held.previous = previous;
    held.changed = true;
    Ok(Modified {
        device,
        grace_end,
        changed: true,
    })
}

/// Writes what the batch changed, one statement per table, all sent
/// together (one round trip).
async fn save(
    txn: &Transaction<'_>,
    tenants: &HashMap<String, Locked>,
    devices: &Devices,
    writes: &Writes,
) -> StoreResult<()> {
    let update_devices = txn
        .prepare_cached(
            "UPDATE devicehub_devices d SET name = v.name, status = v.status, \
             location_ids = ARRAY(SELECT e FROM jsonb_array_elements_text(v.locations::jsonb) \
             WITH ORDINALITY AS x(e, n) ORDER BY n), \
             pim_enabled = v.pim, \
             pim_segment_ids = ARRAY(SELECT e FROM jsonb_array_elements_text(v.segments::jsonb) \
             WITH ORDINALITY AS x(e, n) ORDER BY n), \
             updated_ms = v.updated, version = v.version, key_hash = v.key, \
             prev_key_hash = v.prev_key, prev_key_expires_ms = v.prev_end \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::boolean[], $7::text[], $8::bigint[], $9::bigint[], $10::bytea[], \
             $11::bytea[], $12::bigint[], $13::bigint[]) \
             AS v(tenant, id, name, status, locations, pim, segments, updated, version, key, \
             prev_key, prev_end, read_version) \
             WHERE d.tenant = v.tenant AND d.id = v.id AND d.version = v.read_version",
        )
        .await
        .map_err(pg_error)?;
    let insert_events = txn
        .prepare_cached(
            "INSERT INTO devicehub_events (tenant, id, device_id, type, created_ms, body) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], \
             $5::bigint[], $6::text[])",
        )
        .await
        .map_err(pg_error)?;
    let update_tenants = txn
        .prepare_cached(
            "UPDATE devicehub_tenants t SET last_device = v.last_device, \
             last_event = v.last_event, active = v.active, inactive = v.inactive, \
             revoked = v.revoked \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
             $6::bigint[]) AS v(tenant, last_device, last_event, active, inactive, revoked) \
             WHERE t.tenant = v.tenant",
        )
        .await
        .map_err(pg_error)?;
    let notify = txn
        .prepare_cached("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m")
        .await
        .map_err(pg_error)?;

    let changed: Vec<(&(String, String), &Held)> =
        devices.iter().filter(|(_, held)| held.changed).collect();
    let device_columns = DeviceColumns::of(&changed);
    let events = EventColumns::of(&writes.events);
    let tenant_rows = TenantColumns::of(tenants);
    let forget: [&(dyn ToSql + Sync); 1] = [&writes.forget];
    let (key_hashes, key_tenants, key_devices) = unzip3(&writes.new_keys);
    let new_keys: [&(dyn ToSql + Sync); 3] = [&key_hashes, &key_tenants, &key_devices];
    let kept = KeptColumns::of(&writes.kept);
    let notices: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &writes.notices];

    let mut statements: Vec<Pending<'_>> = vec![
        Box::pin(txn.execute_raw(&update_devices, device_columns.params())),
        Box::pin(txn.execute_raw(&insert_events, events.params())),
        Box::pin(txn.execute_raw(&update_tenants, tenant_rows.params())),
    ];
    if !writes.forget.is_empty() {
        statements.push(Box::pin(txn.execute_raw(
            "DELETE FROM devicehub_keys WHERE key_hash = ANY($1)",
            forget,
        )));
    }
    if !key_hashes.is_empty() {
        statements.push(Box::pin(txn.execute_raw(
            "INSERT INTO devicehub_keys (key_hash, tenant, device_id) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[])",
            new_keys,
        )));
    }
    if !writes.kept.is_empty() {
        statements.push(Box::pin(txn.execute_raw(
            "INSERT INTO devicehub_idempotency (tenant, key_id, stored_ms, fingerprint, sealed) \
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bytea[], \
             $5::bytea[]) ON CONFLICT (tenant, key_id) DO UPDATE \
             SET stored_ms = excluded.stored_ms, fingerprint = excluded.fingerprint, \
             sealed = excluded.sealed",
            kept.params(),
        )));
    }
    statements.push(Box::pin(async move {
        txn.query(&notify, &notices)
            .await
            .map(|rows| rows.len() as u64)
    }));
    let counts = pipelined(statements).await.map_err(pg_error)?;
    if counts[0] != changed.len() as u64 {
        // Never taken: the devices are locked since they were read.
        return Err(StoreError::Internal(
            "a device changed under its lock".into(),
        ));
    }
    Ok(())
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Runs statements of one connection together. tokio-postgres sends each one
/// when it is first polled, so they go out in this order, in one round trip,
/// and PostgreSQL runs them in that order. The rows counts, in order; the
/// first error ends it (the transaction is then rolled back).
async fn pipelined(mut statements: Vec<Pending<'_>>) -> Result<Vec<u64>, tokio_postgres::Error> {
    let mut counts: Vec<Option<u64>> = vec![None; statements.len()];
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (statement, count) in statements.iter_mut().zip(counts.iter_mut()) {
            if count.is_some() {
                continue;
            }
            match statement.as_mut().poll(cx) {
                Poll::Ready(Ok(n)) => *count = Some(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(counts.iter().map(|n| n.unwrap_or(0)).collect()))
        }
    })
    .await
}

/// Two queries sent together (see `pipelined`).
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut first, mut second) = (None, None);
    std::future::poll_fn(|cx| {
        if first.is_none() {
            if let Poll::Ready(out) = a.as_mut().poll(cx) {
                first = Some(out);
            }
        }
        if second.is_none() {
            if let Poll::Ready(out) = b.as_mut().poll(cx) {
                second = Some(out);
            }
        }
        match (first.take(), second.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                first = a;
                second = b;
                Poll::Pending
            }
        }
    })
    .await
}

fn json_array(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

fn unzip3(rows: &[(Vec<u8>, String, String)]) -> (Vec<&[u8]>, Vec<&str>, Vec<&str>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for (a, b, c) in rows {
        out.0.push(a.as_slice());
        out.1.push(b.as_str());
        out.2.push(c.as_str());
    }
    out
}

/// A statement's parameters as columns, one array per `unnest` argument:
/// the struct, and `params` in field order.
macro_rules! columns {
    ($(#[$outer:meta])* $name:ident<$lt:lifetime> { $($(#[$doc:meta])* $field:ident: $ty:ty,)+ }) => {
        $(#[$outer])*
        struct $name<$lt> {
            $($(#[$doc])* $field: Vec<$ty>,)+
        }

        impl $name<'_> {
            fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
                vec![$(&self.$field),+]
            }
        }
    };
}

columns!(
    /// The changed devices as one array per column, for `unnest`.
    DeviceColumns<'a> {
    tenant: &'a str,
    id: &'a str,
    name: &'a str,
    status: &'static str,
    /// JSON arrays: text arrays of different lengths are no SQL array.
    locations: String,
    pim: bool,
    segments: String,
    updated: i64,
    version: i64,
    key: &'a [u8],
    prev_key: Option<&'a [u8]>,
    prev_end: Option<i64>,
    read_version: i64,
});

impl<'a> DeviceColumns<'a> {
    fn of(changed: &[(&'a (String, String), &'a Held)]) -> DeviceColumns<'a> {
        let mut c = DeviceColumns {
            tenant: Vec::with_capacity(changed.len()),
            id: Vec::with_capacity(changed.len()),
            name: Vec::with_capacity(changed.len()),
            status: Vec::with_capacity(changed.len()),
            locations: Vec::with_capacity(changed.len()),
            pim: Vec::with_capacity(changed.len()),
            segments: Vec::with_capacity(changed.len()),
            updated: Vec::with_capacity(changed.len()),
            version: Vec::with_capacity(changed.len()),
            key: Vec::with_capacity(changed.len()),
            prev_key: Vec::with_capacity(changed.len()),
            prev_end: Vec::with_capacity(changed.len()),
            read_version: Vec::with_capacity(changed.len()),
        };
        for ((tenant, id), held) in changed {
            let d = &held.device;
            c.tenant.push(tenant);
            c.id.push(id);
            c.name.push(&d.name);
            c.status.push(d.status.as_str());
            c.locations.push(json_array(&d.location_ids));
            c.pim.push(d.pim_enabled);
            c.segments.push(json_array(&d.pim_segment_ids));
            c.updated.push(to_i64(d.updated_at.0));
            c.version.push(to_i64(d.version));
            c.key.push(&held.current_key);
            c.prev_key
                .push(held.previous.as_ref().map(|(k, _)| k.as_slice()));
            c.prev_end
                .push(held.previous.as_ref().map(|(_, end)| to_i64(*end)));
            c.read_version.push(to_i64(held.read_version));
        }
        c
    }
}

columns!(EventColumns<'a> {
    tenant: &'a str,
    id: &'a str,
    device_id: &'a str,
    code: i16,
    created_ms: i64,
    body: &'a str,
});

impl<'a> EventColumns<'a> {
    fn of(events: &'a [NewEvent]) -> EventColumns<'a> {
        EventColumns {
            tenant: events.iter().map(|e| e.tenant.as_str()).collect(),
            id: events.iter().map(|e| e.id.as_str()).collect(),
            device_id: events.iter().map(|e| e.device_id.as_str()).collect(),
            code: events.iter().map(|e| e.code).collect(),
            created_ms: events.iter().map(|e| e.created_ms).collect(),
            body: events.iter().map(|e| e.body.as_str()).collect(),
        }
    }
}

columns!(TenantColumns<'a> {
    tenant: &'a str,
    last_device: &'a str,
    last_event: &'a str,
    active: i64,
    inactive: i64,
    revoked: i64,
});

impl<'a> TenantColumns<'a> {
    fn of(tenants: &'a HashMap<String, Locked>) -> TenantColumns<'a> {
        let changed: Vec<(&String, &TenantRow)> = tenants
            .iter()
            .filter(|(_, locked)| locked.changed)
            .map(|(tenant, locked)| (tenant, &locked.row))
            .collect();
        TenantColumns {
            tenant: changed.iter().map(|(t, _)| t.as_str()).collect(),
            last_device: changed
                .iter()
                .map(|(_, r)| r.last_device.as_str())
                .collect(),
            last_event: changed.iter().map(|(_, r)| r.last_event.as_str()).collect(),
            active: changed
                .iter()
                .map(|(_, r)| to_i64(r.counts.active))
                .collect(),
            inactive: changed
                .iter()
                .map(|(_, r)| to_i64(r.counts.inactive))
                .collect(),
            revoked: changed
                .iter()
                .map(|(_, r)| to_i64(r.counts.revoked))
                .collect(),
        }
    }
}

columns!(KeptColumns<'a> {
    tenant: &'a str,
    key_id: &'a [u8],
    stored_ms: i64,
    fingerprint: &'a [u8],
    sealed: &'a [u8],
});

impl<'a> KeptColumns<'a> {
    /// One row per key: a later answer under the same key replaces an
    /// earlier one (one statement cannot write a row twice).
    fn of(kept: &'a [Kept]) -> KeptColumns<'a> {
        let mut last: HashMap<(&str, &[u8]), usize> = HashMap::new();
        for (at, k) in kept.iter().enumerate() {
            last.insert((k.tenant.as_str(), k.key_id.as_slice()), at);
        }
        let mut rows: Vec<&Kept> = last.into_values().map(|at| &kept[at]).collect();
        rows.sort_by(|a, b| (&a.tenant, &a.key_id).cmp(&(&b.tenant, &b.key_id)));
        KeptColumns {
            tenant: rows.iter().map(|k| k.tenant.as_str()).collect(),
            key_id: rows.iter().map(|k| k.key_id.as_slice()).collect(),
            stored_ms: rows.iter().map(|k| k.stored_ms).collect(),
            fingerprint: rows.iter().map(|k| k.fingerprint.as_slice()).collect(),
            sealed: rows.iter().map(|k| k.sealed.as_slice()).collect(),
        }
    }
}

/// One batch written by `write` directly, so that its changes surely share
/// one transaction. These need a cluster (`DEVICEHUB_TEST_PG_CLUSTER` or
/// `DEVICEHUB_TEST_POSTGRES`); without one they skip, except under
/// `CI=true`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{DevicePatch, IfMatch, NewDevice};
    use crate::store::last_seen::PERSIST_INTERVAL_MS;
    use crate::store::postgres::Postgres;
    use crate::store::tests::fresh_database;
    use crate::store::{patched, revoked, Author, EventPage, EventQuery};
    use serde_json::json;
    use std::sync::Arc;

    fn cluster(test: &str) -> Option<String> {
        let url = ["DEVICEHUB_TEST_PG_CLUSTER", "DEVICEHUB_TEST_POSTGRES"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()));
        if url.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the PostgreSQL tests (scripts/test.sh starts a cluster)"
            );
            eprintln!("{test}: no PostgreSQL cluster given: skipped");
        }
        url
    }

    /// A store on a new database of the cluster at `base`.
    async fn open(base: &str) -> Postgres {
        Postgres::open(&fresh_database(base).await, None)
            .await
            .unwrap()
    }

    async fn add(store: &Postgres, tenant: &str, name: &str) -> (Device, KeyHash) {
        let key = NewDeviceKey::generate().unwrap();
        let new = NewDevice::parse(json!({"name": name}).as_object().unwrap()).unwrap();
        let device = store
            .create(
                Author::from(tenant),
                new,
                key.hash,
                Millis::now(),
                None,
                None,
            )
            .await
            .unwrap();
        (device, key.hash)
    }

    fn request(tenant: &str, id: &str, kind: EventType, edit: Edit) -> Request {
        Request {
            tenant: tenant.to_string(),
            actor: Some("tester".into()),
            kind,
            device_id: id.to_string(),
            now: Millis::now(),
            remember: None,
            edit,
        }
    }

    fn rename(tenant: &str, id: &str, name: &str, if_match: Option<String>) -> Request {
        let patch = DevicePatch::parse(json!({"name": name}).as_object().unwrap()).unwrap();
        let if_match = if_match.map(|tag| IfMatch::parse(&tag));
        let edit: Edit = Box::new(move |device| patched(device, &patch, if_match));
        request(tenant, id, EventType::Updated, edit)
    }

    fn rotate(tenant: &str, id: &str, hash: KeyHash, grace_ms: u64) -> Request {
        let edit: Edit = Box::new(move |_| Ok(Change::Key(hash, grace_ms)));
        request(tenant, id, EventType::KeyRotated, edit)
    }

    fn refusal(outcome: &Outcome) -> Option<&'static str> {
        match &outcome.result {
            Ok(_) => None,
            Err(StoreError::NotFound) => Some("not found"),
            Err(StoreError::PreconditionFailed) => Some("precondition"),
            Err(StoreError::Revoked) => Some("revoked"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    fn key() -> KeyHash {
        NewDeviceKey::generate().unwrap().hash
    }

    use crate::auth::device_key::{KeyHash, NewDeviceKey};

    /// The tenant's first 100 events, oldest first.
    async fn first_events(store: &Postgres, tenant: &str) -> EventPage {
        store
            .events(
                tenant,
                &EventQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    #[actix_web::test]
    async fn one_batch_applies_its_changes_in_order_and_refusals_write_nothing() {
        let Some(base) = cluster("one_batch_applies_its_changes_in_order") else {
            return;
        };
        let store = open(&base).await;
        let (a, _) = add(&store, "t", "a0").await;
        let (b, _) = add(&store, "t", "b0").await;
        let (c, c_key0) = add(&store, "t", "c0").await;
        let (gone, _) = add(&store, "t", "gone").await;
        store
            .revoke(Author::from("t"), &gone.id, Millis::now())
            .await
            .unwrap();
        let (other, _) = add(&store, "u", "u0").await;
        let (c_key1, c_key2) = (key(), key());
        let (stored_answer, fingerprint) = ([7u8; 32], [9u8; 32]);

        let mut kept_rotation = rotate("t", &c.id, c_key1, 60_000);
        kept_rotation.remember = Some(Remember {
            id: stored_answer,
            fingerprint,
            seal: Box::new(|device, grace_end| {
                Ok(format!("{} {}", device.version, grace_end.is_some()).into_bytes())
            }),
        });
        let batch = vec![
            rename("t", &a.id, "a1", Some(a.etag())),
            // The same ETag again: the change before has moved the version on.
            rename("t", &a.id, "lost", Some(a.etag())),
            rename("t", &b.id, "b1", None),
            rename("t", &gone.id, "back", None),
            rename("t", "dev_01JD0000000000000000000000", "nobody", None),
            rename("nobody", &a.id, "wrong tenant", None),
            // A second change to A sees the first.
            rename("t", &a.id, "a2", None),
            request("t", &b.id, EventType::Revoked, Box::new(revoked)),
            // Revoking again changes nothing.
            request("t", &b.id, EventType::Revoked, Box::new(revoked)),
            kept_rotation,
            // The key added just before ends at once: it never reaches the
            // key index, and neither does the first one.
            rotate("t", &c.id, c_key2, 0),
            rename("u", &other.id, "u1", None),
        ];
        let outcomes = write(&store.pool, &store.seen, batch).await.unwrap();
        let refused: Vec<Option<&str>> = outcomes.iter().map(refusal).collect();
        assert_eq!(
            refused,
            [
                None,
                Some("precondition"),
                None,
                Some("revoked"),
                Some("not found"),
                Some("not found"),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        let changed: Vec<bool> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|m| m.changed))
            .collect();
        assert_eq!(changed, [true, true, true, true, false, true, true, true]);

        let a_now = store.get("t", &a.id).await.unwrap();
        assert_eq!((a_now.name.as_str(), a_now.version), ("a2", 3));
        let b_now = store.get("t", &b.id).await.unwrap();
        assert_eq!(
            (b_now.name.as_str(), b_now.status, b_now.version),
            ("b1", DeviceStatus::Revoked, 3)
        );
        assert_eq!(store.get("t", &gone.id).await.unwrap().version, 2);
        assert_eq!(store.get("u", &other.id).await.unwrap().name, "u1");
        let c_now = store.get("t", &c.id).await.unwrap();
        assert_eq!(c_now.version, 3);
        let answer = match &outcomes[6].result {
            Ok(modified) => &modified.device,
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(answer, &a_now, "the answer is the device as written");

        // The events: in order, one per change, each after the one before.
        let page = first_events(&store, "t").await;
        let kinds: Vec<(&str, String)> = page
            .events
            .iter()
            .map(|e| {
                let body: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
                (
                    e.kind.as_str(),
                    body["data"]["object"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected = [
            ("device.created", "a0"),
            ("device.created", "b0"),
            ("device.created", "c0"),
            ("device.created", "gone"),
            ("device.revoked", "gone"),
            ("device.updated", "a1"),
            ("device.updated", "b1"),
            ("device.updated", "a2"),
            ("device.revoked", "b1"),
            ("device.key_rotated", "c0"),
            ("device.key_rotated", "c0"),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(k, n)| (*k, n.to_string())).collect();
        assert_eq!(kinds, expected);
        let ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let a2: serde_json::Value = serde_json::from_slice(&page.events[7].json).unwrap();
        assert_eq!(a2["data"]["previousAttributes"], json!({"name": "a1"}));
        assert_eq!(a2["actor"], "tester");

        // Counts, the key index and the idempotent answer.
        let counts = store.stats("t").await.unwrap();
        assert_eq!((counts.active, counts.revoked), (2, 2));
        store.verify_indexes().await.unwrap();
        let c_keys: Vec<KeyHash> = store
            .key_index_entries()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, id, _)| *id == c.id)
            .map(|(_, _, hash)| hash)
            .collect();
        assert_eq!(c_keys, [c_key2]);
        for old in [c_key0, c_key1] {
            assert!(store
                .find_by_key(&old, Millis::now())
                .await
                .unwrap()
                .is_none());
        }
        let kept = store
            .remembered("t", &stored_answer, Millis::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.sealed, b"2 true");
        assert_eq!(kept.fingerprint, fingerprint);
    }

    #[actix_web::test]
    async fn a_database_error_fails_the_whole_batch_and_writes_nothing() {
        let Some(base) = cluster("a_database_error_fails_the_whole_batch") else {
            return;
        };
        let store = open(&base).await;
        let (a, _) = add(&store, "t", "a0").await;
        let (b, b_key) = add(&store, "t", "b0").await;
        // Rotating A to B's key breaks the key index's uniqueness: the
        // database refuses the batch's statement.
        let batch = vec![
            rename("t", &a.id, "a1", None),
            rotate("t", &a.id, b_key, 0),
            rename("t", &b.id, "b1", None),
        ];
        let error = match write(&store.pool, &store.seen, batch).await {
            Ok(_) => panic!("the batch was written"),
            Err(e) => e,
        };
        assert!(matches!(error, StoreError::Internal(_)), "{error:?}");
        assert_eq!(store.get("t", &a.id).await.unwrap(), a);
        assert_eq!(store.get("t", &b.id).await.unwrap(), b);
        let page = first_events(&store, "t").await;
        assert_eq!(page.events.len(), 2, "only the registrations");

        // Through the committer, each change of a failed batch gets the
        // error; the next batch is written.
        let renamed = store
            .update(
                Author::from("t"),
                &a.id,
                DevicePatch::parse(json!({"name": "a2"}).as_object().unwrap()).unwrap(),
                None,
                Millis::now(),
            )
            .await
            .unwrap();
        assert_eq!(renamed.version, 2);
    }

    /// Two instances write check-ins for the same devices in opposite
    /// orders while both commit batches of changes to them: every lock is
    /// taken in sorted order, so no transaction deadlocks and every
    /// check-in reaches the database.
    #[actix_web::test]
    async fn check_ins_of_two_instances_and_change_batches_never_deadlock() {
        let Some(base) = cluster("check_ins_of_two_instances_and_change_batches_never_deadlock")
        else {
            return;
        };
        let url = fresh_database(&base).await;
        let a = Postgres::open(&url, None).await.unwrap();
        let b = Postgres::open(&url, None).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..200 {
            ids.push(add(&a, "t", &format!("d{i}")).await.0.id);
        }
        let (a, b) = (Arc::new(a), Arc::new(b));
        let seen = Millis::now().0;
        // A check-in is written when the device's last written one is a
        // minute old: each round is a minute later, so each writes again.
        let at = |round: u64, later: u64| Millis(seen + round * PERSIST_INTERVAL_MS + later);
        for round in 0..3u64 {
            for id in &ids {
                a.touch("t", id, at(round, 0));
            }
            for id in ids.iter().rev() {
                b.touch("t", id, at(round, 1));
            }
            let mut changes = tokio::task::JoinSet::new();
            for (n, id) in ids.iter().enumerate() {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                let id = id.clone();
                let patch = DevicePatch::parse(
                    json!({"name": format!("r{round} {n}")})
                        .as_object()
                        .unwrap(),
                )
                .unwrap();
                changes.spawn(async move {
                    store
                        .update(Author::from("t"), &id, patch, None, Millis::now())
                        .await
                        .map(|_| ())
                });
            }
            while let Some(changed) = changes.join_next().await {
                changed.unwrap().unwrap();
            }
        }
        // A third instance, with no check-in in memory, reads what was stored.
        let c = Postgres::open(&url, None).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        for id in &ids {
            loop {
                let stored = c.get("t", id).await.unwrap().last_seen_at;
                if stored == Some(at(2, 1)) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id}: stored check-in {stored:?}, not the last one"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
