//! Events: one per change in the change's own commit, none for refusals,
//! no-ops or check-ins; the feed's order, filters and pages; retention.

use super::*;
use serde_json::Value;

async fn feed(store: &Arc<Store>, tenant: &str, query: EventQuery) -> Vec<Value> {
    let query = EventQuery {
        limit: query.limit.max(1000),
        ..query
    };
    let page = store.events(tenant, &query).await.unwrap();
    page.events
        .iter()
        .map(|e| serde_json::from_slice(&e.json).unwrap())
        .collect()
}

async fn all(store: &Arc<Store>, tenant: &str) -> Vec<Value> {
    feed(store, tenant, EventQuery::default()).await
}

fn alice(tenant: &str) -> Author<'_> {
    Author {
        tenant,
        actor: Some("alice"),
    }
}

#[actix_web::test]
async fn each_change_has_exactly_one_event_and_nothing_else_has_any() {
    let store = open().await;
    let key = NewDeviceKey::generate().unwrap();
    let device = store
        .create(
            alice("t"),
            new_device(json!({"name": "Till", "locationIds": ["loc_a"]})),
            key.hash,
            Millis(1_000),
            None,
            None,
        )
        .await
        .unwrap();
    let id = device.id.as_str();
    // A no-op, a refused If-Match, a check-in, and an unknown device: none.
    store
        .update("t", id, patch(json!({"name": "Till"})), None, Millis(2_000))
        .await
        .unwrap();
    let stale = Some(IfMatch::parse("\"nope\""));
    let refused = store
        .update("t", id, patch(json!({"name": "X"})), stale, Millis(2_000))
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)));
    store.touch("t", id, Millis(2_500));
    assert!(store
        .revoke("t", "dev_01JD0000000000000000000000", Millis(2_600))
        .await
        .is_err());
    assert_eq!(all(&store, "t").await.len(), 1);

    store
        .update(
            alice("t"),
            id,
            patch(json!({"name": "Till 2", "locationIds": []})),
            None,
            Millis(3_000),
        )
        .await
        .unwrap();
    let fresh = NewDeviceKey::generate().unwrap();
    store
        .rotate_key("t", id, fresh.hash, 0, Millis(4_000), None)
        .await
        .unwrap();
    store.revoke(alice("t"), id, Millis(5_000)).await.unwrap();
    // Revoking again, and changing a revoked device: none.
    store.revoke("t", id, Millis(6_000)).await.unwrap();
    assert!(store
        .update("t", id, patch(json!({"name": "Z"})), None, Millis(6_000))
        .await
        .is_err());

    let events = all(&store, "t").await;
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "device.created",
            "device.updated",
            "device.key_rotated",
            "device.revoked"
        ]
    );
    let actors: Vec<_> = events.iter().map(|e| e["actor"].clone()).collect();
    assert_eq!(
        actors,
        [json!("alice"), json!("alice"), Value::Null, json!("alice")]
    );
    assert_eq!(events[0]["data"]["previousAttributes"], json!({}));
    assert_eq!(
        events[1]["data"]["previousAttributes"],
        json!({"name": "Till", "locationIds": ["loc_a"]})
    );
    assert_eq!(events[2]["data"]["previousAttributes"], json!({}));
    assert_eq!(
        events[3]["data"]["previousAttributes"],
        json!({"status": "active"})
    );
    assert_eq!(events[3]["data"]["object"]["status"], "revoked");
    assert_eq!(events[1]["data"]["object"]["name"], "Till 2");
    assert_eq!(events[1]["createdAt"], "1970-01-01T00:00:03.000Z");
    for event in &events {
        assert_eq!(event["deviceId"], id);
        assert!(crate::events::id::parse(event["id"].as_str().unwrap()).is_some());
        let text = event.to_string();
        assert!(!text.contains(&key.key) && !text.contains(&fresh.key));
        assert!(
            !text.contains(&device_key::to_hex(&key.hash)),
            "no key hash"
        );
    }
}

