//! The store's own tests. The ones of a store contract go through `open`,
//! the `Store` the tests run on: the redb file by default, or a fresh
//! PostgreSQL database when `DEVICEHUB_TEST_POSTGRES` names a cluster
//! (`scripts/test.sh` runs them both ways): one source, both stores. The
//! tests of the redb file itself (layouts, the file lock, the committer's
//! batches, its tables) run on `Embedded` and skip on PostgreSQL.

use super::*;
use crate::auth::device_key::{hash, NewDeviceKey};
use redb::ReadableDatabase;
use serde_json::json;

/// The PostgreSQL cluster the store tests run on instead of the redb file,
/// when `DEVICEHUB_TEST_POSTGRES` names one.
fn test_postgres() -> Option<String> {
    std::env::var("DEVICEHUB_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// True, saying so, when the tests run on PostgreSQL: for the tests of the
/// redb file itself, which then skip.
fn redb_only(test: &str) -> bool {
    let on_postgres = test_postgres().is_some();
    if on_postgres {
        eprintln!("{test}: a test of the redb file, skipped on PostgreSQL");
    }
    on_postgres
}

/// A new, empty database in the cluster at `base`; its URL (also for the
/// PostgreSQL committer's tests).
pub(crate) async fn fresh_database(base: &str) -> String {
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("DEVICEHUB_TEST_POSTGRES: cannot connect: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').expect("a URL with a database name");
    format!("{server}/{name}")
}

/// The store a test runs on, with what must live as long as it: the redb
/// file's folder, or the name of its PostgreSQL database.
struct TestStore {
    store: Arc<Store>,
    home: Home,
}

enum Home {
    File(tempfile::TempDir),
    Database(String),
}

impl std::ops::Deref for TestStore {
    type Target = Arc<Store>;

    fn deref(&self) -> &Arc<Store> {
        &self.store
    }
}

impl TestStore {
    /// Closes the store and opens it again on the same data.
    async fn reopen(self) -> TestStore {
        let TestStore { store, home } = self;
        store.close().await;
        drop(Arc::into_inner(store).expect("nothing else holds the store"));
        let store = match &home {
            Home::File(dir) => Store::open(&redb_path(dir)).unwrap(),
            Home::Database(url) => open_postgres(url).await,
        };
        TestStore {
            store: Arc::new(store),
            home,
        }
    }
}

fn redb_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("sub/devicehub.redb")
}

/// The PostgreSQL store on the database at `url`. Its housekeeping task
/// prunes events by the real clock, and the tests date theirs in 1970: this
/// retention keeps them (its first run comes after this, on the tests' one
/// thread). The tests that set a retention date their events ahead of the
/// real clock (`events::ahead`) and prune by their own.
async fn open_postgres(url: &str) -> Store {
    let store = Store::open_postgres(url, None).await.unwrap();
    store.set_event_retention(std::time::Duration::MAX);
    store
}

/// The fixture of the store contract tests: a new, empty store of the kind
/// the tests run on (a redb file in a temporary folder, or a fresh
/// PostgreSQL database when `DEVICEHUB_TEST_POSTGRES` is set).
async fn open() -> TestStore {
    match test_postgres() {
        Some(base) => {
            let url = fresh_database(&base).await;
            let store = open_postgres(&url).await;
            TestStore {
                store: Arc::new(store),
                home: Home::Database(url),
            }
        }
        None => open_embedded(),
    }
}

/// A new redb store, whatever the other tests run on (the tests of the file).
fn open_embedded() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&redb_path(&dir)).unwrap();
    TestStore {
        store: Arc::new(store),
        home: Home::File(dir),
    }
}

/// The redb store of the file at `path` (tests of the file).
fn embedded_at(path: &Path) -> Arc<Store> {
    Arc::new(Store::open(path).unwrap())
}

/// The layout version written in a closed database file.
fn stored_layout_version(path: &Path) -> u64 {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    let version = meta.get(SCHEMA_VERSION_KEY).unwrap().unwrap().value();
    version
}

fn new_device(body: serde_json::Value) -> NewDevice {
    NewDevice::parse(body.as_object().unwrap()).unwrap()
}

fn patch(body: serde_json::Value) -> DevicePatch {
    DevicePatch::parse(body.as_object().unwrap()).unwrap()
}

async fn add(store: &Store, tenant: &str, name: &str, now: u64) -> (Device, String) {
    let key = NewDeviceKey::generate().unwrap();
    let device = store
        .create(
            tenant,
            new_device(json!({"name": name})),
            key.hash,
            Millis(now),
            None,
            None,
        )
        .await
        .unwrap();
    (device, key.key)
}

