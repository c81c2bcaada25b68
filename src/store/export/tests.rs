use super::*;
use crate::auth::device_key::NewDeviceKey;
use crate::devices::{Device, DevicePatch, NewDevice};
use crate::store::{EventQuery, ListQuery};
use serde_json::{json, Value};

fn open(dir: &tempfile::TempDir, name: &str) -> Embedded {
    Embedded::open(&dir.path().join(name).join("devicehub.redb")).unwrap()
}

async fn add(store: &Embedded, tenant: &str, body: Value, now: Millis) -> (Device, String) {
    let key = NewDeviceKey::generate().unwrap();
    let new = NewDevice::parse(body.as_object().unwrap()).unwrap();
    let author = crate::store::Author {
        tenant,
        actor: Some("alice"),
    };
    let device = store
        .create(author, new, key.hash, now, None, None)
        .await
        .unwrap();
    (device, key.key)
}

async fn hook(store: &Embedded, tenant: &str, url: &str, events: Value) {
    let new = crate::webhooks::WebhookPatch::parse_new(
        json!({"url": url, "events": events, "description": "d"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let secret = crate::webhooks::new_secret().unwrap();
    store
        .create_webhook(tenant, new, secret, Millis::now())
        .await
        .unwrap();
}

/// Two tenants: a renamed device, one rotated with a grace period (two
/// working keys), a revoked one, a check-in, and a webhook each (one made
/// before its tenant's first event). Returns every working key with its
/// tenant and device id.
async fn populate(store: &Embedded) -> Vec<(String, String, String)> {
    let now = Millis::now();
    let mut keys = Vec::new();
    hook(store, "other", "https://hooks.example/other", json!(["*"])).await;
    let (a, key_a) = add(
        store,
        "acme",
        json!({"name": "a", "locationIds": ["l1", "l2"], "pimSegmentIds": ["s1"]}),
        now,
    )
    .await;
    let patch = DevicePatch::parse(
        json!({"name": "a renamed", "locationIds": ["l3"]})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    store.update("acme", &a.id, patch, None, now).await.unwrap();
    keys.push(("acme".to_string(), a.id.clone(), key_a));
    let (b, key_b) = add(store, "acme", json!({"name": "b"}), now).await;
    let new_key = NewDeviceKey::generate().unwrap();
    store
        .rotate_key("acme", &b.id, new_key.hash, 3600, now, None)
        .await
        .unwrap();
    keys.push(("acme".to_string(), b.id.clone(), key_b));
    keys.push(("acme".to_string(), b.id.clone(), new_key.key));
    let (c, _) = add(
        store,
        "acme",
        json!({"name": "c", "status": "inactive"}),
        now,
    )
    .await;
    store.revoke("acme", &c.id, now).await.unwrap();
    let (d, key_d) = add(store, "other", json!({"name": "d"}), now).await;
    store.touch("other", &d.id, Millis(now.0 + 5));
    keys.push(("other".to_string(), d.id.clone(), key_d));
    hook(
        store,
        "acme",
        "http://10.0.0.5:8080/in?x=1",
        json!(["device.revoked", "device.created"]),
    )
    .await;
    keys
}

fn export(store: &Embedded, tenant: Option<&str>) -> (String, Transferred) {
    let mut out = Vec::new();
    let done = store.export_to(&mut out, tenant).unwrap();
    (String::from_utf8(out).unwrap(), done)
}

fn devices_of(store: &Embedded, tenant: &str) -> Vec<Device> {
    store.list(tenant, &ListQuery::default()).unwrap().devices
}

fn feed_of(store: &Embedded, tenant: &str) -> Vec<(String, Vec<u8>)> {
    let query = EventQuery {
        limit: 1000,
        ..EventQuery::default()
    };
    let page = store.events(tenant, &query).unwrap();
    assert!(!page.has_more);
    page.events.into_iter().map(|e| (e.id, e.json)).collect()
}

fn assert_untouched(store: &Embedded) {
    assert!(store.is_empty().unwrap());
    for tenant in ["acme", "other"] {
        assert!(feed_of(store, tenant).is_empty());
    }
    assert!(store.key_index_entries().unwrap().is_empty());
    store.verify_indexes().unwrap();
}

#[actix_web::test]
async fn a_round_trip_keeps_devices_keys_etags_check_ins_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir, "a");
    let keys = populate(&source).await;
    let (text, written) = export(&source, None);
    assert_eq!(written.devices, 4);
    assert_eq!(written.events, 7);
    assert_eq!(written.webhooks, 2);
    assert_eq!(text.lines().count(), 1 + 4 + 7 + 2 + 1);

    let target = open(&dir, "b");
    let read = target.import_from(text.as_bytes()).unwrap();
    assert_eq!(read, written);
    target.verify_indexes().unwrap();
    for tenant in ["acme", "other"] {
        let (before, after) = (devices_of(&source, tenant), devices_of(&target, tenant));
        assert!(!before.is_empty());
        assert_eq!(before, after, "{tenant}");
        let etags = |d: &[Device]| d.iter().map(Device::etag).collect::<Vec<_>>();
        assert_eq!(etags(&before), etags(&after));
        assert_eq!(feed_of(&source, tenant), feed_of(&target, tenant));
        // Each device's own history (its chain of events) moved too.
        for device in &before {
            let query = EventQuery {
                limit: 1000,
                device_id: Some(device.id.clone()),
                ..EventQuery::default()
            };
            let ids = |store: &Embedded| -> Vec<String> {
                let page = store.events(tenant, &query).unwrap();
                page.events.into_iter().map(|e| e.id).collect()
            };
            assert!(!ids(&source).is_empty());
            assert_eq!(ids(&source), ids(&target), "{}", device.id);
        }
        assert_eq!(source.stats(tenant).unwrap(), target.stats(tenant).unwrap());
        let hooks = source.webhooks(tenant).unwrap();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks, target.webhooks(tenant).unwrap());
    }
    // The secret and the cursor moved too (and the cursor is null for the
    // webhook made before its tenant's first event).
    let line = text
        .lines()
        .find(|l| l.contains("\"kind\":\"webhook\""))
        .unwrap();
    let first: Value = serde_json::from_str(line).unwrap();
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    let cursors: Vec<Value> = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"webhook\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["cursor"].clone())
        .collect();
    assert!(
        cursors[0].as_str().unwrap().starts_with("evt_"),
        "{cursors:?}"
    );
    assert_eq!(cursors[1], Value::Null);
    // The check-in was only in the source's memory: it was exported.
    let other = devices_of(&target, "other");
    assert!(other[0].last_seen_at.is_some());
    let now = Millis::now();
    for (tenant, id, key) in &keys {
        let owner = target
            .find_by_key(&device_key::hash(key), now)
            .unwrap()
            .unwrap_or_else(|| panic!("the key of {id} works"));
        assert_eq!((&owner.tenant, &owner.device.id), (tenant, id));
    }
    let mut a = source.key_index_entries().unwrap();
    let mut b = target.key_index_entries().unwrap();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Exporting the copy gives the same lines after the header.
    let (again, _) = export(&target, None);
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        again.lines().skip(1).collect::<Vec<_>>()
    );
    // New ids after the import still come after the imported ones.
    let (e, _) = add(&target, "acme", json!({"name": "e"}), Millis(1)).await;
    assert!(devices_of(&target, "acme").last().unwrap().id == e.id);
    let feed = feed_of(&target, "acme");
    let ids: Vec<_> = feed.iter().map(|(id, _)| id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

#[actix_web::test]
async fn one_tenant_is_exported_alone() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir, "a");
    populate(&source).await;
    let (text, written) = export(&source, Some("other"));
    assert_eq!(
        (written.devices, written.events, written.webhooks),
        (1, 1, 1)
    );
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["tenant"], "other");
    assert!(text.lines().skip(1).all(|l| !l.contains("\"acme\"")));
    let target = open(&dir, "b");
    target.import_from(text.as_bytes()).unwrap();
    assert_eq!(devices_of(&target, "other"), devices_of(&source, "other"));
    assert!(devices_of(&target, "acme").is_empty());
    target.verify_indexes().unwrap();
}

