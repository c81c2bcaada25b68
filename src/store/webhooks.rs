//! Webhooks and their delivery state (API.md §7). A webhook's record holds
//! its cursor: the last event it has been given (or that was before it was
//! made). The events after the cursor that it wants are its queue, in event
//! order; a delivery moves the cursor in the same commit as its log entry,
//! so a crash at any point re-sends at most the event in flight.

use std::time::Duration;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::events::StoredEvent;
use super::tables::{EVENTS, ID_MAX, WEBHOOKS, WEBHOOK_DELIVERIES};
use super::{random_u128, StoreError, StoreResult};
use crate::devices::Millis;
use crate::webhooks::{self, signature, Delivery, Webhook, WebhookPatch};

/// The newest this many attempts are kept per webhook.
pub const DELIVERIES_KEPT: u64 = 100;

/// A webhook as stored (value of `WEBHOOKS`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WebhookRecord {
    pub(super) url: String,
    pub(super) events: Vec<String>,
    pub(super) description: String,
    pub(super) enabled: bool,
    pub(super) created_ms: u64,
    pub(super) updated_ms: u64,
    pub(super) secret: String,
    /// The last event id given to this webhook (or before its creation);
    /// empty before the tenant's first event.
    pub(super) cursor: String,
    /// Failed attempts at the event after the cursor.
    pub(super) failures: u32,
    /// When the first of those failed (Unix ms).
    pub(super) failing_since_ms: Option<u64>,
    /// No attempt before this (Unix ms).
    pub(super) next_attempt_ms: u64,
    /// The sequence number of the next deliveries-log entry.
    pub(super) next_log: u64,
}

