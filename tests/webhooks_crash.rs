//! Webhook delivery survives `kill -9` (API.md §7): every event a webhook
//! wants arrives, in order, after a crash and a restart, whether its
//! deliveries were failing or one was in flight.

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/binary.rs"]
mod support;

use std::net::TcpListener;
use std::time::Duration;

use common::{token_for, Conn};
use receiver::{Receiver, Reply};
use serde_json::{json, Value};
use support::{command, Server};

fn start(dir: &std::path::Path) -> Server {
    let mut cmd = command(dir, "127.0.0.1:0");
    cmd.env("DEVICEHUB__WEBHOOKS__ALLOW_LOOPBACK", "true")
        .env("DEVICEHUB__WEBHOOKS__FIRST_RETRY", "1s");
    Server::start(cmd, "http")
}

fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> common::Response {
    let mut conn = Conn::open(server.addr).unwrap();
    let body = body.map(|b| b.to_string());
    conn.call(method, path, &token_for("acme", "admin"), body.as_deref())
        .unwrap()
}

fn register(server: &Server, name: &str) {
    let response = call(
        server,
        "POST",
        "/api/tenant/devices",
        Some(json!({ "name": name })),
    );
    assert_eq!(response.status, 201);
}

fn feed_ids(server: &Server) -> Vec<String> {
    let page = call(server, "GET", "/api/tenant/events", None).json();
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The event ids in the order they first arrived.
fn first_arrivals(receiver: &Receiver) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for request in receiver.received() {
        let id = request.event_id();
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

#[test]
fn pending_and_in_flight_deliveries_arrive_after_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A port with no one listening yet: every attempt fails to connect.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = reserved.local_addr().unwrap().port();
    drop(reserved);

    let mut server = start(dir.path());
    let hook = call(
        &server,
        "POST",
        "/api/tenant/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/in"), "events": ["*"]})),
    );
    assert_eq!(hook.status, 201);
    let hook_path = format!(
        "/api/tenant/webhooks/{}",
        hook.json()["data"]["id"].as_str().unwrap()
    );
    for i in 0..5 {
        register(&server, &format!("pending {i}"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = call(&server, "GET", &format!("{hook_path}/deliveries"), None).json();
        if log["data"].as_array().is_some_and(|d| !d.is_empty()) {
            assert!(log["data"][0]["error"]
                .as_str()
                .unwrap()
                .starts_with("connection"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    // The receiver comes up; the restarted server sends all five, in order.
    let receiver = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let mut server = start(dir.path());
    let events = feed_ids(&server);
    assert_eq!(events.len(), 5);
    receiver.wait_for(5, Duration::from_secs(30));
    assert_eq!(first_arrivals(&receiver), events);

    // Now one is in flight (the receiver holds it) when the server dies.
    let (release, held) = std::sync::mpsc::channel::<()>();
    receiver.plan(Reply::Hold(held));
    register(&server, "in flight");
    register(&server, "after it");
    receiver.wait_for(6, Duration::from_secs(30));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(release);
    let server = start(dir.path());
    let events = feed_ids(&server);
    assert_eq!(events.len(), 7);
    // At least once: the held event is sent again, then the next one.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first_arrivals(&receiver) != events {
        assert!(
            std::time::Instant::now() < deadline,
            "arrived {:?}, wanted {events:?}",
            first_arrivals(&receiver)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let held_id = &events[5];
    let copies = receiver
        .received()
        .iter()
        .filter(|r| &r.event_id() == held_id)
        .count();
    assert!(
        copies >= 2,
        "the event in flight at the crash is sent again"
    );
}
