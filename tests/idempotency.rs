//! `Idempotency-Key` on registration and rotation (API.md §3): a provisioning
//! tool that lost an answer retries without making an orphan device.

mod common;

use common::{spawn_app, spawn_app_with, token_for, Response, TestApp};
use devicehub::devices::Millis;
use serde_json::{json, Value};

const KEY: &str = "provision-4f1c2d9a-retry-1";

fn admin() -> String {
    token_for("acme", "admin")
}

fn post(app: &TestApp, path: &str, token: &str, key: Option<&str>, body: &Value) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    app.request("POST", path, &headers, Some(body.to_string().as_bytes()))
}

fn register(app: &TestApp, key: Option<&str>, body: &Value) -> Response {
    post(app, "/api/tenant/devices", &admin(), key, body)
}

fn device_count(app: &TestApp) -> usize {
    app.get("/api/tenant/devices", &admin()).data_ids().len()
}

#[test]
fn a_retried_registration_gets_the_first_answer_and_registers_once() {
    let app = spawn_app();
    let body = json!({"name": "Scanner", "locationIds": ["loc-1"]});
    let first = register(&app, Some(KEY), &body);
    assert_eq!(first.status, 201);
    assert!(first.header("idempotent-replayed").is_none());
    let again = register(&app, Some(KEY), &body);
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json(), "the same body, the same apiKey");
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(device_count(&app), 1);
    let key = first.json()["apiKey"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/device/me", &key).status, 200);

    // Without the header, or under another key, it is a new registration.
    assert_eq!(register(&app, None, &body).status, 201);
    assert_eq!(
        register(&app, Some("another-key-0123456789"), &body).status,
        201
    );
    assert_eq!(device_count(&app), 3);
    // Another tenant's key space is its own.
    let theirs = post(
        &app,
        "/api/tenant/devices",
        &token_for("globex", "admin"),
        Some(KEY),
        &body,
    );
    assert_eq!(theirs.status, 201);
    assert!(theirs.header("idempotent-replayed").is_none());
}

#[test]
fn the_same_key_with_another_body_or_path_is_a_conflict() {
    let app = spawn_app();
    let first = register(&app, Some(KEY), &json!({"name": "Scanner"}));
    assert_eq!(first.status, 201);
    let other_body = register(&app, Some(KEY), &json!({"name": "Other"}));
    assert_eq!(other_body.status, 409);
    assert_eq!(other_body.error_code(), "idempotency_conflict");
    let rotate_path = format!(
        "/api/tenant/devices/{}/api-key",
        first.json()["data"]["id"].as_str().unwrap()
    );
    let other_path = post(&app, &rotate_path, &admin(), Some(KEY), &json!({}));
    assert_eq!(other_path.status, 409);
    assert_eq!(other_path.error_code(), "idempotency_conflict");
    assert_eq!(device_count(&app), 1);
}

#[test]
fn a_replay_comes_before_every_check_but_the_token() {
    let app = spawn_app_with(|s| s.limits.max_devices_per_tenant = Some(1));
    let body = json!({"name": "Scanner"});
    assert_eq!(register(&app, Some(KEY), &body).status, 201);
    // The quota is now reached, yet the replay still answers 201.
    assert_eq!(register(&app, Some(KEY), &body).status, 201);
    assert_eq!(register(&app, None, &body).error_code(), "quota_exceeded");
    // A token without admin is refused first.
    let reader = post(
        &app,
        "/api/tenant/devices",
        &token_for("acme", "devices:read"),
        Some(KEY),
        &body,
    );
    assert_eq!(reader.status, 403);
}

#[test]
fn a_bad_key_is_a_400_naming_the_header_and_registers_nothing() {
    let app = spawn_app();
    for bad in ["short", &"x".repeat(256), "has spaces in the key!!"] {
        let refused = register(&app, Some(bad), &json!({"name": "Scanner"}));
        assert_eq!(refused.status, 400, "{bad}");
        assert!(
            refused.error_message().starts_with("Idempotency-Key: "),
            "{}",
            refused.error_message()
        );
    }
    assert_eq!(device_count(&app), 0);
}

#[test]
fn a_retried_rotation_returns_the_same_new_key_and_rotates_once() {
    let app = spawn_app();
    let (device, old_key) = app.register(&admin(), json!({"name": "Scanner"}));
    let path = format!(
        "/api/tenant/devices/{}/api-key",
        device["id"].as_str().unwrap()
    );
    let grace = json!({"gracePeriodSeconds": 600});
    let first = post(&app, &path, &admin(), Some(KEY), &grace);
    assert_eq!(first.status, 200);
    let again = post(&app, &path, &admin(), Some(KEY), &grace);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    let new_key = first.json()["apiKey"].as_str().unwrap().to_string();
    // One rotation: the first key is still in its grace, the new one works.
    assert_eq!(app.get("/api/device/me", &old_key).status, 200);
    assert_eq!(app.get("/api/device/me", &new_key).status, 200);
    let current = app.get(
        &format!("/api/tenant/devices/{}", device["id"].as_str().unwrap()),
        &admin(),
    );
    assert_eq!(current.header("etag"), first.header("etag"));
}

#[test]
fn the_database_alone_reveals_no_device_key_and_answers_expire() {
    let app = spawn_app();
    let body = json!({"name": "Scanner"});
    let first = register(&app, Some(KEY), &body);
    let api_key = first.json()["apiKey"].as_str().unwrap().to_string();
    let file = app.database_bytes();
    let text = String::from_utf8_lossy(&file);
    assert!(!text.contains(&api_key), "the device key is sealed");
    assert!(!text.contains(KEY), "the Idempotency-Key is not stored");

    // A day later the answer is gone: the same key registers anew.
    let store = app.store.clone();
    let pruned = actix_web::rt::System::new().block_on(async move {
        let day_later = Millis(Millis::now().0 + 24 * 3600 * 1000 + 1);
        store.prune(day_later).await.unwrap()
    });
    assert_eq!(pruned, 1);
    let later = register(&app, Some(KEY), &body);
    assert_eq!(later.status, 201);
    assert!(later.header("idempotent-replayed").is_none());
    assert_ne!(later.json()["data"]["id"], first.json()["data"]["id"]);
}