impl WebhookRecord {
    pub(super) fn decode(bytes: &[u8]) -> StoreResult<WebhookRecord> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Internal(format!("undecodable webhook record: {e}")))
    }

    pub(super) fn encode(&self) -> StoreResult<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| StoreError::Internal(e.to_string()))
    }

    /// A new webhook, to be given the events after `cursor` (the tenant's
    /// last event id when it is made; empty before the first).
    pub(super) fn new(
        new: &WebhookPatch,
        secret: String,
        cursor: String,
        now: Millis,
    ) -> WebhookRecord {
        WebhookRecord {
            url: new.url.clone().unwrap_or_default(),
            events: new.events.clone().unwrap_or_default(),
            description: new.description.clone().unwrap_or_default(),
            enabled: new.enabled.unwrap_or(true),
            created_ms: now.0,
            updated_ms: now.0,
            secret,
            cursor,
            failures: 0,
            failing_since_ms: None,
            next_attempt_ms: 0,
            next_log: 1,
        }
    }

    pub(super) fn public(&self, id: &str) -> Webhook {
        Webhook {
            id: id.to_string(),
            url: self.url.clone(),
            events: self.events.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            created_at: Millis(self.created_ms),
            updated_at: Millis(self.updated_ms),
        }
    }

    /// Applies a PATCH: the webhook as it now is, and whether it changed.
    /// Enabling a webhook again resumes at its first undelivered event, at
    /// once.
    pub(super) fn patch(&mut self, id: &str, patch: &WebhookPatch, now: Millis) -> (Webhook, bool) {
        let mut hook = self.public(id);
        let was_enabled = hook.enabled;
        if !patch.apply(&mut hook) {
            return (hook, false);
        }
        hook.updated_at = now.max(hook.updated_at);
        self.url.clone_from(&hook.url);
        self.events.clone_from(&hook.events);
        self.description.clone_from(&hook.description);
        self.enabled = hook.enabled;
        self.updated_ms = hook.updated_at.0;
        if hook.enabled && !was_enabled {
            self.failures = 0;
            self.failing_since_ms = None;
            self.next_attempt_ms = 0;
        }
        (hook, true)
    }

    pub(super) fn set_secret(&mut self, secret: String, now: Millis) {
        self.secret = secret;
        self.updated_ms = now.0.max(self.updated_ms);
    }

    /// What stops a delivery now, if anything: disabled (`Idle`), or a
    /// retry not yet due (`Later`).
    pub(super) fn waiting(&self, now: Millis) -> Option<Next> {
        if !self.enabled {
            Some(Next::Idle)
        } else if self.next_attempt_ms > now.0 {
            Some(Next::Later(self.next_attempt_ms))
        } else {
            None
        }
    }

    /// Where the queue starts: the cursor, or the worker's `read_from` when
    /// it has read further.
    pub(super) fn read_from<'a>(&'a self, read_from: Option<&'a str>) -> &'a str {
        match read_from {
            Some(hint) if hint > self.cursor.as_str() => hint,
            _ => self.cursor.as_str(),
        }
    }

    pub(super) fn attempt(&self, event: StoredEvent) -> Attempt {
        Attempt {
            url: self.url.clone(),
            secret: self.secret.clone(),
            event,
            number: self.failures + 1,
            cursor: self.cursor.clone(),
        }
    }

    /// Takes in an attempt's outcome: when delivered, moves the cursor past
    /// its event; when not, schedules the retry or, after three days of
    /// failing, disables the webhook. `Stale` when the webhook moved on
    /// meanwhile (nothing to record).
    pub(super) fn outcome(
        &mut self,
        attempt: &Attempt,
        delivered: bool,
        first_retry: Duration,
        now: Millis,
    ) -> Recorded {
        if self.cursor != attempt.cursor {
            return Recorded::Stale;
        }
        if delivered {
            self.cursor.clone_from(&attempt.event.id);
            self.failures = 0;
            self.failing_since_ms = None;
            self.next_attempt_ms = 0;
            return Recorded::Delivered;
        }
        self.failures = self.failures.saturating_add(1);
        let since = *self.failing_since_ms.get_or_insert(now.0);
        let give_up = since.saturating_add(signature::GIVE_UP_AFTER.as_millis() as u64);
        let delay = signature::retry_delay(first_retry, self.failures);
        self.next_attempt_ms = now.0.saturating_add(delay.as_millis() as u64);
        if now.0 >= give_up && self.enabled {
            self.enabled = false;
            self.updated_ms = now.0.max(self.updated_ms);
            Recorded::Disabled
        } else {
            Recorded::RetryAt(self.next_attempt_ms)
        }
    }
}

/// What the delivery worker knows of a webhook between reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub tenant: String,
    pub id: String,
    pub next_attempt_ms: u64,
}

/// The next thing to do for a webhook.
#[derive(Debug)]
pub enum Next {
    /// Deleted, or disabled: nothing.
    Idle,
    /// Nothing it wants after the cursor; the feed was read up to this id.
    UpToDate { read_to: Option<String> },
    /// A retry is not due before this (Unix ms).
    Later(u64),
    /// Send this event.
    Send(Attempt),
}

/// One delivery to make.
#[derive(Debug)]
pub struct Attempt {
    pub url: String,
    pub secret: String,
    pub event: StoredEvent,
    /// 1 for the first attempt at this event.
    pub number: u32,
    /// The cursor this attempt moves on from.
    pub cursor: String,
}

fn get(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    id: &str,
) -> StoreResult<WebhookRecord> {
    match table.get((tenant, id))? {
        Some(v) => WebhookRecord::decode(v.value()),
        None => Err(StoreError::NotFound),
    }
}

pub(super) fn create(
    txn: &WriteTransaction,
    tenant: &str,
    new: &WebhookPatch,
    secret: String,
    now: Millis,
) -> StoreResult<Webhook> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let held = table
        .range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))?
        .count() as u64;
    if held >= webhooks::MAX_PER_TENANT {
        return Err(StoreError::WebhookQuotaExceeded(webhooks::MAX_PER_TENANT));
    }
    // It gets the events committed after it: start after the tenant's last.
    let cursor = txn
        .open_table(EVENTS)?
        .range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))?
        .next_back()
        .transpose()?
        .map(|(key, _)| key.value().1.to_string())
        .unwrap_or_default();
    let id = new_id(now)?;
    let record = WebhookRecord::new(new, secret, cursor, now);
    table.insert((tenant, id.as_str()), record.encode()?.as_slice())?;
    Ok(record.public(&id))
}

