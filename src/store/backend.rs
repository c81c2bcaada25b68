//! The store the server works on: the embedded redb file (the default) or
//! PostgreSQL (`storage.postgres_url`). One enum, matched on each call: no
//! boxed future and no virtual call per operation, so the embedded path
//! costs what it did before there were two.
//!
//! The point reads box their PostgreSQL future: an `async fn` is as large
//! as its largest state, and PostgreSQL's read (8.5 KB) made the future of
//! every GET that large on redb too, which actix then copied into a box of
//! its own on each request (9,000 of a GET's 53,000 instructions). On
//! PostgreSQL one allocation is nothing beside the round trip.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::postgres::{PgCursor, Postgres};
use super::{
    grace_ms, Attempt, Author, DeliveryRecorded, DeviceCursor, Embedded, EventPage, EventQuery,
    KeyOwner, ListQuery, Next, Page, Remember, Remembered, Scheduled, StatusCounts, StoreError,
    StoreResult,
};
use crate::auth::device_key::KeyHash;
use crate::devices::{Device, DevicePatch, IfMatch, Millis, NewDevice};
use crate::error::StartupError;
use crate::events::EventBus;
use crate::idempotency::KeyId;
use crate::webhooks::{Delivery, Webhook, WebhookPatch};

pub enum Store {
    Embedded(Embedded),
    Postgres(Postgres),
}

/// What the embedded store alone can do.
fn embedded_only(what: &str) -> StoreError {
    StoreError::Internal(format!(
        "{what} is for the embedded store; with PostgreSQL use the database's own tools"
    ))
}

impl Store {
    /// Opens (or creates) the embedded database file.
    pub fn open(path: &Path) -> Result<Store, StartupError> {
        Embedded::open(path).map(Store::Embedded)
    }

    /// Connects to PostgreSQL and brings its schema up to date.
    pub async fn open_postgres(url: &str, ca_file: Option<&Path>) -> Result<Store, StartupError> {
        Postgres::open(url, ca_file).await.map(Store::Postgres)
    }

    pub fn embedded(&self) -> Option<&Embedded> {
        match self {
            Store::Embedded(store) => Some(store),
            Store::Postgres(_) => None,
        }
    }

    pub fn event_bus(&self) -> &EventBus {
        match self {
            Store::Embedded(s) => s.event_bus(),
            Store::Postgres(s) => s.event_bus(),
        }
    }

    pub fn set_event_retention(&self, keep: Duration) {
        match self {
            Store::Embedded(s) => s.set_event_retention(keep),
            Store::Postgres(s) => s.set_event_retention(keep),
        }
    }

    /// Whether the store answers reads now (for `/healthz`).
    pub async fn is_reachable(&self) -> bool {
        match self {
            Store::Embedded(_) => true,
            Store::Postgres(s) => s.is_empty().await.is_ok(),
        }
    }

    pub async fn is_empty(&self) -> StoreResult<bool> {
        match self {
            Store::Embedded(s) => s.is_empty(),
            Store::Postgres(s) => s.is_empty().await,
        }
    }

    pub async fn get(&self, tenant: &str, device_id: &str) -> StoreResult<Device> {
        match self {
            Store::Embedded(s) => s.get(tenant, device_id),
            Store::Postgres(s) => Box::pin(s.get(tenant, device_id)).await,
        }
    }

    pub async fn find_by_key(&self, hash: &KeyHash, now: Millis) -> StoreResult<Option<KeyOwner>> {
        match self {
            Store::Embedded(s) => s.find_by_key(hash, now),
            Store::Postgres(s) => Box::pin(s.find_by_key(hash, now)).await,
        }
    }

    pub async fn stats(&self, tenant: &str) -> StoreResult<StatusCounts> {
        match self {
            Store::Embedded(s) => s.stats(tenant),
            Store::Postgres(s) => Box::pin(s.stats(tenant)).await,
        }
    }

