//! Issue 12's hardening through the HTTP stack: answers no cache may keep,
//! and names that cannot reorder the text around them.

mod common;

use common::{spawn_app, token_for};
use serde_json::json;

#[test]
fn every_api_answer_says_no_store_errors_included() {
    let app = spawn_app();
    let admin = token_for("acme", "admin");
    let registered = app.send_json("POST", "/api/tenant/devices", &admin, &json!({"name": "x"}));
    assert_eq!(registered.status, 201);
    assert!(registered.json()["apiKey"].is_string());
    let key = registered.json()["apiKey"].as_str().unwrap().to_string();
    let path = format!(
        "/api/tenant/devices/{}",
        registered.json()["data"]["id"].as_str().unwrap()
    );
    let answers = [
        ("registration", registered),
        (
            "rotation",
            app.send("POST", &format!("{path}/api-key"), &admin),
        ),
        ("read", app.get(&path, &admin)),
        ("list", app.get("/api/tenant/devices", &admin)),
        ("device me", app.get("/api/device/me", &key)),
        ("health", app.request("GET", "/healthz", &[], None)),
        ("openapi", app.request("GET", "/openapi.json", &[], None)),
        ("401", app.get("/api/tenant/devices", "nope")),
        (
            "403",
            app.send_json(
                "POST",
                "/api/tenant/devices",
                &token_for("acme", "devices:read"),
                &json!({"name": "x"}),
            ),
        ),
        (
            "400",
            app.send_json("POST", "/api/tenant/devices", &admin, &json!({"name": ""})),
        ),
        ("404 route", app.request("GET", "/nowhere", &[], None)),
        (
            "404 device",
            app.get("/api/tenant/devices/dev_01ARZ3NDEKTSV4RRFFQ69G5FAV", &admin),
        ),
        ("405", app.request("PUT", "/healthz", &[], None)),
    ];
    for (what, response) in answers {
        assert_eq!(
            response.header("cache-control"),
            Some("no-store"),
            "{what}: {}",
            response.status
        );
    }
}

#[test]
fn names_with_bidirectional_controls_are_refused_and_nothing_is_stored() {
    let app = spawn_app();
    let admin = token_for("acme", "admin");
    for name in ["Kasse \u{202E}1gpj.exe", "a\u{2066}b\u{2069}", "\u{202A}x"] {
        let response = app.send_json(
            "POST",
            "/api/tenant/devices",
            &admin,
            &json!({ "name": name }),
        );
        assert_eq!(response.status, 400, "{name:?}");
        assert_eq!(response.error_code(), "invalid_request");
        assert!(response.error_message().starts_with("name:"), "{name:?}");
    }
    assert_eq!(app.get("/api/tenant/devices", &admin).data_ids().len(), 0);
    let (device, _) = app.register(&admin, json!({"name": "Kasse 1"}));
    let path = format!("/api/tenant/devices/{}", device["id"].as_str().unwrap());
    let patched = app.send_json("PATCH", &path, &admin, &json!({"name": "\u{202D}evil"}));
    assert_eq!(patched.status, 400);
    assert!(patched.error_message().starts_with("name:"));
    assert_eq!(app.get(&path, &admin).json()["data"]["name"], "Kasse 1");
}