#[actix_web::test]
async fn a_store_that_is_not_empty_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir, "a");
    populate(&source).await;
    let (text, _) = export(&source, None);
    let target = open(&dir, "b");
    let (only, _) = add(
        &target,
        "acme",
        json!({"name": "already here"}),
        Millis::now(),
    )
    .await;
    let err = target.import_from(text.as_bytes()).unwrap_err();
    assert!(matches!(err, ImportError::NotEmpty("devices")), "{err}");
    assert_eq!(devices_of(&target, "acme"), vec![only]);
    assert!(devices_of(&target, "other").is_empty());
    assert_eq!(feed_of(&target, "acme").len(), 1);
}

/// The good export's lines, one changed by `edit`, imported into an empty
/// store: refused naming `line`, with `says` in the reason, nothing written.
fn refused(good: &[String], edit: impl FnOnce(&mut Vec<String>), line: u64, says: &str) {
    let mut lines = good.to_vec();
    edit(&mut lines);
    let text = lines.join("\n") + "\n";
    let dir = tempfile::tempdir().unwrap();
    let target = open(&dir, "t");
    match target.import_from(text.as_bytes()) {
        Err(ImportError::Line { line: at, reason }) => {
            assert_eq!(at, line, "{reason}");
            assert!(reason.contains(says), "{says:?} not in {reason:?}");
        }
        other => panic!("{says}: expected line {line} refused, got {other:?}"),
    }
    assert_untouched(&target);
}

