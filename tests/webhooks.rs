//! Webhooks (API.md §7): the API, and deliveries to a local receiver:
//! signed, in order, retried, never to a refused address, never redirected.

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::time::Duration;

use common::{spawn_app_with, token_for, TestApp};
use receiver::{verifies, Receiver, Reply};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn admin() -> String {
    token_for("acme", "admin")
}

fn app() -> TestApp {
    spawn_app_with(|s| {
        s.webhooks.allow_loopback = true;
        s.webhooks.first_retry = Duration::from_secs(1);
    })
}

/// Creates a webhook; returns it and its secret.
fn create(app: &TestApp, body: Value) -> (Value, String) {
    let response = app.send_json("POST", "/api/tenant/webhooks", &admin(), &body);
    assert_eq!(response.status, 201, "{:?}", response.json());
    let json = response.json();
    let id = json["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        response.header("location"),
        Some(format!("/api/tenant/webhooks/{id}").as_str())
    );
    (
        json["data"].clone(),
        json["secret"].as_str().unwrap().to_string(),
    )
}

fn path(hook: &Value) -> String {
    format!("/api/tenant/webhooks/{}", hook["id"].as_str().unwrap())
}

fn deliveries(app: &TestApp, hook: &Value) -> Vec<Value> {
    let response = app.get(&format!("{}/deliveries", path(hook)), &admin());
    assert_eq!(response.status, 200);
    response.json()["data"].as_array().unwrap().clone()
}

fn rename(app: &TestApp, device: &Value, name: &str) {
    let path = format!("/api/tenant/devices/{}", device["id"].as_str().unwrap());
    let response = app.send_json("PATCH", &path, &admin(), &json!({ "name": name }));
    assert_eq!(response.status, 200);
}

/// Polls until `check` holds (up to `WAIT`).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A receiver process, killed when the test ends, by a failed assertion too
/// (else it would outlive the test run, holding its output pipe open).
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn webhooks_are_created_read_changed_and_deleted_by_admins_only() {
    let app = app();
    let (hook, secret) = create(
        &app,
        json!({"url": "https://hooks.example/in", "events": ["device.revoked"], "description": "revocations"}),
    );
    assert!(secret.starts_with("whsec_"));
    assert_eq!(hook["enabled"], true);
    assert_eq!(hook["events"], json!(["device.revoked"]));
    assert!(
        hook.get("secret").is_none(),
        "the secret is not part of the webhook"
    );
    let read = app.get(&path(&hook), &admin()).json();
    assert_eq!(read["data"], hook);
    assert!(!read.to_string().contains(&secret));
    assert_eq!(
        app.get("/api/tenant/webhooks", &admin()).json()["data"],
        json!([hook])
    );

    let changed = app.send_json(
        "PATCH",
        &path(&hook),
        &admin(),
        &json!({"enabled": false, "events": ["*"]}),
    );
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["data"]["enabled"], false);
    assert_eq!(changed.json()["data"]["events"], json!(["*"]));
    let bad = app.send_json("PATCH", &path(&hook), &admin(), &json!({"url": "ftp://x"}));
    assert_eq!(bad.status, 400);
    assert!(bad.error_message().starts_with("url:"));
    assert_eq!(
        app.get(&path(&hook), &admin()).json()["data"]["url"],
        "https://hooks.example/in"
    );

    let rotated = app
        .send("POST", &format!("{}/secret", path(&hook)), &admin())
        .json();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);

    // Read-only tokens and other tenants get nothing.
    let reader = token_for("acme", "devices:read");
    assert_eq!(app.get("/api/tenant/webhooks", &reader).status, 403);
    assert_eq!(
        app.get(&path(&hook), &token_for("globex", "admin")).status,
        404
    );
    assert_eq!(
        app.get("/api/tenant/webhooks/wh_nope", &admin()).status,
        404
    );
    assert_eq!(app.send("PUT", &path(&hook), &admin()).status, 405);

    assert_eq!(
        app.send("DELETE", &path(&hook), &admin()).json(),
        json!({"success": true})
    );
    assert_eq!(app.get(&path(&hook), &admin()).status, 404);
    assert_eq!(app.send("DELETE", &path(&hook), &admin()).status, 404);
    assert_eq!(
        app.get(&format!("{}/deliveries", path(&hook)), &admin())
            .status,
        404
    );
}

