//! The delivery worker: a task on the server's runtime that decides, after
//! each commit and each due retry, which webhooks have something to send,
//! and runs one sender task per webhook. A webhook's events go one at a
//! time, in event order (the next only after the one before was
//! delivered); webhooks never wait for each other, so one slow or failing
//! endpoint delays only itself. Every attempt is recorded in the store
//! before the next step, so a restart (or `kill -9`) resumes at the first
//! undelivered event: at least once, never skipped.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::client::{self, Target};
use super::signature;
use super::Delivery;
use crate::devices::Millis;
use crate::store::{Attempt, DeliveryRecorded, Next, Store};

/// `webhooks.allow_loopback` and `webhooks.first_retry`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub allow_loopback: bool,
    pub first_retry: Duration,
}

impl Default for DeliverySettings {
    /// The documented defaults: loopback refused, first retry after 10 s.
    fn default() -> Self {
        DeliverySettings {
            allow_loopback: false,
            first_retry: Duration::from_secs(10),
        }
    }
}

/// Even with nothing due, the worker looks again this often (a retry time
/// it was not told of, an error reading the store).
const LOOK_AGAIN: Duration = Duration::from_secs(30);

type Key = (String, String);

/// Starts the worker on the current actix runtime. It holds the store only
/// while it works, and ends once the store is gone.
pub fn start(store: &Arc<Store>, settings: DeliverySettings) {
    let wake = store.event_bus().delivery_signal();
    let changed = store.event_bus().webhooks_signal();
    let store = Arc::downgrade(store);
    actix_web::rt::spawn(async move {
        let busy: Rc<RefCell<HashSet<Key>>> = Rc::default();
        // Where the feed was read to without finding anything a webhook
        // wants: not read again next time.
        let mut read_to: HashMap<Key, String> = HashMap::new();
        loop {
            let Some(live) = store.upgrade() else { return };
            let (wait, none) = dispatch(&live, &store, &settings, &busy, &mut read_to).await;
            drop(live);
            // With no webhook at all, a commit has nothing to deliver: only
            // a new or changed webhook (or the periodic look) wakes it.
            let signal = if none { &changed } else { &wake };
            let _ = actix_web::rt::time::timeout(wait, signal.notified()).await;
        }
    });
}

/// Starts a sender for each enabled webhook that has something due and no
/// sender yet; returns how long to sleep at most, and whether the store
/// has no webhook in the schedule at all.
async fn dispatch(
    store: &Arc<Store>,
    weak: &Weak<Store>,
    settings: &DeliverySettings,
    busy: &Rc<RefCell<HashSet<Key>>>,
    read_to: &mut HashMap<Key, String>,
) -> (Duration, bool) {
    let now = Millis::now();
    let mut wait = LOOK_AGAIN;
    let scheduled = match store.webhook_schedule().await {
        Ok(list) => list,
        Err(e) => {
            log::warn!("webhooks: cannot read the schedule: {e}");
            return (Duration::from_secs(1), false);
        }
    };
    let live: HashSet<Key> = scheduled
        .iter()
        .map(|s| (s.tenant.clone(), s.id.clone()))
        .collect();
    read_to.retain(|key, _| live.contains(key));
    let none = scheduled.is_empty();
    for hook in scheduled {
        let key = (hook.tenant, hook.id);
        if busy.borrow().contains(&key) {
            continue;
        }
        if hook.next_attempt_ms > now.0 {
            wait = wait.min(Duration::from_millis(hook.next_attempt_ms - now.0));
            continue;
        }
        let read_from = read_to.get(&key).map(String::as_str);
        let next = store.next_delivery(&key.0, &key.1, read_from, now).await;
        match next {
            Ok(Next::Send(attempt)) => {
                busy.borrow_mut().insert(key.clone());
                let (weak, settings, busy) = (weak.clone(), settings.clone(), busy.clone());
                actix_web::rt::spawn(async move {
                    send_in_order(&weak, &key, attempt, &settings).await;
                    busy.borrow_mut().remove(&key);
                    if let Some(store) = weak.upgrade() {
                        store.event_bus().wake_deliveries();
                    }
                });
            }
            Ok(Next::UpToDate {
                read_to: Some(last),
            }) => {
                read_to.insert(key, last);
            }
            Ok(Next::Later(at)) => {
                wait = wait.min(Duration::from_millis(at.saturating_sub(now.0)));
            }
            Ok(Next::UpToDate { read_to: None } | Next::Idle) => {}
            Err(e) => log::warn!("webhooks: cannot read webhook {}: {e}", key.1),
        }
    }
    (wait, none)
}

