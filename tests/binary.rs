//! The built binary, started as a user would: commands, configuration
//! errors, signals, and crash durability under SIGKILL.

mod common;
#[path = "support/binary.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::Server;

/// A command with a clean DEVICEHUB_* environment and storage in `dir`,
/// with no configured secret: the first-run secret is made and kept.
fn command(dir: &Path) -> Command {
    let mut cmd = support::command(dir, "127.0.0.1:0");
    cmd.env_remove("DEVICEHUB__AUTH__HS256_SECRET");
    cmd
}

/// The common test client for a running binary.
trait App {
    fn app(&self) -> Client;
}

impl App for Server {
    fn app(&self) -> Client {
        Client(self.addr)
    }
}

/// Requests over loopback, with the common test client.
#[derive(Clone, Copy)]
struct Client(SocketAddr);

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> common::Response {
        common::raw(self.0, &request_bytes(method, path, token, body))
    }

    /// Like `call`, but a dropped connection is None instead of a panic.
    fn try_call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Option<common::Response> {
        common::try_raw(self.0, &request_bytes(method, path, token, body)).ok()
    }
}

fn request_bytes(method: &str, path: &str, token: &str, body: Option<&Value>) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n"
    );
    let body = body.map(Value::to_string).unwrap_or_default();
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    request.into_bytes()
}

fn token(dir: &Path, tenant: &str, scope: &str) -> String {
    let out = command(dir)
        .args([
            "token", "--tenant", tenant, "--scope", scope, "--ttl", "30m", "--sub", "ops",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

#[test]
fn a_new_user_runs_the_server_mints_a_token_and_registers_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path()), "http");
    // The server made the secret; `token` signs with the same one.
    assert!(dir.path().join("data/jwt-secret").exists());
    let admin = token(dir.path(), "acme", "admin");
    let app = server.app();
    let created = app.call(
        "POST",
        "/api/tenant/devices",
        &admin,
        Some(&json!({"name": "Store Scanner 1"})),
    );
    assert_eq!(created.status, 201);
    let key = created.json()["apiKey"].as_str().unwrap().to_string();
    let me = app.call("GET", "/api/device/me", &key, None);
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["data"]["name"], "Store Scanner 1");
    assert_eq!(app.call("GET", "/healthz", "", None).status, 200);

    // No key, secret or token in the log.
    let secret = std::fs::read_to_string(dir.path().join("data/jwt-secret")).unwrap();
    server.wait_for_log("device registered");
    let log = server.log.lock().unwrap().join("\n");
    for needle in [key.as_str(), admin.as_str(), secret.trim()] {
        assert!(!log.contains(needle), "the log leaks a credential");
    }

    server.signal("TERM");
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends with exit 0, got {status}");
}

#[test]
fn demo_mode_seeds_an_empty_database_once_and_prints_working_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let first_count;
    {
        let server = Server::start(
            {
                let mut c = command(dir.path());
                c.arg("serve").arg("--demo");
                c
            },
            "http",
        );
        let url = server.stdout_after("Dashboard");
        let admin = server.stdout_after("Admin token");
        let reader = server.stdout_after("Read-only token");
        assert_eq!(url, format!("http://{}/#token={admin}", server.addr));
        let app = server.app();
        let list = app.call("GET", "/api/tenant/devices", &reader, None).json();
        let devices = list["data"].as_array().unwrap();
        first_count = devices.len();
        assert!((10..=20).contains(&first_count), "{first_count}");
        let count = |status: &str| devices.iter().filter(|d| d["status"] == status).count();
        assert!(count("active") > 0 && count("inactive") > 0 && count("revoked") == 1);
        let mut locations: Vec<&str> = devices
            .iter()
            .flat_map(|d| {
                d["locationIds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap())
            })
            .collect();
        locations.sort_unstable();
        locations.dedup();
        assert!(locations.len() >= 3, "{locations:?}");
        assert!(
            devices
                .iter()
                .any(|d| d["pimEnabled"] == true
                    && !d["pimSegmentIds"].as_array().unwrap().is_empty())
        );
        assert!(devices.iter().any(|d| d["lastSeenAt"].is_string()));
        // The read-only token reads; only the admin one writes.
        assert_eq!(
            app.call(
                "POST",
                "/api/tenant/devices",
                &reader,
                Some(&json!({"name": "x"}))
            )
            .status,
            403
        );
        assert_eq!(
            app.call(
                "POST",
                "/api/tenant/devices",
                &admin,
                Some(&json!({"name": "Extra"}))
            )
            .status,
            201
        );
        let page = app.call("GET", "/", "", None);
        assert_eq!(page.status, 200);
        // The tokens are printed, never logged.
        let log = server.log.lock().unwrap().join("\n");
        assert!(!log.contains(&admin) && !log.contains(&reader));
    }
    // Started again with --demo on a database that holds devices: no reseeding.
    let server = Server::start(
        {
            let mut c = command(dir.path());
            c.arg("--demo");
            c
        },
        "http",
    );
    let reader = server.stdout_after("Read-only token");
    let list = server
        .app()
        .call("GET", "/api/tenant/devices", &reader, None)
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), first_count + 1);
}

