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

/// What became of a connection that dribbles a request body.
#[derive(Debug, Default, Clone)]
struct Dribble {
    /// When the server closed it, counted from the request head.
    closed_after: Option<Duration>,
    answer: Vec<u8>,
}

/// Sends `head`, then one byte of body a second, until the server closes the
/// connection or 20 s pass.
fn dribble(addr: std::net::SocketAddr, head: String, byte: u8) -> Dribble {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut outcome = Dribble::default();
    let mut buf = [0u8; 4096];
    let mut next_byte = started;
    while started.elapsed() < Duration::from_secs(20) {
        if Instant::now() >= next_byte {
            if s.write_all(&[byte]).is_err() {
                outcome.closed_after = Some(started.elapsed());
                return outcome;
            }
            next_byte += Duration::from_secs(1);
        }
        match s.read(&mut buf) {
            Ok(0) => {
                outcome.closed_after = Some(started.elapsed());
                return outcome;
            }
            Ok(n) => outcome.answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                outcome.closed_after = Some(started.elapsed());
                return outcome;
            }
        }
    }
    outcome
}

#[test]
fn a_request_body_must_arrive_within_10_seconds_of_the_head() {
    let app = common::spawn_app();
    let admin = token_for("acme", "admin");
    let addr = app.addr;
    let sized = |auth: &str| {
        format!(
            "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{"
        )
    };
    let chunked = |auth: &str| {
        format!(
            "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n{{"
        )
    };
    let heads: Vec<(&str, String)> = vec![
        ("sized", sized(&admin)),
        ("sized", sized(&admin)),
        ("sized", sized(&admin)),
        ("sized", sized(&admin)),
        ("chunked", chunked(&admin)),
        ("chunked", chunked(&admin)),
        // Answered at once without reading the body: closed, not drained.
        ("unauthenticated", sized("nope")),
        ("unauthenticated", chunked("nope")),
    ];
    let workers: Vec<_> = heads
        .into_iter()
        .map(|(kind, head)| (kind, std::thread::spawn(move || dribble(addr, head, b' '))))
        .collect();
    // Meanwhile, others are served at once.
    for _ in 0..5 {
        let t = Instant::now();
        let (_, _) = app.register(&admin, json!({"name": "prompt"}));
        assert!(t.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_secs(1));
    }
    for (kind, worker) in workers {
        let outcome = worker.join().unwrap();
        let closed = outcome
            .closed_after
            .unwrap_or_else(|| panic!("{kind}: still open after 20 s: {outcome:?}"));
        let answer = String::from_utf8_lossy(&outcome.answer).to_string();
        if kind == "unauthenticated" {
            assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
            assert!(closed < Duration::from_secs(5), "{kind}: {closed:?}");
            continue;
        }
        assert!(
            closed >= Duration::from_secs(9) && closed < Duration::from_secs(13),
            "{kind}: closed after {closed:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{kind}: {answer}");
        assert!(answer.contains("\"request_timeout\""), "{kind}: {answer}");
    }
    // Nothing was registered by the cut-off requests.
    let list = app.get("/api/tenant/devices", &admin);
    assert_eq!(list.data_ids().len(), 5);
}
