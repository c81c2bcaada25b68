//! Disk trouble (API.md §5, 503 `storage_unavailable`): with the database on
//! a small tmpfs, a full disk makes writes answer 503 while reads keep
//! working, and the server recovers by itself once space is freed. Nothing
//! acknowledged is lost. (A read-only file system fails writes with another
//! I/O error on the same path; a tmpfs cannot be remounted read-only while
//! the database is open for writing, so that case is not staged here.)
//!
//! Mounting needs root, which CI and the development machines have.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{token_for, TestApp};
use serde_json::{json, Value};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8) is needed for this test");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test must run as root"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the disk is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // Whatever is left is smaller than a chunk; take that too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

fn admin() -> String {
    token_for("acme", "admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

fn ids(app: &TestApp) -> Vec<String> {
    let response = app.get("/api/tenant/devices", &reader());
    assert_eq!(response.status, 200, "reads keep working");
    response.data_ids()
}

/// Registers until the storage refuses; returns the acknowledged ids.
fn write_until_refused(app: &TestApp, tag: &str) -> Vec<String> {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let response = app.send_json(
            "POST",
            "/api/tenant/devices",
            &admin(),
            &json!({"name": format!("{tag} {i}"), "locationIds": ["loc-padding-to-grow-the-record-a-little"]}),
        );
        match response.status {
            201 => acked.push(response.json()["data"]["id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(response.error_code(), "storage_unavailable");
                return acked;
            }
            other => panic!("unexpected {other}: {:?}", response.json()),
        }
    }
    panic!("the storage never refused a write");
}

/// Retries a registration until it succeeds, as a client would.
fn register_eventually(app: &TestApp, name: &str) -> Value {
    for _ in 0..50 {
        let response = app.send_json(
            "POST",
            "/api/tenant/devices",
            &admin(),
            &json!({"name": name}),
        );
        if response.status == 201 {
            return response.json()["data"].clone();
        }
        assert_eq!(response.status, 503);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("writes did not recover");
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let disk = Tmpfs::mount("4m");
    let app = common::spawn_app_with(|s| s.storage_path = disk.path().join("devicehub.redb"));
    let auth_key = {
        let (device, key) = app.register(&admin(), json!({"name": "Scanner"}));
        (device, key)
    };
    let (scanner, key) = auth_key;
    let mut acknowledged = vec![scanner["id"].as_str().unwrap().to_string()];

    // Disk full.
    let filler = fill(disk.path());
    acknowledged.extend(write_until_refused(&app, "full"));
    let patch = app.send_json(
        "PATCH",
        &format!("/api/tenant/devices/{}", scanner["id"].as_str().unwrap()),
        &admin(),
        &json!({"name": "x".repeat(200), "locationIds": (0..100).map(|i| format!("loc-{i:0>60}")).collect::<Vec<_>>()}),
    );
    assert!(
        patch.status == 503 || patch.status == 200,
        "{}",
        patch.status
    );
    assert_eq!(ids(&app), acknowledged);
    let one = app.get(
        &format!("/api/tenant/devices/{}", acknowledged[0]),
        &reader(),
    );
    assert_eq!(one.status, 200);
    let me = app.get("/api/device/me", &key);
    assert_eq!(
        me.status,
        200,
        "devices can still check in: {}",
        String::from_utf8_lossy(&me.body)
    );

    // Space again: writes work without a restart.
    std::fs::remove_file(&filler).unwrap();
    let recovered = register_eventually(&app, "after full");
    acknowledged.push(recovered["id"].as_str().unwrap().to_string());
    assert_eq!(ids(&app), acknowledged);

    // Full a second time, after the recovery: the reopened handle copes too.
    let filler = fill(disk.path());
    acknowledged.extend(write_until_refused(&app, "full again"));
    let refused = app.send_json(
        "POST",
        "/api/tenant/devices",
        &admin(),
        &json!({"name": "still full"}),
    );
    assert_eq!(refused.status, 503);
    assert!(!refused
        .error_message()
        .contains(disk.path().to_str().unwrap()));
    assert_eq!(ids(&app), acknowledged);
    std::fs::remove_file(&filler).unwrap();
    let back = register_eventually(&app, "after full again");
    acknowledged.push(back["id"].as_str().unwrap().to_string());
    assert_eq!(ids(&app), acknowledged);
    drop(app);

    // And all of it is on disk.
    let store = devicehub::store::Embedded::open(&disk.path().join("devicehub.redb")).unwrap();
    let page = store.list("acme", &Default::default()).unwrap();
    let stored: Vec<String> = page.devices.into_iter().map(|d| d.id).collect();
    assert_eq!(stored, acknowledged);
}