#[test]
fn without_demo_nothing_is_seeded_and_no_token_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path()), "http");
    let reader = token(dir.path(), "demo", "devices:read");
    let list = server
        .app()
        .call("GET", "/api/tenant/devices", &reader, None)
        .json();
    assert_eq!(list["data"], json!([]));
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.stdout.lock().unwrap().is_empty());
}

#[test]
fn sigint_also_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(command(dir.path()), "http");
    server.signal("INT");
    assert!(server.child.wait().unwrap().success());
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn assert_refused(out: Output, key: &str) {
    assert!(!out.status.success(), "should fail for {key}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains(key), "the error names {key}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_refused(
        run(command(d).env("DEVICEHUB__SERVER__BIND", "not-an-address")),
        "server.bind",
    );
    assert_refused(
        run(command(d).env("DEVICEHUB__SERVER__PORT", "80")),
        "server.port",
    );
    assert_refused(
        run(command(d).env("DEVICEHUB__AUTH__HS256_SECRET", "too-short")),
        "auth.hs256_secret",
    );
    let key = format!(
        "{}/tests/fixtures/rsa-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    assert_refused(
        run(command(d)
            .env("DEVICEHUB__AUTH__HS256_SECRET", "x".repeat(40))
            .env("DEVICEHUB__AUTH__PUBLIC_KEY_FILE", &key)),
        "auth.public_key_file",
    );
    assert_refused(
        run(command(d).env("DEVICEHUB__AUTH__PUBLIC_KEY_FILE", d.join("nope.pem"))),
        "auth.public_key_file",
    );

    let file = d.join("devicehub.toml");
    std::fs::write(&file, "[server]\nbind = \"127.0.0.1:0\"\nworkers = \"4\"\n").unwrap();
    assert_refused(run(command(d).arg("--config").arg(&file)), "server.workers");
    std::fs::write(&file, "[server\n").unwrap();
    assert_refused(
        run(command(d).arg("serve").arg("--config").arg(&file)),
        "devicehub.toml",
    );
    assert_refused(
        run(command(d).env("DEVICEHUB_CONFIG", d.join("missing.toml"))),
        "missing.toml",
    );

    // A storage path that cannot be written: its folder is a file.
    std::fs::write(d.join("blocker"), "").unwrap();
    assert_refused(
        run(command(d).env("DEVICEHUB__STORAGE__PATH", d.join("blocker/db.redb"))),
        "storage.path",
    );
}

#[test]
fn the_config_file_and_environment_layer_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devicehub.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nbind = \"127.0.0.1:1\"\n[storage]\npath = \"{}\"\n[auth]\nhs256_secret = \"{}\"\n",
            dir.path().join("custom/db.redb").display(),
            "s".repeat(32)
        ),
    )
    .unwrap();
    let mut cmd = command(dir.path());
    cmd.env_remove("DEVICEHUB__STORAGE__PATH")
        .env("DEVICEHUB_CONFIG", &file);
    // The environment (127.0.0.1:0) wins over the file's bind.
    let server = Server::start(cmd, "http");
    assert_ne!(server.addr.port(), 1);
    assert!(dir.path().join("custom/db.redb").exists());
    assert!(
        !dir.path().join("custom/jwt-secret").exists(),
        "a configured secret makes no file"
    );
    let minted = devicehub::auth::token::mint_hs256(
        "s".repeat(32).as_bytes(),
        &devicehub::auth::token::TokenRequest {
            tenant_id: "t",
            scope: "devices:read",
            ttl_secs: 60,
            subject: None,
            issuer: None,
            audience: None,
        },
    )
    .unwrap();
    assert_eq!(
        server
            .app()
            .call("GET", "/api/tenant/devices", &minted, None)
            .status,
        200
    );
}

