//! PostgreSQL as the store (API.md §9): several devicehub processes on one
//! database, start-up checks, the schema's version, TLS to the database, and
//! a database that stops and comes back, and webhook deliveries sent by one
//! instance at a time.
//!
//! These need a cluster: `scripts/test.sh` starts a throwaway one and sets
//! `DEVICEHUB_TEST_PG_CLUSTER` (or `DEVICEHUB_TEST_POSTGRES`). Without it they skip, except under `CI=true`,
//! where they fail: CI cannot pass without running them. (The HTTP tests of
//! the other files also run on PostgreSQL when it is set.)

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/binary.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fresh_database, token_for};
use serde_json::{json, Value};
use support::{command, free_port, run, Server};

use common::pg_cluster as cluster;

/// A devicehub process on the database at `url`.
fn instance(dir: &Path, url: &str) -> Command {
    let mut cmd = command(dir, "127.0.0.1:0");
    cmd.env("DEVICEHUB__STORAGE__POSTGRES_URL", url);
    cmd
}

/// `n` devicehub processes on the database at `url`, each set up by
/// `configure`; the servers (stopped when dropped) and their addresses.
fn instances(
    dir: &Path,
    url: &str,
    n: usize,
    configure: impl Fn(&mut Command),
) -> (Vec<Server>, Vec<SocketAddr>) {
    let servers: Vec<Server> = (0..n)
        .map(|_| {
            let mut cmd = instance(dir, url);
            configure(&mut cmd);
            Server::start(cmd, "http")
        })
        .collect();
    let addrs = servers.iter().map(|s| s.addr).collect();
    (servers, addrs)
}

fn admin(tenant: &str) -> String {
    token_for(tenant, "devices:read admin")
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    extra: &str,
    body: Option<Value>,
) -> common::Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::raw(addr, request.as_bytes())
}

fn register(addr: SocketAddr, tenant: &str, name: &str) -> (String, String) {
    let answer = call(
        addr,
        "POST",
        "/api/tenant/devices",
        &admin(tenant),
        "",
        Some(json!({"name": name})),
    );
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    (
        body["data"]["id"].as_str().unwrap().to_string(),
        body["apiKey"].as_str().unwrap().to_string(),
    )
}

/// Every device id of `tenant`, read through `addr` a page of `limit` at a
/// time.
fn page_through(
    addr: SocketAddr,
    tenant: &str,
    limit: usize,
    after: Option<String>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = after;
    loop {
        let path = match &cursor {
            Some(id) => format!("/api/tenant/devices?limit={limit}&startingAfter={id}"),
            None => format!("/api/tenant/devices?limit={limit}"),
        };
        let page = call(addr, "GET", &path, &admin(tenant), "", None);
        assert_eq!(page.status, 200);
        let got = page.data_ids();
        if got.is_empty() {
            return ids;
        }
        cursor = got.last().cloned();
        ids.extend(got);
    }
}

/// A fresh database in the cluster, and a folder for the instances.
fn fresh(test: &str) -> Option<(String, tempfile::TempDir)> {
    let base = cluster(test)?;
    Some((fresh_database(&base), tempfile::tempdir().unwrap()))
}

