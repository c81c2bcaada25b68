//! Listing a tenant's devices from PostgreSQL a batch at a time, in id
//! order after a cursor (keyset paging): memory does not grow with the
//! tenant, and devices registered meanwhile are never skipped or repeated,
//! because ids follow commit order. A streamed list reads every batch in
//! one `REPEATABLE READ` transaction (`Postgres::snapshot`), so it is one
//! consistent snapshot, as on the embedded store.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::{device_at, pg_error, pool_error, DEVICE_COLUMNS};
use crate::devices::Device;
use crate::store::last_seen::LastSeen;
use crate::store::{ListQuery, Order, Page, StoreResult};

/// Rows read per round trip at most.
const FETCH: i64 = 500;

pub struct PgCursor {
    pool: Pool,
    seen: Arc<LastSeen>,
    tenant: String,
    query: ListQuery,
    /// The last device id read: the next batch starts after it.
    after: Option<String>,
    ended: bool,
    /// The snapshot's connection, in its transaction, with the batch
    /// statement once prepared; none for a single page (pooled).
    held: Option<(Client, Option<Statement>)>,
}

impl PgCursor {
    pub(super) fn new(pool: Pool, seen: Arc<LastSeen>, tenant: &str, query: ListQuery) -> PgCursor {
        PgCursor {
            pool,
            seen,
            tenant: tenant.to_string(),
            after: query.starting_after.clone(),
            query,
            ended: false,
            held: None,
        }
    }

    pub(super) fn holding(mut self, client: Client) -> PgCursor {
        self.held = Some((client, None));
        self
    }

    /// Appends up to `max_found` matching devices to `out`; false once the
    /// tenant has no more.
    pub async fn next_batch(
        &mut self,
        max_found: usize,
        out: &mut Vec<Device>,
    ) -> StoreResult<bool> {
        let (compare, direction) = match self.query.order {
            Order::Asc => (">", "ASC"),
            Order::Desc => ("<", "DESC"),
        };
        let mut sql = format!("SELECT {DEVICE_COLUMNS} FROM devicehub_devices WHERE tenant = $1");
        let status = self.query.status.map(|s| s.as_str());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.tenant];
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(location) = &self.query.location_id {
            params.push(location);
            sql.push_str(&format!(" AND location_ids @> ARRAY[${}]", params.len()));
        }
        let mut after = self.after.clone();
        let after_at = params.len() + 1;
        // When every filter is in the query, the rows asked for are exactly
        // the ones wanted (a page of 100 reads 101 rows, not 500).
        let exact = self.query.name_contains.is_none()
            && self.query.last_seen_before.is_none()
            && self.query.last_seen_after.is_none();
        let fetch = match exact {
            true => FETCH.min(i64::try_from(max_found).unwrap_or(FETCH)),
            false => FETCH,
        };
        sql.push_str(&format!(
            " AND (${after_at}::text IS NULL OR id {compare} ${after_at}) \
             ORDER BY id {direction} LIMIT ${}",
            after_at + 1
        ));
        if let Some((client, prepared @ None)) = &mut self.held {
            *prepared = Some(client.prepare(&sql).await.map_err(pg_error)?);
        }
        let pooled;
        let (client, statement): (&Client, Statement) = match &self.held {
            Some((client, Some(statement))) => (client, statement.clone()),
            _ => {
                pooled = self.pool.get().await.map_err(pool_error)?;
                let statement = pooled.prepare_cached(&sql).await.map_err(pg_error)?;
                let client: &Client = &pooled;
                (client, statement)
            }
        };
        let mut found = 0;
        while !self.ended && found < max_found {
            let mut bound = params.clone();
            bound.push(&after);
            bound.push(&fetch);
            let rows = client.query(&statement, &bound).await.map_err(pg_error)?;
            self.ended = (rows.len() as i64) < fetch;
            let mut resumed = None;
            for (at, row) in rows.iter().enumerate() {
                let device = device_at(row, 0, &self.seen, &self.tenant)?;
                resumed = Some(device.id.clone());
                if self.wanted(&device) {
                    out.push(device);
                    found += 1;
                    if found == max_found {
                        // Stop inside the batch: the rest is read again next time.
                        self.ended &= at + 1 == rows.len();
                        break;
                    }
                }
            }
            if resumed.is_some() {
                after = resumed;
            }
        }
        self.after = after;
        Ok(!self.ended)
    }

    fn wanted(&self, device: &Device) -> bool {
        if let Some(needle) = &self.query.name_contains {
            if !device.name.to_lowercase().contains(needle.as_str()) {
                return false;
            }
        }
        self.query.seen_matches(device.last_seen_at)
    }

    /// Collects a limited page: `limit` devices and whether more exist.
    pub async fn page(mut self, limit: usize) -> StoreResult<Page> {
        let mut devices = Vec::new();
        self.next_batch(limit.saturating_add(1), &mut devices)
            .await?;
        let has_more = devices.len() > limit;
        devices.truncate(limit);
        Ok(Page { devices, has_more })
    }
}