fn set(lines: &mut [String], at: usize, field: &str, value: Value) {
    let mut object: Value = serde_json::from_str(&lines[at]).unwrap();
    object[field] = value;
    lines[at] = object.to_string();
}

#[actix_web::test]
async fn every_bad_line_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir, "a");
    populate(&source).await;
    let (text, _) = export(&source, None);
    let good: Vec<String> = text.lines().map(str::to_string).collect();
    // Lines: 1 header, 2-5 devices (2 renamed, 3 rotated, 4 revoked, 5
    // other), 6-12 events, 13-14 webhooks, 15 end.
    assert!(good[2].contains("previousKeyHash"), "{}", good[2]);
    let last = good.len() as u64;

    refused(
        &good,
        |l| set(l, 2, "kind", json!("gadget")),
        3,
        "unknown kind \"gadget\"",
    );
    refused(
        &good,
        |l| set(l, 1, "extra", json!(1)),
        2,
        "unknown field `extra`",
    );
    refused(&good, |l| set(l, 1, "keyHash", json!("ABCD")), 2, "keyHash");
    let upper = good[1].clone();
    refused(
        &good,
        |l| {
            let hash = serde_json::from_str::<Value>(&upper).unwrap()["keyHash"]
                .as_str()
                .unwrap()
                .to_uppercase();
            set(l, 1, "keyHash", json!(hash));
        },
        2,
        "lower-case hex",
    );
    refused(
        &good,
        |l| set(l, 1, "status", json!("lost")),
        2,
        "unknown variant `lost`",
    );
    refused(
        &good,
        |l| set(l, 1, "createdAt", json!("yesterday")),
        2,
        "createdAt",
    );
    refused(&good, |l| set(l, 1, "name", json!(" padded")), 2, "name");
    refused(
        &good,
        |l| set(l, 1, "locationIds", json!(["x", "x"])),
        2,
        "listed twice",
    );
    refused(&good, |l| set(l, 1, "version", json!(0)), 2, "version");
    refused(
        &good,
        |l| set(l, 1, "id", json!("dev_nope")),
        2,
        "not a device id",
    );
    refused(
        &good,
        |l| set(l, 3, "previousKeyHash", json!("00".repeat(32))),
        4,
        "previousKeyGraceEndsAt",
    );
    refused(
        &good,
        |l| {
            let dup = l[1].clone();
            l.insert(2, dup);
        },
        3,
        "appears twice",
    );
    let key_of_first = serde_json::from_str::<Value>(&good[1]).unwrap()["keyHash"].clone();
    refused(
        &good,
        |l| set(l, 4, "keyHash", key_of_first),
        5,
        "already a key of device",
    );
    refused(
        &good,
        |l| set(l, 5, "id", json!("evt_01M8HM85XDJMVEN7V7D3K6SKDR")),
        6,
        "differs from id",
    );
    refused(
        &good,
        |l| {
            let event = l.remove(5);
            l.insert(1, event);
        },
        2,
        "not on an earlier line",
    );
    refused(
        &good,
        |l| set(l, 0, "version", json!(2)),
        1,
        "format version 2",
    );
    refused(
        &good,
        |l| set(l, 0, "tenant", json!("acme")),
        5,
        "header says",
    );
    refused(&good, |l| l[0] = l[1].clone(), 1, "not a devicehub export");
    refused(&good, |l| l[6] = "{\"kind\":\"device\",".into(), 7, "EOF");
    refused(&good, |l| l[6] = String::new(), 7, "empty line");
    refused(
        &good,
        |l| set(l, last as usize - 1, "records", json!(3)),
        last,
        "counts 3 records",
    );
    refused(
        &good,
        |l| {
            l.pop();
        },
        last,
        "incomplete",
    );
    refused(
        &good,
        |l| l.push(l[1].clone()),
        last + 1,
        "after the end line",
    );
}

