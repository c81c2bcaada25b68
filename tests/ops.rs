//! Operations: `/metrics`, `devicehub healthcheck`, JSON logs and a graceful
//! stop on SIGINT.

mod common;
#[path = "support/binary.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{spawn_app, spawn_app_with, token_for, TestApp};
use serde_json::{json, Value};
use support::{command, free_port, run, Server};

fn admin() -> String {
    token_for("acme", "admin")
}

fn scrape(app: &TestApp) -> String {
    let response = app.request("GET", "/metrics", &[], None);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(response.body).unwrap()
}

/// The value of the series `name{labels}` exactly as written, or 0.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[test]
fn metrics_count_requests_by_route_template_never_by_id_or_token() {
    let app = spawn_app();
    let token = admin();
    let before = scrape(&app);
    let (device, key) = app.register(&token, json!({"name": "Scanner 1"}));
    let id = device["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(
            app.get(&format!("/api/tenant/devices/{id}"), &token).status,
            200
        );
    }
    let revoked = app.register(&token, json!({"name": "Scanner 2"})).0;
    let revoked_id = revoked["id"].as_str().unwrap();
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/tenant/devices/{revoked_id}"),
            &token
        )
        .status,
        200
    );
    let secret_path = format!("/nothing-here/{token}");
    assert_eq!(app.get(&secret_path, &token).status, 404);
    assert_eq!(
        app.request("BREW", "/healthz", &[], None).status,
        405,
        "an unknown method is answered"
    );
    let after = scrape(&app);

    let gets = r#"devicehub_http_requests_total{method="GET",route="/api/tenant/devices/{id}",status="200"}"#;
    assert!(value(&after, gets) - value(&before, gets) >= 3.0, "{after}");
    let posts =
        r#"devicehub_http_requests_total{method="POST",route="/api/tenant/devices",status="201"}"#;
    assert!(value(&after, posts) - value(&before, posts) >= 2.0);
    let unmatched = r#"devicehub_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert!(value(&after, unmatched) - value(&before, unmatched) >= 1.0);
    let other = r#"devicehub_http_requests_total{method="other",route="/healthz",status="405"}"#;
    assert!(value(&after, other) - value(&before, other) >= 1.0);
    let timed =
        r#"devicehub_http_request_duration_seconds_count{route="/api/tenant/devices/{id}"}"#;
    assert!(value(&after, timed) - value(&before, timed) >= 3.0);

    // This store's devices, all tenants: exact, not a process-wide sum.
    assert_eq!(value(&after, r#"devicehub_devices{status="active"}"#), 1.0);
    assert_eq!(value(&after, r#"devicehub_devices{status="revoked"}"#), 1.0);
    assert_eq!(
        value(&after, r#"devicehub_devices{status="inactive"}"#),
        0.0
    );
    // Three commits at least: two registrations and a revocation.
    assert!(
        value(&after, "devicehub_store_commit_batch_size_count")
            - value(&before, "devicehub_store_commit_batch_size_count")
            >= 3.0
    );
    assert!(value(&after, "devicehub_store_commit_duration_seconds_count") >= 3.0);
    assert!(value(&after, "devicehub_store_commit_duration_seconds_sum") > 0.0);
    let version = format!(
        r#"devicehub_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&after, &version), 1.0);

    // No id, tenant, key or token in any label.
    for secret in [
        id.as_str(),
        revoked_id,
        "acme",
        key.as_str(),
        token.as_str(),
    ] {
        assert!(!after.contains(secret), "{secret} leaked into /metrics");
    }
    for line in after.lines().filter(|l| l.contains("route=\"")) {
        let route = line.split("route=\"").nth(1).unwrap();
        let route = &route[..route.find('"').unwrap()];
        assert!(
            route == "unmatched"
                || devicehub::http::ROUTES
                    .iter()
                    .chain(devicehub::http::PAGE_ROUTES)
                    .any(|(path, _)| *path == route),
            "{route} is not a route template"
        );
    }
}

#[test]
fn metrics_need_no_token_and_can_be_turned_off() {
    let on = spawn_app();
    assert!(scrape(&on).contains("# TYPE devicehub_http_requests_total counter"));
    assert_eq!(on.request("POST", "/metrics", &[], None).status, 405);

    let off = spawn_app_with(|s| s.metrics_enabled = false);
    let response = off.request("GET", "/metrics", &[], None);
    assert_eq!(response.status, 404);
    assert_eq!(response.error_code(), "not_found");
    assert_eq!(off.request("POST", "/metrics", &[], None).status, 404);
    assert_eq!(off.request("GET", "/healthz", &[], None).status, 200);
}

// --- healthcheck ---------------------------------------------------------

fn healthcheck(dir: &std::path::Path, bind: &str) -> (bool, String, String, Duration) {
    let started = Instant::now();
    let out = run(command(dir, bind).arg("healthcheck"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn healthcheck_says_healthy_when_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let _server = Server::start(command(dir.path(), &bind), "http");
    let (ok, stdout, stderr, _) = healthcheck(dir.path(), &bind);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("http://{bind}/healthz answered HTTP/1.1 200")),
        "{stdout}"
    );
    // A wildcard bind is asked on loopback.
    let (ok, _, stderr, _) = healthcheck(dir.path(), &format!("0.0.0.0:{port}"));
    assert!(ok, "{stderr}");
}

/// The one line on stderr, checked to be one line.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0]
}

#[test]
fn healthcheck_fails_with_one_line_when_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let (ok, _, stderr, _) = healthcheck(dir.path(), &bind);
    assert!(!ok);
    let line = one_line(&stderr);
    assert!(line.contains(&format!("http://{bind}/healthz")), "{line}");
}

/// A listener that answers every connection with `answer` (or never, when
/// `None`) after reading the request.
fn fake_server(answer: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            match answer {
                Some(text) => {
                    let _ = stream.write_all(text.as_bytes());
                }
                None => held.push(stream),
            }
        }
    });
    addr
}

