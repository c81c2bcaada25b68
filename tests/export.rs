//! `devicehub export` and `devicehub import` through the built binary: a
//! deployment moved to a new store keeps every key, ETag and event; one
//! tenant alone; a snapshot while the server holds the live file; and the
//! refusals that write nothing.

mod common;
#[path = "support/binary.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{token_for, Response};
use devicehub::store::{Embedded, EventQuery, ListQuery};
use serde_json::{json, Value};
use support::Server;

/// The built binary with a clean DEVICEHUB_* environment, storage in `dir`.
fn command(dir: &Path) -> Command {
    support::command(dir, "127.0.0.1:0")
}

fn admin(tenant: &str) -> String {
    token_for(tenant, "admin")
}

fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::raw(addr, request.as_bytes())
}

fn register(addr: SocketAddr, tenant: &str, body: Value) -> (String, String) {
    let answer = call(
        addr,
        "POST",
        "/api/tenant/devices",
        &admin(tenant),
        Some(body),
    );
    assert_eq!(
        answer.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let json = answer.json();
    (
        json["data"]["id"].as_str().unwrap().to_string(),
        json["apiKey"].as_str().unwrap().to_string(),
    )
}

fn me(addr: SocketAddr, key: &str) -> Response {
    call(addr, "GET", "/api/device/me", key, None)
}

/// Runs `devicehub import` in `dir` with `input` on stdin.
fn import(dir: &Path, input: &[u8]) -> Output {
    import_with(command(dir), input)
}

/// Runs `cmd import` with `input` on stdin.
fn import_with(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

/// What a client sees of a deployment: each device's body and ETag, and
/// each tenant's event feed, byte for byte.
#[derive(Debug, PartialEq)]
struct Seen {
    devices: Vec<(String, String, String)>,
    feeds: Vec<String>,
}

fn seen(addr: SocketAddr, devices: &[(String, String)], tenants: &[&str]) -> Seen {
    let devices = devices
        .iter()
        .map(|(tenant, id)| {
            let got = call(
                addr,
                "GET",
                &format!("/api/tenant/devices/{id}"),
                &admin(tenant),
                None,
            );
            assert_eq!(got.status, 200);
            let etag = got.header("etag").unwrap().to_string();
            (id.clone(), String::from_utf8_lossy(&got.body).into(), etag)
        })
        .collect();
    let feeds = tenants
        .iter()
        .map(|tenant| {
            let got = call(
                addr,
                "GET",
                "/api/tenant/events?limit=1000",
                &admin(tenant),
                None,
            );
            assert_eq!(got.status, 200);
            assert_eq!(got.json()["hasMore"], false);
            String::from_utf8_lossy(&got.body).into()
        })
        .collect();
    Seen { devices, feeds }
}

fn db_in(dir: &Path) -> std::path::PathBuf {
    dir.join("data/devicehub.redb")
}

/// A deployment to move, and what its clients saw before it moved.
struct Moving {
    devices: Vec<(String, String)>,
    /// (device id, key, what /api/device/me must answer afterwards)
    keys: Vec<(String, String, u16)>,
    before: Seen,
    hooks_before: Vec<u8>,
}

const TENANTS: [&str; 2] = ["acme", "other"];

/// Runs a server in `dir`, makes six devices in two tenants (renamed,
/// rotated with a grace period, revoked, checked in) and a webhook, notes
/// what clients see, and stops it.
fn populate(dir: &Path) -> Moving {
    let mut server = Server::start(command(dir), "http");
    let addr = server.addr;
    let mut devices = Vec::new();
    // (device id, key, what /api/device/me must answer afterwards)
    let mut keys = Vec::new();
    for i in 0..6 {
        let tenant = if i < 4 { "acme" } else { "other" };
        let (id, key) = register(
            addr,
            tenant,
            json!({"name": format!("scanner {i}"), "locationIds": [format!("loc-{}", i % 2)]}),
        );
        devices.push((tenant.to_string(), id.clone()));
        keys.push((id, key, 200));
    }
    let path = |i: usize| format!("/api/tenant/devices/{}", devices[i].1);
    let renamed = call(
        addr,
        "PATCH",
        &path(0),
        &admin("acme"),
        Some(json!({"name": "renamed", "status": "inactive"})),
    );
    assert_eq!(renamed.status, 200);
    keys[0].2 = 403;
    let rotated = call(
        addr,
        "POST",
        &format!("{}/api-key", path(1)),
        &admin("acme"),
        Some(json!({"gracePeriodSeconds": 3600})),
    );
    assert_eq!(rotated.status, 200);
    let new_key = rotated.json()["apiKey"].as_str().unwrap().to_string();
    keys.push((devices[1].1.clone(), new_key, 200));
    let revoked = call(addr, "DELETE", &path(2), &admin("acme"), None);
    assert_eq!(revoked.status, 200);
    keys[2].2 = 401;
    // A webhook (its loopback address is refused when sending, so its
    // deliveries fail at once and it keeps its place in the feed).
    let hook = call(
        addr,
        "POST",
        "/api/tenant/webhooks",
        &admin("acme"),
        Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["device.revoked"]})),
    );
    assert_eq!(
        hook.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&hook.body)
    );
    // A check-in on one device: its lastSeenAt moves with it.
    assert_eq!(me(addr, &keys[4].1).status, 200);
    let before = seen(addr, &devices, &TENANTS);
    let hooks_before = call(addr, "GET", "/api/tenant/webhooks", &admin("acme"), None).body;
    server.signal("TERM");
    server.wait_exit(std::time::Duration::from_secs(15));
    Moving {
        devices,
        keys,
        before,
        hooks_before,
    }
}