/// A new webhook id.
pub(super) fn new_id(now: Millis) -> StoreResult<String> {
    Ok(webhooks::id::format(ulid::Ulid::from_parts(
        now.0,
        random_u128()?,
    )))
}

pub(super) fn list(txn: &ReadTransaction, tenant: &str) -> StoreResult<Vec<Webhook>> {
    let table = txn.open_table(WEBHOOKS)?;
    let mut out = Vec::new();
    for entry in table.range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))? {
        let (key, value) = entry?;
        out.push(WebhookRecord::decode(value.value())?.public(key.value().1));
    }
    Ok(out)
}

pub(super) fn read(txn: &ReadTransaction, tenant: &str, id: &str) -> StoreResult<Webhook> {
    Ok(get(&txn.open_table(WEBHOOKS)?, tenant, id)?.public(id))
}

/// Applies a PATCH. Enabling a webhook again resumes at its first
/// undelivered event, at once.
pub(super) fn update(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    patch: &WebhookPatch,
    now: Millis,
) -> StoreResult<Webhook> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let mut record = get(&table, tenant, id)?;
    let (hook, changed) = record.patch(id, patch, now);
    if changed {
        table.insert((tenant, id), record.encode()?.as_slice())?;
    }
    Ok(hook)
}

pub(super) fn set_secret(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    secret: String,
    now: Millis,
) -> StoreResult<Webhook> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let mut record = get(&table, tenant, id)?;
    record.set_secret(secret, now);
    table.insert((tenant, id), record.encode()?.as_slice())?;
    Ok(record.public(id))
}

/// Deletes a webhook and its deliveries log.
pub(super) fn delete(txn: &WriteTransaction, tenant: &str, id: &str) -> StoreResult<()> {
    let mut table = txn.open_table(WEBHOOKS)?;
    if table.remove((tenant, id))?.is_none() {
        return Err(StoreError::NotFound);
    }
    let mut log = txn.open_table(WEBHOOK_DELIVERIES)?;
    log.retain_in::<(&str, &str, u64), _>((tenant, id, 0)..=(tenant, id, u64::MAX), |_, _| false)?;
    Ok(())
}

/// The newest `DELIVERIES_KEPT` attempts, newest first.
pub(super) fn deliveries(
    txn: &ReadTransaction,
    tenant: &str,
    id: &str,
) -> StoreResult<Vec<Delivery>> {
    get(&txn.open_table(WEBHOOKS)?, tenant, id)?;
    let log = txn.open_table(WEBHOOK_DELIVERIES)?;
    let mut out = Vec::new();
    for entry in log
        .range::<(&str, &str, u64)>((tenant, id, 0)..=(tenant, id, u64::MAX))?
        .rev()
        .take(DELIVERIES_KEPT as usize)
    {
        let (_, value) = entry?;
        out.push(
            serde_json::from_slice(value.value())
                .map_err(|e| StoreError::Internal(format!("undecodable delivery: {e}")))?,
        );
    }
    Ok(out)
}

/// Every enabled webhook of every tenant, with when it may next be tried.
pub(super) fn schedule(txn: &ReadTransaction) -> StoreResult<Vec<Scheduled>> {
    let table = txn.open_table(WEBHOOKS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let record = WebhookRecord::decode(value.value())?;
        if record.enabled {
            let (tenant, id) = key.value();
            out.push(Scheduled {
                tenant: tenant.to_string(),
                id: id.to_string(),
                next_attempt_ms: record.next_attempt_ms,
            });
        }
    }
    Ok(out)
}