#[test]
fn token_refuses_to_sign_in_public_key_mode_and_checks_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!(
        "{}/tests/fixtures/rsa-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = run(command(dir.path())
        .env("DEVICEHUB__AUTH__PUBLIC_KEY_FILE", &key)
        .args(["token", "--tenant", "t", "--scope", "admin"]));
    assert_refused(out, "auth.public_key_file");
    assert_refused(
        run(command(dir.path()).args(["token", "--tenant", "t", "--scope", "admin", "--ttl", "5w"])),
        "--ttl",
    );
    let help = run(command(dir.path()).arg("--help"));
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("token"));
}

#[test]
fn a_second_server_on_the_same_file_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start(command(dir.path()), "http");
    assert_refused(run(&mut command(dir.path())), "storage.path");
}

/// One worker's view of its own device: what was acknowledged, and what was
/// in flight when the connection broke.
#[derive(Default, Clone)]
struct Ledger {
    id: Option<String>,
    acked_name: Option<String>,
    inflight_name: Option<String>,
    acked_key: Option<String>,
    inflight_key: Option<String>,
    revoked_acked: bool,
    register_inflight: Option<String>,
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // (round, worker, ledger), each worker's ledgers in the order it wrote.
    let mut all: Vec<(u64, usize, Ledger)> = Vec::new();
    for round in 0..3 {
        let server = Server::start(command(dir.path()), "http");
        let admin = token(dir.path(), "acme", "admin");
        let app = server.app();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..6)
            .map(|w| {
                let (stop, admin) = (stop.clone(), admin.clone());
                std::thread::spawn(move || {
                    let mut ledgers = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 200 {
                        let mut ledger = Ledger::default();
                        let name = format!("r{round}-w{w}-d{n}");
                        ledger.register_inflight = Some(name.clone());
                        let Some(created) = app.try_call(
                            "POST",
                            "/api/tenant/devices",
                            &admin,
                            Some(&json!({"name": name})),
                        ) else {
                            ledgers.push(ledger);
                            break;
                        };
                        assert_eq!(created.status, 201);
                        let body = created.json();
                        ledger.id = Some(body["data"]["id"].as_str().unwrap().to_string());
                        ledger.acked_name = Some(name.clone());
                        ledger.acked_key = Some(body["apiKey"].as_str().unwrap().to_string());
                        let path = format!("/api/tenant/devices/{}", ledger.id.as_ref().unwrap());
                        let mut alive = true;
                        for step in 0..4 {
                            let new_name = format!("{name}-p{step}");
                            ledger.inflight_name = Some(new_name.clone());
                            match app.try_call(
                                "PATCH",
                                &path,
                                &admin,
                                Some(&json!({"name": new_name})),
                            ) {
                                Some(r) => {
                                    assert_eq!(r.status, 200);
                                    ledger.acked_name = ledger.inflight_name.take();
                                }
                                None => {
                                    alive = false;
                                    break;
                                }
                            }
                        }
                        if alive && n % 2 == 0 {
                            ledger.inflight_key = Some("not yet known".into());
                            match app.try_call("POST", &format!("{path}/api-key"), &admin, None) {
                                Some(r) => {
                                    assert_eq!(r.status, 200);
                                    ledger.acked_key =
                                        Some(r.json()["apiKey"].as_str().unwrap().to_string());
                                    ledger.inflight_key = None;
                                }
                                None => alive = false,
                            }
                        }
                        if alive && n % 3 == 0 {
                            match app.try_call("DELETE", &path, &admin, None) {
                                Some(r) => {
                                    assert_eq!(r.status, 200);
                                    ledger.revoked_acked = true;
                                }
                                None => alive = false,
                            }
                        }
                        ledger.register_inflight = None;
                        ledgers.push(ledger);
                        if !alive {
                            break;
                        }
                        n += 1;
                    }
                    ledgers
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500 + 300 * round));
        let mut server = server;
        server.child.kill().unwrap(); // SIGKILL, mid-write
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for (w, worker) in workers.into_iter().enumerate() {
            all.extend(worker.join().unwrap().into_iter().map(|l| (round, w, l)));
        }
    }

    let server = Server::start(command(dir.path()), "http");
    let app = server.app();
    let reader = token(dir.path(), "acme", "devices:read");
    let listed = app.call("GET", "/api/tenant/devices", &reader, None).json();
    let stored: Vec<Value> = listed["data"].as_array().unwrap().clone();
    let acknowledged = all.iter().filter(|(_, _, l)| l.id.is_some()).count();
    assert!(
        acknowledged >= 30,
        "the test made too few writes to mean much: {acknowledged}"
    );
    for (_, _, ledger) in &all {
        let Some(id) = &ledger.id else {
            continue;
        };
        let device = stored
            .iter()
            .find(|d| d["id"] == json!(id))
            .unwrap_or_else(|| panic!("acknowledged device {id} is lost"));
        let name = device["name"].as_str().unwrap();
        let acked = ledger.acked_name.as_deref().unwrap();
        assert!(
            name == acked || Some(name) == ledger.inflight_name.as_deref(),
            "{id}: stored name {name}, acknowledged {acked}"
        );
        if ledger.revoked_acked {
            assert_eq!(
                device["status"], "revoked",
                "{id}: acknowledged revocation lost"
            );
        }
        if !ledger.revoked_acked && device["status"] == "active" {
            let key = ledger.acked_key.as_deref().unwrap();
            let me = app.call("GET", "/api/device/me", key, None);
            let inflight_rotation = ledger.inflight_key.is_some();
            assert!(
                me.status == 200 || inflight_rotation,
                "{id}: acknowledged key refused"
            );
        }
    }
    // Nothing else is there: every stored device is an acknowledged
    // registration or the one a worker had in flight when the server died.
    for device in &stored {
        let id = device["id"].as_str().unwrap();
        let known = all.iter().any(|(_, _, l)| {
            l.id.as_deref() == Some(id)
                || l.register_inflight
                    .as_deref()
                    .is_some_and(|n| device["name"].as_str().unwrap().starts_with(n))
        });
        assert!(known, "{id} was never registered: {device}");
    }
    // Ids follow commit order: within a worker, and from one run to the next.
    let id_of = |l: &Ledger| l.id.clone();
    for round in 0..3u64 {
        for w in 0..6 {
            let ids: Vec<String> = all
                .iter()
                .filter(|(r, x, _)| *r == round && *x == w)
                .filter_map(|(_, _, l)| id_of(l))
                .collect();
            assert!(
                ids.windows(2).all(|p| p[0] < p[1]),
                "round {round} worker {w}: {ids:?}"
            );
        }
        let later_min = all
            .iter()
            .filter(|(r, _, _)| *r > round)
            .filter_map(|(_, _, l)| id_of(l))
            .min();
        let this_max = all
            .iter()
            .filter(|(r, _, _)| *r == round)
            .filter_map(|(_, _, l)| id_of(l))
            .max();
        if let (Some(max), Some(min)) = (this_max, later_min) {
            assert!(max < min, "ids after a restart sort after earlier ones");
        }
    }
    drop(server);

    // The key, status and location indexes and the counts match the devices
    // exactly, after every crash.
    let store = devicehub::store::Embedded::open(&dir.path().join("data/devicehub.redb")).unwrap();
    store.verify_indexes().unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (children
/// started afterwards inherit it).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// How many long polls wait through the overload test.
const LONG_POLLS: usize = 1000;

/// 256 connections at once for OVERLOAD_SECS (default 30) seconds, beside
/// 1,000 long polls waiting on the event feed: every request is answered
/// correctly, memory stays bounded, no write is lost or applied twice, and
/// every long poll is woken by the one event it waits for.
#[test]
fn under_256_connections_nothing_is_lost_or_duplicated_and_memory_stays_bounded() {
    let secs: u64 = std::env::var("OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    assert!(
        secs <= 50,
        "the long polls wait 60 s: keep OVERLOAD_SECS at 50 or less"
    );
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path()), "http");
    let admin = token(dir.path(), "load", "admin");
    let reader = token(dir.path(), "load", "devices:read");
    let app = server.app();
    // The long polls wait for a key rotation, made once the load is over;
    // the load's registrations and updates must not wake them.
    let rotated = app.call(
        "POST",
        "/api/tenant/devices",
        &admin,
        Some(&json!({"name": "rotated at the end"})),
    );
    let rotated_id = rotated.json()["data"]["id"].as_str().unwrap().to_string();
    let feed = app.call("GET", "/api/tenant/events", &reader, None).json();
    let cursor = feed["data"][0]["id"].as_str().unwrap().to_string();
    let polls: Vec<std::net::TcpStream> = (0..LONG_POLLS)
        .map(|_| {
            use std::io::Write;
            let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
            let request = format!(
                "GET /api/tenant/events?type=device.key_rotated&startingAfter={cursor}&waitSeconds=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {reader}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    // One device per patching connection, and one to read and check in with.
    let mut own = Vec::new();
    for i in 0..64 {
        let r = app.call(
            "POST",
            "/api/tenant/devices",
            &admin,
            Some(&json!({"name": format!("patched-{i}")})),
        );
        own.push((
            r.json()["data"]["id"].as_str().unwrap().to_string(),
            r.json()["apiKey"].as_str().unwrap().to_string(),
        ));
    }
    let own = Arc::new(own);
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let pid = server.child.id();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        std::thread::spawn(move || {
            while std::time::Instant::now() < deadline {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let workers: Vec<_> = (0..256usize)
        .map(|w| {
            let (own, admin, reader, addr) =
                (own.clone(), admin.clone(), reader.clone(), server.addr);
            std::thread::spawn(move || {
                let mut conn = common::Conn::open(addr).unwrap();
                let mut registered = Vec::new();
                let mut last_name = None;
                let mut n = 0u64;
                while std::time::Instant::now() < deadline {
                    n += 1;
                    match w % 4 {
                        0 => {
                            let name = format!("reg-{w}-{n}");
                            let body = json!({ "name": name }).to_string();
                            let r = conn
                                .call("POST", "/api/tenant/devices", &admin, Some(&body))
                                .unwrap();
                            assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
                            registered
                                .push((r.json()["data"]["id"].as_str().unwrap().to_string(), name));
                        }
                        1 => {
                            let (id, _) = &own[w / 4 % own.len()];
                            let name = format!("patched-{w}-{n}");
                            let body = json!({ "name": name }).to_string();
                            let r = conn
                                .call(
                                    "PATCH",
                                    &format!("/api/tenant/devices/{id}"),
                                    &admin,
                                    Some(&body),
                                )
                                .unwrap();
                            assert_eq!(r.status, 200);
                            assert_eq!(r.json()["data"]["name"], json!(name));
                            last_name = Some((id.clone(), name));
                        }
                        2 => {
                            let (id, _) = &own[w % own.len()];
                            let r = conn
                                .call("GET", &format!("/api/tenant/devices/{id}"), &reader, None)
                                .unwrap();
                            assert_eq!(r.status, 200);
                            assert_eq!(r.json()["data"]["id"], json!(id));
                        }
                        _ => {
                            let (id, key) = &own[w % own.len()];
                            let r = conn.call("GET", "/api/device/me", key, None).unwrap();
                            assert_eq!(r.status, 200);
                            assert_eq!(r.json()["data"]["id"], json!(id));
                        }
                    }
                }
                (registered, last_name, n)
            })
        })
        .collect();
    let mut registered = Vec::new();
    let mut last_names = Vec::new();
    let mut total = 0;
    for w in workers {
        let (r, l, n) = w.join().unwrap();
        registered.extend(r);
        last_names.extend(l);
        total += n;
    }
    sampler.join().unwrap();
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    eprintln!(
        "overload: {total} requests in {secs} s, {} registrations, peak RSS {peak_mib} MiB",
        registered.len()
    );
    assert!(peak_mib < 256, "memory grew to {peak_mib} MiB");

    // One rotation wakes every long poll, each with exactly that event.
    let rotation = app.call(
        "POST",
        &format!("/api/tenant/devices/{rotated_id}/api-key"),
        &admin,
        None,
    );
    assert_eq!(rotation.status, 200);
    for mut stream in polls {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let events = body["data"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{body}");
        assert_eq!(events[0]["type"], "device.key_rotated");
        assert_eq!(events[0]["deviceId"], json!(rotated_id));
    }

    let list = app.call("GET", "/api/tenant/devices", &reader, None).json();
    let stored: Vec<&Value> = list["data"].as_array().unwrap().iter().collect();
    let mut by_id = std::collections::HashMap::new();
    for d in &stored {
        let id = d["id"].as_str().unwrap();
        assert!(
            by_id.insert(id, d["name"].as_str().unwrap()).is_none(),
            "{id} listed twice"
        );
    }
    assert_eq!(
        stored.len(),
        65 + registered.len(),
        "every registration exactly once"
    );
    for (id, name) in &registered {
        assert_eq!(by_id.get(id.as_str()), Some(&name.as_str()), "{id}");
    }
    // Each patched device holds the last name a patch acknowledged for it
    // (one patching connection per device).
    for (id, name) in &last_names {
        assert_eq!(by_id.get(id.as_str()), Some(&name.as_str()), "{id}");
    }
}

#[test]
fn a_damaged_database_file_stops_start_up_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let mut garbage = vec![0u8; 64 * 1024];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    std::fs::write(dir.path().join("data/devicehub.redb"), &garbage).unwrap();
    assert_refused(run(&mut command(dir.path())), "storage.path");
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[test]
fn what_a_first_start_creates_is_private_and_the_log_says_how_to_get_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(command(dir.path()), "http");
    assert_eq!(mode_of(&data), 0o700);
    assert_eq!(mode_of(&data.join("devicehub.redb")), 0o600);
    assert_eq!(mode_of(&data.join("jwt-secret")), 0o600);

    let hint = "devicehub token --tenant";
    server.wait_for_log(hint);
    let log = server.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.contains(hint)).count(),
        1,
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("eyJ")),
        "never a token in the log: {log:?}"
    );
    drop(server);

    // A token may exist now: later starts say nothing of it.
    let again = Server::start(command(dir.path()), "http");
    again.wait_for_log("listening on");
    assert!(!again.log.lock().unwrap().iter().any(|l| l.contains(hint)));
    drop(again);
    let configured = tempfile::tempdir().unwrap();
    let mut cmd = command(configured.path());
    cmd.env("DEVICEHUB__AUTH__HS256_SECRET", "s".repeat(32));
    let server = Server::start(cmd, "http");
    assert!(!server.log.lock().unwrap().iter().any(|l| l.contains(hint)));
    assert_eq!(mode_of(&configured.path().join("data")), 0o700);
    assert_eq!(
        mode_of(&configured.path().join("data/devicehub.redb")),
        0o600
    );
}

#[test]
fn a_storage_path_that_is_a_folder_stops_serve_and_token_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("store");
    std::fs::create_dir(&folder).unwrap();
    let with_folder = || {
        let mut cmd = command(dir.path());
        cmd.env("DEVICEHUB__STORAGE__PATH", &folder);
        cmd
    };
    assert_refused(run(&mut with_folder()), "storage.path");
    assert_refused(
        run(with_folder().arg("serve").arg("--demo")),
        "storage.path",
    );
    assert_refused(
        run(with_folder().args(["token", "--tenant", "t", "--scope", "admin"])),
        "storage.path",
    );
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, vec![std::ffi::OsString::from("store")]);
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
}

#[cfg(unix)]
#[test]
fn a_kept_secret_others_can_read_or_with_a_second_link_stops_start_up() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("data/jwt-secret");
    // `token` made the secret, privately.
    let _ = token(dir.path(), "acme", "admin");
    assert_eq!(mode_of(&secret), 0o600);
    let shown = secret.display().to_string();

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    for out in [
        run(&mut command(dir.path())),
        run(command(dir.path()).args(["token", "--tenant", "t", "--scope", "admin"])),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_refused(out, "auth.hs256_secret");
        assert!(stderr.lines().last().unwrap().contains(&shown), "{stderr}");
    }
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&secret, dir.path().join("copy")).unwrap();
    let out = run(&mut command(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_refused(out, "auth.hs256_secret");
    assert!(stderr.lines().last().unwrap().contains(&shown), "{stderr}");
    std::fs::remove_file(dir.path().join("copy")).unwrap();
    drop(Server::start(command(dir.path()), "http"));
}

#[test]
fn serve_help_lists_the_environment_and_bind_overrides_server_bind() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(command(dir.path()).args(["serve", "--help"]));
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for name in [
        "--bind",
        "DEVICEHUB_CONFIG",
        "DEVICEHUB__SERVER__BIND",
        "DEVICEHUB__STORAGE__PATH",
        "DEVICEHUB__AUTH__HS256_SECRET",
        "DEVICEHUB__AUTH__PUBLIC_KEY_FILE",
        "DEVICEHUB__AUTH__ISSUER",
        "DEVICEHUB__AUTH__AUDIENCE",
        "DEVICEHUB__LIMITS__MAX_DEVICES_PER_TENANT",
        "RUST_LOG",
    ] {
        assert!(help.contains(name), "{name} in: {help}");
    }

    // --bind wins over the environment (which wins over the file).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let server = Server::start(
        {
            let mut cmd = command(dir.path());
            cmd.env("DEVICEHUB__SERVER__BIND", &taken_addr).args([
                "serve",
                "--bind",
                "127.0.0.1:0",
            ]);
            cmd
        },
        "http",
    );
    assert_ne!(server.addr.to_string(), taken_addr);
    assert_eq!(server.app().call("GET", "/healthz", "", None).status, 200);
    drop(server);
    // The default command takes it too, and a bad value names the flag.
    assert_refused(
        run(command(dir.path()).args(["--bind", "nowhere"])),
        "--bind",
    );
    assert_refused(
        run(command(dir.path()).args(["serve", "--bind", "127.0.0.1"])),
        "--bind",
    );
}