/// Checks that the server at `addr` shows what `moved` saw, and that every
/// key answers as it did.
fn check_moved(addr: SocketAddr, moved: &Moving) {
    check_seen(addr, moved);
    check_keys(addr, moved);
}

/// The devices (bodies and ETags), feeds and webhooks as they were.
fn check_seen(addr: SocketAddr, moved: &Moving) {
    assert_eq!(seen(addr, &moved.devices, &TENANTS), moved.before);
    let hooks_after = call(addr, "GET", "/api/tenant/webhooks", &admin("acme"), None).body;
    assert_eq!(
        String::from_utf8_lossy(&hooks_after),
        String::from_utf8_lossy(&moved.hooks_before)
    );
}

/// Every key answers as it did (a check-in: this changes `lastSeenAt`).
fn check_keys(addr: SocketAddr, moved: &Moving) {
    for (id, key, status) in &moved.keys {
        let answer = me(addr, key);
        assert_eq!(answer.status, *status, "the key of {id}");
        if *status == 200 {
            assert_eq!(answer.json()["data"]["id"], id.as_str());
        }
    }
    assert_eq!(
        me(addr, &moved.keys[2].1).error_code(),
        "device_revoked",
        "a revoked key is still told so"
    );
}

#[test]
fn a_deployment_moves_with_every_key_etag_and_event() {
    let old = tempfile::tempdir().unwrap();
    let moved = populate(old.path());

    let exported = command(old.path()).arg("export").output().unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let summary = String::from_utf8_lossy(&exported.stderr);
    assert!(
        summary.contains("exported 6 devices, 9 events and 1 webhook"),
        "{summary}"
    );
    let text = String::from_utf8(exported.stdout.clone()).unwrap();
    assert!(
        text.starts_with("{\"kind\":\"devicehub-export\",\"version\":1,"),
        "{text}"
    );
    for (_, key, _) in &moved.keys {
        assert!(!text.contains(key.as_str()), "no key in the export");
    }

    let new = tempfile::tempdir().unwrap();
    let imported = import(new.path(), &exported.stdout);
    assert!(imported.status.success(), "{imported:?}");
    let said = String::from_utf8_lossy(&imported.stdout);
    assert!(
        said.starts_with("imported 6 devices, 9 events and 1 webhook into "),
        "{said}"
    );
    {
        let store = Embedded::open(&db_in(new.path())).unwrap();
        store.verify_indexes().unwrap();
        assert_eq!(store.stats("acme").unwrap().total(), 4);
    }
    let server = Server::start(command(new.path()), "http");
    check_moved(server.addr, &moved);
}