#[actix_web::test]
async fn ids_increase_in_commit_order_even_when_the_clock_steps_back() {
    let store = open().await;
    let (a, _) = add(&store, "t", "a", 5_000).await;
    let (b, _) = add(&store, "t", "b", 1_000).await;
    let (c, _) = add(&store, "t", "c", 1_000).await;
    assert!(a.id < b.id && b.id < c.id, "{} {} {}", a.id, b.id, c.id);
    let all = store.list("t", &ListQuery::default()).await.unwrap();
    let names: Vec<_> = all.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(!all.has_more);
}

#[actix_web::test]
async fn pages_filter_and_know_whether_more_exist() {
    let store = open().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let key = NewDeviceKey::generate().unwrap();
        let status = if i % 2 == 0 { "active" } else { "inactive" };
        let d = store
            .create(
                "t",
                new_device(json!({"name": format!("d{i}"), "status": status, "locationIds": [format!("loc{}", i % 2)]})),
                key.hash,
                Millis(1_000 + i),
                None, None,
            ).await
            .unwrap();
        ids.push(d.id);
    }
    let q = |limit, after: Option<&String>| ListQuery {
        limit,
        starting_after: after.cloned(),
        ..Default::default()
    };
    let first = store.list("t", &q(Some(2), None)).await.unwrap();
    assert_eq!(first.devices.len(), 2);
    assert!(first.has_more);
    let last = store.list("t", &q(Some(3), Some(&ids[1]))).await.unwrap();
    assert_eq!(
        last.devices.iter().map(|d| &d.id).collect::<Vec<_>>(),
        ids[2..].iter().collect::<Vec<_>>()
    );
    assert!(!last.has_more, "exactly three remain");
    let active = store
        .list(
            "t",
            &ListQuery {
                status: Some(DeviceStatus::Active),
                limit: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(active.devices.len(), 3);
    assert!(!active.has_more, "no fourth active device exists");
    let at_loc1 = store
        .list(
            "t",
            &ListQuery {
                location_id: Some("loc1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_loc1.devices.len(), 2);
    // A position that names no device still works as a cursor.
    let ghost = format!("{}0", &ids[4][..ids[4].len() - 1]);
    let after_ghost = store.list("t", &q(None, Some(&ghost))).await.unwrap();
    assert!(after_ghost.devices.iter().all(|d| d.id > ghost));
}

#[actix_web::test]
async fn tenants_never_see_each_other() {
    let store = open().await;
    let (a, _) = add(&store, "tenant-a", "a", 1).await;
    add(&store, "tenant-ab", "ab", 2).await;
    add(&store, "tenant", "t", 3).await;
    let list = store.list("tenant-a", &ListQuery::default()).await.unwrap();
    assert_eq!(list.devices.len(), 1);
    assert!(matches!(
        store.get("tenant-ab", &a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update(
                "tenant",
                &a.id,
                patch(json!({"name": "x"})),
                None,
                Millis(9)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.revoke("tenant-ab", &a.id, Millis(9)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.get("tenant-a", &a.id).await.unwrap().status,
        DeviceStatus::Active
    );
}

#[actix_web::test]
async fn updates_change_version_only_when_something_changes() {
    let store = open().await;
    let (d, _) = add(&store, "t", "a", 1_000).await;
    let same = store
        .update(
            "t",
            &d.id,
            patch(json!({"name": " a "})),
            None,
            Millis(2_000),
        )
        .await
        .unwrap();
    assert_eq!(same.etag(), d.etag());
    assert_eq!(same.updated_at, Millis(1_000));
    let stale = IfMatch::parse("\"nope\"");
    assert!(matches!(
        store
            .update(
                "t",
                &d.id,
                patch(json!({"name": "b"})),
                Some(stale),
                Millis(3_000)
            )
            .await,
        Err(StoreError::PreconditionFailed)
    ));
    let fresh = IfMatch::parse(&d.etag());
    let changed = store
        .update(
            "t",
            &d.id,
            patch(json!({"name": "b"})),
            Some(fresh),
            Millis(3_000),
        )
        .await
        .unwrap();
    assert_ne!(changed.etag(), d.etag());
    assert_eq!(changed.updated_at, Millis(3_000));
    assert_eq!(store.get("t", &d.id).await.unwrap(), changed);
}

#[actix_web::test]
async fn revocation_is_final_and_idempotent() {
    let store = open().await;
    let (d, key) = add(&store, "t", "a", 1_000).await;
    let revoked = store.revoke("t", &d.id, Millis(2_000)).await.unwrap();
    assert_eq!(revoked.status, DeviceStatus::Revoked);
    let again = store.revoke("t", &d.id, Millis(3_000)).await.unwrap();
    assert_eq!(again.etag(), revoked.etag());
    assert!(matches!(
        store
            .update("t", &d.id, DevicePatch::default(), None, Millis(4_000))
            .await,
        Err(StoreError::Revoked)
    ));
    assert!(matches!(
        store
            .rotate_key("t", &d.id, hash("dhk_new"), 0, Millis(4_000), None)
            .await,
        Err(StoreError::Revoked)
    ));
    // The key still finds the device, so it can be told it is revoked.
    let found = store
        .find_by_key(&hash(&key), Millis(5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.device.status, DeviceStatus::Revoked);
}

#[actix_web::test]
async fn rotation_swaps_the_index_entry_in_one_commit() {
    let store = open().await;
    let (d, old) = add(&store, "t", "a", 1_000).await;
    let new = NewDeviceKey::generate().unwrap();
    let (rotated, grace_end) = store
        .rotate_key("t", &d.id, new.hash, 0, Millis(2_000), None)
        .await
        .unwrap();
    assert_eq!(grace_end, None);
    assert_ne!(rotated.etag(), d.etag());
    assert!(store
        .find_by_key(&hash(&old), Millis(2_000))
        .await
        .unwrap()
        .is_none());
    let found = store
        .find_by_key(&new.hash, Millis(2_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            found.tenant.as_str(),
            found.device.id.as_str(),
            found.deprecated
        ),
        ("t", d.id.as_str(), false)
    );
    store.verify_indexes().await.unwrap();
}

#[actix_web::test]
async fn check_ins_show_at_once_and_never_touch_the_etag() {
    let store = open().await;
    let (d, _) = add(&store, "t", "a", 1_000).await;
    store.touch("t", &d.id, Millis(5_000));
    store.touch("t", &d.id, Millis(6_000));
    let seen = store.get("t", &d.id).await.unwrap();
    assert_eq!(seen.last_seen_at, Some(Millis(6_000)));
    assert_eq!(seen.etag(), d.etag());
    assert_eq!(seen.updated_at, d.updated_at);
}

/// Point reads that take a new snapshot while a commit waits for its sync
/// (`file.rs`) wait for that sync without holding up the sync thread, which
/// installs the commit's snapshot before it answers: every write is
/// answered, and a read after an answer sees the write.
#[actix_web::test]
async fn point_reads_beside_writes_never_hold_up_a_commit() {
    if redb_only("point_reads_beside_writes_never_hold_up_a_commit") {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = open_embedded();
    let (d, _) = add(&t.store, "t", "n0", 1_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop, id) = (t.store.clone(), stop.clone(), d.id.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    store.embedded().unwrap().get("t", &id).unwrap();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 1..=300 {
        let name = format!("n{i}");
        let change = t.store.update(
            "t",
            &d.id,
            patch(json!({ "name": name })),
            None,
            Millis(2_000 + i),
        );
        actix_web::rt::time::timeout(std::time::Duration::from_secs(20), change)
            .await
            .expect("a write was never answered")
            .unwrap();
        assert_eq!(
            t.store.embedded().unwrap().get("t", &d.id).unwrap().name,
            name
        );
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

#[actix_web::test]
async fn data_survives_reopening_and_the_file_is_locked_while_open() {
    if redb_only("data_survives_reopening_and_the_file_is_locked_while_open") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let id = {
        let store = embedded_at(&path);
        let (d, _) = add(&store, "t", "kept", 1_000).await;
        store.touch("t", &d.id, Millis(7_000));
        let err = Embedded::open(&path).err().expect("second open must fail");
        assert!(err.to_string().contains("locked"), "{err}");
        d.id
    };
    let store = embedded_at(&path);
    let d = store.get("t", &id).await.unwrap();
    assert_eq!(d.name, "kept");
    assert_eq!(d.last_seen_at, Some(Millis(7_000)));
}

#[actix_web::test]
async fn a_file_that_is_not_a_database_is_refused_cleanly() {
    if redb_only("a_file_that_is_not_a_database_is_refused_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Embedded::open(&path).err().expect("garbage must not open");
    assert!(err.to_string().starts_with("storage.path:"), "{err}");
}

#[actix_web::test]
async fn a_newer_layout_version_is_refused() {
    if redb_only("a_newer_layout_version_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    {
        drop(Embedded::open(&path).unwrap());
        let db = Database::create(&path).unwrap();
        let txn = write_txn(&db).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Embedded::open(&path).err().expect("must refuse");
    let newer = format!("layout version {}", SCHEMA_VERSION + 1);
    assert!(err.to_string().contains(&newer), "{err}");
}

/// Holds the redb writer busy so that what is submitted meanwhile forms one
/// batch. Returns once the writer is applying the holding job, so its batch
/// is closed: whatever is submitted next forms the following batch.
fn hold_writer(store: &Store, ms: u64) -> tokio::sync::oneshot::Receiver<StoreResult<()>> {
    let store = store.embedded().expect("the committer of the redb file");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (started_tx, started) = std::sync::mpsc::channel();
    store
        .writer
        .enqueue(
            move |_, _| {
                let _ = started_tx.send(());
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            },
            move |r| {
                let _ = tx.send(r);
            },
        )
        .unwrap();
    started.recv().unwrap();
    rx
}

#[actix_web::test]
async fn one_batch_answers_each_request_on_its_own_in_arrival_order() {
    // The redb committer's batches (src/store/postgres/batch.rs tests the
    // PostgreSQL committer's).
    if redb_only("one_batch_answers_each_request_on_its_own_in_arrival_order") {
        return;
    }
    let store = open_embedded();
    let (live, _) = add(&store, "t", "live", 1_000).await;
    let (gone, _) = add(&store, "t", "gone", 1_000).await;
    store.revoke("t", &gone.id, Millis(1_500)).await.unwrap();

    let held = hold_writer(&store, 1_000);
    let mut handles = Vec::new();
    let jobs: Vec<(&str, String, Option<IfMatch>)> = vec![
        ("first", live.id.clone(), None),
        ("refused-409", gone.id.clone(), None),
        (
            "refused-412",
            live.id.clone(),
            Some(IfMatch::parse("\"stale\"")),
        ),
        ("refused-404", format!("dev_{}", ulid::Ulid::new()), None),
        ("second", live.id.clone(), None),
    ];
    for (name, id, if_match) in jobs {
        let store = store.clone();
        handles.push(actix_web::rt::spawn(async move {
            store
                .update(
                    "t",
                    &id,
                    patch(json!({ "name": name })),
                    if_match,
                    Millis(2_000),
                )
                .await
        }));
        // Spawned tasks run in order; give each its turn to enqueue.
        actix_web::rt::task::yield_now().await;
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    held.await.unwrap().unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(StoreError::Revoked)));
    assert!(matches!(results[2], Err(StoreError::PreconditionFailed)));
    assert!(matches!(results[3], Err(StoreError::NotFound)));
    let second = results[4].as_ref().unwrap();
    assert_eq!(
        second.name, "second",
        "applied after `first`, as it arrived"
    );
    assert_eq!(second.version, live.version + 2);
    assert_eq!(store.get("t", &live.id).await.unwrap(), *second);
}

#[actix_web::test]
async fn a_job_that_breaks_midway_fails_its_batch_and_commits_nothing_of_it() {
    if redb_only("a_job_that_breaks_midway_fails_its_batch_and_commits_nothing_of_it") {
        return;
    }
    let store = open_embedded();
    let (live, _) = add(&store, "t", "live", 1_000).await;
    let held = hold_writer(&store, 1_000);
    let neighbour = {
        let (store, id) = (store.clone(), live.id.clone());
        actix_web::rt::spawn(async move {
            store
                .update(
                    "t",
                    &id,
                    patch(json!({"name": "neighbour"})),
                    None,
                    Millis(2_000),
                )
                .await
        })
    };
    actix_web::rt::task::yield_now().await;
    // Writes half a change, then fails as an I/O error would.
    let writer = &store.embedded().unwrap().writer;
    let broken = writer.submit(|_, txn| -> StoreResult<()> {
        txn.open_table(DEVICES)?
            .insert(("t", "dev_half"), b"{}".as_slice())?;
        Err(StoreError::Unavailable("disk on fire".into()))
    });
    assert!(matches!(broken.await, Err(StoreError::Unavailable(_))));
    held.await.unwrap().unwrap();
    assert!(matches!(
        neighbour.await.unwrap(),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get("t", "dev_half").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get("t", &live.id).await.unwrap().name, "live");
    // The next batch is fine again.
    let ok = store
        .update(
            "t",
            &live.id,
            patch(json!({"name": "later"})),
            None,
            Millis(3_000),
        )
        .await
        .unwrap();
    assert_eq!(ok.name, "later");
}

#[actix_web::test]
async fn concurrent_registrations_get_increasing_ids_in_commit_order() {
    let store = open().await;
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let store = store.clone();
        handles.push(actix_web::rt::spawn(async move {
            let key = NewDeviceKey::generate().unwrap();
            store
                .create(
                    "t",
                    new_device(json!({"name": format!("d{i}")})),
                    key.hash,
                    Millis(1_000),
                    None,
                    None,
                )
                .await
                .unwrap()
        }));
    }
    let mut created = Vec::new();
    for h in handles {
        created.push(h.await.unwrap());
    }
    let listed = store.list("t", &ListQuery::default()).await.unwrap();
    assert_eq!(listed.devices.len(), 200);
    let mut ids: Vec<_> = created.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200, "ids are unique");
    let listed: Vec<_> = listed.devices.iter().map(|d| d.id.clone()).collect();
    assert_eq!(listed, ids, "the list is in id order");
    assert_eq!(stats_of(&store, "t").await, (200, 0, 0));
}

/// Whether `key` finds a device at `at`, and whether as its previous key.
async fn owner(store: &Store, key: &KeyHash, at: u64) -> Option<bool> {
    store
        .find_by_key(key, Millis(at))
        .await
        .unwrap()
        .map(|o| o.deprecated)
}

#[actix_web::test]
async fn a_grace_period_keeps_the_old_key_until_it_ends_and_never_a_third() {
    let store = open().await;
    let (d, first) = add(&store, "t", "a", 1_000).await;
    let second = NewDeviceKey::generate().unwrap();
    let (_, grace_end) = store
        .rotate_key("t", &d.id, second.hash, 60, Millis(2_000), None)
        .await
        .unwrap();
    assert_eq!(grace_end, Some(Millis(62_000)));
    let first = hash(&first);
    assert_eq!(
        owner(&store, &first, 61_999).await,
        Some(true),
        "in its grace"
    );
    assert_eq!(owner(&store, &first, 62_000).await, None, "grace over");
    assert_eq!(owner(&store, &second.hash, 62_000).await, Some(false));

    // Rotating again ends the first key at once, whatever its grace.
    let third = NewDeviceKey::generate().unwrap();
    let (_, grace_end) = store
        .rotate_key("t", &d.id, third.hash, 30, Millis(3_000), None)
        .await
        .unwrap();
    assert_eq!(grace_end, Some(Millis(33_000)));
    assert_eq!(owner(&store, &first, 3_000).await, None);
    assert_eq!(owner(&store, &second.hash, 3_000).await, Some(true));
    assert_eq!(owner(&store, &third.hash, 3_000).await, Some(false));
    store.verify_indexes().await.unwrap();
    assert_eq!(
        store.key_index_entries().await.unwrap().len(),
        2,
        "at most two keys"
    );

    // A PATCH keeps the grace; revocation ends both keys.
    store
        .update("t", &d.id, patch(json!({"name": "b"})), None, Millis(4_000))
        .await
        .unwrap();
    assert_eq!(owner(&store, &second.hash, 4_000).await, Some(true));
    store.revoke("t", &d.id, Millis(5_000)).await.unwrap();
    assert_eq!(
        owner(&store, &second.hash, 5_000).await,
        None,
        "the old key is unknown"
    );
    let revoked = store
        .find_by_key(&third.hash, Millis(5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.device.status, DeviceStatus::Revoked);
    assert_eq!(store.key_index_entries().await.unwrap().len(), 1);
}

/// A tenant's (active, inactive, revoked) counts.
async fn stats_of(store: &Store, tenant: &str) -> (u64, u64, u64) {
    let s = store.stats(tenant).await.unwrap();
    (s.active, s.inactive, s.revoked)
}

mod events;
mod fleet;
mod wal;
mod webhooks;

#[test]
fn ids_grow_by_one_within_a_millisecond_and_draw_new_bits_in_the_next() {
    let last = ulid::Ulid::from_parts(1_000, 41);
    // The same millisecond, and a clock that stepped back: the next id.
    for now in [1_000, 999, 0] {
        let next = next_ulid_after(Some(last), Millis(now)).unwrap();
        assert_eq!(next, ulid::Ulid::from_parts(1_000, 42));
    }
    // A later millisecond: that time, after the last id.
    let later = next_ulid_after(Some(last), Millis(1_001)).unwrap();
    assert_eq!(later.timestamp_ms(), 1_001);
    assert!(later > last);
    // The first id of a tenant.
    assert_eq!(next_ulid_after(None, Millis(5)).unwrap().timestamp_ms(), 5);
    // At the top of the id space, the id cannot grow.
    let top = ulid::Ulid::from_parts(1_000, (1u128 << 80) - 1);
    assert!(next_ulid_after(Some(top), Millis(1_000)).is_err());
}