#[test]
fn bad_webhook_bodies_are_refused_and_the_21st_is_over_quota() {
    let app = app();
    for (body, field) in [
        (json!({"events": ["*"]}), "url"),
        (json!({"url": "http://x.example"}), "events"),
        (json!({"url": "gopher://x.example", "events": ["*"]}), "url"),
        (json!({"url": "http://x.example", "events": []}), "events"),
        (
            json!({"url": "http://x.example", "events": ["*"], "enabled": null}),
            "enabled",
        ),
        (
            json!({"url": "http://x.example", "events": ["*"], "colour": 1}),
            "colour",
        ),
    ] {
        let response = app.send_json("POST", "/api/tenant/webhooks", &admin(), &body);
        assert_eq!(response.status, 400, "{body}");
        assert!(response.error_message().starts_with(field), "{body}");
    }
    assert!(app.get("/api/tenant/webhooks", &admin()).json()["data"]
        .as_array()
        .unwrap()
        .is_empty());
    for i in 0..20 {
        create(
            &app,
            json!({"url": format!("http://x.example/{i}"), "events": ["*"]}),
        );
    }
    let over = app.send_json(
        "POST",
        "/api/tenant/webhooks",
        &admin(),
        &json!({"url": "http://x.example/21", "events": ["*"]}),
    );
    assert_eq!(over.status, 403);
    assert_eq!(over.error_code(), "quota_exceeded");
    // Another tenant has its own 20.
    let other = app.send_json(
        "POST",
        "/api/tenant/webhooks",
        &token_for("globex", "admin"),
        &json!({"url": "http://x.example/", "events": ["*"]}),
    );
    assert_eq!(other.status, 201);
}