    /// Every tenant's devices counted by status (a scan of the counts, off
    /// the async workers for the embedded store).
    pub async fn all_stats(self: &Arc<Self>) -> StoreResult<StatusCounts> {
        match &**self {
            Store::Embedded(_) => {
                let store = self.clone();
                off_thread(move || {
                    store
                        .embedded()
                        .map_or(Ok(StatusCounts::default()), Embedded::all_stats)
                })
                .await
            }
            Store::Postgres(s) => s.all_stats().await,
        }
    }

    /// A list read a batch at a time (an unlimited list is streamed).
    pub async fn cursor(&self, tenant: &str, query: ListQuery) -> StoreResult<DeviceList> {
        Ok(match self {
            Store::Embedded(s) => DeviceList::Embedded(s.cursor(tenant, query)?),
            Store::Postgres(s) => DeviceList::Postgres {
                cursor: Some(s.snapshot(tenant, query).await?),
                pending: None,
            },
        })
    }

    /// A whole list, or one page when `query.limit` is set (the embedded
    /// walk runs on the blocking pool).
    pub async fn list(self: &Arc<Self>, tenant: &str, query: &ListQuery) -> StoreResult<Page> {
        match &**self {
            Store::Embedded(_) => {
                let (store, tenant, query) = (self.clone(), tenant.to_string(), query.clone());
                off_thread(move || match store.embedded() {
                    Some(s) => s.list(&tenant, &query),
                    None => Err(embedded_only("list")),
                })
                .await
            }
            Store::Postgres(s) => s.list(tenant, query).await,
        }
    }

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
        match self {
            Store::Embedded(s) => s.create(author, new, key_hash, now, quota, remember).await,
            Store::Postgres(s) => s.create(author, new, key_hash, now, quota, remember).await,
        }
    }

    pub async fn update<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        patch: DevicePatch,
        if_match: Option<IfMatch>,
        now: Millis,
    ) -> StoreResult<Device> {
        let author = author.into();
        match self {
            Store::Embedded(s) => s.update(author, device_id, patch, if_match, now).await,
            Store::Postgres(s) => s.update(author, device_id, patch, if_match, now).await,
        }
    }

    pub async fn revoke<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        now: Millis,
    ) -> StoreResult<Device> {
        let author = author.into();
        match self {
            Store::Embedded(s) => s.revoke(author, device_id, now).await,
            Store::Postgres(s) => s.revoke(author, device_id, now).await,
        }
    }

    pub async fn rotate_key<'a>(
        &self,
        author: impl Into<Author<'a>>,
        device_id: &str,
        new_hash: KeyHash,
        grace_seconds: u64,
        now: Millis,
        remember: Option<Remember>,
    ) -> StoreResult<(Device, Option<Millis>)> {
        let author = author.into();
        match self {
            Store::Embedded(s) => {
                s.rotate_key(author, device_id, new_hash, grace_seconds, now, remember)
                    .await
            }
            Store::Postgres(s) => {
                let grace = grace_ms(grace_seconds);
                s.rotate_key(author, device_id, new_hash, grace, now, remember)
                    .await
            }
        }
    }

    /// Records a check-in (kept in memory, written at most once a minute).
    pub fn touch(&self, tenant: &str, device_id: &str, now: Millis) -> Millis {
        match self {
            Store::Embedded(s) => s.touch(tenant, device_id, now),
            Store::Postgres(s) => s.touch(tenant, device_id, now),
        }
    }

    /// A page of the feed (the embedded walk runs on the blocking pool).
    pub async fn events(
        self: &Arc<Self>,
        tenant: &str,
        query: &EventQuery,
    ) -> StoreResult<EventPage> {
        match &**self {
            Store::Embedded(s) => {
                // A caught-up poll (nothing after its cursor) is answered
                // with one look-up in place, without the blocking pool: a
                // thousand of them must not start its threads.
                if !s.has_events_after(tenant, query.starting_after.as_deref())? {
                    return Ok(EventPage::default());
                }
                let (store, tenant, query) = (self.clone(), tenant.to_string(), query.clone());
                off_thread(move || match store.embedded() {
                    Some(s) => s.events(&tenant, &query),
                    None => Err(embedded_only("events")),
                })
                .await
            }
            Store::Postgres(s) => s.events(tenant, query).await,
        }
    }

    pub async fn remembered(
        &self,
        tenant: &str,
        id: &KeyId,
        now: Millis,
    ) -> StoreResult<Option<Remembered>> {
        match self {
            Store::Embedded(s) => s.remembered(tenant, id, now),
            Store::Postgres(s) => s.remembered(tenant, id, now).await,
        }
    }

    pub async fn prune(&self, now: Millis) -> StoreResult<usize> {
        match self {
            Store::Embedded(s) => s.prune(now).await,
            Store::Postgres(s) => s.prune(now).await,
        }
    }

    pub async fn create_webhook(
        &self,
        tenant: &str,
        new: WebhookPatch,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        match self {
            Store::Embedded(s) => s.create_webhook(tenant, new, secret, now).await,
            Store::Postgres(s) => s.create_webhook(tenant, new, secret, now).await,
        }
    }

    pub async fn webhooks(&self, tenant: &str) -> StoreResult<Vec<Webhook>> {
        match self {
            Store::Embedded(s) => s.webhooks(tenant),
            Store::Postgres(s) => s.webhooks(tenant).await,
        }
    }

    pub async fn webhook(&self, tenant: &str, id: &str) -> StoreResult<Webhook> {
        match self {
            Store::Embedded(s) => s.webhook(tenant, id),
            Store::Postgres(s) => s.webhook(tenant, id).await,
        }
    }

    pub async fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        patch: WebhookPatch,
        now: Millis,
    ) -> StoreResult<Webhook> {
        match self {
            Store::Embedded(s) => s.update_webhook(tenant, id, patch, now).await,
            Store::Postgres(s) => s.update_webhook(tenant, id, patch, now).await,
        }
    }

    pub async fn set_webhook_secret(
        &self,
        tenant: &str,
        id: &str,
        secret: String,
        now: Millis,
    ) -> StoreResult<Webhook> {
        match self {
            Store::Embedded(s) => s.set_webhook_secret(tenant, id, secret, now).await,
            Store::Postgres(s) => s.set_webhook_secret(tenant, id, secret, now).await,
        }
    }

    pub async fn delete_webhook(&self, tenant: &str, id: &str) -> StoreResult<()> {
        match self {
            Store::Embedded(s) => s.delete_webhook(tenant, id).await,
            Store::Postgres(s) => s.delete_webhook(tenant, id).await,
        }
    }

    pub async fn webhook_deliveries(&self, tenant: &str, id: &str) -> StoreResult<Vec<Delivery>> {
        match self {
            Store::Embedded(s) => s.webhook_deliveries(tenant, id),
            Store::Postgres(s) => s.webhook_deliveries(tenant, id).await,
        }
    }

    pub async fn webhook_schedule(&self) -> StoreResult<Vec<Scheduled>> {
        match self {
            Store::Embedded(s) => s.webhook_schedule(),
            Store::Postgres(s) => s.webhook_schedule().await,
        }
    }

    pub async fn next_delivery(
        &self,
        tenant: &str,
        id: &str,
        read_from: Option<&str>,
        now: Millis,
    ) -> StoreResult<Next> {
        match self {
            Store::Embedded(s) => s.next_delivery(tenant, id, read_from, now),
            Store::Postgres(s) => s.next_delivery(tenant, id, read_from, now).await,
        }
    }

    pub async fn record_delivery(
        &self,
        tenant: &str,
        id: &str,
        attempt: Attempt,
        delivery: Delivery,
        first_retry: Duration,
        now: Millis,
    ) -> StoreResult<DeliveryRecorded> {
        match self {
            Store::Embedded(s) => {
                s.record_delivery(tenant, id, attempt, delivery, first_retry, now)
                    .await
            }
            Store::Postgres(s) => {
                s.record_delivery(tenant, id, attempt, delivery, first_retry, now)
                    .await
            }
        }
    }

    pub async fn webhook_test_target(
        &self,
        tenant: &str,
        id: &str,
    ) -> StoreResult<(String, String)> {
        match self {
            Store::Embedded(s) => s.webhook_test_target(tenant, id),
            Store::Postgres(s) => s.webhook_test_target(tenant, id).await,
        }
    }

    pub async fn log_test_delivery(
        &self,
        tenant: &str,
        id: &str,
        delivery: Delivery,
    ) -> StoreResult<()> {
        match self {
            Store::Embedded(s) => s.log_test_delivery(tenant, id, delivery).await,
            Store::Postgres(s) => s.log_test_delivery(tenant, id, delivery).await,
        }
    }

    /// Checks that the indexes and counts agree with the devices.
    pub async fn verify_indexes(&self) -> StoreResult<()> {
        match self {
            Store::Embedded(s) => s.verify_indexes(),
            Store::Postgres(s) => s.verify_indexes().await,
        }
    }

    /// Every (tenant, device id, key hash) kept, for consistency checks.
    pub async fn key_index_entries(&self) -> StoreResult<Vec<(String, String, KeyHash)>> {
        match self {
            Store::Embedded(s) => s.key_index_entries(),
            Store::Postgres(s) => s.key_index_entries().await,
        }
    }

    /// A consistent snapshot into `dest_dir`, keeping the newest `keep`
    /// (the embedded store only).
    pub fn backup(&self, dest_dir: &Path, keep: usize) -> StoreResult<super::backup::Snapshot> {
        match self {
            Store::Embedded(s) => s.backup(dest_dir, keep),
            Store::Postgres(_) => Err(embedded_only("a snapshot")),
        }
    }

    /// Lets go of the database: the embedded writer stops, PostgreSQL's
    /// pool closes.
    pub async fn close(&self) {
        if let Store::Postgres(s) = self {
            s.close().await;
        }
    }
}

