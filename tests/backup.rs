//! Backups (API.md §8): snapshots under concurrent writes, restore, keep-N,
//! SIGUSR1, and `devicehub restore` refusing what it must.

mod common;
#[path = "support/binary.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{settings_in, spawn_app, spawn_app_in, token_for, TestApp};
use devicehub::store::backup::is_snapshot_name;
use devicehub::store::Embedded;
use serde_json::json;
use support::Server;

fn admin() -> String {
    token_for("acme", "admin")
}

fn path_of(id: &str) -> String {
    format!("/api/tenant/devices/{id}")
}

fn name_counter(name: &str) -> u64 {
    name.rsplit('-').next().unwrap().parse().unwrap()
}

fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_snapshot_name(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    found.sort();
    found
}

/// What writers had acknowledged: per device, its key and the highest
/// name counter answered 2xx, each with the instant the answer arrived.
#[derive(Default)]
struct Acked {
    devices: HashMap<String, (String, Vec<(Instant, u64)>)>,
}

#[test]
fn a_snapshot_under_concurrent_writes_holds_every_acknowledged_write_and_restores() {
    let app = spawn_app();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // A base population, then writers that register and patch while the
    // snapshot runs.
    for i in 0..40 {
        let (device, key) = app.register(
            &admin(),
            json!({"name": format!("base-{i}-0"), "locationIds": [format!("l{}", i % 3)]}),
        );
        acked.lock().unwrap().devices.insert(
            device["id"].as_str().unwrap().to_string(),
            (key, vec![(Instant::now(), 0)]),
        );
    }
    let app = Arc::new(app);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (app, acked, stop) = (app.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut mine: Vec<String> = Vec::new();
                let mut n = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    if n % 3 == 1 {
                        let (device, key) = app.register(
                            &admin(),
                            json!({"name": format!("w{w}-{n}"), "locationIds": ["l9"]}),
                        );
                        let id = device["id"].as_str().unwrap().to_string();
                        acked
                            .lock()
                            .unwrap()
                            .devices
                            .insert(id.clone(), (key, vec![(Instant::now(), n)]));
                        mine.push(id);
                    } else {
                        let id = &mine[(n as usize) % mine.len()];
                        // Index-moving changes; the status stays active so
                        // that the key keeps answering /api/device/me.
                        let location = format!("l{}", n % 4);
                        let answer = app.send_json(
                            "PATCH",
                            &path_of(id),
                            &admin(),
                            &json!({"name": format!("w{w}-{n}"), "locationIds": [location]}),
                        );
                        assert_eq!(answer.status, 200);
                        let at = Instant::now();
                        acked
                            .lock()
                            .unwrap()
                            .devices
                            .get_mut(id)
                            .unwrap()
                            .1
                            .push((at, n));
                    }
                    n += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let backups = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let snapshot = app.embedded().snapshot(backups.path()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    // What must be in the snapshot: per device acknowledged before it began,
    // the newest counter acknowledged before then.
    let expected: Vec<(String, String, u64)> = acked
        .devices
        .iter()
        .filter_map(|(id, (key, writes))| {
            let before = writes.iter().filter(|(at, _)| *at < began).map(|(_, n)| *n);
            before.max().map(|n| (id.clone(), key.clone(), n))
        })
        .collect();
    let after = acked
        .devices
        .values()
        .flat_map(|(_, w)| w)
        .filter(|(at, _)| *at > began)
        .count();
    assert!(
        expected.len() > 40,
        "writers registered before the snapshot"
    );
    assert!(after > 0, "writers went on while the snapshot ran");

    // Restore into a fresh deployment with the same token secret.
    let fresh = tempfile::tempdir().unwrap();
    let settings = settings_in(fresh.path());
    let info = Embedded::restore(&snapshot, &settings.storage_path).unwrap();
    assert!(info.devices >= expected.len() as u64);
    let restored = spawn_app_in(fresh, settings).unwrap();
    restored.embedded().verify_indexes().unwrap();
    for (id, key, n) in &expected {
        let me = restored.get("/api/device/me", key);
        assert_eq!(me.status, 200, "device {id}'s key works after restore");
        let data = me.json()["data"].clone();
        assert_eq!(data["id"], id.as_str());
        let name = data["name"].as_str().unwrap();
        assert!(
            name_counter(name) >= *n,
            "{id}: {name} older than acked {n}"
        );
    }
}

#[test]
fn backup_keeps_the_newest_n_snapshots() {
    let app = spawn_app();
    app.register(&admin(), json!({"name": "a"}));
    let dir = tempfile::tempdir().unwrap();
    let first = app.embedded().snapshot(dir.path()).unwrap();
    // Older snapshots, as earlier runs would have left them.
    for stamp in ["20200101T000000Z", "20200102T000000Z", "20200103T000000Z"] {
        std::fs::copy(&first, dir.path().join(format!("devicehub-{stamp}.redb"))).unwrap();
    }
    std::fs::write(dir.path().join("README"), b"not a snapshot").unwrap();
    let done = app.store.backup(dir.path(), 2).unwrap();
    let left = snapshots_in(dir.path());
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[1], done.path);
    assert!(left[0].ends_with("devicehub-20200103T000000Z.redb") || left[0] == first);
    assert!(dir.path().join("README").exists());
}

/// The built binary with a clean DEVICEHUB_* environment, storage in `dir`.
fn command(dir: &Path) -> Command {
    support::command(dir, "127.0.0.1:0")
}

fn register_over_http(addr: SocketAddr) -> String {
    let body = json!({"name": "after start"}).to_string();
    let request = format!(
        "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        admin(),
        body.len()
    );
    let answer = common::raw(addr, request.as_bytes());
    assert_eq!(answer.status, 201);
    answer.json()["apiKey"].as_str().unwrap().to_string()
}

#[test]
fn the_server_backs_up_at_start_and_on_sigusr1_and_restore_waits_for_it_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let mut cmd = command(dir.path());
    cmd.env("DEVICEHUB__BACKUP__DIR", &backups)
        .env("DEVICEHUB__BACKUP__INTERVAL", "1h")
        .env("DEVICEHUB__BACKUP__KEEP", "5");
    let mut server = Server::start(cmd, "http");
    let first = server.wait_for_log_nth("backup: wrote", 1);
    assert!(first.contains("(0 devices,"), "{first}");
    assert_eq!(snapshots_in(&backups).len(), 1);
    // Snapshot names have one-second resolution: let the next one differ.
    std::thread::sleep(Duration::from_millis(1100));
    let key = register_over_http(server.addr);
    server.signal("USR1");
    let second = server.wait_for_log_nth("backup: wrote", 2);
    assert!(second.contains("(1 devices,"), "{second}");
    let snapshots = snapshots_in(&backups);
    assert_eq!(snapshots.len(), 2);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&snapshots[1]).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A running server holds the database: restore refuses, changes nothing.
    let db = dir.path().join("data/devicehub.redb");
    let before = std::fs::read(&db).unwrap();
    let refused = command(dir.path())
        .args(["restore", snapshots[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("running devicehub server"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // Stopped, the database is replaced by the snapshot from before the
    // device: the device is gone, the later snapshot brings it back.
    server.signal("TERM");
    server.child.wait().unwrap();
    let restored = command(dir.path())
        .args(["restore", snapshots[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(restored.status.success(), "{:?}", restored);
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(
        stdout.starts_with("restored ") && stdout.contains("(0 devices)"),
        "{stdout}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let again = command(dir.path())
        .args(["restore", snapshots[1].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(again.status.success(), "{:?}", again);
    let server = Server::start(command(dir.path()), "http");
    let request = format!(
        "GET /api/device/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
    );
    let me = common::raw(server.addr, request.as_bytes());
    assert_eq!(me.status, 200);
}

#[test]
fn sigusr1_without_a_backup_dir_is_logged_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(command(dir.path()), "http");
    server.signal("USR1");
    server.wait_for_log_nth("SIGUSR1: backup.dir is not set", 1);
    register_over_http(server.addr);
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn restore_refuses_a_file_that_is_not_a_devicehub_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // A database with one device, as a stopped server leaves it.
    {
        let settings = {
            let mut s = settings_in(dir.path());
            s.storage_path = dir.path().join("data/devicehub.redb");
            s
        };
        let scratch = tempfile::tempdir().unwrap();
        let app: TestApp = spawn_app_in(scratch, settings).unwrap();
        app.register(&admin(), json!({"name": "kept"}));
    }
    let db = dir.path().join("data/devicehub.redb");
    let before = std::fs::read(&db).unwrap();
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"this is not a redb file at all").unwrap();
    let missing = dir.path().join("missing.redb");
    for (file, says) in [
        (&junk, "not a devicehub snapshot"),
        (&missing, "cannot read it"),
    ] {
        let out = command(dir.path())
            .args(["restore", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert_eq!(std::fs::read(&db).unwrap(), before, "nothing changed");
    }
}

/// Measures a snapshot of a large database with no writes, then one while
/// PATCHes (store updates, as the handler makes them) run one after another,
/// with the longest PATCH, and a restore.
/// `DEVICEHUB_BENCH_DEVICES` sets the size (default 1,000,000). Run with
/// `cargo test --release --test backup -- --ignored --nocapture`.
/// `DEVICEHUB_BENCH_SEEDED=DIR` keeps the seeded database in DIR and reuses
/// it on the next run (seeding a million devices takes about two minutes);
/// each run PATCHes it a little more.
/// `DEVICEHUB_BENCH_COLD=1` (as root, on Linux) syncs and drops the page
/// cache before the first snapshot, as on a box whose database was not read
/// lately.
#[test]
#[ignore]
fn measure_snapshot_and_restore() {
    const BEFORE: u8 = 0;
    const DURING: u8 = 1;
    const AFTER: u8 = 2;
    const STOP: u8 = 3;
    use devicehub::auth::device_key::NewDeviceKey;
    use devicehub::devices::{DevicePatch, Millis, NewDevice};
    let total: usize = std::env::var("DEVICEHUB_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(".").unwrap();
    let seeded = std::env::var_os("DEVICEHUB_BENCH_SEEDED").map(std::path::PathBuf::from);
    let db_path = match &seeded {
        Some(kept) => kept.join("devicehub.redb"),
        None => dir.path().join("db/devicehub.redb"),
    };
    let ids_path = db_path.with_extension("ids");
    let reused = std::fs::read_to_string(&ids_path).ok();
    let store = Arc::new(Embedded::open(&db_path).unwrap());
    let seeding = Instant::now();
    let ids: Vec<String> = match reused {
        Some(ids) => ids.lines().map(str::to_string).collect(),
        None => actix_web::rt::System::new().block_on(async {
        let tasks: Vec<_> = (0..256)
            .map(|t| {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    let mut ids = Vec::new();
                    for i in (t..total).step_by(256) {
                        let new = NewDevice::parse(
                            json!({"name": format!("Device {i}"), "locationIds": [format!("loc-{}", i % 50)]})
                                .as_object()
                                .unwrap(),
                        )
                        .unwrap();
                        let key = NewDeviceKey::generate().unwrap();
                        let tenant = format!("tenant-{}", i % 10);
                        let d = store
                            .create(&tenant, new, key.hash, Millis::now(), None, None)
                            .await
                            .unwrap();
                        if ids.len() < 100 {
                            ids.push(format!("{tenant}/{}", d.id));
                        }
                    }
                    ids
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.extend(task.await.unwrap());
        }
        if seeded.is_some() {
            std::fs::write(&ids_path, ids.join("\n")).unwrap();
        }
        ids
    }),
    };
    eprintln!("seeded {total} devices in {:?}", seeding.elapsed());
    let total = usize::try_from(store.all_stats().unwrap().total()).unwrap();
    let db_size = std::fs::metadata(&db_path).unwrap().len();

    // PATCHes, one after another, for a second before the snapshot (the
    // baseline) and while it runs.
    // One snapshot with nothing else running, then one under writes.
    if std::env::var_os("DEVICEHUB_BENCH_COLD").is_some() {
        let dropped = std::process::Command::new("sh")
            .args(["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
            .status()
            .unwrap();
        assert!(dropped.success(), "DEVICEHUB_BENCH_COLD needs root");
        eprintln!("page cache dropped");
    }
    let idle_dir = dir.path().join("idle");
    let started = Instant::now();
    let idle = store.snapshot(&idle_dir).unwrap();
    eprintln!("snapshot with no writes: {:?}", started.elapsed());
    std::fs::remove_dir_all(idle.parent().unwrap()).unwrap();

    // PATCHes one after another: for a second before the snapshot, while it
    // runs, and for a second after. Each one's time goes to the phase it
    // started and ended in.
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let patcher = {
        let (store, phase) = (store.clone(), phase.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let mut longest = [Duration::ZERO; 4];
                let mut during = 0u64;
                let mut n = 0usize;
                loop {
                    let started_in = phase.load(Ordering::Relaxed);
                    if started_in == STOP {
                        break;
                    }
                    let (tenant, id) = ids[n % ids.len()].split_once('/').unwrap();
                    let patch = DevicePatch::parse(
                        json!({"name": format!("patched {n}")}).as_object().unwrap(),
                    )
                    .unwrap();
                    let at = Instant::now();
                    store
                        .update(tenant, id, patch, None, Millis::now())
                        .await
                        .unwrap();
                    let took = at.elapsed();
                    let ended_in = phase.load(Ordering::Relaxed);
                    let slot = match (started_in, ended_in) {
                        (DURING, DURING) => 1,
                        (DURING, _) => 2,
                        (AFTER, _) => 3,
                        _ => 0,
                    };
                    longest[slot] = longest[slot].max(took);
                    during += u64::from(started_in == DURING);
                    n += 1;
                }
                (longest, during)
            })
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let backups = dir.path().join("backups");
    phase.store(DURING, Ordering::Relaxed);
    let started = Instant::now();
    let snapshot = store.snapshot(&backups).unwrap();
    let snap_time = started.elapsed();
    phase.store(AFTER, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    phase.store(STOP, Ordering::Relaxed);
    let (longest, patches) = patcher.join().unwrap();
    let snap_size = std::fs::metadata(&snapshot).unwrap().len();
    eprintln!(
        "snapshot: {snap_time:?} ({db_size} byte database, {snap_size} byte snapshot); \
         {patches} PATCHes meanwhile; longest PATCH: {:?} in the second before, {:?} during, \
         {:?} across its end, {:?} in the second after",
        longest[0], longest[1], longest[2], longest[3]
    );
    drop(store);
    let target = dir.path().join("restored/devicehub.redb");
    let started = Instant::now();
    let info = Embedded::restore(&snapshot, &target).unwrap();
    eprintln!(
        "restore: {:?} ({} devices checked and copied)",
        started.elapsed(),
        info.devices
    );
    assert_eq!(info.devices, total as u64);
}
