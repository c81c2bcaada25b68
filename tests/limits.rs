//! Deliberate limits (README "Limits"): slow clients are cut off and cannot
//! hold the server, oversized headers get a clear 4xx, and hostile input is
//! refused without a change.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::token_for;
use serde_json::json;

#[test]
fn clients_that_send_their_headers_slowly_are_cut_off_and_hold_nothing() {
    let app = common::spawn_app();
    let reader = token_for("acme", "devices:read");
    // Many connections that dribble a request head, one byte at a time.
    let mut slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(app.addr).unwrap();
            s.write_all(b"GET /api/tenant/devices HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut cut_off = 0;
    while started.elapsed() < Duration::from_secs(9) && cut_off < slow.len() {
        // Meanwhile, ordinary requests are answered at once.
        let t = Instant::now();
        assert_eq!(app.get("/api/tenant/devices", &reader).status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a slow client held up a normal one"
        );
        cut_off = 0;
        for s in slow.iter_mut() {
            if s.write_all(b"X").is_err() {
                cut_off += 1;
                continue;
            }
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                // Closed, or answered 408 and then closed.
                Ok(0) => cut_off += 1,
                Ok(_) => cut_off += 1,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => cut_off += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        cut_off,
        slow.len(),
        "every slow client is cut off within the head timeout"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "not before the 5 s allowance"
    );
}

/// actix-http's fixed limits: a request head of at most 128 KiB and at most
/// 96 header fields.
#[test]
fn oversized_request_heads_get_a_clear_4xx() {
    let app = common::spawn_app();
    let huge = "a".repeat(200 * 1024);
    let response = app.request("GET", "/healthz", &[("X-Padding", &huge)], None);
    assert!((400..500).contains(&response.status), "{}", response.status);
    let names: Vec<String> = (0..120).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let response = app.request("GET", "/healthz", &many, None);
    assert!((400..500).contains(&response.status), "{}", response.status);
    // And the server is fine afterwards.
    assert_eq!(app.request("GET", "/healthz", &[], None).status, 200);
}

#[test]
fn a_token_for_one_tenant_reaches_only_that_tenant() {
    let app = common::spawn_app();
    let (device, _) = app.register(&token_for("victim", "admin"), json!({"name": "Victim's"}));
    let attacker = token_for("attacker", "admin");
    let path = format!("/api/tenant/devices/{}", device["id"].as_str().unwrap());
    for response in [
        app.get(&path, &attacker),
        app.send_json("PATCH", &path, &attacker, &json!({"name": "pwned"})),
        app.send("DELETE", &path, &attacker),
        app.send("POST", &format!("{path}/api-key"), &attacker),
    ] {
        assert_eq!(response.status, 404);
    }
    let list = app.get("/api/tenant/devices", &attacker).json();
    assert_eq!(list["data"], json!([]));
    let victim = app.get(&path, &token_for("victim", "devices:read")).json();
    assert_eq!(victim["data"], device);
}
