//! Webhooks on PostgreSQL: each webhook's record is kept as the embedded
//! store keeps it (JSON, with its cursor and retry state), and changes under
//! a row lock. A webhook is delivered to by one instance at a time: the
//! worker claims it for `LEASE_MS` at each look, and another instance may
//! take it over only once that claim has run out (at least once, in order).

use std::time::Duration;

use super::{lock_new_tenant, pg_error, to_i64, to_u64, Postgres};
use crate::devices::Millis;
use crate::store::webhooks::{new_id, WebhookRecord};
use crate::store::{
    Attempt, DeliveryRecorded, Next, Scheduled, StoreError, StoreResult, DELIVERIES_KEPT,
};
use crate::webhooks::{self, Delivery, Webhook, WebhookPatch};

/// How long a claim on a webhook lasts without being renewed.
const LEASE_MS: u64 = 60_000;

/// Events read per round trip while looking for one a webhook wants.
const SCAN: i64 = 200;

fn decode(row: &tokio_postgres::Row, at: usize) -> StoreResult<WebhookRecord> {
    let text: &str = row.get(at);
    WebhookRecord::decode(text.as_bytes())
}

fn encode(record: &WebhookRecord) -> StoreResult<String> {
    String::from_utf8(record.encode()?).map_err(|e| StoreError::Internal(e.to_string()))
}

impl Postgres {
    pub async fn create_webhook(
        &self,
        tenant: &str,
        new: WebhookPatch,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        // The tenant's lock orders this against events being recorded: the
        // webhook gets exactly the events committed after it.
        let row = lock_new_tenant(&txn, tenant).await?;
        let held: i64 = txn
            .query_one(
                "SELECT count(*) FROM devicehub_webhooks WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(pg_error)?
            .get(0);
        if to_u64(held) >= webhooks::MAX_PER_TENANT {
            return Err(StoreError::WebhookQuotaExceeded(webhooks::MAX_PER_TENANT));
        }
        let id = new_id(now)?;
        let record = WebhookRecord::new(&new, secret, row.last_event, now);
        txn.execute(
            "INSERT INTO devicehub_webhooks (tenant, id, record, enabled, next_attempt_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &tenant,
                &id,
                &encode(&record)?,
                &record.enabled,
                &to_i64(record.next_attempt_ms),
            ],
        )
        .await
        .map_err(pg_error)?;
        txn.commit().await.map_err(pg_error)?;
        self.bus.webhooks_changed();
        Ok(record.public(&id))
    }