/// Sends `first`, then each next wanted event, until one fails, none is
/// left, or the webhook is gone or disabled.
async fn send_in_order(
    store: &Weak<Store>,
    (tenant, id): &Key,
    first: Attempt,
    settings: &DeliverySettings,
) {
    let mut attempt = first;
    loop {
        let delivery = send(&attempt, settings).await;
        let delivered = delivery.delivered();
        crate::metrics::record_delivery(delivered);
        let Some(live) = store.upgrade() else { return };
        let event_id = attempt.event.id.clone();
        let number = attempt.number;
        let error = delivery.error.clone();
        let status = delivery.status;
        let recorded = live
            .record_delivery(
                tenant,
                id,
                attempt,
                delivery,
                settings.first_retry,
                Millis::now(),
            )
            .await;
        match recorded {
            Ok(DeliveryRecorded::Delivered) => {}
            Ok(DeliveryRecorded::RetryAt(at)) => {
                log::warn!(
                    "webhook {id} tenant={tenant:?}: attempt {number} to deliver {event_id} failed ({}); next attempt at {}",
                    why(status, error.as_deref()),
                    Millis(at).to_rfc3339()
                );
                return;
            }
            Ok(DeliveryRecorded::Disabled) => {
                log::warn!(
                    "webhook {id} tenant={tenant:?}: attempt {number} to deliver {event_id} failed ({}); the webhook has failed for {} days and is now disabled",
                    why(status, error.as_deref()),
                    signature::GIVE_UP_AFTER.as_secs() / 86_400
                );
                return;
            }
            Ok(DeliveryRecorded::Stale) => return,
            Err(e) => {
                log::warn!("webhook {id} tenant={tenant:?}: cannot record a delivery: {e}");
                return;
            }
        }
        attempt = match live.next_delivery(tenant, id, None, Millis::now()).await {
            Ok(Next::Send(next)) => next,
            Ok(_) => return,
            Err(e) => {
                log::warn!("webhook {id} tenant={tenant:?}: cannot read the next event: {e}");
                return;
            }
        };
    }
}

fn why(status: Option<u16>, error: Option<&str>) -> String {
    match (status, error) {
        (_, Some(error)) => error.to_string(),
        (Some(status), None) => format!("answered {status}"),
        (None, None) => "no answer".to_string(),
    }
}

/// One attempt: sign the event's exact bytes and POST them.
async fn send(attempt: &Attempt, settings: &DeliverySettings) -> Delivery {
    let event = &attempt.event;
    deliver_once(
        &attempt.url,
        &attempt.secret,
        &event.id,
        &event.json,
        attempt.number,
        settings,
    )
    .await
}

/// Signs `body` with `secret` and POSTs it to `url` once; what happened, as
/// the deliveries log shows it.
pub async fn deliver_once(
    url: &str,
    secret: &str,
    event_id: &str,
    body: &[u8],
    number: u32,
    settings: &DeliverySettings,
) -> Delivery {
    let started = Millis::now();
    let outcome = match Target::parse(url) {
        Ok(target) => {
            let headers = [
                ("Devicehub-Event-Id", event_id.to_string()),
                (
                    "Devicehub-Signature",
                    signature::signature(secret, started.0 / 1000, body),
                ),
            ];
            client::post(&target, &headers, body, settings.allow_loopback).await
        }
        Err(why) => client::Outcome {
            status: None,
            error: Some(format!("url: {why}")),
            took: Duration::ZERO,
        },
    };
    Delivery {
        event_id: event_id.to_string(),
        attempt: number,
        at: started.to_rfc3339(),
        status: outcome.status,
        error: outcome.error,
        duration_ms: outcome.took.as_millis() as u64,
    }
}
