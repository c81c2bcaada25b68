//! Fleet scale through the HTTP stack (API.md §3): streamed lists, the new
//! list parameters, `/api/tenant/stats` and the device quota.

mod common;

use std::sync::Arc;

use common::{block_on, spawn_app, spawn_app_with, token_for, TestApp};
use devicehub::auth::device_key::NewDeviceKey;
use devicehub::devices::{Millis, NewDevice};
use devicehub::store::Store;
use serde_json::{json, Value};

fn admin() -> String {
    token_for("acme", "admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

/// Registers `n` devices straight into the store, concurrently so that they
/// share commits: device `i` is named `Device i`, is inactive when `i % 10 ==
/// 0` and sits at `loc-{i % 7}`. Returns the ids in creation order.
fn seed(store: &Arc<Store>, tenant: &str, n: usize) -> Vec<String> {
    seed_numbered(store, tenant, n)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// `seed`, with each device's number `i` beside its id (id order need not
/// be number order: the registrations run at once).
fn seed_numbered(store: &Arc<Store>, tenant: &str, n: usize) -> Vec<(String, usize)> {
    let store = store.clone();
    let tenant = tenant.to_string();
    actix_web::rt::System::new().block_on(async move {
        let mut ids = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let mut tasks = Vec::new();
            for &i in chunk {
                let (store, tenant) = (store.clone(), tenant.clone());
                let body = json!({
                    "name": format!("Device {i}"),
                    "status": if i % 10 == 0 { "inactive" } else { "active" },
                    "locationIds": [format!("loc-{}", i % 7)],
                });
                tasks.push(actix_web::rt::spawn(async move {
                    let new = NewDevice::parse(body.as_object().unwrap()).unwrap();
                    let key = NewDeviceKey::generate().unwrap();
                    let device = store
                        .create(&tenant, new, key.hash, Millis::now(), None, None)
                        .await
                        .unwrap();
                    (device.id, i)
                }));
            }
            for task in tasks {
                ids.push(task.await.unwrap());
            }
        }
        ids.sort();
        ids
    })
}

fn stats(app: &TestApp, token: &str) -> Value {
    let response = app.get("/api/tenant/stats", token);
    assert_eq!(response.status, 200, "{:?}", response.body);
    response.json()["data"].clone()
}

#[test]
fn an_unlimited_list_streams_the_whole_tenant_in_order() {
    let app = spawn_app();
    let numbered = seed_numbered(&app.store, "acme", 3_000);
    let ids: Vec<String> = numbered.iter().map(|(id, _)| id.clone()).collect();
    seed(&app.store, "other", 5);

    let all = app.get("/api/tenant/devices", &reader());
    assert_eq!(all.status, 200);
    assert_eq!(
        all.header("transfer-encoding"),
        Some("chunked"),
        "streamed, not built whole"
    );
    assert_eq!(all.header("content-type"), Some("application/json"));
    assert_eq!(all.data_ids(), ids);
    assert_eq!(all.json()["hasMore"], false);

    let newest_first = app.get("/api/tenant/devices?order=desc", &reader());
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(newest_first.data_ids(), reversed);

    // Filters stream too: every tenth device is inactive.
    let inactive = app.get("/api/tenant/devices?status=inactive&order=desc", &reader());
    let expected: Vec<String> = numbered
        .iter()
        .filter(|(_, i)| i % 10 == 0)
        .map(|(id, _)| id.clone())
        .rev()
        .collect();
    assert_eq!(inactive.data_ids(), expected);

    // A filter that matches nothing still ends with a whole, empty list.
    let none = app.get("/api/tenant/devices?q=no-such-name", &reader());
    assert_eq!(none.json(), json!({"data": [], "hasMore": false}));
}

#[test]
fn several_full_lists_at_once_all_finish() {
    let app = spawn_app();
    let ids = seed(&app.store, "acme", 1_000);
    let lists: Vec<_> = (0..12)
        .map(|_| {
            let addr = app.addr;
            let token = reader();
            std::thread::spawn(move || {
                common::raw(
                    addr,
                    format!(
                        "GET /api/tenant/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
                    )
                    .as_bytes(),
                )
            })
        })
        .collect();
    for list in lists {
        assert_eq!(list.join().unwrap().data_ids(), ids);
    }
}

#[test]
fn search_order_and_check_in_filters_through_the_api() {
    let app = spawn_app();
    let (front, front_key) = app.register(&admin(), json!({"name": "Front SCANNER"}));
    let (kiosk, _) = app.register(&admin(), json!({"name": "Kiosk"}));
    let (back, _) = app.register(&admin(), json!({"name": "back scanner"}));
    let id = |d: &Value| d["id"].as_str().unwrap().to_string();

    let found = app.get("/api/tenant/devices?q=Scanner", &reader());
    assert_eq!(found.data_ids(), [id(&front), id(&back)]);
    let page = app.get(
        "/api/tenant/devices?q=scanner&order=desc&limit=1",
        &reader(),
    );
    assert_eq!(page.data_ids(), [id(&back)]);
    assert_eq!(page.json()["hasMore"], true);
    let next = app.get(
        &format!(
            "/api/tenant/devices?q=scanner&order=desc&limit=1&startingAfter={}",
            id(&back)
        ),
        &reader(),
    );
    assert_eq!(next.data_ids(), [id(&front)]);
    assert_eq!(next.json()["hasMore"], false);

    // Only the front scanner checks in.
    let me = app.get("/api/device/me", &front_key);
    assert_eq!(me.status, 200);
    let seen_at = me.json()["data"]["lastSeenAt"]
        .as_str()
        .unwrap()
        .to_string();
    let after = app.get(
        &format!("/api/tenant/devices?lastSeenAfter={seen_at}"),
        &reader(),
    );
    assert_eq!(after.data_ids(), [id(&front)]);
    let before = app.get(
        &format!("/api/tenant/devices?lastSeenBefore={seen_at}"),
        &reader(),
    );
    assert_eq!(
        before.data_ids(),
        [id(&kiosk), id(&back)],
        "never seen counts as before"
    );

    for (query, param) in [
        ("q=", "q"),
        ("order=newest", "order"),
        ("order=ASC", "order"),
        ("lastSeenBefore=yesterday", "lastSeenBefore"),
        ("lastSeenAfter=2024-13-01T00:00:00Z", "lastSeenAfter"),
        ("q=a&q=b", "q"),
    ] {
        let response = app.get(&format!("/api/tenant/devices?{query}"), &reader());
        assert_eq!(response.status, 400, "{query}");
        assert!(
            response.error_message().starts_with(&format!("{param}: ")),
            "{query}: {}",
            response.error_message()
        );
    }
    let long = format!("/api/tenant/devices?q={}", "x".repeat(201));
    assert_eq!(app.get(&long, &reader()).status, 400);
}

#[test]
fn stats_count_every_status_exactly_per_tenant() {
    let app = spawn_app();
    let zero = json!({"total": 0, "active": 0, "inactive": 0, "revoked": 0});
    assert_eq!(stats(&app, &reader()), zero);
    let (a, _) = app.register(&admin(), json!({"name": "a"}));
    let (b, _) = app.register(&admin(), json!({"name": "b", "status": "inactive"}));
    app.register(&admin(), json!({"name": "c"}));
    let path = |d: &Value| format!("/api/tenant/devices/{}", d["id"].as_str().unwrap());
    assert_eq!(
        app.send_json("PATCH", &path(&b), &admin(), &json!({"status": "active"}))
            .status,
        200
    );
    assert_eq!(app.send("DELETE", &path(&a), &admin()).status, 200);
    assert_eq!(app.send("DELETE", &path(&a), &admin()).status, 200);
    // A refused write changes no count.
    let refused = app.send_json("PATCH", &path(&a), &admin(), &json!({"status": "inactive"}));
    assert_eq!(refused.status, 409);
    assert_eq!(
        stats(&app, &reader()),
        json!({"total": 3, "active": 2, "inactive": 0, "revoked": 1})
    );
    assert_eq!(stats(&app, &token_for("globex", "devices:read")), zero);
    assert_eq!(app.get("/api/tenant/stats", "nonsense").status, 401);
    assert_eq!(app.send("POST", "/api/tenant/stats", &admin()).status, 405);
    block_on(app.store.verify_indexes()).unwrap();
}

#[test]
fn registering_past_the_quota_is_refused_and_registers_nothing() {
    let app = spawn_app_with(|s| s.limits.max_devices_per_tenant = Some(2));
    let (first, _) = app.register(&admin(), json!({"name": "a"}));
    app.register(&admin(), json!({"name": "b"}));
    // Revoked devices still count.
    app.send(
        "DELETE",
        &format!("/api/tenant/devices/{}", first["id"].as_str().unwrap()),
        &admin(),
    );
    let over = app.send_json(
        "POST",
        "/api/tenant/devices",
        &admin(),
        &json!({"name": "c"}),
    );
    assert_eq!(over.status, 403);
    assert_eq!(over.error_code(), "quota_exceeded");
    assert!(over.header("www-authenticate").is_none());
    // A bad body is a 400 before the quota is looked at.
    let bad = app.send_json(
        "POST",
        "/api/tenant/devices",
        &admin(),
        &json!({"name": ""}),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(stats(&app, &reader())["total"], 2);
    assert_eq!(
        app.get("/api/tenant/devices", &reader()).data_ids().len(),
        2
    );
    // Another tenant is not affected.
    app.register(&token_for("globex", "admin"), json!({"name": "g"}));
}