#[test]
fn healthcheck_fails_on_a_non_200_answer() {
    let dir = tempfile::tempdir().unwrap();
    let addr = fake_server(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ));
    let (ok, _, stderr, _) = healthcheck(dir.path(), &addr.to_string());
    assert!(!ok);
    assert!(
        one_line(&stderr).contains("answered HTTP/1.1 503 Service Unavailable"),
        "{stderr}"
    );
}

#[test]
fn healthcheck_gives_up_after_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let addr = fake_server(None);
    let (ok, _, stderr, took) = healthcheck(dir.path(), &addr.to_string());
    assert!(!ok);
    assert!(
        one_line(&stderr).contains("no answer within 2 s"),
        "{stderr}"
    );
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn healthcheck_refuses_port_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr, _) = healthcheck(dir.path(), "127.0.0.1:0");
    assert!(!ok);
    assert!(one_line(&stderr).contains("server.bind"), "{stderr}");
}

// --- logs and stopping ---------------------------------------------------

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), "127.0.0.1:0");
    cmd.env("DEVICEHUB__LOG__FORMAT", "json");
    let mut server = Server::start(cmd, "http");
    let token = token_for("acme", "admin");
    let body = r#"{"name":"Logged \"quoted\" scanner"}"#;
    let response = common::raw(
        server.addr,
        format!(
            "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(response.status, 201);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    let lines = server.log_lines();
    assert!(lines.len() >= 3, "{lines:?}");
    let mut messages = Vec::new();
    for line in &lines {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let object = object.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["level", "msg", "target", "ts"], "{line}");
        let ts = object["ts"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        messages.push(object["msg"].as_str().unwrap().to_string());
    }
    assert!(messages
        .iter()
        .any(|m| m.starts_with("listening on http://")));
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token must not be logged"
    );
}

#[test]
fn text_logs_are_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(command(dir.path(), "127.0.0.1:0"), "http");
    assert!(server.ready.starts_with('['), "{}", server.ready);
    assert!(serde_json::from_str::<Value>(&server.ready).is_err());
}

/// Sends a registration whose body arrives in two parts, `pause` apart,
/// signalling `signal` to the server in between; returns the answer.
fn slow_registration_across(server: &Server, signal: &str, pause: Duration) -> common::Response {
    let token = token_for("acme", "admin");
    let body = br#"{"name":"Slow scanner"}"#;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..5]).unwrap();
    // Let the server take the request in before the signal.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(signal);
    server.wait_for_log(&format!("{signal} received"));
    std::thread::sleep(pause);
    stream.write_all(&body[5..]).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer after {signal}: {text:?}"));
    common::Response {
        status,
        headers: vec![],
        body: bytes,
    }
}

#[test]
fn sigint_lets_a_request_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(command(dir.path(), "127.0.0.1:0"), "http");
    let addr = server.addr;
    let answer = slow_registration_across(&server, "INT", Duration::from_secs(1));
    assert_eq!(answer.status, 201);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    // New connections are no longer taken once it stops.
    assert!(TcpStream::connect(addr).is_err());
    let log = server.log_lines().join("\n");
    assert!(!log.contains("forced"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(command(dir.path(), "127.0.0.1:0"), "http");
    let answer = slow_registration_across(&server, "TERM", Duration::from_millis(500));
    assert_eq!(answer.status, 201);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn the_grafana_dashboard_asks_only_for_series_the_server_has() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let app = spawn_app();
    app.register(&admin(), json!({"name": "Dashboard scanner"}));
    let text = scrape(&app);
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("devicehub_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "{name} (panel {}) is not served",
                    panel["title"]
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 10, "{asked}");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Request rate",
        "Errors",
        "Latency",
        "Commit batch size",
        "fsync",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "{wanted}: {titles:?}"
        );
    }
}