#[test]
fn an_unquoted_address_in_the_config_file_gets_a_hint_to_quote_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devicehub.toml");
    std::fs::write(&file, "[server]\nbind = 127.0.0.1:0\n").unwrap();
    let out = run(command(dir.path()).arg("--config").arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_refused(out, "devicehub.toml");
    assert!(stderr.contains("must be quoted"), "{stderr}");
}

/// A stop by SIGTERM closes the database cleanly: the next open has nothing
/// to repair (on a large file a repair would hold up the next start), and
/// the file alone holds every write (its last checkpoint came before the
/// exit, so the write-ahead log can go: docs/BACKUP.md).
#[test]
fn a_stopped_server_leaves_a_cleanly_closed_database() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let mut server = Server::start(command(dir.path()), "http");
        let admin = token(dir.path(), "acme", "admin");
        let app = server.app();
        for i in 0..3 {
            let body = json!({ "name": format!("round {round} device {i}") });
            assert_eq!(
                app.call("POST", "/api/tenant/devices", &admin, Some(&body))
                    .status,
                201
            );
        }
        server.signal("TERM");
        assert!(server.child.wait().unwrap().success());
        let repaired = Arc::new(AtomicBool::new(false));
        let seen = repaired.clone();
        let db = redb::Database::builder()
            .set_repair_callback(move |_| seen.store(true, Ordering::SeqCst))
            .open(dir.path().join("data/devicehub.redb"))
            .unwrap();
        drop(db);
        assert!(
            !repaired.load(Ordering::SeqCst),
            "round {round}: the file needed a repair"
        );
        for log in ["wal0", "wal1"] {
            let path = dir.path().join(format!("data/devicehub.redb.{log}"));
            assert!(path.exists(), "round {round}: no {log}");
            std::fs::remove_file(path).unwrap();
        }
    }
    let server = Server::start(command(dir.path()), "http");
    let reader = token(dir.path(), "acme", "devices:read");
    let listed = server
        .app()
        .call("GET", "/api/tenant/devices", &reader, None)
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 15);
}