    pub async fn webhooks(&self, tenant: &str) -> StoreResult<Vec<Webhook>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, record FROM devicehub_webhooks WHERE tenant = $1 ORDER BY id",
                &[&tenant],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| Ok(decode(row, 1)?.public(row.get(0))))
            .collect()
    }

    async fn webhook_record(&self, tenant: &str, id: &str) -> StoreResult<WebhookRecord> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record FROM devicehub_webhooks WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        decode(&row, 0)
    }

    pub async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Webhook> {
        Ok(self.webhook_record(tenant, id).await?.public(id))
    }

    /// Reads a webhook under its row lock, lets `change` edit it (false:
    /// nothing to write) and writes it back, in one transaction.
    async fn change_webhook<T>(
        &self,
        tenant: &str,
        id: &str,
        change: impl FnOnce(&mut WebhookRecord) -> (T, bool),
    ) -> StoreResult<T> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        let row = txn
            .query_opt(
                "SELECT record FROM devicehub_webhooks WHERE tenant = $1 AND id = $2 FOR UPDATE",
                &[&tenant, &id],
            )
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound)?;
        let mut record = decode(&row, 0)?;
        let (out, changed) = change(&mut record);
        if changed {
            save(&txn, tenant, id, &record).await?;
            txn.commit().await.map_err(pg_error)?;
        }
        Ok(out)
    }

    pub async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        patch: WebhookPatch,
        now: Millis,
    ) -> StoreResult<Webhook> {
        let hook = self
            .change_webhook(tenant, id, |record| record.patch(id, &patch, now))
            .await?;
        self.bus.webhooks_changed();
        Ok(hook)
    }

    pub async fn set_webhook_secret(
        &self,
        tenant: &str,
        id: &str,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        self.change_webhook(tenant, id, |record| {
            record.set_secret(secret, now);
            (record.public(id), true)
        })
        .await
    }

    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        let deleted = txn
            .execute(
                "DELETE FROM devicehub_webhooks WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(pg_error)?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        txn.execute(
            "DELETE FROM devicehub_webhook_deliveries WHERE tenant = $1 AND webhook_id = $2",
            &[&tenant, &id],
        )
        .await
        .map_err(pg_error)?;
        txn.commit().await.map_err(pg_error)
    }

    pub async fn webhook_deliveries(&self, tenant: &str, id: &str) -> StoreResult<Vec<Delivery>> {
        self.webhook_record(tenant, id).await?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT delivery FROM devicehub_webhook_deliveries \
                 WHERE tenant = $1 AND webhook_id = $2 ORDER BY seq DESC LIMIT $3",
                &[&tenant, &id, &to_i64(DELIVERIES_KEPT)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                serde_json::from_str(row.get(0))
                    .map_err(|e| StoreError::Internal(format!("undecodable delivery: {e}")))
            })
            .collect()
    }

    pub async fn webhook_schedule(&self) -> StoreResult<Vec<Scheduled>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT tenant, id, greatest(next_attempt_ms, \
                 CASE WHEN claimed_by = $1 THEN 0 ELSE claimed_until END) \
                 FROM devicehub_webhooks WHERE enabled ORDER BY tenant, id",
                &[&self.instance],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|row| Scheduled {
                tenant: row.get(0),
                id: row.get(1),
                next_attempt_ms: to_u64(row.get(2)),
            })
            .collect())
    }

    /// The next event to send to a webhook, once this instance has claimed
    /// it (`Later` while another instance's claim runs).
    pub async fn next_delivery(
        &self,
        tenant: &str,
        id: &str,
        read_from: Option<&str>,
        now: Millis,
    ) -> StoreResult<Next> {
        let client = self.client().await?;
        let claimed = client
            .query_opt(
                "UPDATE devicehub_webhooks SET claimed_by = $3, claimed_until = $4 \
                 WHERE tenant = $1 AND id = $2 AND (claimed_by = $3 OR claimed_until <= $5) \
                 RETURNING record",
                &[
                    &tenant,
                    &id,
                    &self.instance,
                    &to_i64(now.0 + LEASE_MS),
                    &to_i64(now.0),
                ],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = claimed else {
            let other = client
                .query_opt(
                    "SELECT claimed_until FROM devicehub_webhooks WHERE tenant = $1 AND id = $2",
                    &[&tenant, &id],
                )
                .await
                .map_err(pg_error)?;
            return Ok(match other {
                Some(row) => Next::Later(to_u64(row.get(0))),
                None => Next::Idle,
            });
        };
        let record = decode(&row, 0)?;
        if let Some(waiting) = record.waiting(now) {
            return Ok(waiting);
        }
        let hook = record.public(id);
        let mut from = record.read_from(read_from).to_string();
        let mut read_to = None;
        loop {
            let rows = client
                .query(
                    "SELECT id, type, body FROM devicehub_events WHERE tenant = $1 AND id > $2 \
                     ORDER BY id LIMIT $3",
                    &[&tenant, &from, &SCAN],
                )
                .await
                .map_err(pg_error)?;
            let ended = (rows.len() as i64) < SCAN;
            for row in &rows {
                let event = super::stored_event(row)?;
                from.clone_from(&event.id);
                read_to = Some(event.id.clone());
                if hook.wants(event.kind) {
                    return Ok(Next::Send(record.attempt(event)));
                }
            }
            if ended {
                return Ok(Next::UpToDate { read_to });
            }
        }
    }

    /// Records an attempt, in one transaction with the cursor it moves.
    pub async fn record_delivery(
        &self,
        tenant: &str,
        id: &str,
        attempt: Attempt,
        delivery: Delivery,
        first_retry: Duration,
        now: Millis,
    ) -> StoreResult<DeliveryRecorded> {
        self.log_delivery(tenant, id, &delivery, |record| {
            record.outcome(&attempt, delivery.delivered(), first_retry, now)
        })
        .await
    }

    pub async fn webhook_test_target(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<(String, String)> {
        let record = self.webhook_record(tenant, id).await?;
        Ok((record.url, record.secret))
    }

    /// Adds a test delivery to a webhook's log (its queue is untouched).
    pub async fn log_test_delivery(
        &self,
        tenant: &str,
        id: &str,
        delivery: Delivery,
    ) -> StoreResult<()> {
        let logged = self
            .log_delivery(tenant, id, &delivery, |_| DeliveryRecorded::Delivered)
            .await?;
        match logged {
            DeliveryRecorded::Stale => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    /// Lets `outcome` update a webhook's record, then logs `delivery` under
    /// its next number, keeping the newest `DELIVERIES_KEPT`.
    async fn log_delivery(
        &self,
        tenant: &str,
        id: &str,
        delivery: &Delivery,
        outcome: impl FnOnce(&mut WebhookRecord) -> DeliveryRecorded,
    ) -> StoreResult<DeliveryRecorded> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg_error)?;
        let Some(row) = txn
            .query_opt(
                "SELECT record FROM devicehub_webhooks WHERE tenant = $1 AND id = $2 FOR UPDATE",
                &[&tenant, &id],
            )
            .await
            .map_err(pg_error)?
        else {
            return Ok(DeliveryRecorded::Stale);
        };
        let mut record = decode(&row, 0)?;
        let recorded = outcome(&mut record);
        if recorded == DeliveryRecorded::Stale {
            return Ok(recorded);
        }
        let seq = record.next_log;
        record.next_log += 1;
        save(&txn, tenant, id, &record).await?;
        let entry =
            serde_json::to_string(delivery).map_err(|e| StoreError::Internal(e.to_string()))?;
        txn.execute(
            "INSERT INTO devicehub_webhook_deliveries (tenant, webhook_id, seq, delivery) \
             VALUES ($1, $2, $3, $4)",
            &[&tenant, &id, &to_i64(seq), &entry],
        )
        .await
        .map_err(pg_error)?;
        txn.execute(
            "DELETE FROM devicehub_webhook_deliveries \
             WHERE tenant = $1 AND webhook_id = $2 AND seq <= $3",
            &[&tenant, &id, &to_i64(seq.saturating_sub(DELIVERIES_KEPT))],
        )
        .await
        .map_err(pg_error)?;
        txn.commit().await.map_err(pg_error)?;
        Ok(recorded)
    }
}

async fn save(
    txn: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    id: &str,
    record: &WebhookRecord,
) -> StoreResult<()> {
    txn.execute(
        "UPDATE devicehub_webhooks SET record = $3, enabled = $4, next_attempt_ms = $5 \
         WHERE tenant = $1 AND id = $2",
        &[
            &tenant,
            &id,
            &encode(record)?,
            &record.enabled,
            &to_i64(record.next_attempt_ms),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
