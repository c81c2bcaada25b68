//! Key rotation with a grace period (API.md §3, §4): a fleet rolls its keys
//! without taking devices offline.

mod common;

use common::{spawn_app, token_for, TestApp};
use serde_json::{json, Value};

fn admin() -> String {
    token_for("acme", "admin")
}

fn rotate(app: &TestApp, device: &Value, body: Option<&Value>) -> common::Response {
    let path = format!(
        "/api/tenant/devices/{}/api-key",
        device["id"].as_str().unwrap()
    );
    match body {
        Some(body) => app.send_json("POST", &path, &admin(), body),
        None => app.send("POST", &path, &admin()),
    }
}

#[test]
fn the_old_key_keeps_working_through_its_grace_and_says_it_is_deprecated() {
    let app = spawn_app();
    let (device, first) = app.register(&admin(), json!({"name": "Scanner"}));
    let me = app.get("/api/device/me", &first);
    assert_eq!(me.status, 200);
    assert!(me.header("deprecation").is_none());

    let rotated = rotate(&app, &device, Some(&json!({"gracePeriodSeconds": 2})));
    assert_eq!(rotated.status, 200);
    let body = rotated.json();
    let second = body["apiKey"].as_str().unwrap().to_string();
    let expires = body["previousKeyExpiresAt"].as_str().expect("a time");
    let expires_at =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let until = expires_at - time::OffsetDateTime::now_utc();
    assert!(
        until.whole_milliseconds() > 0 && until.whole_seconds() <= 2,
        "{expires}"
    );

    let old = app.get("/api/device/me", &first);
    assert_eq!(old.status, 200, "the old key works during its grace");
    assert_eq!(old.header("deprecation"), Some("true"));
    let new = app.get("/api/device/me", &second);
    assert_eq!(new.status, 200);
    assert!(new.header("deprecation").is_none());

    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let late = app.get("/api/device/me", &first);
    assert_eq!(late.status, 401);
    assert_eq!(
        late.error_code(),
        "unauthorized",
        "simply unknown after its grace"
    );
    assert_eq!(app.get("/api/device/me", &second).status, 200);
}

#[test]
fn a_device_holds_two_keys_at_most_and_revocation_ends_both() {
    let app = spawn_app();
    let (device, first) = app.register(&admin(), json!({"name": "Scanner"}));
    let grace = json!({"gracePeriodSeconds": 3600});
    let second = rotate(&app, &device, Some(&grace)).json()["apiKey"]
        .as_str()
        .unwrap()
        .to_string();
    let third = rotate(&app, &device, Some(&grace)).json()["apiKey"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        app.get("/api/device/me", &first).status,
        401,
        "rotating again ends the older key at once"
    );
    assert_eq!(app.get("/api/device/me", &second).status, 200);
    assert_eq!(app.get("/api/device/me", &third).status, 200);

    let path = format!("/api/tenant/devices/{}", device["id"].as_str().unwrap());
    assert_eq!(app.send("DELETE", &path, &admin()).status, 200);
    let previous = app.get("/api/device/me", &second);
    assert_eq!(previous.status, 401);
    assert_eq!(previous.error_code(), "unauthorized");
    let current = app.get("/api/device/me", &third);
    assert_eq!(current.error_code(), "device_revoked");
}

#[test]
fn without_a_grace_the_old_key_stops_at_once_and_bad_bodies_change_nothing() {
    let app = spawn_app();
    let (device, first) = app.register(&admin(), json!({"name": "Scanner"}));
    let etag = |app: &TestApp| {
        app.get(
            &format!("/api/tenant/devices/{}", device["id"].as_str().unwrap()),
            &admin(),
        )
        .header("etag")
        .unwrap()
        .to_string()
    };
    let before = etag(&app);
    for (body, field) in [
        (json!({"gracePeriodSeconds": 604801}), "gracePeriodSeconds"),
        (json!({"gracePeriodSeconds": -5}), "gracePeriodSeconds"),
        (json!({"gracePeriodSeconds": null}), "gracePeriodSeconds"),
        (json!({"graceSeconds": 5}), "graceSeconds"),
    ] {
        let refused = rotate(&app, &device, Some(&body));
        assert_eq!(refused.status, 400, "{body}");
        assert!(refused.error_message().starts_with(&format!("{field}: ")));
    }
    let not_json = app.request(
        "POST",
        &format!(
            "/api/tenant/devices/{}/api-key",
            device["id"].as_str().unwrap()
        ),
        &[
            ("Authorization", &format!("Bearer {}", admin())),
            ("Content-Type", "text/plain"),
        ],
        Some(b"gracePeriodSeconds=5"),
    );
    assert_eq!(not_json.status, 415);
    assert_eq!(etag(&app), before, "nothing was rotated");
    assert_eq!(app.get("/api/device/me", &first).status, 200);

    for body in [
        None,
        Some(json!({})),
        Some(json!({"gracePeriodSeconds": 0})),
    ] {
        let rotated = rotate(&app, &device, body.as_ref());
        assert_eq!(rotated.status, 200);
        assert_eq!(rotated.json()["previousKeyExpiresAt"], Value::Null);
    }
    assert_eq!(app.get("/api/device/me", &first).status, 401);
}