/// Runs a blocking read on actix's blocking pool.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match actix_web::web::block(f).await {
        Ok(result) => result,
        Err(e) => Err(StoreError::Internal(format!("blocking task failed: {e}"))),
    }
}

type Batch = (PgCursor, StoreResult<(Vec<Device>, bool)>);

/// A list in progress, read a batch at a time.
pub enum DeviceList {
    Embedded(DeviceCursor),
    Postgres {
        cursor: Option<PgCursor>,
        pending: Option<Pin<Box<dyn Future<Output = Batch>>>>,
    },
}

impl DeviceList {
    /// The next batch of up to `max_found` matching devices (looking at no
    /// more than `max_visited` in the embedded store), appended to `out`;
    /// `Ready(Ok(false))` once nothing more can match.
    pub fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        max_found: usize,
        max_visited: usize,
        out: &mut Vec<Device>,
    ) -> Poll<StoreResult<bool>> {
        match self {
            DeviceList::Embedded(cursor) => {
                Poll::Ready(cursor.next_batch(max_found, max_visited, out))
            }
            DeviceList::Postgres { cursor, pending } => {
                if pending.is_none() {
                    let Some(mut taken) = cursor.take() else {
                        return Poll::Ready(Ok(false));
                    };
                    *pending = Some(Box::pin(async move {
                        let mut found = Vec::new();
                        let more = taken.next_batch(max_found, &mut found).await;
                        (taken, more.map(|more| (found, more)))
                    }));
                }
                let Some(future) = pending.as_mut() else {
                    return Poll::Ready(Ok(false));
                };
                let (taken, result) = match future.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(done) => done,
                };
                *pending = None;
                *cursor = Some(taken);
                Poll::Ready(result.map(|(mut found, more)| {
                    out.append(&mut found);
                    more
                }))
            }
        }
    }
}
