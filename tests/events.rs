//! The change feed (API.md §7): one event per change, in commit order, read
//! a page at a time or waited for with `waitSeconds`.

mod common;

use std::time::{Duration, Instant};

use common::{spawn_app, spawn_app_with, token_for, TestApp};
use serde_json::{json, Value};

fn admin() -> String {
    token_for("acme", "admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

fn events(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/api/tenant/events{query}"), &reader());
    assert_eq!(response.status, 200, "{query}: {:?}", response.json());
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()
}

fn types(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn last_id(page: &Value) -> String {
    page["data"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_change_made_through_the_api_is_in_the_feed_once_with_its_actor() {
    let app = spawn_app();
    let (device, _) = app.register(&admin(), json!({"name": "Till", "locationIds": ["loc_a"]}));
    let path = format!("/api/tenant/devices/{}", device["id"].as_str().unwrap());
    let renamed = app.send_json("PATCH", &path, &admin(), &json!({"name": "Till 2"}));
    assert_eq!(renamed.status, 200);
    // A PATCH that changes nothing, and one refused: no events.
    assert_eq!(
        app.send_json("PATCH", &path, &admin(), &json!({"name": "Till 2"}))
            .status,
        200
    );
    assert_eq!(
        app.send_json("PATCH", &path, &admin(), &json!({"name": ""}))
            .status,
        400
    );
    let rotated = app.send("POST", &format!("{path}/api-key"), &admin());
    assert_eq!(rotated.status, 200);
    assert_eq!(app.send("DELETE", &path, &admin()).status, 200);
    assert_eq!(
        app.send("DELETE", &path, &admin()).status,
        200,
        "again: no event"
    );

    let page = events(&app, "");
    assert_eq!(
        types(&page),
        [
            "device.created",
            "device.updated",
            "device.key_rotated",
            "device.revoked"
        ]
    );
    assert_eq!(page["hasMore"], false);
    let data = page["data"].as_array().unwrap();
    for event in data {
        assert_eq!(event["actor"], "tester", "the token's sub");
        assert_eq!(event["deviceId"], device["id"]);
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert!(event["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(
        data[1]["data"]["previousAttributes"],
        json!({"name": "Till"})
    );
    assert_eq!(data[1]["data"]["object"]["name"], "Till 2");
    assert_eq!(
        data[3]["data"]["previousAttributes"],
        json!({"status": "active"})
    );
    let text = page.to_string();
    let new_key = rotated.json()["apiKey"].as_str().unwrap().to_string();
    assert!(!text.contains(&new_key), "no key in an event");

    // Pages follow the cursor; filters narrow them.
    let first = events(&app, "?limit=3");
    assert_eq!(first["hasMore"], true);
    let rest = events(&app, &format!("?startingAfter={}", last_id(&first)));
    assert_eq!(types(&rest), ["device.revoked"]);
    assert_eq!(rest["hasMore"], false);
    assert_eq!(
        types(&events(&app, "?type=device.updated")),
        ["device.updated"]
    );
    let id = device["id"].as_str().unwrap();
    assert_eq!(types(&events(&app, &format!("?deviceId={id}"))).len(), 4);
    let other = app.register(&admin(), json!({"name": "Other"})).0;
    let of_other = events(
        &app,
        &format!("?deviceId={}", other["id"].as_str().unwrap()),
    );
    assert_eq!(types(&of_other), ["device.created"]);

    // Another tenant sees none of it.
    let theirs = app.get("/api/tenant/events", &token_for("globex", "devices:read"));
    assert_eq!(theirs.json(), json!({"data": [], "hasMore": false}));
}

#[test]
fn bad_feed_queries_are_refused_naming_the_parameter() {
    let app = spawn_app();
    for (query, field) in [
        ("type=device.deleted", "type"),
        ("limit=1001", "limit"),
        ("waitSeconds=61", "waitSeconds"),
        ("waitSeconds=-1", "waitSeconds"),
        (
            "startingAfter=dev_01JD0000000000000000000000",
            "startingAfter",
        ),
        ("deviceId=nope", "deviceId"),
        ("cursor=x", "cursor"),
    ] {
        let response = app.get(&format!("/api/tenant/events?{query}"), &reader());
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(response.error_code(), "invalid_request");
        assert!(response.error_message().starts_with(field), "{query}");
    }
    let no_token = app.get("/api/tenant/events", "");
    assert_eq!(no_token.status, 401);
    let device_key = app.register(&admin(), json!({"name": "d"})).1;
    assert_eq!(app.get("/api/tenant/events", &device_key).status, 401);
    assert_eq!(app.send("POST", "/api/tenant/events", &admin()).status, 405);
}

/// Starts a long poll on its own thread; the answer and how long it took.
fn wait_for(app: &TestApp, query: String) -> std::thread::JoinHandle<(Value, Duration)> {
    let addr = app.addr;
    std::thread::spawn(move || {
        let started = Instant::now();
        let request = format!(
            "GET /api/tenant/events{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            reader()
        );
        let response = common::raw(addr, request.as_bytes());
        assert_eq!(response.status, 200);
        (response.json(), started.elapsed())
    })
}

#[test]
fn a_long_poll_wakes_on_a_matching_write_and_returns_it() {
    let app = spawn_app();
    app.register(&admin(), json!({"name": "first"}));
    let cursor = last_id(&events(&app, ""));
    let waiting = wait_for(
        &app,
        format!("?startingAfter={cursor}&type=device.revoked&waitSeconds=30"),
    );
    std::thread::sleep(Duration::from_millis(300));
    // A registration does not match the filter: the poll keeps waiting.
    let (second, _) = app.register(&admin(), json!({"name": "second"}));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "woke for an event it does not want");
    let path = format!("/api/tenant/devices/{}", second["id"].as_str().unwrap());
    assert_eq!(app.send("DELETE", &path, &admin()).status, 200);
    let (page, _) = waiting.join().unwrap();
    // Had it slept to its deadline, the page read before the wait (empty)
    // would be the answer: the revocation in it shows the write woke it.
    assert_eq!(types(&page), ["device.revoked"]);
    assert_eq!(page["data"][0]["deviceId"], second["id"]);
}

#[test]
fn a_long_poll_with_nothing_new_ends_at_its_deadline_with_an_empty_page() {
    let app = spawn_app();
    app.register(&admin(), json!({"name": "only"}));
    let cursor = last_id(&events(&app, ""));
    let (page, took) = wait_for(&app, format!("?startingAfter={cursor}&waitSeconds=1"))
        .join()
        .unwrap();
    assert_eq!(page, json!({"data": [], "hasMore": false}));
    assert!(took >= Duration::from_secs(1), "answered after {took:?}");
    // Events already there are answered at once, whatever the wait.
    let (page, _) = wait_for(&app, "?waitSeconds=60".into()).join().unwrap();
    assert_eq!(types(&page), ["device.created"]);
}

#[test]
fn events_older_than_the_retention_are_deleted_in_the_background() {
    let app = spawn_app_with(|s| s.event_retention = Duration::from_secs(1));
    app.register(&admin(), json!({"name": "short-lived history"}));
    assert_eq!(types(&events(&app, "")).len(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !types(&events(&app, "")).is_empty() {
        assert!(Instant::now() < deadline, "the event was never pruned");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The device stays; only its history ages out.
    let list = app.get("/api/tenant/devices", &reader()).json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}