#[test]
fn deliveries_are_signed_carry_the_event_and_keep_event_order_through_failures() {
    let app = app();
    let sink = Receiver::start();
    let (hook, secret) = create(
        &app,
        json!({"url": sink.url("/hook?src=dh"), "events": ["*"]}),
    );
    // The first two attempts fail: the first event is retried, and nothing
    // after it is sent before it is delivered.
    sink.plan(Reply::Status(500));
    sink.plan(Reply::Status(503));
    let (device, _) = app.register(&admin(), json!({"name": "Till"}));
    rename(&app, &device, "Till 2");
    rename(&app, &device, "Till 3");
    let got = sink.wait_for(5, WAIT);
    let ids: Vec<String> = got.iter().map(|r| r.event_id()).collect();
    let feed = app.get("/api/tenant/events", &admin()).json();
    let events: Vec<String> = feed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(ids, [0, 0, 0, 1, 2].map(|i| events[i].clone()));
    for (request, event) in got.iter().zip([0, 0, 0, 1, 2]) {
        assert_eq!(request.path, "/hook?src=dh");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let signature = request.header("devicehub-signature").unwrap();
        assert!(verifies(&secret, signature, &request.body), "{signature}");
        assert!(!verifies("whsec_other", signature, &request.body));
        assert_eq!(request.json(), feed["data"][event], "the body is the event");
    }
    let log = deliveries(&app, &hook);
    assert_eq!(log.len(), 5, "{log:?}");
    // Newest first: the last is the first attempt.
    assert_eq!(log[4]["attempt"], 1);
    assert_eq!(log[4]["status"], 500);
    assert_eq!(log[3]["attempt"], 2);
    assert_eq!(log[2]["attempt"], 3);
    assert_eq!(log[2]["status"], 200);
    assert_eq!(log[2]["error"], Value::Null);
    assert_eq!(log[0]["eventId"], events[2].as_str());
    assert!(log[0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(log[0]["durationMs"].is_u64());
    // Counted by result (the counters are the process's: other tests in
    // this binary add to them too).
    let metrics = String::from_utf8(app.get("/metrics", "").body).unwrap();
    let count = |result: &str| -> u64 {
        let line = format!("devicehub_webhook_deliveries_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
    };
    assert!(count("delivered") >= 3);
    assert!(count("failed") >= 2);
}

#[test]
fn filters_secret_rotation_disabling_and_deletion_take_effect() {
    let app = app();
    let sink = Receiver::start();
    let (hook, first_secret) = create(
        &app,
        json!({"url": sink.url("/"), "events": ["device.revoked"]}),
    );
    let (a, _) = app.register(&admin(), json!({"name": "a"}));
    let (b, _) = app.register(&admin(), json!({"name": "b"}));
    let path_a = format!("/api/tenant/devices/{}", a["id"].as_str().unwrap());
    let path_b = format!("/api/tenant/devices/{}", b["id"].as_str().unwrap());
    assert_eq!(app.send("DELETE", &path_a, &admin()).status, 200);
    let got = sink.wait_for(1, WAIT);
    assert_eq!(
        got[0].json()["type"],
        "device.revoked",
        "registrations are filtered out"
    );
    assert!(verifies(
        &first_secret,
        got[0].header("devicehub-signature").unwrap(),
        &got[0].body
    ));

    // A new secret signs from the next attempt on.
    let rotated = app
        .send("POST", &format!("{}/secret", path(&hook)), &admin())
        .json();
    let second_secret = rotated["secret"].as_str().unwrap().to_string();
    // Disabled: nothing is sent; enabled again: it resumes at the event it missed.
    let off = app.send_json("PATCH", &path(&hook), &admin(), &json!({"enabled": false}));
    assert_eq!(off.status, 200);
    assert_eq!(app.send("DELETE", &path_b, &admin()).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), 1, "a disabled webhook sends nothing");
    let on = app.send_json("PATCH", &path(&hook), &admin(), &json!({"enabled": true}));
    assert_eq!(on.status, 200);
    let got = sink.wait_for(2, WAIT);
    assert_eq!(got[1].json()["deviceId"], b["id"]);
    let signature = got[1].header("devicehub-signature").unwrap();
    assert!(verifies(&second_secret, signature, &got[1].body));
    assert!(!verifies(&first_secret, signature, &got[1].body));

    // Deleted: nothing more is sent.
    assert_eq!(app.send("DELETE", &path(&hook), &admin()).status, 200);
    let (c, _) = app.register(&admin(), json!({"name": "c"}));
    let path_c = format!("/api/tenant/devices/{}", c["id"].as_str().unwrap());
    assert_eq!(app.send("DELETE", &path_c, &admin()).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.received().len(), 2);
}

#[test]
fn a_webhook_made_later_gets_only_later_events_and_a_slow_one_delays_no_other() {
    let app = app();
    app.register(&admin(), json!({"name": "before any webhook"}));
    let slow = Receiver::start();
    let fast = Receiver::start();
    let (release, held) = std::sync::mpsc::channel();
    slow.plan(Reply::Hold(held));
    create(&app, json!({"url": slow.url("/"), "events": ["*"]}));
    create(&app, json!({"url": fast.url("/"), "events": ["*"]}));
    let (device, _) = app.register(&admin(), json!({"name": "after"}));
    rename(&app, &device, "after 2");
    // The fast endpoint gets both while the slow one still holds the first.
    let got = fast.wait_for(2, WAIT);
    assert_eq!(got[0].json()["data"]["object"]["name"], "after");
    assert_eq!(got[1].json()["data"]["object"]["name"], "after 2");
    assert_eq!(slow.received().len(), 1, "the slow one has only its first");
    release.send(()).unwrap();
    let got = slow.wait_for(2, WAIT);
    assert_eq!(got[1].json()["data"]["object"]["name"], "after 2");
}

#[test]
fn refused_addresses_and_redirects_are_failed_attempts_that_reach_nobody() {
    let strict = spawn_app_with(|s| s.webhooks.first_retry = Duration::from_secs(60));
    let sink = Receiver::start();
    let (loopback, _) = create(&strict, json!({"url": sink.url("/"), "events": ["*"]}));
    let (link_local, _) = create(
        &strict,
        json!({"url": "http://169.254.169.254/latest", "events": ["*"]}),
    );
    let (unspecified, _) = create(&strict, json!({"url": "http://[::]:9/", "events": ["*"]}));
    strict.register(&admin(), json!({"name": "x"}));
    for (hook, why) in [
        (&loopback, "loopback"),
        (&link_local, "link-local"),
        (&unspecified, "unspecified"),
    ] {
        eventually(why, || !deliveries(&strict, hook).is_empty());
        let log = deliveries(&strict, hook);
        let error = log[0]["error"].as_str().unwrap();
        assert!(
            error.starts_with("refused address") && error.contains(why),
            "{error}"
        );
        assert_eq!(log[0]["status"], Value::Null);
    }
    assert!(
        sink.received().is_empty(),
        "nothing reached the loopback receiver"
    );

    let app = app();
    let target = Receiver::start();
    let redirecting = Receiver::start();
    redirecting.plan(Reply::Redirect(target.url("/elsewhere")));
    let (hook, _) = create(&app, json!({"url": redirecting.url("/"), "events": ["*"]}));
    app.register(&admin(), json!({"name": "y"}));
    eventually("a recorded attempt", || !deliveries(&app, &hook).is_empty());
    let first = deliveries(&app, &hook).last().unwrap().clone();
    assert_eq!(first["status"], 302);
    assert_eq!(first["error"], "redirect not followed");
    // The retry (after first_retry) goes to the webhook's own URL again.
    redirecting.wait_for(2, WAIT);
    assert!(
        target.received().is_empty(),
        "the redirect was never followed"
    );
}

/// Runs a receiver example from docs/examples and checks that it accepts
/// devicehub's deliveries and refuses a forged one.
fn example_receiver_accepts_real_deliveries(program: &str, script: &str) {
    let app = app();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (hook, secret) = create(
        &app,
        json!({"url": format!("http://127.0.0.1:{port}/"), "events": ["*"]}),
    );
    let mut child = Reaped(
        std::process::Command::new(program)
            .arg(format!(
                "{}/docs/examples/{script}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(port.to_string())
            .env("WHSEC", &secret)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map(Some)
            .unwrap(),
    );
    let (device, _) = app.register(&admin(), json!({"name": "Till"}));
    rename(&app, &device, "Till 2");
    eventually("both events delivered", || {
        deliveries(&app, &hook)
            .iter()
            .filter(|d| d["status"] == 204)
            .count()
            == 2
    });
    // A forged delivery is refused.
    let forged = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nDevicehub-Signature: t={},v1=00\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let answer = common::raw(([127, 0, 0, 1], port).into(), forged.as_bytes());
    assert_eq!(answer.status, 400);
    let mut child = child.0.take().expect("the receiver started");
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let id = device["id"].as_str().unwrap();
    assert!(
        printed.contains(&format!("device.created {id}")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("device.updated {id}")),
        "{printed}"
    );
    assert!(
        printed.contains("Till"),
        "previousAttributes printed: {printed}"
    );
}

#[test]
fn the_python_receiver_example_verifies_deliveries() {
    example_receiver_accepts_real_deliveries("python3", "webhook_receiver.py");
}

#[test]
fn the_node_receiver_example_verifies_deliveries() {
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "node is needed under CI (scripts/test.sh installs it)"
        );
        eprintln!("node is not installed: the Node example is not run");
        return;
    }
    example_receiver_accepts_real_deliveries("node", "webhook_receiver.js");
}

#[test]
fn a_test_delivery_is_sent_at_once_signed_and_logged_without_touching_the_queue() {
    let app = app();
    let sink = Receiver::start();
    let (hook, secret) = create(
        &app,
        json!({"url": sink.url("/t"), "events": ["*"], "enabled": false}),
    );
    let answer = app.send("POST", &format!("{}/test", path(&hook)), &admin());
    assert_eq!(answer.status, 200);
    let delivery = answer.json()["data"].clone();
    assert_eq!(delivery["status"], 200);
    assert_eq!(delivery["error"], Value::Null);
    assert_eq!(delivery["attempt"], 1);
    let got = sink.received();
    assert_eq!(got.len(), 1, "sent even though the webhook is disabled");
    let event = got[0].json();
    assert_eq!(event["type"], "webhook.test");
    assert_eq!(event["actor"], "tester");
    assert_eq!(event["id"], delivery["eventId"]);
    assert!(verifies(
        &secret,
        got[0].header("devicehub-signature").unwrap(),
        &got[0].body
    ));
    assert_eq!(deliveries(&app, &hook), vec![delivery]);
    let feed = app.get("/api/tenant/events", &admin()).json();
    assert_eq!(
        feed["data"],
        json!([]),
        "a test is not an event of the feed"
    );

    // A refused address is an answer too, not an error of the API.
    let strict = spawn_app_with(|_| {});
    let (local, _) = create(&strict, json!({"url": sink.url("/"), "events": ["*"]}));
    let answer = strict.send("POST", &format!("{}/test", path(&local)), &admin());
    assert_eq!(answer.status, 200);
    assert!(answer.json()["data"]["error"]
        .as_str()
        .unwrap()
        .contains("loopback"));
    assert_eq!(sink.received().len(), 1);
    let unknown = "/api/tenant/webhooks/wh_01JD0000000000000000000000/test";
    assert_eq!(app.send("POST", unknown, &admin()).status, 404);
    let reader = token_for("acme", "devices:read");
    assert_eq!(
        app.send("POST", &format!("{}/test", path(&hook)), &reader)
            .status,
        403
    );
}
