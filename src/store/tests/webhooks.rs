//! Webhook delivery state: the cursor, retries, giving up, the log's size.

use super::*;
use crate::webhooks::{Delivery, WebhookPatch};
use std::time::Duration;

fn new_hook(events: &[&str]) -> WebhookPatch {
    WebhookPatch {
        url: Some("http://hooks.example/".into()),
        events: Some(events.iter().map(|e| e.to_string()).collect()),
        ..WebhookPatch::default()
    }
}

fn outcome(attempt: &Attempt, status: u16) -> Delivery {
    Delivery {
        event_id: attempt.event.id.clone(),
        attempt: attempt.number,
        at: Millis(0).to_rfc3339(),
        status: Some(status),
        error: None,
        duration_ms: 1,
    }
}

async fn next(store: &Store, id: &str, now: u64) -> Next {
    store
        .next_delivery("t", id, None, Millis(now))
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_webhook_starts_after_the_events_before_it_and_moves_on_only_when_delivered() {
    let store = open().await;
    add(&store, "t", "before", 1_000).await;
    let hook = store
        .create_webhook("t", new_hook(&["*"]), "whsec_a".into(), Millis(2_000))
        .await
        .unwrap();
    assert!(matches!(
        next(&store, &hook.id, 3_000).await,
        Next::UpToDate { .. }
    ));
    add(&store, "t", "after", 4_000).await;
    let Next::Send(attempt) = next(&store, &hook.id, 5_000).await else {
        panic!("the event after it is due")
    };
    assert_eq!(attempt.number, 1);
    assert_eq!(attempt.secret, "whsec_a");
    let first_retry = Duration::from_secs(10);
    let failed = outcome(&attempt, 500);
    let recorded = store
        .record_delivery("t", &hook.id, attempt, failed, first_retry, Millis(5_000))
        .await
        .unwrap();
    assert_eq!(recorded, DeliveryRecorded::RetryAt(15_000));
    assert!(matches!(
        next(&store, &hook.id, 14_999).await,
        Next::Later(15_000)
    ));
    let Next::Send(again) = next(&store, &hook.id, 15_000).await else {
        panic!("retry due")
    };
    assert_eq!(again.number, 2);
    let stale = Attempt {
        cursor: "evt_elsewhere".into(),
        ..again
    };
    let ok = outcome(&stale, 200);
    assert_eq!(
        store
            .record_delivery("t", &hook.id, stale, ok, first_retry, Millis(15_000))
            .await
            .unwrap(),
        DeliveryRecorded::Stale,
        "an attempt from an old cursor changes nothing"
    );
    let Next::Send(again) = next(&store, &hook.id, 15_000).await else {
        panic!("still due")
    };
    let ok = outcome(&again, 204);
    store
        .record_delivery("t", &hook.id, again, ok, first_retry, Millis(15_000))
        .await
        .unwrap();
    assert!(matches!(
        next(&store, &hook.id, 16_000).await,
        Next::UpToDate { .. }
    ));
    let log = store.webhook_deliveries("t", &hook.id).await.unwrap();
    let attempts: Vec<_> = log.iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(attempts, [(2, Some(204)), (1, Some(500))], "newest first");
}

#[actix_web::test]
async fn failing_for_three_days_disables_the_webhook_and_enabling_resumes_it() {
    let store = open().await;
    let hook = store
        .create_webhook(
            "t",
            new_hook(&["device.created"]),
            "whsec_a".into(),
            Millis(0),
        )
        .await
        .unwrap();
    add(&store, "t", "d", 1_000).await;
    let first_retry = Duration::from_secs(10);
    let day = 86_400_000;
    let mut now = 1_000;
    let mut outcomes = Vec::new();
    while let Next::Send(attempt) = next(&store, &hook.id, now).await {
        let failed = outcome(&attempt, 500);
        let recorded = store
            .record_delivery("t", &hook.id, attempt, failed, first_retry, Millis(now))
            .await
            .unwrap();
        outcomes.push(recorded);
        match outcomes.last() {
            Some(DeliveryRecorded::RetryAt(at)) => now = *at,
            _ => break,
        }
    }
    assert_eq!(outcomes.last(), Some(&DeliveryRecorded::Disabled));
    assert!(
        now >= 1_000 + 3 * day && now < 1_000 + 3 * day + 3_600_000,
        "{now}"
    );
    // 10 s doubling to an hour: 9 growing delays, then hourly for 3 days.
    assert!((80..=90).contains(&outcomes.len()), "{}", outcomes.len());
    assert!(!store.webhook("t", &hook.id).await.unwrap().enabled);
    assert!(matches!(
        next(&store, &hook.id, now + day).await,
        Next::Idle
    ));
    let enable = WebhookPatch {
        enabled: Some(true),
        ..WebhookPatch::default()
    };
    store
        .update_webhook("t", &hook.id, enable, Millis(now + day))
        .await
        .unwrap();
    let Next::Send(resumed) = next(&store, &hook.id, now + day).await else {
        panic!("enabled again: the same event is due at once")
    };
    assert_eq!(resumed.number, 1);
    // 30 more failures: past 100 attempts, only the newest 100 are kept.
    let total = outcomes.len() + 30;
    let mut attempt = resumed;
    for _ in 0..30 {
        now += 3_600_000;
        let failed = outcome(&attempt, 500);
        store
            .record_delivery("t", &hook.id, attempt, failed, first_retry, Millis(now))
            .await
            .unwrap();
        let Next::Send(again) = next(&store, &hook.id, now + 3_600_000).await else {
            panic!("a retry is due")
        };
        attempt = again;
    }
    assert!(total > 100);
    let log = store.webhook_deliveries("t", &hook.id).await.unwrap();
    assert_eq!(log.len(), 100, "the newest 100 are kept");
    assert_eq!(log[0].attempt, 30);
}

#[actix_web::test]
async fn a_tenant_has_at_most_twenty_webhooks() {
    let store = open().await;
    for _ in 0..20 {
        store
            .create_webhook("t", new_hook(&["*"]), "whsec_a".into(), Millis(1))
            .await
            .unwrap();
    }
    let over = store
        .create_webhook("t", new_hook(&["*"]), "whsec_a".into(), Millis(1))
        .await;
    assert!(matches!(over, Err(StoreError::WebhookQuotaExceeded(20))));
    assert_eq!(store.webhooks("t").await.unwrap().len(), 20);
    assert!(store
        .create_webhook("u", new_hook(&["*"]), "whsec_a".into(), Millis(1))
        .await
        .is_ok());
}
