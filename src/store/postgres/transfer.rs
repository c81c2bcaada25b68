//! `devicehub export` and `import` on PostgreSQL, in the same format as the
//! embedded store (docs/EXPORT.md), so a deployment moves either way.
//!
//! Export reads one snapshot (a read-only REPEATABLE READ transaction) a
//! batch at a time. Import is checked line by line by the embedded store's
//! importer into a scratch file first (the same checks, the same messages),
//! then copied into PostgreSQL in one transaction: all or nothing.

use std::io::Write;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::IsolationLevel;

use super::{pg_error, to_i64, to_u64, Postgres};
use crate::auth::device_key;
use crate::devices::{DeviceStatus, Millis};
use crate::store::export::{ExportError, ExportWriter, ImportError, Rows, Transferred};
use crate::store::webhooks::WebhookRecord;
use crate::store::{DeviceRecord, StatusCounts, StoreError, StoreResult};

/// Rows read or written per statement.
const BATCH: i64 = 1_000;

impl Postgres {
    /// Writes the store (or one tenant of it) as an export.
    pub async fn export_to<W: Write>(
        &self,
        out: &mut W,
        tenant: Option<&str>,
    ) -> Result<Transferred, ExportError> {
        let mut client = self.client().await?;
        let txn = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let mut writer = ExportWriter::begin(out, tenant)?;
        let only = tenant.map(str::to_string);
        let columns = "tenant, id, name, status, location_ids, pim_enabled, pim_segment_ids, \
             created_ms, updated_ms, version, key_hash, prev_key_hash, prev_key_expires_ms, \
             last_seen_ms";
        let mut after = (String::new(), String::new());
        loop {
            let rows = page(&txn, columns, "devicehub_devices", &only, &after).await?;
            for row in &rows {
                let status: &str = row.get(3);
                let record = DeviceRecord {
                    name: row.get(2),
                    status: DeviceStatus::parse(status)
                        .ok_or_else(|| StoreError::Internal("a device of unknown status".into()))?,
                    location_ids: row.get(4),
                    pim_enabled: row.get(5),
                    pim_segment_ids: row.get(6),
                    created_ms: to_u64(row.get(7)),
                    updated_ms: to_u64(row.get(8)),
                    version: to_u64(row.get(9)),
                    key_hash: hex(row.get(10))?,
                    prev_key_hash: row.get::<_, Option<&[u8]>>(11).map(hex).transpose()?,
                    prev_key_expires_ms: row.get::<_, Option<i64>>(12).map(to_u64),
                    last_event: None,
                };
                let last_seen = row.get::<_, Option<i64>>(13).map(|ms| Millis(to_u64(ms)));
                after = (row.get(0), row.get(1));
                let seen = self.seen.get(&after.0, &after.1).max(last_seen);
                writer.device(&after.0, &after.1, record, seen)?;
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
        let mut after = (String::new(), String::new());
        loop {
            let rows = page(&txn, "tenant, id, body", "devicehub_events", &only, &after).await?;
            for row in &rows {
                after = (row.get(0), row.get(1));
                let body: &str = row.get(2);
                writer.event(&after.0, &after.1, body.as_bytes())?;
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
        let mut after = (String::new(), String::new());
        loop {
            let rows = page(
                &txn,
                "tenant, id, record",
                "devicehub_webhooks",
                &only,
                &after,
            )
            .await?;
            for row in &rows {
                after = (row.get(0), row.get(1));
                let text: &str = row.get(2);
                writer.webhook(&after.0, &after.1, WebhookRecord::decode(text.as_bytes())?)?;
            }
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
        Ok(writer.end()?)
    }

    /// Loads checked rows into this store, which must hold no device, event
    /// or webhook; one transaction.
    pub async fn import_rows(&self, rows: Rows) -> Result<Transferred, ImportError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        for (table, what) in [
            ("devicehub_devices", "devices"),
            ("devicehub_events", "events"),
            ("devicehub_webhooks", "webhooks"),
        ] {
            let held: bool = txn
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
                .await
                .map_err(pg_error)?
                .get(0);
            if held {
                return Err(ImportError::NotEmpty(what));
            }
        }
        let read = Transferred {
            devices: rows.devices.len() as u64,
            events: rows.events.len() as u64,
            webhooks: rows.webhooks.len() as u64,
        };
        load_tenants(&txn, &rows).await?;
        load_devices(&txn, &rows).await?;
        load_events(&txn, &rows).await?;
        load_webhooks(&txn, &rows).await?;
        txn.commit().await.map_err(pg_error)?;
        Ok(read)
    }
}

fn hex(bytes: &[u8]) -> StoreResult<String> {
    let hash: device_key::KeyHash = bytes
        .try_into()
        .map_err(|_| StoreError::Internal("a key hash of the wrong length".into()))?;
    Ok(device_key::to_hex(&hash))
}

fn unhex(text: &str) -> StoreResult<Vec<u8>> {
    device_key::from_hex(text)
        .map(|hash| hash.to_vec())
        .ok_or_else(|| StoreError::Internal("a key hash that is not hex".into()))
}

/// The next batch of `table` after `after` in (tenant, id) order, of one
/// tenant or all.
async fn page(
    txn: &Transaction<'_>,
    columns: &str,
    table: &str,
    only: &Option<String>,
    after: &(String, String),
) -> StoreResult<Vec<tokio_postgres::Row>> {
    let sql = format!(
        "SELECT {columns} FROM {table} WHERE ($1::text IS NULL OR tenant = $1) \
         AND (tenant, id) > ($2, $3) ORDER BY tenant, id LIMIT {BATCH}"
    );
    txn.query(&sql, &[only, &after.0, &after.1])
        .await
        .map_err(pg_error)
}

/// Each tenant's row: its last device and event ids and its counts.
async fn load_tenants(txn: &Transaction<'_>, rows: &Rows) -> StoreResult<()> {
    let mut tenants: std::collections::BTreeMap<&str, (String, String, StatusCounts)> =
        Default::default();
    for device in &rows.devices {
        let entry = tenants.entry(&device.tenant).or_default();
        entry.0 = entry.0.clone().max(device.id.clone());
        *entry.2.slot(device.record.status) += 1;
    }
    for event in &rows.events {
        let entry = tenants.entry(&event.tenant).or_default();
        entry.1 = entry.1.clone().max(event.id.clone());
    }
    for (tenant, _, _) in &rows.webhooks {
        tenants.entry(tenant).or_default();
    }
    let names: Vec<&str> = tenants.keys().copied().collect();
    let last_devices: Vec<&str> = tenants.values().map(|t| t.0.as_str()).collect();
    let last_events: Vec<&str> = tenants.values().map(|t| t.1.as_str()).collect();
    let count = |pick: fn(&StatusCounts) -> u64| -> Vec<i64> {
        tenants.values().map(|t| to_i64(pick(&t.2))).collect()
    };
    let (active, inactive, revoked) = (
        count(|c| c.active),
        count(|c| c.inactive),
        count(|c| c.revoked),
    );
    txn.execute(
        "INSERT INTO devicehub_tenants (tenant, last_device, last_event, active, inactive, revoked) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[])",
        &[&names, &last_devices, &last_events, &active, &inactive, &revoked],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn load_devices(txn: &Transaction<'_>, rows: &Rows) -> StoreResult<()> {
    for chunk in rows.devices.chunks(BATCH as usize) {
        let json = |list: &Vec<String>| serde_json::to_string(list).unwrap_or_default();
        let mut columns: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
        let mut lists: (Vec<String>, Vec<String>) = Default::default();
        let mut pim: Vec<bool> = Vec::new();
        let mut times: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
        let mut current_keys: Vec<Vec<u8>> = Vec::new();
        let mut previous_keys: Vec<Option<Vec<u8>>> = Vec::new();
        let mut previous_ends: Vec<Option<i64>> = Vec::new();
        let mut seen: Vec<Option<i64>> = Vec::new();
        let mut key_rows: (Vec<Vec<u8>>, Vec<&str>, Vec<&str>) = Default::default();
        for device in chunk {
            let record = &device.record;
            columns.0.push(&device.tenant);
            columns.1.push(&device.id);
            columns.2.push(&record.name);
            columns.3.push(record.status.as_str());
            lists.0.push(json(&record.location_ids));
            lists.1.push(json(&record.pim_segment_ids));
            pim.push(record.pim_enabled);
            times.0.push(to_i64(record.created_ms));
            times.1.push(to_i64(record.updated_ms));
            times.2.push(to_i64(record.version));
            let current = unhex(&record.key_hash)?;
            let previous = record.prev_key_hash.as_deref().map(unhex).transpose()?;
            for hash in std::iter::once(&current).chain(previous.as_ref()) {
                key_rows.0.push(hash.clone());
                key_rows.1.push(&device.tenant);
                key_rows.2.push(&device.id);
            }
            current_keys.push(current);
            previous_keys.push(previous);
            previous_ends.push(record.prev_key_expires_ms.map(to_i64));
            seen.push(device.last_seen.map(|m| to_i64(m.0)));
        }
        let params: [&(dyn ToSql + Sync); 14] = [
            &columns.0,
            &columns.1,
            &columns.2,
            &columns.3,
            &lists.0,
            &pim,
            &lists.1,
            &times.0,
            &times.1,
            &times.2,
            &current_keys,
            &previous_keys,
            &previous_ends,
            &seen,
        ];
        txn.execute(
            "INSERT INTO devicehub_devices (tenant, id, name, status, location_ids, pim_enabled, \
             pim_segment_ids, created_ms, updated_ms, version, key_hash, prev_key_hash, \
             prev_key_expires_ms, last_seen_ms) \
             SELECT t, i, n, s, ARRAY(SELECT jsonb_array_elements_text(l::jsonb)), p, \
             ARRAY(SELECT jsonb_array_elements_text(g::jsonb)), c, u, v, k, pk, pe, ls \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::bool[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::bytea[], \
             $12::bytea[], $13::int8[], $14::int8[]) \
             AS r(t, i, n, s, l, p, g, c, u, v, k, pk, pe, ls)",
            &params,
        )
        .await
        .map_err(pg_error)?;
        txn.execute(
            "INSERT INTO devicehub_keys (key_hash, tenant, device_id) \
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[])",
            &[&key_rows.0, &key_rows.1, &key_rows.2],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

async fn load_events(txn: &Transaction<'_>, rows: &Rows) -> StoreResult<()> {
    for chunk in rows.events.chunks(BATCH as usize) {
        let tenants: Vec<&str> = chunk.iter().map(|e| e.tenant.as_str()).collect();
        let ids: Vec<&str> = chunk.iter().map(|e| e.id.as_str()).collect();
        let devices: Vec<&str> = chunk.iter().map(|e| e.device_id.as_str()).collect();
        let kinds: Vec<i16> = chunk.iter().map(|e| i16::from(e.kind.code())).collect();
        let created: Vec<i64> = chunk.iter().map(|e| to_i64(e.created.0)).collect();
        let bodies = chunk
            .iter()
            .map(|e| String::from_utf8(e.json.clone()))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        txn.execute(
            "INSERT INTO devicehub_events (tenant, id, device_id, type, created_ms, body) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[], $5::int8[], \
             $6::text[])",
            &[&tenants, &ids, &devices, &kinds, &created, &bodies],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

async fn load_webhooks(txn: &Transaction<'_>, rows: &Rows) -> StoreResult<()> {
    for (tenant, id, record) in &rows.webhooks {
        let text =
            String::from_utf8(record.encode()?).map_err(|e| StoreError::Internal(e.to_string()))?;
        txn.execute(
            "INSERT INTO devicehub_webhooks (tenant, id, record, enabled, next_attempt_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                tenant,
                id,
                &text,
                &record.enabled,
                &to_i64(record.next_attempt_ms),
            ],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}