/// The next event to send to a webhook at `now`. `read_from` is where an
/// earlier call found nothing wanted (the worker's memory), so events the
/// webhook does not want are not read again and again.
pub(super) fn next(
    txn: &ReadTransaction,
    tenant: &str,
    id: &str,
    read_from: Option<&str>,
    now: Millis,
) -> StoreResult<Next> {
    let record = match get(&txn.open_table(WEBHOOKS)?, tenant, id) {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Ok(Next::Idle),
        Err(e) => return Err(e),
    };
    if let Some(waiting) = record.waiting(now) {
        return Ok(waiting);
    }
    let hook = record.public(id);
    let from = record.read_from(read_from);
    let table = txn.open_table(EVENTS)?;
    let mut read_to = None;
    for entry in table.range::<(&str, &str)>((tenant, from)..=(tenant, ID_MAX))? {
        let (key, value) = entry?;
        let event_id = key.value().1;
        if event_id == from {
            continue;
        }
        read_to = Some(event_id.to_string());
        let event = super::events::decode_stored(event_id, value.value())?;
        if hook.wants(event.kind) {
            return Ok(Next::Send(record.attempt(event)));
        }
    }
    Ok(Next::UpToDate { read_to })
}

/// What recording an attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The webhook went or moved on meanwhile: nothing recorded.
    Stale,
    Delivered,
    /// Failed; tried again at this time (Unix ms).
    RetryAt(u64),
    /// Failed for longer than `GIVE_UP_AFTER`: the webhook is now disabled.
    Disabled,
}

/// Records an attempt at `attempt`'s event: logs it and, when delivered,
/// moves the cursor past it; when not, schedules the retry or, after three
/// days of failing, disables the webhook.
pub(super) fn record(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    attempt: &Attempt,
    delivery: &Delivery,
    first_retry: Duration,
    now: Millis,
) -> StoreResult<Recorded> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let mut record = match get(&table, tenant, id) {
        Ok(record) => record,
        Err(StoreError::NotFound) => return Ok(Recorded::Stale),
        Err(e) => return Err(e),
    };
    let outcome = record.outcome(attempt, delivery.delivered(), first_retry, now);
    if outcome == Recorded::Stale {
        return Ok(outcome);
    }
    append_log(txn, &mut table, tenant, id, record, delivery)?;
    Ok(outcome)
}

/// Writes `record` back with the next log number taken, and `delivery`
/// under that number, dropping what falls out of the newest 100.
fn append_log(
    txn: &WriteTransaction,
    table: &mut redb::Table<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    id: &str,
    mut record: WebhookRecord,
    delivery: &Delivery,
) -> StoreResult<()> {
    let seq = record.next_log;
    record.next_log += 1;
    table.insert((tenant, id), record.encode()?.as_slice())?;
    let mut log = txn.open_table(WEBHOOK_DELIVERIES)?;
    let entry = serde_json::to_vec(delivery).map_err(|e| StoreError::Internal(e.to_string()))?;
    log.insert((tenant, id, seq), entry.as_slice())?;
    if seq > DELIVERIES_KEPT {
        log.remove((tenant, id, seq - DELIVERIES_KEPT))?;
    }
    Ok(())
}

/// Where a test delivery goes: the webhook's URL and current secret.
pub(super) fn test_target(
    txn: &ReadTransaction,
    tenant: &str,
    id: &str,
) -> StoreResult<(String, String)> {
    let record = get(&txn.open_table(WEBHOOKS)?, tenant, id)?;
    Ok((record.url, record.secret))
}

/// Logs a test delivery; the webhook's cursor and retries are untouched.
pub(super) fn log_test(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    delivery: &Delivery,
) -> StoreResult<()> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let record = get(&table, tenant, id)?;
    append_log(txn, &mut table, tenant, id, record, delivery)
}