#[actix_web::test]
async fn event_ids_increase_in_commit_order_per_tenant_even_when_the_clock_steps_back() {
    let store = open().await;
    let (a, _) = add(&store, "t", "a", 9_000).await;
    store.revoke("t", &a.id, Millis(1_000)).await.unwrap();
    add(&store, "t", "b", 1_000).await;
    add(&store, "other", "c", 1_000).await;
    let events = all(&store, "t").await;
    let ids: Vec<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        all(&store, "other").await.len(),
        1,
        "tenants never share events"
    );
    assert!(all(&store, "nobody").await.is_empty());
}

#[actix_web::test]
async fn the_feed_filters_by_type_and_device_and_pages_without_gaps() {
    let store = open().await;
    let mut devices = Vec::new();
    for i in 0..4 {
        let (d, _) = add(&store, "t", &format!("d{i}"), 1_000 + i).await;
        devices.push(d.id);
    }
    for (i, id) in devices.iter().enumerate() {
        let name = format!("renamed {i}");
        store
            .update("t", id, patch(json!({ "name": name })), None, Millis(2_000))
            .await
            .unwrap();
    }
    store.revoke("t", &devices[1], Millis(3_000)).await.unwrap();

    let of_one = feed(
        &store,
        "t",
        EventQuery {
            device_id: Some(devices[1].clone()),
            ..EventQuery::default()
        },
    )
    .await;
    let types: Vec<_> = of_one.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["device.created", "device.updated", "device.revoked"]
    );
    let updates = feed(
        &store,
        "t",
        EventQuery {
            kind: Some(EventType::Updated),
            ..EventQuery::default()
        },
    )
    .await;
    assert_eq!(updates.len(), 4);
    let both = feed(
        &store,
        "t",
        EventQuery {
            kind: Some(EventType::Revoked),
            device_id: Some(devices[2].clone()),
            ..EventQuery::default()
        },
    )
    .await;
    assert!(both.is_empty());

    // Following pages of 3 visits every event once, in order.
    let everything: Vec<_> = all(&store, "t")
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(everything.len(), 9);
    let mut followed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events(
                "t",
                &EventQuery {
                    limit: 3,
                    starting_after: after.clone(),
                    ..EventQuery::default()
                },
            )
            .await
            .unwrap();
        followed.extend(page.events.iter().map(|e| Value::from(e.id.clone())));
        after = page.events.last().map(|e| e.id.clone());
        if !page.has_more {
            assert!(page.events.len() <= 3);
            break;
        }
        assert_eq!(page.events.len(), 3);
    }
    assert_eq!(followed, everything);
}

/// A time a day ahead of the real clock, for the tests that set a retention:
/// PostgreSQL's housekeeping task prunes by the real clock on its own, so
/// their events must be too new for it, and old only by the tests' clock.
fn ahead() -> u64 {
    Millis::now().0 + 86_400_000
}

#[actix_web::test]
async fn retention_prunes_old_events_only() {
    let store = open().await;
    store.set_event_retention(std::time::Duration::from_secs(60));
    let t = ahead();
    let (old, _) = add(&store, "t", "old", t + 1_000).await;
    add(&store, "t", "new", t + 100_000).await;
    assert_eq!(store.prune(Millis(t + 120_000)).await.unwrap(), 1);
    let left = all(&store, "t").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["data"]["object"]["name"], "new");
    let of_old = feed(
        &store,
        "t",
        EventQuery {
            device_id: Some(old.id.clone()),
            ..EventQuery::default()
        },
    )
    .await;
    assert!(of_old.is_empty(), "the device index goes with the event");
    // The device itself is kept: only its history ages out.
    assert_eq!(store.get("t", &old.id).await.unwrap().name, "old");
    assert_eq!(store.prune(Millis(t + 120_000)).await.unwrap(), 0);
}