#[test]
fn three_instances_share_one_registry() {
    let Some((url, dir)) = fresh("three_instances_share_one_registry") else {
        return;
    };
    let (_servers, addrs) = instances(dir.path(), &url, 3, |_| {});

    // Paging through B while A, B and C register: a page taken mid-way and
    // the pages after it never skip nor repeat a device.
    let writers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(n, &addr)| {
            std::thread::spawn(move || {
                (0..60)
                    .map(|i| register(addr, "acme", &format!("Scanner {n}-{i}")).0)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        let more = page_through(addrs[1], "acme", 7, seen.last().cloned());
        seen.extend(more);
    }
    let mut registered: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    seen.extend(page_through(addrs[1], "acme", 7, seen.last().cloned()));
    registered.sort();
    assert_eq!(seen, registered, "paged in id order, each device once");
    let whole = call(
        addrs[2],
        "GET",
        "/api/tenant/devices",
        &admin("acme"),
        "",
        None,
    );
    assert_eq!(whole.data_ids(), registered);
    let stats = call(
        addrs[0],
        "GET",
        "/api/tenant/stats",
        &admin("acme"),
        "",
        None,
    );
    assert_eq!(stats.json()["data"]["total"], 180);

    // An If-Match race across the instances has exactly one winner.
    let (id, key) = register(addrs[0], "acme", "Contested");
    let path = format!("/api/tenant/devices/{id}");
    let etag = call(addrs[0], "GET", &path, &admin("acme"), "", None)
        .header("etag")
        .unwrap()
        .to_string();
    let racers: Vec<_> = (0..9)
        .map(|n| {
            let (addr, path, etag) = (addrs[n % 3], path.clone(), etag.clone());
            std::thread::spawn(move || {
                call(
                    addr,
                    "PATCH",
                    &path,
                    &admin("acme"),
                    &format!("If-Match: {etag}\r\n"),
                    Some(json!({"name": format!("Winner {n}")})),
                )
                .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412, 412]);

    // A long poll on C wakes for a change made through A.
    // The newest event so far, read page by page.
    let mut last_event = String::new();
    loop {
        let path = match last_event.as_str() {
            "" => "/api/tenant/events?limit=100".to_string(),
            after => format!("/api/tenant/events?limit=100&startingAfter={after}"),
        };
        let feed = call(addrs[2], "GET", &path, &admin("acme"), "", None).json();
        match feed["data"].as_array().unwrap().last() {
            Some(event) => last_event = event["id"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    let waiter = {
        let addr = addrs[2];
        std::thread::spawn(move || {
            let path = format!("/api/tenant/events?waitSeconds=25&startingAfter={last_event}");
            let started = Instant::now();
            let answer = call(addr, "GET", &path, &admin("acme"), "", None);
            (answer.json(), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // Revoking through A is refused through B at once.
    assert_eq!(
        call(addrs[1], "GET", "/api/device/me", &key, "", None).status,
        200
    );
    let revoked = call(addrs[0], "DELETE", &path, &admin("acme"), "", None);
    assert_eq!(revoked.status, 200);
    let refused = call(addrs[1], "GET", "/api/device/me", &key, "", None);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code(), "device_revoked");

    let (woken, waited) = waiter.join().unwrap();
    let events = woken["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{} events", events.len());
    assert_eq!(events[0]["type"], "device.revoked");
    assert!(waited < Duration::from_secs(25), "woken, not timed out");

    // A rotation without grace through C ends the old key on A at once.
    let (other, old_key) = register(addrs[2], "acme", "Rotated");
    let rotated = call(
        addrs[2],
        "POST",
        &format!("/api/tenant/devices/{other}/api-key"),
        &admin("acme"),
        "",
        Some(json!({})),
    );
    assert_eq!(rotated.status, 200);
    let new_key = rotated.json()["apiKey"].as_str().unwrap().to_string();
    assert_eq!(
        call(addrs[0], "GET", "/api/device/me", &old_key, "", None).status,
        401
    );
    assert_eq!(
        call(addrs[0], "GET", "/api/device/me", &new_key, "", None).status,
        200
    );
}

#[test]
fn demo_seeds_once_when_two_instances_start_together() {
    let Some((url, dir)) = fresh("demo_seeds_once_when_two_instances_start_together") else {
        return;
    };
    let starting: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = instance(dir.path(), &url);
            cmd.arg("serve").arg("--demo");
            std::thread::spawn(move || Server::start(cmd, "http"))
        })
        .collect();
    let servers: Vec<Server> = starting.into_iter().map(|s| s.join().unwrap()).collect();
    let stats = call(
        servers[1].addr,
        "GET",
        "/api/tenant/stats",
        &admin("demo"),
        "",
        None,
    );
    let seeded = stats.json()["data"]["total"].as_u64().unwrap();
    assert!(seeded >= 10, "{}", stats.json());
    let listed = call(
        servers[0].addr,
        "GET",
        "/api/tenant/devices",
        &admin("demo"),
        "",
        None,
    );
    assert_eq!(
        listed.data_ids().len() as u64,
        seeded,
        "seeded once, not twice"
    );
}

#[test]
fn start_up_refuses_what_it_cannot_run_with() {
    let Some(base) = cluster("start_up_refuses_what_it_cannot_run_with") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    // No secret or public key: instances could not verify the same tokens.
    let url = fresh_database(&base);
    let mut no_secret = instance(dir.path(), &url);
    no_secret.env_remove("DEVICEHUB__AUTH__HS256_SECRET");
    let out = run(&mut no_secret);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.contains("storage.postgres_url") && said.contains("auth.hs256_secret"),
        "{said}"
    );

    // Nothing listening: one line naming the key, and no password shown.
    let unreachable = format!("postgres://devicehub:hunter2@127.0.0.1:{}/x", free_port());
    let out = run(&mut instance(dir.path(), &unreachable));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.starts_with("devicehub: storage.postgres_url:"),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");

    // A schema newer than this binary is refused, and left as it is.
    let server = Server::start(instance(dir.path(), &url), "http");
    drop(server);
    sql(&url, "UPDATE devicehub_schema SET version = version + 1");
    let out = run(&mut instance(dir.path(), &url));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("newer than this build"), "{said}");
    sql(&url, "UPDATE devicehub_schema SET version = version - 1");
    drop(Server::start(instance(dir.path(), &url), "http"));
}

/// Runs one statement on the database at `url`.
fn sql(url: &str, statement: &str) {
    let (url, statement) = (url.to_string(), statement.to_string());
    common::block_on(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        actix_web::rt::spawn(connection);
        client.batch_execute(&statement).await.unwrap();
    });
}

/// A cluster of this test's own (it is stopped and started), removed on drop.
struct OwnCluster {
    dir: PathBuf,
    url: String,
}

impl OwnCluster {
    fn start(name: &str) -> OwnCluster {
        let dir = std::env::temp_dir().join(format!("devicehub-{name}-{}", std::process::id()));
        let _ = script(&["stop", dir.to_str().unwrap()]);
        let out = script(&["start", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        OwnCluster { dir, url }
    }

    fn port(&self) -> u16 {
        std::fs::read_to_string(self.dir.join("port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn run(&self, args: &[&str]) {
        let mut all = vec![args[0], self.dir.to_str().unwrap()];
        all.extend_from_slice(&args[1..]);
        let out = script(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = script(&["stop", self.dir.to_str().unwrap()]);
    }
}

fn script(args: &[&str]) -> std::process::Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster.sh");
    Command::new("bash").arg(path).args(args).output().unwrap()
}

#[test]
fn a_stopped_database_answers_503_until_it_is_back() {
    if cluster("a_stopped_database_answers_503_until_it_is_back").is_none() {
        return;
    }
    let db = OwnCluster::start("outage");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(instance(dir.path(), &db.url), "http");
    let (id, key) = register(server.addr, "acme", "Scanner");
    let path = format!("/api/tenant/devices/{id}");
    // Reads first, so that the connections they use exist when the
    // database goes away and have to be replaced when it is back.
    let read = admin("acme");
    for _ in 0..4 {
        assert_eq!(call(server.addr, "GET", &path, &read, "", None).status, 200);
        assert_eq!(
            call(server.addr, "GET", "/api/device/me", &key, "", None).status,
            200
        );
    }

    db.run(&["pause"]);
    for (path, token) in [(path.as_str(), read.as_str()), ("/api/device/me", &key)] {
        let answer = call(server.addr, "GET", path, token, "", None);
        assert_eq!(answer.status, 503, "{path} while the database is down");
        assert_eq!(answer.error_code(), "storage_unavailable");
    }
    let write = call(
        server.addr,
        "PATCH",
        &path,
        &admin("acme"),
        "",
        Some(json!({"name": "Down"})),
    );
    assert_eq!(
        write.status,
        503,
        "{}",
        String::from_utf8_lossy(&write.body)
    );
    assert_eq!(write.error_code(), "storage_unavailable");
    let health = call(server.addr, "GET", "/healthz", "", "", None);
    assert_eq!(health.status, 503);
    assert_eq!(health.json(), json!({"status": "unavailable"}));

    // Back, with no restart of devicehub.
    db.run(&["resume"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(server.addr, "GET", "/healthz", "", "", None).status != 200 {
        assert!(Instant::now() < deadline, "not back within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let write = call(
        server.addr,
        "PATCH",
        &path,
        &admin("acme"),
        "",
        Some(json!({"name": "Up"})),
    );
    assert_eq!(write.status, 200);
    assert_eq!(write.json()["data"]["name"], "Up");
    for _ in 0..4 {
        let device = call(server.addr, "GET", &path, &read, "", None);
        assert_eq!(device.status, 200);
        assert_eq!(device.json()["data"]["name"], "Up");
        assert_eq!(
            call(server.addr, "GET", "/api/device/me", &key, "", None).status,
            200
        );
    }
}

#[test]
fn the_database_connection_can_be_tls_checked_against_a_ca_file() {
    if cluster("the_database_connection_can_be_tls_checked_against_a_ca_file").is_none() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let db = OwnCluster::start("tls");
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "devicehub test database CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", &ca.as_ref().pem());
    let cert = write("server.crt", &leaf.pem());
    let key = write("server.key", &leaf_key.serialize_pem());
    db.run(&["tls", cert.to_str().unwrap(), key.to_str().unwrap()]);

    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require",
        db.port()
    );
    // The certificate's CA is not a public one: refused without the CA file.
    let out = run(&mut instance(dir.path(), &url));
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("devicehub: storage.postgres_url:"),
        "{said}"
    );

    let mut cmd = instance(dir.path(), &url);
    cmd.env("DEVICEHUB__STORAGE__POSTGRES_CA_FILE", &ca_file);
    let server = Server::start(cmd, "http");
    let (_, key) = register(server.addr, "acme", "Over TLS");
    assert_eq!(
        call(server.addr, "GET", "/api/device/me", &key, "", None).status,
        200
    );
    let tls_sessions = count(
        &db.url,
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE s.ssl AND a.datname = 'postgres'",
    );
    assert!(tls_sessions >= 1, "devicehub's connections use TLS");
}

fn count(url: &str, query: &str) -> i64 {
    let (url, query) = (url.to_string(), query.to_string());
    common::block_on(async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        actix_web::rt::spawn(connection);
        client.query_one(&query, &[]).await.unwrap().get(0)
    })
}

/// Every event id of `tenant`'s feed, oldest first, read through `addr`.
fn feed(addr: SocketAddr, tenant: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let path = match ids.last() {
            Some(last) => format!("/api/tenant/events?limit=100&startingAfter={last}"),
            None => "/api/tenant/events?limit=100".to_string(),
        };
        let page = call(addr, "GET", &path, &admin(tenant), "", None);
        assert_eq!(page.status, 200);
        let got = page.data_ids();
        if got.is_empty() {
            return ids;
        }
        ids.extend(got);
    }
}

#[test]
fn each_webhook_delivery_is_sent_by_one_instance_in_order() {
    let Some((url, dir)) = fresh("each_webhook_delivery_is_sent_by_one_instance_in_order") else {
        return;
    };
    let receiver = receiver::Receiver::start();
    let (_servers, addrs) = instances(dir.path(), &url, 2, |cmd| {
        cmd.env("DEVICEHUB__WEBHOOKS__ALLOW_LOOPBACK", "true");
    });
    let (a, b) = (addrs[0], addrs[1]);
    let hook = call(
        a,
        "POST",
        "/api/tenant/webhooks",
        &admin("acme"),
        "",
        Some(json!({"url": receiver.url("/in"), "events": ["*"]})),
    );
    assert_eq!(hook.status, 201, "{}", String::from_utf8_lossy(&hook.body));

    // One delivery in flight (the receiver holds it) while more changes are
    // committed through the other instance: both instances are woken and
    // look for work, but only the one holding the claim sends, so nothing
    // else arrives until the held one is answered.
    let (release, held) = std::sync::mpsc::channel::<()>();
    receiver.plan(receiver::Reply::Hold(held));
    register(a, "acme", "first");
    receiver.wait_for(1, Duration::from_secs(30));
    for i in 0..3 {
        register(b, "acme", &format!("while held {i}"));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.received().len(), 1, "sent twice while in flight");
    drop(release);

    // Changes committed through both instances, two at a time: both are
    // woken for each event, and both look for work.
    std::thread::scope(|scope| {
        for (n, addr) in [a, b].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..15 {
                    register(addr, "acme", &format!("from {n}, {i}"));
                }
            });
        }
    });
    let events = feed(a, "acme");
    assert_eq!(events.len(), 34);
    receiver.wait_for(34, Duration::from_secs(30));
    // Settle: a second sender would still be sending now.
    std::thread::sleep(Duration::from_millis(500));
    let arrived: Vec<String> = receiver
        .received()
        .iter()
        .map(receiver::Received::event_id)
        .collect();
    assert_eq!(arrived, events, "each event once, in the feed's order");
}

/// A GET by tenant "acme"'s admin.
fn acme_reads(addr: SocketAddr, path: &str) -> common::Response {
    call(addr, "GET", path, &admin("acme"), "", None)
}

/// Sends `count` copies of one request with one `Idempotency-Key` at once,
/// alternating between the instances; their answers.
fn same_key_at_once(
    instances: &[SocketAddr],
    count: usize,
    path: &str,
    key: &str,
    body: Value,
) -> Vec<common::Response> {
    let extra = format!("Idempotency-Key: {key}\r\n");
    let start = std::sync::Barrier::new(count);
    std::thread::scope(|scope| {
        let sent: Vec<_> = (0..count)
            .map(|n| {
                let (addr, extra, body, start) = (instances[n % 2], &extra, body.clone(), &start);
                scope.spawn(move || {
                    start.wait();
                    call(addr, "POST", path, &admin("acme"), extra, Some(body))
                })
            })
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Each answer is the one write's (first or replayed) or 409 "still
/// running"; returns the first answer's body.
fn one_write_among(answers: &[common::Response], created: u16) -> Value {
    let mut written: Option<Value> = None;
    for answer in answers {
        match answer.status {
            409 => assert_eq!(answer.error_code(), "idempotency_conflict"),
            status => {
                assert_eq!(status, created, "{}", String::from_utf8_lossy(&answer.body));
                let body = answer.json();
                match &written {
                    Some(first) => assert_eq!(&body, first, "one answer, replayed"),
                    None => written = Some(body),
                }
            }
        }
    }
    written.expect("one request wrote")
}

#[test]
fn one_idempotency_key_sent_through_two_instances_at_once_writes_once() {
    let Some((url, dir)) = fresh("one_idempotency_key_sent_through_two_instances_at_once") else {
        return;
    };
    let (_servers, addrs) = instances(dir.path(), &url, 2, |_| {});

    let answers = same_key_at_once(
        &addrs,
        12,
        "/api/tenant/devices",
        "register-0123456789abcdef",
        json!({"name": "Scanner"}),
    );
    let device = one_write_among(&answers, 201);
    let listed = acme_reads(addrs[0], "/api/tenant/devices");
    assert_eq!(listed.data_ids().len(), 1, "registered once");

    let id = device["data"]["id"].as_str().unwrap();
    let answers = same_key_at_once(
        &addrs,
        12,
        &format!("/api/tenant/devices/{id}/api-key"),
        "rotate-0123456789abcdef01",
        json!({"gracePeriodSeconds": 0}),
    );
    let rotated = one_write_among(&answers, 200);
    let feed = acme_reads(addrs[1], "/api/tenant/events?type=device.key_rotated");
    assert_eq!(feed.data_ids().len(), 1, "rotated once");
    let key = rotated["apiKey"].as_str().unwrap();
    for addr in &addrs {
        let me = call(*addr, "GET", "/api/device/me", key, "", None);
        assert_eq!(me.status, 200, "the one new key works");
    }
}