/// The export's lines after its header (which says when it was made).
fn body_lines(export: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(export)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn a_deployment_moves_from_redb_to_postgresql_and_back() {
    let Some(base) = common::pg_cluster("a_deployment_moves_from_redb_to_postgresql_and_back")
    else {
        return;
    };
    let old = tempfile::tempdir().unwrap();
    let moved = populate(old.path());
    let exported = command(old.path()).arg("export").output().unwrap();
    assert!(exported.status.success(), "{exported:?}");

    // Into PostgreSQL: two instances, each showing the same deployment.
    let url = common::fresh_database(&base);
    let shared = tempfile::tempdir().unwrap();
    let on_postgres = || {
        let mut cmd = command(shared.path());
        cmd.env("DEVICEHUB__STORAGE__POSTGRES_URL", &url);
        cmd
    };
    let imported = import_with(on_postgres(), &exported.stdout);
    assert!(imported.status.success(), "{imported:?}");
    assert_eq!(
        String::from_utf8_lossy(&imported.stdout).trim(),
        "imported 6 devices, 9 events and 1 webhook into PostgreSQL"
    );
    let (a, b) = (
        Server::start(on_postgres(), "http"),
        Server::start(on_postgres(), "http"),
    );
    check_seen(a.addr, &moved);
    check_seen(b.addr, &moved);
    // Out again, before any check-in: the same lines.
    let from_postgres = on_postgres().arg("export").output().unwrap();
    assert!(from_postgres.status.success(), "{from_postgres:?}");
    assert_eq!(
        body_lines(&from_postgres.stdout),
        body_lines(&exported.stdout)
    );
    check_keys(a.addr, &moved);
    check_keys(b.addr, &moved);
    drop((a, b));

    // A second import into the same database is refused.
    let refused = import_with(on_postgres(), &exported.stdout);
    assert!(!refused.status.success());
    assert!(stderr_line(&refused).contains("import only into an empty store"));

    // And back into a new redb file.
    let back = tempfile::tempdir().unwrap();
    let imported = import(back.path(), &from_postgres.stdout);
    assert!(imported.status.success(), "{imported:?}");
    let server = Server::start(command(back.path()), "http");
    check_moved(server.addr, &moved);
}

#[test]
fn one_tenant_exports_alone_and_imports_into_a_fresh_store() {
    let old = tempfile::tempdir().unwrap();
    let mut server = Server::start(command(old.path()), "http");
    let (_, _) = register(server.addr, "acme", json!({"name": "a"}));
    let (other, key) = register(server.addr, "other", json!({"name": "b"}));
    server.signal("TERM");
    server.wait_exit(std::time::Duration::from_secs(15));
    let exported = command(old.path())
        .args(["export", "--tenant", "other"])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let text = String::from_utf8(exported.stdout.clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["tenant"], "other");
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["devicehub-export", "device", "event", "end"]);
    assert_eq!(lines[1]["id"], other.as_str());

    let new = tempfile::tempdir().unwrap();
    assert!(import(new.path(), &exported.stdout).status.success());
    let server = Server::start(command(new.path()), "http");
    assert_eq!(me(server.addr, &key).status, 200);
    let acme = call(
        server.addr,
        "GET",
        "/api/tenant/devices",
        &admin("acme"),
        None,
    );
    assert_eq!(acme.json()["data"], json!([]));
}

