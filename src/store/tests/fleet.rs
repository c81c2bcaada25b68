//! The indexes, counts, list filters and quota of the fleet-scale layout, and
//! the upgrade of the first release's files.

use super::*;
use redb::ReadableDatabase;

async fn create(store: &Store, tenant: &str, body: serde_json::Value, now: u64) -> Device {
    store
        .create(
            tenant,
            new_device(body),
            NewDeviceKey::generate().unwrap().hash,
            Millis(now),
            None,
            None,
        )
        .await
        .unwrap()
}

fn ids(page: &Page) -> Vec<String> {
    page.devices.iter().map(|d| d.id.clone()).collect()
}

/// The indexes agree with the devices, and tenant `t` has these (active,
/// inactive, revoked) counts.
async fn check(store: &Store, label: &str, expected: (u64, u64, u64)) {
    store
        .verify_indexes()
        .await
        .unwrap_or_else(|e| panic!("after {label}: {e}"));
    assert_eq!(stats_of(store, "t").await, expected, "after {label}");
}

#[actix_web::test]
async fn indexes_and_counts_follow_every_kind_of_write() {
    let store = open().await;
    check(&store, "nothing", (0, 0, 0)).await;
    let a = create(
        &store,
        "t",
        json!({"name": "a", "locationIds": ["l1", "l2"]}),
        1,
    )
    .await;
    let b = create(&store, "t", json!({"name": "b", "status": "inactive"}), 2).await;
    create(
        &store,
        "other",
        json!({"name": "o", "locationIds": ["l1"]}),
        3,
    )
    .await;
    check(&store, "registrations", (1, 1, 0)).await;
    assert_eq!(stats_of(&store, "other").await, (1, 0, 0));

    let moved = patch(json!({"status": "inactive", "locationIds": ["l2", "l3"]}));
    store
        .update("t", &a.id, moved, None, Millis(4))
        .await
        .unwrap();
    check(&store, "a status and location change", (0, 2, 0)).await;

    let same = patch(json!({"status": "inactive", "locationIds": ["l2", "l3"]}));
    store
        .update("t", &a.id, same, None, Millis(5))
        .await
        .unwrap();
    check(&store, "a no-op update", (0, 2, 0)).await;

    let stale = Some(IfMatch::parse("\"stale\""));
    let refused = store
        .update(
            "t",
            &a.id,
            patch(json!({"status": "active"})),
            stale,
            Millis(6),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)));
    check(&store, "a refused update", (0, 2, 0)).await;

    store.revoke("t", &b.id, Millis(7)).await.unwrap();
    check(&store, "a revocation", (0, 1, 1)).await;
    store.revoke("t", &b.id, Millis(8)).await.unwrap();
    check(&store, "a second revocation", (0, 1, 1)).await;
    let on_revoked = store
        .update(
            "t",
            &b.id,
            patch(json!({"locationIds": ["l9"]})),
            None,
            Millis(9),
        )
        .await;
    assert!(matches!(on_revoked, Err(StoreError::Revoked)));
    check(&store, "an update of a revoked device", (0, 1, 1)).await;

    store
        .rotate_key("t", &a.id, hash("dhk_rotated"), 0, Millis(10), None)
        .await
        .unwrap();
    check(&store, "a rotation", (0, 1, 1)).await;
    let missing = store
        .revoke("t", "dev_01ARZ3NDEKTSV4RRFFQ69G5FAV", Millis(11))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
    check(&store, "a write to a missing device", (0, 1, 1)).await;

    let at = |location: &str| ListQuery {
        location_id: Some(location.into()),
        ..Default::default()
    };
    let at_l1 = store.list("t", &at("l1")).await.unwrap();
    assert!(at_l1.devices.is_empty(), "a left l1");
    let at_l3 = store.list("t", &at("l3")).await.unwrap();
    assert_eq!(ids(&at_l3), std::slice::from_ref(&a.id));
    assert_eq!(store.all_stats().await.unwrap().total(), 3);
}

