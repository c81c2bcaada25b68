//! The PostgreSQL schema, embedded in the binary and applied at start-up by
//! one instance at a time (under an advisory lock). Each migration runs in
//! its own transaction with the version it brings the schema to.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::{StoreError, StoreResult};

/// The session-level advisory lock taken while migrating (an arbitrary
/// constant: "devicehub" in ASCII, folded into 63 bits).
const MIGRATION_LOCK: i64 = 0x0064_6576_6963_6568;

/// The lock `serve --demo` takes so two instances starting together seed once.
pub const DEMO_LOCK: i64 = MIGRATION_LOCK + 1;

/// Migration `n` (1-based) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE devicehub_tenants (
    tenant text PRIMARY KEY,
    -- The last device id and event id handed out: the next one follows it,
    -- under this row's lock, so ids follow commit order.
    last_device text NOT NULL DEFAULT '',
    last_event text NOT NULL DEFAULT '',
    active bigint NOT NULL DEFAULT 0,
    inactive bigint NOT NULL DEFAULT 0,
    revoked bigint NOT NULL DEFAULT 0
);
CREATE TABLE devicehub_devices (
    tenant text NOT NULL,
    id text NOT NULL,
    name text NOT NULL,
    status text NOT NULL,
    location_ids text[] NOT NULL,
    pim_enabled boolean NOT NULL,
    pim_segment_ids text[] NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    version bigint NOT NULL,
    key_hash bytea NOT NULL,
    prev_key_hash bytea,
    prev_key_expires_ms bigint,
    last_seen_ms bigint,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX devicehub_devices_status ON devicehub_devices (tenant, status, id);
CREATE INDEX devicehub_devices_locations ON devicehub_devices USING gin (location_ids);
-- Every key that authenticates (current keys, and previous ones within
-- their grace period): one owner each.
CREATE TABLE devicehub_keys (
    key_hash bytea PRIMARY KEY,
    tenant text NOT NULL,
    device_id text NOT NULL
);
CREATE TABLE devicehub_events (
    tenant text NOT NULL,
    id text NOT NULL,
    device_id text NOT NULL,
    type smallint NOT NULL,
    created_ms bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX devicehub_events_device ON devicehub_events (tenant, device_id, id);
CREATE INDEX devicehub_events_created ON devicehub_events (created_ms);
CREATE TABLE devicehub_idempotency (
    tenant text NOT NULL,
    key_id bytea NOT NULL,
    stored_ms bigint NOT NULL,
    fingerprint bytea NOT NULL,
    sealed bytea NOT NULL,
    PRIMARY KEY (tenant, key_id)
);
CREATE INDEX devicehub_idempotency_stored ON devicehub_idempotency (stored_ms);
CREATE TABLE devicehub_webhooks (
    tenant text NOT NULL,
    id text NOT NULL,
    -- The webhook's record, as the embedded store keeps it (JSON).
    record text NOT NULL,
    enabled boolean NOT NULL,
    next_attempt_ms bigint NOT NULL,
    -- The instance delivering to it, until when (Unix ms): one at a time.
    claimed_by text NOT NULL DEFAULT '',
    claimed_until bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE devicehub_webhook_deliveries (
    tenant text NOT NULL,
    webhook_id text NOT NULL,
    seq bigint NOT NULL,
    delivery text NOT NULL,
    PRIMARY KEY (tenant, webhook_id, seq)
);
"#];

/// The schema version this binary reads and writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the schema up to `VERSION`, one instance at a time; refuses a
/// schema newer than this binary.
pub async fn migrate(client: &mut Client) -> StoreResult<()> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error);
    result.and(unlocked.map(|_| ()))
}

async fn apply(client: &mut Client) -> StoreResult<()> {
    // (Not CREATE TABLE IF NOT EXISTS: its notice would be logged.)
    let missing: bool = client
        .query_one("SELECT to_regclass('devicehub_schema') IS NULL", &[])
        .await
        .map_err(pg_error)?
        .get(0);
    if missing {
        client
            .batch_execute("CREATE TABLE devicehub_schema (version integer NOT NULL)")
            .await
            .map_err(pg_error)?;
    }
    let found: i32 = client
        .query_opt("SELECT max(version) FROM devicehub_schema", &[])
        .await
        .map_err(pg_error)?
        .and_then(|row| row.get::<_, Option<i32>>(0))
        .unwrap_or(0);
    if found > VERSION {
        return Err(StoreError::Internal(format!(
            "the database's schema is version {found}, newer than this build reads ({VERSION}): upgrade devicehub"
        )));
    }
    for (at, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = at as i32 + 1;
        let txn = client.transaction().await.map_err(pg_error)?;
        txn.batch_execute(sql).await.map_err(pg_error)?;
        txn.execute("DELETE FROM devicehub_schema", &[])
            .await
            .map_err(pg_error)?;
        txn.execute("INSERT INTO devicehub_schema VALUES ($1)", &[&version])
            .await
            .map_err(pg_error)?;
        txn.commit().await.map_err(pg_error)?;
        log::info!("storage: PostgreSQL schema migrated to version {version}");
    }
    Ok(())
}