#[test]
fn a_running_server_is_exported_from_its_snapshot_and_its_live_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let mut cmd = command(dir.path());
    cmd.env("DEVICEHUB__BACKUP__DIR", &backups)
        .env("DEVICEHUB__BACKUP__INTERVAL", "1h");
    let server = Server::start(cmd, "http");
    server.wait_for_log_nth("backup: wrote", 1);
    let (id, key) = register(server.addr, "acme", json!({"name": "kept"}));
    // Snapshot names have one-second resolution: let the next one differ.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.signal("USR1");
    server.wait_for_log_nth("backup: wrote", 2);

    let live = command(dir.path()).arg("export").output().unwrap();
    assert_eq!(live.status.code(), Some(1));
    assert!(live.stdout.is_empty(), "nothing on stdout");
    let stderr = stderr_line(&live);
    assert!(
        stderr.contains("locked by a running devicehub server"),
        "{stderr}"
    );
    assert!(stderr.contains("--from"), "{stderr}");

    let mut snapshots: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    snapshots.sort();
    let latest = snapshots.last().unwrap();
    let exported = command(dir.path())
        .args(["export", "--from", latest.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let text = String::from_utf8(exported.stdout.clone()).unwrap();
    assert!(text.contains(&format!("\"id\":\"{id}\"")), "{text}");

    // Import into the held live file is refused too.
    let refused = import(dir.path(), &exported.stdout);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr_line(&refused).contains("locked"));

    let new = tempfile::tempdir().unwrap();
    assert!(import(new.path(), &exported.stdout).status.success());
    let moved = Server::start(command(new.path()), "http");
    assert_eq!(me(moved.addr, &key).status, 200);
    drop(server);
}

/// A store with one device of its own, as a stopped server leaves it.
fn store_with_one_device(dir: &Path) -> String {
    let mut server = Server::start(command(dir), "http");
    let (id, _) = register(server.addr, "acme", json!({"name": "already here"}));
    server.signal("TERM");
    server.wait_exit(std::time::Duration::from_secs(15));
    id
}

/// (tenant, device id) of every device, and every tenant's event ids.
fn contents(dir: &Path) -> (Vec<String>, Vec<String>) {
    let store = Embedded::open(&db_in(dir)).unwrap();
    let mut devices = Vec::new();
    let mut events = Vec::new();
    for tenant in ["acme", "other"] {
        let list = store.list(tenant, &ListQuery::default()).unwrap();
        devices.extend(
            list.devices
                .into_iter()
                .map(|d| format!("{tenant}/{}", d.id)),
        );
        let query = EventQuery {
            limit: 1000,
            ..EventQuery::default()
        };
        let page = store.events(tenant, &query).unwrap();
        events.extend(page.events.into_iter().map(|e| e.id));
    }
    store.verify_indexes().unwrap();
    (devices, events)
}

fn an_export() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    store_with_one_device(dir.path());
    let out = command(dir.path()).arg("export").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

#[test]
fn import_into_a_store_that_is_not_empty_is_refused_and_writes_nothing() {
    let export = an_export();
    let dir = tempfile::tempdir().unwrap();
    let own = store_with_one_device(dir.path());
    let before = contents(dir.path());
    assert_eq!(before.0, [format!("acme/{own}")]);
    let out = import(dir.path(), &export);
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_line(&out);
    assert!(stderr.contains("already holds devices"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(contents(dir.path()), before);
}

#[test]
fn a_malformed_line_is_named_and_nothing_is_written() {
    let export = String::from_utf8(an_export()).unwrap();
    let mut lines: Vec<String> = export.lines().map(str::to_string).collect();
    // Line 3 is the device's event: a kind this build does not know.
    assert!(lines[2].starts_with("{\"kind\":\"event\""), "{}", lines[2]);
    lines[2] = lines[2].replacen("\"kind\":\"event\"", "\"kind\":\"gadget\"", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), (lines.join("\n") + "\n").as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_line(&out);
    assert!(
        stderr.contains("line 3: unknown kind \"gadget\""),
        "{stderr}"
    );
    assert_eq!(contents(dir.path()), (vec![], vec![]));

    // A bad field on the device line: line 2, and still nothing written.
    let mut lines: Vec<String> = export.lines().map(str::to_string).collect();
    lines[1] = lines[1].replacen("\"status\":\"active\"", "\"status\":\"lost\"", 1);
    let out = import(dir.path(), (lines.join("\n") + "\n").as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let stderr = stderr_line(&out);
    assert!(
        stderr.contains("line 2: unknown variant `lost`"),
        "{stderr}"
    );
    assert_eq!(contents(dir.path()), (vec![], vec![]));

    // The same file, whole, imports.
    let out = import(dir.path(), export.as_bytes());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(contents(dir.path()).0.len(), 1);
}