#[actix_web::test]
async fn filtered_pages_walk_their_index_in_either_order() {
    let store = open().await;
    let mut inactive_at_x = Vec::new();
    for i in 0..40u64 {
        let status = if i % 3 == 0 { "inactive" } else { "active" };
        let location = if i % 2 == 0 { "x" } else { "y" };
        let d = create(
            &store,
            "t",
            json!({"name": format!("Dev {i}"), "status": status, "locationIds": [location]}),
            1_000 + i,
        )
        .await;
        if status == "inactive" && location == "x" {
            inactive_at_x.push(d.id);
        }
    }
    // Status and location together, a page at a time, oldest and newest first.
    for order in [Order::Asc, Order::Desc] {
        let mut expected = inactive_at_x.clone();
        if order == Order::Desc {
            expected.reverse();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list(
                    "t",
                    &ListQuery {
                        status: Some(DeviceStatus::Inactive),
                        location_id: Some("x".into()),
                        order,
                        limit: Some(2),
                        starting_after: after.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            seen.extend(ids(&page));
            after = seen.last().cloned();
            if !page.has_more {
                break;
            }
        }
        assert_eq!(seen, expected, "{order:?}");
    }
    let newest = store
        .list(
            "t",
            &ListQuery {
                order: Order::Desc,
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(newest.devices[0].name, "Dev 39");
    assert!(newest.has_more);
}

/// The names of the devices of tenant `t` that `query` lists.
async fn names(store: &Arc<Store>, query: ListQuery) -> Vec<String> {
    let page = store.list("t", &query).await.unwrap();
    page.devices.into_iter().map(|d| d.name).collect()
}

#[actix_web::test]
async fn search_and_check_in_filters_combine_with_paging() {
    let store = open().await;
    let registered = [
        "Front Scanner",
        "back SCANNER",
        "Kiosk",
        "Ölscanner",
        "Gate",
    ];
    let mut devices = Vec::new();
    for (i, name) in registered.iter().enumerate() {
        devices.push(create(&store, "t", json!({"name": name}), 1_000 + i as u64).await);
    }
    store.touch("t", &devices[0].id, Millis(10_000));
    store.touch("t", &devices[1].id, Millis(20_000));
    store.touch("t", &devices[2].id, Millis(30_000));
    let q = |text: &str| ListQuery {
        name_contains: Some(text.to_lowercase()),
        ..Default::default()
    };
    assert_eq!(
        names(&store, q("scanner")).await,
        ["Front Scanner", "back SCANNER", "Ölscanner"]
    );
    assert_eq!(names(&store, q("ÖL")).await, ["Ölscanner"]);
    assert!(names(&store, q("printer")).await.is_empty());
    let second = ListQuery {
        limit: Some(1),
        starting_after: Some(devices[0].id.clone()),
        ..q("scanner")
    };
    let page = store.list("t", &second).await.unwrap();
    assert_eq!(page.devices[0].name, "back SCANNER");
    assert!(page.has_more);

    let before = |ms| ListQuery {
        last_seen_before: Some(Millis(ms)),
        ..Default::default()
    };
    // Before 20 s: seen at 10 s, and the two never seen.
    assert_eq!(
        names(&store, before(20_000)).await,
        ["Front Scanner", "Ölscanner", "Gate"]
    );
    let after = ListQuery {
        last_seen_after: Some(Millis(20_000)),
        ..Default::default()
    };
    assert_eq!(names(&store, after).await, ["back SCANNER", "Kiosk"]);
    let both = ListQuery {
        last_seen_after: Some(Millis(10_000)),
        ..q("scanner")
    };
    let mut both_desc = both.clone();
    both_desc.order = Order::Desc;
    assert_eq!(names(&store, both).await, ["Front Scanner", "back SCANNER"]);
    assert_eq!(
        names(&store, both_desc).await,
        ["back SCANNER", "Front Scanner"]
    );
}

#[actix_web::test]
async fn a_cursor_streams_a_snapshot_in_batches() {
    let store = open().await;
    for i in 0..25u64 {
        create(&store, "t", json!({"name": format!("d{i}")}), 1_000 + i).await;
    }
    let mut cursor = store.cursor("t", ListQuery::default()).await.unwrap();
    // A write after the cursor opened is not part of its snapshot.
    create(&store, "t", json!({"name": "late"}), 5_000).await;
    let mut all = Vec::new();
    let mut turns = 0;
    while std::future::poll_fn(|cx| cursor.poll_batch(cx, 10, 7, &mut all))
        .await
        .unwrap()
    {
        turns += 1;
        assert!(turns < 10, "the walk must end");
    }
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let names: Vec<_> = all.iter().map(|d| d.name.clone()).collect();
    assert_eq!(
        names[..25],
        (0..25).map(|i| format!("d{i}")).collect::<Vec<_>>()
    );
    assert_eq!(all.len(), 25, "only what the snapshot held");
    assert!(!names.iter().any(|n| n == "late"));
}

#[actix_web::test]
async fn the_quota_refuses_registrations_past_it_and_counts_revoked_devices() {
    let store = open().await;
    let quota = Some(2);
    let register = |name: &'static str| {
        let store = &store;
        async move {
            store
                .create(
                    "t",
                    new_device(json!({"name": name})),
                    NewDeviceKey::generate().unwrap().hash,
                    Millis(1_000),
                    quota,
                    None,
                )
                .await
        }
    };
    let first = register("a").await.unwrap();
    register("b").await.unwrap();
    store.revoke("t", &first.id, Millis(2_000)).await.unwrap();
    assert!(matches!(
        register("c").await,
        Err(StoreError::QuotaExceeded(2))
    ));
    assert_eq!(stats_of(&store, "t").await, (1, 0, 1));
    assert_eq!(
        store
            .list("t", &ListQuery::default())
            .await
            .unwrap()
            .devices
            .len(),
        2
    );
    store.verify_indexes().await.unwrap();
    // Another tenant has a quota of its own.
    store
        .create(
            "u",
            new_device(json!({"name": "u"})),
            NewDeviceKey::generate().unwrap().hash,
            Millis(1_000),
            quota,
            None,
        )
        .await
        .unwrap();
}

#[actix_web::test]
async fn a_quota_refusal_does_not_fail_its_batch() {
    // The redb committer's batches (src/store/postgres/batch.rs tests the
    // PostgreSQL committer's).
    if redb_only("a_quota_refusal_does_not_fail_its_batch") {
        return;
    }
    let store = open_embedded();
    let (live, _) = add(&store, "full", "only", 1_000).await;
    let held = hold_writer(&store, 1_000);
    let refused = {
        let store = store.clone();
        actix_web::rt::spawn(async move {
            store
                .create(
                    "full",
                    new_device(json!({"name": "one too many"})),
                    NewDeviceKey::generate().unwrap().hash,
                    Millis(2_000),
                    Some(1),
                    None,
                )
                .await
        })
    };
    actix_web::rt::task::yield_now().await;
    let neighbour = store.update(
        "full",
        &live.id,
        patch(json!({"name": "renamed"})),
        None,
        Millis(2_000),
    );
    let renamed = neighbour.await.unwrap();
    held.await.unwrap().unwrap();
    assert!(matches!(
        refused.await.unwrap(),
        Err(StoreError::QuotaExceeded(1))
    ));
    assert_eq!(renamed.name, "renamed");
    assert_eq!(store.get("full", &live.id).await.unwrap().name, "renamed");
    store.verify_indexes().await.unwrap();
}

/// The first release's file, as `tests/fixtures/v1/make-v1.py` wrote it.
#[derive(serde::Deserialize)]
struct Manifest {
    devices: Vec<FixtureDevice>,
}

#[derive(serde::Deserialize)]
struct FixtureDevice {
    tenant: String,
    id: String,
    key: String,
    #[serde(rename = "oldKey")]
    old_key: Option<String>,
    etag: String,
    device: serde_json::Value,
}

#[actix_web::test]
async fn a_first_release_file_is_upgraded_in_place_once() {
    if redb_only("a_first_release_file_is_upgraded_in_place_once") {
        return;
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(fixtures.join("manifest.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    std::fs::copy(fixtures.join("devicehub.redb"), &path).unwrap();

    for round in 0..2 {
        let store = embedded_at(&path);
        store
            .verify_indexes()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        for tenant in ["acme", "globex"] {
            let mut expected = (0, 0, 0);
            for d in manifest.devices.iter().filter(|d| d.tenant == tenant) {
                match d.device["status"].as_str().unwrap() {
                    "active" => expected.0 += 1,
                    "inactive" => expected.1 += 1,
                    _ => expected.2 += 1,
                }
            }
            if tenant == "acme" {
                // One device registered after each earlier round's upgrade.
                expected.0 += round;
            }
            assert_eq!(stats_of(&store, tenant).await, expected, "{tenant}");
        }
        for d in &manifest.devices {
            let device = store.get(&d.tenant, &d.id).await.unwrap();
            assert_eq!(device.etag(), d.etag, "{}", d.id);
            let mut shown = serde_json::to_value(&device).unwrap();
            let mut then = d.device.clone();
            // Check-ins newer than the last stored one lived only in memory.
            shown.as_object_mut().unwrap().remove("lastSeenAt");
            then.as_object_mut().unwrap().remove("lastSeenAt");
            assert_eq!(shown, then, "{}", d.id);
            let now = Millis::now();
            let found = store
                .find_by_key(&hash(&d.key), now)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (
                    found.tenant.as_str(),
                    found.device.id.as_str(),
                    found.deprecated
                ),
                (d.tenant.as_str(), d.id.as_str(), false)
            );
            if let Some(old) = &d.old_key {
                assert!(store.find_by_key(&hash(old), now).await.unwrap().is_none());
            }
        }
        let acme_inactive = store
            .list(
                "acme",
                &ListQuery {
                    status: Some(DeviceStatus::Inactive),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(acme_inactive.devices.len(), 2);
        // The upgraded file takes writes that keep the indexes right.
        create(
            &store,
            "acme",
            json!({"name": format!("after upgrade {round}")}),
            9_000,
        )
        .await;
        store.verify_indexes().await.unwrap();
    }
    assert_eq!(stored_layout_version(&path), SCHEMA_VERSION);
}

/// The devices of `tenant` whose names contain `text` ignoring case, worked
/// out from the whole list (the rule `q` must follow), oldest first.
async fn named_by_rule(store: &Arc<Store>, tenant: &str, text: &str) -> Vec<String> {
    let needle = text.to_lowercase();
    store
        .list(tenant, &ListQuery::default())
        .await
        .unwrap()
        .devices
        .into_iter()
        .filter(|d| d.name.to_lowercase().contains(&needle))
        .map(|d| d.id)
        .collect()
}

/// What `q` answers, one device a page, in both orders: every page boundary
/// resumes a walk of the name index.
async fn named_by_q(store: &Arc<Store>, tenant: &str, text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    for order in [Order::Asc, Order::Desc] {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let query = ListQuery {
                name_contains: Some(text.to_lowercase()),
                order,
                limit: Some(1),
                starting_after: after.clone(),
                ..Default::default()
            };
            let page = store.list(tenant, &query).await.unwrap();
            found.extend(ids(&page));
            if !page.has_more {
                break;
            }
            after = found.last().cloned();
        }
        if order == Order::Desc {
            found.reverse();
        }
        pages.push(found);
    }
    assert_eq!(pages[0], pages[1], "{text:?}: both orders find the same");
    pages.pop().unwrap()
}

const SEARCHES: [&str; 12] = [
    "scanner",
    "SCAN",
    "ner 0",
    "ölscan",
    "ÖL",
    "i̇stan",
    "İSTAN",
    "kiosk",
    "\u{212a}iosk",
    "gate",
    "printer",
    "e",
];

async fn assert_q_follows_the_rule(store: &Arc<Store>, label: &str) {
    for text in SEARCHES {
        for tenant in ["t", "other"] {
            assert_eq!(
                named_by_q(store, tenant, text).await,
                named_by_rule(store, tenant, text).await,
                "{label}: q={text:?} in {tenant}"
            );
        }
    }
    store
        .verify_indexes()
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"));
}

#[actix_web::test]
async fn a_search_finds_exactly_the_names_containing_it_across_every_kind_of_write() {
    let store = open().await;
    let names = [
        "Front Scanner 01",
        "back SCANNER 02",
        "Ölscanner",
        "İstanbul gate",
        "\u{212a}iosk",
        "Kiosk 2",
        "Gate",
    ];
    let mut devices = Vec::new();
    for (i, name) in names.iter().enumerate() {
        devices.push(create(&store, "t", json!({"name": name}), 1_000 + i as u64).await);
    }
    create(&store, "other", json!({"name": "Other scanner"}), 2_000).await;
    assert_q_follows_the_rule(&store, "registrations").await;
    assert_eq!(named_by_q(&store, "t", "scanner").await.len(), 3);
    assert_eq!(named_by_q(&store, "other", "scanner").await.len(), 1);

    // Renames, including a name that stops and one that starts matching.
    for (device, name) in [(0, "Front printer"), (6, "Gate scanner 9"), (3, "ISTANBUL")] {
        let renamed = patch(json!({"name": name}));
        store
            .update("t", &devices[device].id, renamed, None, Millis(3_000))
            .await
            .unwrap();
    }
    assert_q_follows_the_rule(&store, "renames").await;
    assert_eq!(
        named_by_q(&store, "t", "printer").await,
        [devices[0].id.clone()]
    );
    assert!(!named_by_q(&store, "t", "scanner")
        .await
        .contains(&devices[0].id));
    // An update that leaves the name alone, a revocation and a rotation.
    let other_fields = patch(json!({"status": "inactive", "locationIds": ["l1"]}));
    store
        .update("t", &devices[1].id, other_fields, None, Millis(4_000))
        .await
        .unwrap();
    store
        .revoke("t", &devices[2].id, Millis(5_000))
        .await
        .unwrap();
    let new_key = NewDeviceKey::generate().unwrap().hash;
    store
        .rotate_key("t", &devices[4].id, new_key, 0, Millis(6_000), None)
        .await
        .unwrap();
    assert_q_follows_the_rule(&store, "update, revoke, rotate").await;
    // A refused write changes no name.
    let refused = store
        .update(
            "t",
            &devices[2].id,
            patch(json!({"name": "revoked scanner"})),
            None,
            Millis(7_000),
        )
        .await;
    assert!(refused.is_err());
    assert_q_follows_the_rule(&store, "a refused rename").await;

    let store = store.reopen().await;
    assert_q_follows_the_rule(&store, "reopened").await;
}

#[actix_web::test]
async fn the_name_index_is_checked_against_the_devices() {
    if redb_only("the_name_index_is_checked_against_the_devices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let device = {
        let store = embedded_at(&path);
        create(&store, "t", json!({"name": "Scanner"}), 1_000).await
    };
    {
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        txn.open_table(NAME_INDEX)
            .unwrap()
            .insert(("t", device.id.as_str()), "printer".as_bytes())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Embedded::open(&path).unwrap();
    let err = store.verify_indexes().unwrap_err().to_string();
    assert!(err.contains("the name index"), "{err}");
}

/// Every way an index or count can be wrong is found, including the ones
/// that keep each table's row count: the check compares contents.
#[actix_web::test]
async fn each_index_and_the_counts_are_checked_against_the_devices() {
    if redb_only("each_index_and_the_counts_are_checked_against_the_devices") {
        return;
    }
    type Damage = fn(&WriteTransaction, &[Device]);
    let damages: [(&str, &str, Damage); 8] = [
        ("a missing key row", "the key index", |txn, _| {
            let mut keys = txn.open_table(KEY_INDEX).unwrap();
            let first = *keys.first().unwrap().unwrap().0.value();
            keys.remove(&first).unwrap();
        }),
        (
            "a key pointing at another device",
            "the key index",
            |txn, d| {
                let mut keys = txn.open_table(KEY_INDEX).unwrap();
                let (first, owner) = {
                    let (hash, owner) = keys.first().unwrap().unwrap();
                    (*hash.value(), owner.value().1.to_string())
                };
                let other = d.iter().find(|other| other.id != owner).unwrap();
                keys.insert(&first, ("t", other.id.as_str())).unwrap();
            },
        ),
        ("two statuses swapped", "the status index", |txn, d| {
            let mut statuses = txn.open_table(STATUS_INDEX).unwrap();
            statuses.remove(("t", 0, d[0].id.as_str())).unwrap();
            statuses.remove(("t", 1, d[1].id.as_str())).unwrap();
            statuses.insert(("t", 1, d[0].id.as_str()), ()).unwrap();
            statuses.insert(("t", 0, d[1].id.as_str()), ()).unwrap();
        }),
        ("a location moved", "the location index", |txn, d| {
            let mut locations = txn.open_table(LOCATION_INDEX).unwrap();
            locations.remove(("t", "shop-1", d[0].id.as_str())).unwrap();
            locations
                .insert(("t", "shop-2", d[0].id.as_str()), ())
                .unwrap();
        }),
        (
            "a name of another tenant's device",
            "the name index",
            |txn, d| {
                let mut names = txn.open_table(NAME_INDEX).unwrap();
                names.remove(("u", d[2].id.as_str())).unwrap();
                names
                    .insert(("t", d[2].id.as_str()), "kiosk".as_bytes())
                    .unwrap();
            },
        ),
        ("a count one too high", "the tenant counts", |txn, _| {
            txn.open_table(TENANT_COUNTS)
                .unwrap()
                .insert(("u", 0), 2)
                .unwrap();
        }),
        ("a count row of zero", "the tenant counts", |txn, _| {
            txn.open_table(TENANT_COUNTS)
                .unwrap()
                .insert(("u", 2), 0)
                .unwrap();
        }),
        (
            "counts swapped between tenants",
            "the tenant counts",
            |txn, _| {
                let mut counts = txn.open_table(TENANT_COUNTS).unwrap();
                counts.remove(("t", 1)).unwrap();
                counts.insert(("u", 1), 1).unwrap();
            },
        ),
    ];
    for (damage, named, apply) in damages {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devicehub.redb");
        let devices = {
            let store = embedded_at(&path);
            let a = create(
                &store,
                "t",
                json!({"name": "A", "locationIds": ["shop-1"]}),
                1_000,
            )
            .await;
            let b = create(
                &store,
                "t",
                json!({"name": "B", "status": "inactive"}),
                1_001,
            )
            .await;
            let c = create(&store, "u", json!({"name": "Kiosk"}), 1_002).await;
            store.verify_indexes().await.unwrap();
            vec![a, b, c]
        };
        {
            let db = Database::create(&path).unwrap();
            let txn = write_txn(&db).unwrap();
            apply(&txn, &devices);
            txn.commit().unwrap();
        }
        let store = Embedded::open(&path).unwrap();
        let err = store.verify_indexes().expect_err(damage).to_string();
        assert!(err.contains(named), "{damage}: {err}");
    }
}

/// Registers a device for each body in a new store at `path`, a
/// millisecond apart, and closes the store.
async fn registered_at(
    path: &std::path::Path,
    bodies: impl IntoIterator<Item = serde_json::Value>,
) -> Vec<Device> {
    let store = embedded_at(path);
    let mut made = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        made.push(create(&store, "t", body, 1_000 + i as u64).await);
    }
    made
}

/// Opens a file made to look like an older layout's: the upgrade leaves
/// indexes that agree with the devices, and every device reads as before.
fn open_upgraded(path: &std::path::Path, before: &[Device]) -> Embedded {
    let store = Embedded::open(path).unwrap();
    store.verify_indexes().unwrap();
    for device in before {
        assert_eq!(&store.get("t", &device.id).unwrap(), device);
    }
    store
}

async fn rename(store: &Embedded, id: &str) {
    let body = patch(json!({"name": "Gate"}));
    store
        .update("t", id, body, None, Millis(5_000))
        .await
        .unwrap();
}

/// After a change, the indexes still agree, and the closed file is at this
/// build's layout.
fn close_at_this_layout(store: Embedded, path: &std::path::Path) {
    store.verify_indexes().unwrap();
    drop(store);
    assert_eq!(stored_layout_version(path), SCHEMA_VERSION);
}

#[actix_web::test]
async fn a_layout_3_file_gains_the_name_index_in_place() {
    if redb_only("a_layout_3_file_gains_the_name_index_in_place") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let names = ["Front Scanner", "İstanbul", "Kiosk"];
    let before = registered_at(&path, names.map(|name| json!({ "name": name }))).await;
    {
        // What a layout-3 build left: no name index.
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, 3)
            .unwrap();
        txn.delete_table(NAME_INDEX).unwrap();
        txn.commit().unwrap();
    }
    let store = open_upgraded(&path, &before);
    let q = |text: &str| ListQuery {
        name_contains: Some(text.to_lowercase()),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list("t", &q("SCAN")).unwrap()),
        [before[0].id.clone()]
    );
    assert_eq!(
        ids(&store.list("t", &q("i̇stan")).unwrap()),
        [before[1].id.clone()]
    );
    rename(&store, &before[2].id).await;
    assert!(store.list("t", &q("kiosk")).unwrap().devices.is_empty());
    close_at_this_layout(store, &path);
}

#[actix_web::test]
async fn a_layout_4_file_keeps_its_json_records_until_a_device_changes() {
    if redb_only("a_layout_4_file_keeps_its_json_records_until_a_device_changes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let names = ["Front Scanner", "Kiosk \"7\""];
    let bodies =
        names.map(|name| json!({"name": name, "locationIds": ["l1"], "pimSegmentIds": ["s"]}));
    let before = registered_at(&path, bodies).await;
    let stored = |path: &std::path::Path, id: &str| -> Vec<u8> {
        let db = Database::create(path).unwrap();
        let txn = db.begin_read().unwrap();
        let devices = txn.open_table(DEVICES).unwrap();
        let value = devices.get(("t", id)).unwrap().unwrap().value().to_vec();
        value
    };
    {
        // What a layout-4 build left: every record as JSON.
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        let rewritten = crate::store::record::as_layout_4(&txn).unwrap();
        assert_eq!(rewritten, before.len());
        txn.commit().unwrap();
    }
    let store = open_upgraded(&path, &before);
    let kiosk = ListQuery {
        name_contains: Some("kiosk".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list("t", &kiosk).unwrap()),
        [before[1].id.clone()]
    );
    rename(&store, &before[0].id).await;
    close_at_this_layout(store, &path);
    // The changed device is now in the binary form; the other is as it was.
    assert_eq!(
        stored(&path, &before[0].id)[0],
        crate::store::record::BINARY
    );
    assert_eq!(stored(&path, &before[1].id)[0], b'{');
    let store = Embedded::open(&path).unwrap();
    assert_eq!(store.get("t", &before[0].id).unwrap().name, "Gate");
    assert_eq!(&store.get("t", &before[1].id).unwrap(), &before[1]);
}
