//! The write-ahead log (`wal.rs`): a crash between checkpoints loses no
//! acknowledged write, and applying the log rebuilds exactly the store that
//! answered.

use super::*;
use crate::store::wal;

/// Copies the database file and its log as a crash (`kill -9`) would leave
/// them, what the kernel holds, while the store still runs.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    for (log, copy) in wal::paths(from).iter().zip(wal::paths(to)) {
        if log.exists() {
            std::fs::copy(log, copy).unwrap();
        }
    }
}

/// Registrations, renames, a revocation and a rotation: every kind of
/// logged write, with its indexes, counts and events.
async fn write_a_round(store: &Store, round: u32, devices: &mut Vec<String>) {
    for n in 0..8 {
        let (d, _) = add(store, "t", &format!("r{round}-{n}"), 1_000).await;
        devices.push(d.id);
    }
    for (i, id) in devices.iter().enumerate().rev().take(6) {
        let body = json!({"name": format!("r{round}-renamed-{i}"), "locationIds": [format!("loc-{}", i % 3)]});
        store
            .update("t", id, patch(body), None, Millis(2_000 + u64::from(round)))
            .await
            .unwrap();
    }
    let last = devices.last().unwrap().clone();
    let key = NewDeviceKey::generate().unwrap();
    store
        .rotate_key("t", &last, key.hash, 0, Millis(3_000), None)
        .await
        .unwrap();
    let first = devices[round as usize].clone();
    store.revoke("t", &first, Millis(4_000)).await.unwrap();
}

#[actix_web::test]
async fn acknowledged_writes_between_checkpoints_survive_a_crash() {
    if redb_only("acknowledged_writes_between_checkpoints_survive_a_crash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devicehub.redb");
    let store = embedded_at(&path);
    let mut devices = Vec::new();
    // A checkpoint can come (after a second, or when the writer idles)
    // between the last write and the copy; then the copy holds everything
    // in its file and the log was not needed. Each round checks the copy;
    // the test needs one round that took its writes from the log.
    for round in 0..5 {
        write_a_round(&store, round * 2, &mut devices).await;
        // Past a checkpoint: the log moves to its other file.
        std::thread::sleep(wal::CHECKPOINT_EVERY + std::time::Duration::from_millis(200));
        write_a_round(&store, round * 2 + 1, &mut devices).await;
        let copy = dir.path().join(format!("crash-{round}.redb"));
        crash_copy(&path, &copy);

        let restarted = Embedded::open(&copy).unwrap();
        for id in &devices {
            assert_eq!(
                restarted.get("t", id).unwrap(),
                store.get("t", id).await.unwrap()
            );
        }
        assert_eq!(
            restarted.stats("t").unwrap(),
            store.stats("t").await.unwrap()
        );
        restarted.verify_indexes().unwrap();
        let feed = |s: &Embedded| {
            let query = crate::store::events::EventQuery {
                limit: 10_000,
                ..Default::default()
            };
            let page = s.events("t", &query).unwrap();
            assert!(!page.has_more);
            page.events.len()
        };
        let Store::Embedded(original) = &*store else {
            unreachable!("embedded_at opens a redb file")
        };
        assert_eq!(feed(&restarted), feed(original));
        if restarted.replayed() > 0 {
            return;
        }
    }
    panic!("no copy needed its write-ahead log: a checkpoint came every time");
}