#[actix_web::test]
async fn a_layout_2_file_gains_the_event_tables_and_keeps_its_devices() {
    if redb_only("a_layout_2_file_gains_the_event_tables_and_keeps_its_devices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let before = {
        let store = embedded_at(&path);
        let (device, _) = add(&store, "t", "from layout 2", 1_000).await;
        device
    };
    {
        // What a layout-2 build left: no event or webhook tables.
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, 2)
            .unwrap();
        for table in ["events", "webhooks", "webhook_deliveries"] {
            let definition: redb::TableDefinition<&str, u64> = redb::TableDefinition::new(table);
            txn.delete_table(definition).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = embedded_at(&path);
    assert_eq!(store.get("t", &before.id).await.unwrap(), before);
    assert!(
        all(&store, "t").await.is_empty(),
        "the feed starts at the upgrade"
    );
    store
        .update(
            "t",
            &before.id,
            patch(json!({"name": "after"})),
            None,
            Millis(2_000),
        )
        .await
        .unwrap();
    let feed = all(&store, "t").await;
    assert_eq!(feed.len(), 1);
    assert_eq!(
        feed[0]["data"]["previousAttributes"],
        json!({"name": "from layout 2"})
    );
    store.verify_indexes().await.unwrap();
    drop(store);
    assert_eq!(stored_layout_version(&path), SCHEMA_VERSION);
}

/// The JSON an event had in the JSON form: the `Event` serializer over the
/// device after the change and the old values of what changed.
fn json_form(
    id: &str,
    kind: EventType,
    at: u64,
    actor: Option<&str>,
    before: Option<&Device>,
    after: &Device,
) -> Vec<u8> {
    let event = crate::events::Event {
        id,
        kind: kind.as_str(),
        created_at: Millis(at),
        actor,
        device_id: &after.id,
        data: crate::events::EventData {
            object: after,
            previous_attributes: before
                .map(|b| crate::events::previous_attributes(b, after))
                .unwrap_or_default(),
        },
    };
    serde_json::to_vec(&event).unwrap()
}

/// Every event of the tenant as the redb file stores it: (id, the bytes).
fn stored(store: &Embedded, tenant: &str) -> Vec<(String, Vec<u8>)> {
    store
        .inner
        .db
        .read(|txn| {
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.range::<(&str, &str)>((tenant, "")..=(tenant, ID_MAX))? {
                let (key, value) = entry?;
                out.push((key.value().1.to_string(), value.value().to_vec()));
            }
            Ok(out)
        })
        .unwrap()
}

#[actix_web::test]
async fn events_are_stored_compact_and_read_as_the_json_they_had() {
    let store = open().await;
    let key = NewDeviceKey::generate().unwrap();
    let body = json!({"name": "Till \"1\" ü", "locationIds": ["loc_a", "loc_b"],
                      "pimEnabled": true, "pimSegmentIds": ["seg_1"]});
    let created = store
        .create(
            alice("t"),
            new_device(body),
            key.hash,
            Millis(1_000),
            None,
            None,
        )
        .await
        .unwrap();
    let id = created.id.clone();
    store.touch("t", &id, Millis(1_500));
    let every_field = json!({"name": "Till 2", "status": "inactive", "locationIds": [],
                             "pimEnabled": false, "pimSegmentIds": ["seg_2", "seg_3"]});
    let updated = store
        .update(alice("t"), &id, patch(every_field), None, Millis(2_000))
        .await
        .unwrap();
    let renamed = store
        .update(
            "t",
            &id,
            patch(json!({"name": "Till 3"})),
            None,
            Millis(3_000),
        )
        .await
        .unwrap();
    let new_key = NewDeviceKey::generate().unwrap();
    let (rotated, _) = store
        .rotate_key(alice("t"), &id, new_key.hash, 60, Millis(4_000), None)
        .await
        .unwrap();
    let revoked = store.revoke("t", &id, Millis(5_000)).await.unwrap();
    assert!(updated.last_seen_at.is_some());

    let page = store
        .events(
            "t",
            &EventQuery {
                limit: 100,
                ..EventQuery::default()
            },
        )
        .await
        .unwrap();
    let expected = [
        (EventType::Created, 1_000, Some("alice"), None, &created),
        (
            EventType::Updated,
            2_000,
            Some("alice"),
            Some(&created),
            &updated,
        ),
        (EventType::Updated, 3_000, None, Some(&updated), &renamed),
        (
            EventType::KeyRotated,
            4_000,
            Some("alice"),
            Some(&renamed),
            &rotated,
        ),
        (EventType::Revoked, 5_000, None, Some(&rotated), &revoked),
    ];
    assert_eq!(page.events.len(), expected.len());
    // Every store reads each event as the JSON it had.
    for ((kind, at, actor, before, after), event) in expected.iter().zip(&page.events) {
        let json = json_form(&event.id, *kind, *at, *actor, *before, after);
        assert_eq!(
            String::from_utf8_lossy(&event.json),
            String::from_utf8_lossy(&json)
        );
    }
    // The redb file stores them compact.
    let Some(embedded) = store.embedded() else {
        return;
    };
    let rows = stored(embedded, "t");
    assert_eq!(rows.len(), expected.len());
    for ((kind, at, actor, before, after), (id, value)) in expected.into_iter().zip(&rows) {
        let json = json_form(id, kind, at, actor, before, after);
        assert_eq!(
            value[0],
            crate::store::events::compact::MARK | kind.code(),
            "{id}"
        );
        assert!(
            value.len() * 2 < json.len(),
            "{id}: {} bytes stored for {} bytes of JSON",
            value.len(),
            json.len()
        );
    }
}

#[actix_web::test]
async fn events_stored_as_json_are_still_read_and_chained() {
    if redb_only("events_stored_as_json_are_still_read_and_chained") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let (device, first) = {
        let store = embedded_at(&path);
        let (device, _) = add(&store, "t", "Till", 1_000).await;
        let first = all(&store, "t").await[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        (device, first)
    };
    // What the JSON form's builds wrote: the head, then the event's JSON; the
    // device record names it as its last event.
    let old_id = events_id_at(2_000);
    let old_json = format!(
        r#"{{"id":"{old_id}","type":"device.updated","createdAt":"1970-01-01T00:00:02Z","actor":"bob","deviceId":"{d}","data":{{"object":{{"id":"{d}","name":"Till 2"}},"previousAttributes":{{"name":"Till"}}}}}}"#,
        d = device.id
    );
    {
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        {
            let mut value =
                crate::store::events::head(EventType::Updated, Some(&first), old_json.len())
                    .unwrap();
            value.extend_from_slice(old_json.as_bytes());
            txn.open_table(EVENTS)
                .unwrap()
                .insert(("t", old_id.as_str()), value.as_slice())
                .unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            let mut record = DeviceRecord::decode(
                devices
                    .get(("t", device.id.as_str()))
                    .unwrap()
                    .unwrap()
                    .value(),
            )
            .unwrap();
            record.last_event = Some(old_id.clone());
            devices
                .insert(
                    ("t", device.id.as_str()),
                    record.encode().unwrap().as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = embedded_at(&path);
    store
        .update(
            "t",
            &device.id,
            patch(json!({"name": "Till 3"})),
            None,
            Millis(3_000),
        )
        .await
        .unwrap();
    let old: Value = serde_json::from_str(&old_json).unwrap();
    let whole = all(&store, "t").await;
    assert_eq!(whole.len(), 3);
    assert_eq!(whole[1], old);
    assert_eq!(
        whole[2]["data"]["previousAttributes"],
        json!({"name": "Till"})
    );
    let by_device = EventQuery {
        device_id: Some(device.id.clone()),
        ..EventQuery::default()
    };
    assert_eq!(whole, feed(&store, "t", by_device).await);
}

fn events_id_at(ms: u64) -> String {
    crate::events::id::format(ulid::Ulid::from_parts(ms, 7))
}

/// Whether the tenant's feed has events after `after`; on the redb file, also
/// checks that the one look-up a caught-up poll is answered with agrees.
async fn follows(store: &Arc<Store>, tenant: &str, after: Option<&str>) -> bool {
    let query = EventQuery {
        starting_after: after.map(str::to_string),
        ..EventQuery::default()
    };
    let found = !feed(store, tenant, query).await.is_empty();
    if let Some(embedded) = store.embedded() {
        let looked_up = embedded.has_events_after(tenant, after).unwrap();
        assert_eq!(looked_up, found, "{tenant} after {after:?}");
    }
    found
}

#[actix_web::test]
async fn whether_events_follow_a_cursor_is_one_look_up() {
    let store = open().await;
    assert!(!follows(&store, "t", None).await);
    let (device, _) = add(&store, "t", "Till", 1_000).await;
    assert!(follows(&store, "t", None).await);
    assert!(!follows(&store, "other", None).await);
    let first = all(&store, "t").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!follows(&store, "t", Some(&first)).await);
    assert!(follows(&store, "t", Some(&events_id_at(0))).await);
    store
        .update(
            "t",
            &device.id,
            patch(json!({"name": "Till 2"})),
            None,
            Millis(2_000),
        )
        .await
        .unwrap();
    assert!(follows(&store, "t", Some(&first)).await);
}

#[actix_web::test]
async fn event_ids_keep_growing_after_the_newest_was_pruned_and_the_clock_stepped_back() {
    let store = open().await;
    let t = ahead();
    let (device, _) = add(&store, "t", "Till", t + 50_000).await;
    let first = all(&store, "t").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    store.set_event_retention(std::time::Duration::from_secs(1));
    assert_eq!(store.prune(Millis(t + 60_000)).await.unwrap(), 1);
    assert!(all(&store, "t").await.is_empty());
    // The clock is now behind the pruned event: the next id still follows it.
    store
        .update(
            "t",
            &device.id,
            patch(json!({"name": "Till 2"})),
            None,
            Millis(t + 1_000),
        )
        .await
        .unwrap();
    let next = all(&store, "t").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next > first, "{next} <= {first}");
}

/// The writer shares the tables of registrations and changes across a
/// batch; a write that opens its own tables (here a new webhook, which reads
/// the feed for its cursor) closes them first. In one batch, each still sees
/// exactly what the writes before it did.
#[actix_web::test]
async fn one_batch_of_mixed_writes_applies_them_in_order_over_shared_tables() {
    if redb_only("one_batch_of_mixed_writes_applies_them_in_order_over_shared_tables") {
        return;
    }
    let store = open_embedded();
    let (live, _) = add(&store, "t", "live", 1_000).await;
    let held = hold_writer(&store, 500);
    let update = |name: &'static str| {
        let (store, id) = (store.clone(), live.id.clone());
        actix_web::rt::spawn(async move {
            let body = patch(json!({ "name": name }));
            store.update("t", &id, body, None, Millis(2_000)).await
        })
    };
    let first = update("first");
    actix_web::rt::task::yield_now().await;
    let hook = {
        let store = store.clone();
        actix_web::rt::spawn(async move {
            let new = crate::webhooks::WebhookPatch {
                url: Some("http://hooks.example/".into()),
                events: Some(vec!["*".into()]),
                ..Default::default()
            };
            store
                .create_webhook("t", new, "whsec_a".into(), Millis(2_000))
                .await
        })
    };
    actix_web::rt::task::yield_now().await;
    // A device's first check-in is due for disk: it writes the shared
    // check-in table.
    store.touch("t", &live.id, Millis(2_000));
    let second = update("second");
    actix_web::rt::task::yield_now().await;
    let added = {
        let store = store.clone();
        actix_web::rt::spawn(async move { add(&store, "t", "added", 2_000).await })
    };
    actix_web::rt::task::yield_now().await;
    held.await.unwrap().unwrap();
    let first = first.await.unwrap().unwrap();
    let hook = hook.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    let (added, _) = added.await.unwrap();
    assert_eq!((first.version, second.version), (2, 3));
    assert_eq!(second.last_seen_at, Some(Millis(2_000)));

    let feed = all(&store, "t").await;
    let kinds: Vec<_> = feed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "device.created",
            "device.updated",
            "device.updated",
            "device.created"
        ]
    );
    assert_eq!(feed[2]["data"]["object"]["name"], "second");
    assert_eq!(feed[3]["data"]["object"]["id"], added.id.as_str());
    // The webhook's cursor is the event before it: it starts at "second".
    let Next::Send(attempt) = store
        .next_delivery("t", &hook.id, None, Millis(3_000))
        .await
        .unwrap()
    else {
        panic!("the change after the webhook is due")
    };
    assert_eq!(attempt.event.id, feed[2]["id"].as_str().unwrap());
    store.verify_indexes().await.unwrap();
    drop(store);
}