#[test]
fn times_must_be_exact_to_the_millisecond() {
    assert_eq!(
        parse_time("t", "2024-01-15T10:00:00.123Z").unwrap(),
        Millis(1_705_312_800_123)
    );
    assert_eq!(
        parse_time("t", "2024-01-15T11:00:00.123+01:00").unwrap(),
        Millis(1_705_312_800_123)
    );
    for bad in [
        "2024-01-15T10:00:00.1234Z",
        "1969-12-31T23:59:59.000Z",
        "2024-01-15",
    ] {
        assert!(parse_time("t", bad).is_err(), "{bad}");
    }
    assert_eq!(
        parse_time("t", &Millis(1_705_312_800_123).to_rfc3339()).unwrap(),
        Millis(1_705_312_800_123)
    );
}

#[test]
fn a_missing_or_locked_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let err = Embedded::export_file(&path, Source::Live, &mut Vec::new(), None).unwrap_err();
    assert!(
        err.to_string().starts_with("storage.path: cannot read"),
        "{err}"
    );
    let held = Embedded::open(&path).unwrap();
    let err = Embedded::export_file(&path, Source::Live, &mut Vec::new(), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("locked by a running devicehub server"),
        "{err}"
    );
    assert!(err.to_string().contains("--from"), "{err}");
    drop(held);
    let mut out = Vec::new();
    let done = Embedded::export_file(&path, Source::Live, &mut out, None).unwrap();
    assert_eq!(done, Transferred::default());
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
}

#[actix_web::test]
async fn a_live_file_left_unclosed_is_repaired_but_a_snapshot_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/devicehub.redb");
    let store = Embedded::open(&path).unwrap();
    populate(&store).await;
    // A copy taken while the store is open: as a server that exits without
    // closing its database leaves the file.
    let unclosed = dir.path().join("unclosed.redb");
    std::fs::copy(&path, &unclosed).unwrap();
    let as_snapshot = dir.path().join("snapshot.redb");
    std::fs::copy(&path, &as_snapshot).unwrap();
    let mut out = Vec::new();
    let err = Embedded::export_file(&as_snapshot, Source::Snapshot, &mut out, None).unwrap_err();
    assert!(err.to_string().contains("--from:"), "{err}");
    assert!(err.to_string().contains("not closed cleanly"), "{err}");
    assert!(out.is_empty());
    let done = Embedded::export_file(&unclosed, Source::Live, &mut out, None).unwrap();
    assert_eq!(done.devices, 4);
    drop(store);
}
