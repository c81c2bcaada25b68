//! The Devices API through the real HTTP stack (API.md §3-§6).

mod common;

use common::{spawn_app, token_for, TestApp};
use serde_json::{json, Value};

fn admin() -> String {
    token_for("acme", "admin")
}

fn reader() -> String {
    token_for("acme", "devices:read")
}

fn etag_of(app: &TestApp, path: &str) -> String {
    app.get(path, &reader())
        .header("etag")
        .expect("an ETag")
        .to_string()
}

fn path_of(device: &Value) -> String {
    format!("/api/tenant/devices/{}", device["id"].as_str().unwrap())
}

const DEVICE_FIELDS: [&str; 9] = [
    "id",
    "name",
    "status",
    "locationIds",
    "pimEnabled",
    "pimSegmentIds",
    "createdAt",
    "updatedAt",
    "lastSeenAt",
];

fn assert_device_shape(device: &Value) {
    let object = device.as_object().expect("a device object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = DEVICE_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "exactly the contract's fields");
    for stamp in ["createdAt", "updatedAt"] {
        let text = device[stamp].as_str().unwrap();
        assert_eq!(text.len(), 24, "{text}");
        assert!(text.ends_with('Z') && text.as_bytes()[19] == b'.', "{text}");
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }
}

#[test]
fn register_get_list_and_check_in_as_a_user_would() {
    let app = spawn_app();
    let created = app.send_json(
        "POST",
        "/api/tenant/devices",
        &admin(),
        &json!({"name": "  Store Scanner 1 ", "locationIds": ["loc_xyz", "loc_xyz", "loc_b"], "pimSegmentIds": ["seg_001"]}),
    );
    assert_eq!(created.status, 201);
    let body = created.json();
    let device = &body["data"];
    assert_device_shape(device);
    assert_eq!(device["name"], "Store Scanner 1");
    assert_eq!(device["status"], "active");
    assert_eq!(device["locationIds"], json!(["loc_xyz", "loc_b"]));
    assert_eq!(device["pimEnabled"], false);
    assert_eq!(device["lastSeenAt"], Value::Null);
    assert_eq!(device["createdAt"], device["updatedAt"]);
    let id = device["id"].as_str().unwrap();
    assert!(id.starts_with("dev_") && id.len() == 30, "{id}");
    assert_eq!(created.header("location"), Some(path_of(device).as_str()));
    let key = body["apiKey"].as_str().unwrap();
    assert!(key.starts_with("dhk_"));

    let fetched = app.get(&path_of(device), &reader());
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), json!({"data": device}));
    let etag = fetched.header("etag").unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'));

    let list = app.get("/api/tenant/devices", &reader());
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), json!({"data": [device], "hasMore": false}));

    let me = app.get("/api/device/me", key);
    assert_eq!(me.status, 200);
    let seen = me.json()["data"].clone();
    assert_device_shape(&seen);
    assert_eq!(seen["id"], device["id"]);
    assert!(seen["lastSeenAt"].is_string());

    // The check-in shows at once to tenant reads, and changes neither
    // updatedAt nor the ETag.
    let after = app.get(&path_of(device), &reader());
    assert_eq!(after.json()["data"]["lastSeenAt"], seen["lastSeenAt"]);
    assert_eq!(after.json()["data"]["updatedAt"], device["updatedAt"]);
    assert_eq!(after.header("etag"), Some(etag.as_str()));
}

#[test]
fn registration_applies_defaults_and_every_field() {
    let app = spawn_app();
    let (device, _) = app.register(
        &admin(),
        json!({"name": "B", "status": "inactive", "pimEnabled": true, "pimSegmentIds": ["s1", "s2", "s1"]}),
    );
    assert_eq!(device["status"], "inactive");
    assert_eq!(device["pimEnabled"], true);
    assert_eq!(device["pimSegmentIds"], json!(["s1", "s2"]));
    assert_eq!(device["locationIds"], json!([]));
}

#[test]
fn field_rules_refuse_bad_input_naming_the_field_and_store_nothing() {
    let app = spawn_app();
    let long_name = "x".repeat(201);
    let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
    let cases = [
        (json!({}), "name"),
        (json!({"name": "   "}), "name"),
        (json!({"name": long_name}), "name"),
        (json!({"name": "a\u{0}b"}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"name": null}), "name"),
        (json!({"name": "ok", "status": "revoked"}), "status"),
        (json!({"name": "ok", "status": "paused"}), "status"),
        (json!({"name": "ok", "pimEnabled": "true"}), "pimEnabled"),
        (json!({"name": "ok", "locationIds": "loc"}), "locationIds"),
        (json!({"name": "ok", "locationIds": many}), "locationIds"),
        (
            json!({"name": "ok", "locationIds": ["a", "b", "no spaces"]}),
            "locationIds[2]",
        ),
        (
            json!({"name": "ok", "pimSegmentIds": [""]}),
            "pimSegmentIds[0]",
        ),
        (
            json!({"name": "ok", "pimSegmentIds": null}),
            "pimSegmentIds",
        ),
        (json!({"name": "ok", "colour": "red"}), "colour"),
        (json!({"name": "ok", "id": "dev_x"}), "id"),
    ];
    for (body, field) in cases {
        let response = app.send_json("POST", "/api/tenant/devices", &admin(), &body);
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.error_code(), "invalid_request");
        let message = response.error_message();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{body} -> {message}"
        );
    }
    for raw_body in [&b"{\"name\": "[..], b"[1,2]", b"\"name\"", b""] {
        let auth = format!("Bearer {}", admin());
        let response = app.request(
            "POST",
            "/api/tenant/devices",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(raw_body),
        );
        assert_eq!(response.status, 400, "{raw_body:?}");
        assert!(response.error_message().starts_with("body: "));
    }
    let list = app.get("/api/tenant/devices", &reader()).json();
    assert_eq!(list["data"], json!([]), "nothing was stored");
}

#[test]
fn patch_changes_fields_and_version_only_when_values_change() {
    let app = spawn_app();
    let (device, _) = app.register(&admin(), json!({"name": "A", "locationIds": ["l1"]}));
    let path = path_of(&device);
    let etag0 = etag_of(&app, &path);

    let empty = app.send_json("PATCH", &path, &admin(), &json!({}));
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["data"], device);
    assert_eq!(empty.header("etag"), Some(etag0.as_str()));

    let same = app.send_json(
        "PATCH",
        &path,
        &admin(),
        &json!({"name": " A ", "locationIds": ["l1", "l1"]}),
    );
    assert_eq!(same.header("etag"), Some(etag0.as_str()));
    assert_eq!(same.json()["data"]["updatedAt"], device["updatedAt"]);

    std::thread::sleep(std::time::Duration::from_millis(5));
    let changed = app.send_json(
        "PATCH",
        &path,
        &admin(),
        &json!({"name": "Kasse 2", "status": "inactive", "pimEnabled": true, "pimSegmentIds": ["seg_001"], "locationIds": []}),
    );
    assert_eq!(changed.status, 200);
    let updated = changed.json()["data"].clone();
    assert_device_shape(&updated);
    assert_eq!(updated["name"], "Kasse 2");
    assert_eq!(updated["status"], "inactive");
    assert_eq!(updated["pimEnabled"], true);
    assert_eq!(updated["pimSegmentIds"], json!(["seg_001"]));
    assert_eq!(updated["locationIds"], json!([]));
    assert_eq!(updated["createdAt"], device["createdAt"]);
    assert_ne!(updated["updatedAt"], device["updatedAt"]);
    let etag1 = changed.header("etag").unwrap();
    assert_ne!(etag1, etag0);
    assert_eq!(app.get(&path, &reader()).json()["data"], updated);

    let bad = app.send_json(
        "PATCH",
        &path,
        &admin(),
        &json!({"name": "ok", "pimEnabled": null}),
    );
    assert_eq!(bad.status, 400);
    assert!(bad.error_message().starts_with("pimEnabled:"));
    assert_eq!(
        app.get(&path, &reader()).json()["data"],
        updated,
        "a refused patch changes nothing"
    );
}

#[test]
fn if_match_makes_a_patch_conditional() {
    let app = spawn_app();
    let (device, _) = app.register(&admin(), json!({"name": "A"}));
    let path = path_of(&device);
    let etag = etag_of(&app, &path);
    let auth = format!("Bearer {}", admin());
    let patch = |if_match: &str, name: &str| {
        app.request(
            "PATCH",
            &path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("If-Match", if_match),
            ],
            Some(json!({"name": name}).to_string().as_bytes()),
        )
    };
    let first = patch(&etag, "B");
    assert_eq!(first.status, 200);
    let stale = patch(&etag, "C");
    assert_eq!(stale.status, 412);
    assert_eq!(stale.error_code(), "precondition_failed");
    assert_eq!(app.get(&path, &reader()).json()["data"]["name"], "B");
    let weak = patch(&format!("W/{}", first.header("etag").unwrap()), "C");
    assert_eq!(weak.status, 412, "If-Match compares strongly");
    assert_eq!(patch("*", "D").status, 200);
    let fresh = etag_of(&app, &path);
    assert_eq!(patch(&format!("\"other\", {fresh}"), "E").status, 200);
}

#[test]
fn revocation_is_idempotent_final_and_kills_the_key_at_once() {
    let app = spawn_app();
    let (device, key) = app.register(&admin(), json!({"name": "A"}));
    let path = path_of(&device);
    assert_eq!(app.get("/api/device/me", &key).status, 200);
    let etag = etag_of(&app, &path);

    let revoked = app.send("DELETE", &path, &admin());
    assert_eq!(revoked.status, 200);
    assert_eq!(revoked.json(), json!({"success": true}));
    let after = app.get(&path, &reader());
    assert_eq!(after.json()["data"]["status"], "revoked");
    let revoked_etag = after.header("etag").unwrap().to_string();
    assert_ne!(revoked_etag, etag);

    let me = app.get("/api/device/me", &key);
    assert_eq!(me.status, 401);
    assert_eq!(me.error_code(), "device_revoked");
    assert!(me.header("www-authenticate").unwrap().starts_with("Bearer"));

    let again = app.send("DELETE", &path, &admin());
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), json!({"success": true}));
    assert_eq!(
        app.get(&path, &reader()).header("etag"),
        Some(revoked_etag.as_str())
    );

    for response in [
        app.send_json("PATCH", &path, &admin(), &json!({"status": "active"})),
        app.send_json("PATCH", &path, &admin(), &json!({})),
        app.send("POST", &format!("{path}/api-key"), &admin()),
    ] {
        assert_eq!(response.status, 409);
        assert_eq!(response.error_code(), "device_revoked");
    }
    assert_eq!(
        app.get(&path, &reader()).json()["data"]["status"],
        "revoked"
    );
}

#[test]
fn rotation_issues_a_new_key_and_the_old_one_stops_at_once() {
    let app = spawn_app();
    let (device, old_key) = app.register(&admin(), json!({"name": "A"}));
    let path = path_of(&device);
    let etag = etag_of(&app, &path);
    let rotated = app.send("POST", &format!("{path}/api-key"), &admin());
    assert_eq!(rotated.status, 200);
    let body = rotated.json();
    assert_device_shape(&body["data"]);
    let new_key = body["apiKey"].as_str().unwrap();
    assert!(new_key.starts_with("dhk_"));
    assert_ne!(new_key, old_key);
    assert_ne!(rotated.header("etag"), Some(etag.as_str()));
    assert_eq!(
        app.get("/api/device/me", &old_key).error_code(),
        "unauthorized"
    );
    assert_eq!(app.get("/api/device/me", new_key).status, 200);
}

#[test]
fn device_keys_for_inactive_unknown_and_malformed_devices() {
    let app = spawn_app();
    let (device, key) = app.register(&admin(), json!({"name": "A", "status": "inactive"}));
    let inactive = app.get("/api/device/me", &key);
    assert_eq!(inactive.status, 403);
    assert_eq!(inactive.error_code(), "device_inactive");
    assert_eq!(
        app.get(&path_of(&device), &reader()).json()["data"]["lastSeenAt"],
        Value::Null
    );

    let unknown_key = format!("dhk_{}", "A".repeat(43));
    for bad in [unknown_key.as_str(), "dhk_short", "not-a-key", &admin()] {
        let response = app.get("/api/device/me", bad);
        assert_eq!(response.status, 401, "{bad}");
        assert_eq!(response.error_code(), "unauthorized");
        assert!(response.header("www-authenticate").is_some());
    }
    let none = app.request("GET", "/api/device/me", &[], None);
    assert_eq!(none.status, 401);
    // A device key is not an access token.
    let as_token = app.get("/api/tenant/devices", &key);
    assert_eq!(as_token.status, 401);
    assert_eq!(as_token.error_code(), "unauthorized");
}

#[test]
fn tenants_are_isolated_and_cannot_tell_foreign_devices_from_missing_ones() {
    let app = spawn_app();
    let (theirs, _) = app.register(&token_for("other", "admin"), json!({"name": "Theirs"}));
    let (ours, _) = app.register(&admin(), json!({"name": "Ours"}));
    let list = app.get("/api/tenant/devices", &reader()).json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], ours["id"]);

    let foreign = path_of(&theirs);
    let missing = format!("/api/tenant/devices/dev_{}", ulid::Ulid::new());
    for path in [&foreign, &missing] {
        let responses = [
            app.get(path, &reader()),
            app.send_json("PATCH", path, &admin(), &json!({"name": "x"})),
            app.send("DELETE", path, &admin()),
            app.send("POST", &format!("{path}/api-key"), &admin()),
        ];
        for response in responses {
            assert_eq!(response.status, 404);
            assert_eq!(
                response.json(),
                json!({"error": {"code": "not_found", "message": "not found"}})
            );
        }
    }
    let theirs_now = app
        .get(&foreign, &token_for("other", "devices:read"))
        .json();
    assert_eq!(theirs_now["data"], theirs, "untouched by the other tenant");
    // A malformed id is simply a device that does not exist.
    assert_eq!(app.get("/api/tenant/devices/abc", &reader()).status, 404);
}

fn ids(response: &common::Response) -> Vec<String> {
    response.data_ids()
}

#[test]
fn lists_page_in_creation_order_with_filters() {
    let app = spawn_app();
    let mut all = Vec::new();
    for i in 0..7 {
        let status = if i % 3 == 0 { "inactive" } else { "active" };
        let (d, _) = app.register(
            &admin(),
            json!({"name": format!("d{i}"), "status": status, "locationIds": [format!("loc-{}", i % 2)]}),
        );
        all.push(d["id"].as_str().unwrap().to_string());
    }
    app.send(
        "DELETE",
        &format!("/api/tenant/devices/{}", all[6]),
        &admin(),
    );

    let everything = app.get("/api/tenant/devices", &reader());
    assert_eq!(ids(&everything), all);
    assert_eq!(everything.json()["hasMore"], false);

    let mut collected = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/tenant/devices?limit=3&startingAfter={c}"),
            None => "/api/tenant/devices?limit=3".to_string(),
        };
        let page = app.get(&path, &reader());
        let page_ids = ids(&page);
        collected.extend(page_ids.clone());
        if page.json()["hasMore"] == false {
            break;
        }
        assert_eq!(page_ids.len(), 3);
        cursor = page_ids.last().cloned();
    }
    assert_eq!(collected, all);

    let exact = app.get("/api/tenant/devices?limit=7", &reader());
    assert_eq!(exact.json()["hasMore"], false, "no eighth device");
    let inactive = app.get("/api/tenant/devices?status=inactive", &reader());
    assert_eq!(ids(&inactive), vec![all[0].clone(), all[3].clone()]);
    let revoked = app.get("/api/tenant/devices?status=revoked", &reader());
    assert_eq!(ids(&revoked), vec![all[6].clone()]);
    let loc1 = app.get("/api/tenant/devices?locationId=loc-1&limit=2", &reader());
    assert_eq!(ids(&loc1), vec![all[1].clone(), all[3].clone()]);
    assert_eq!(loc1.json()["hasMore"], true);
    let loc1_rest = app.get(
        &format!(
            "/api/tenant/devices?locationId=loc-1&limit=2&startingAfter={}",
            all[3]
        ),
        &reader(),
    );
    assert_eq!(ids(&loc1_rest), vec![all[5].clone()]);
    assert_eq!(loc1_rest.json()["hasMore"], false);
    // A cursor that names no device of this tenant is a position all the same.
    let ghost = format!("dev_{}", ulid::Ulid::nil());
    assert_eq!(
        ids(&app.get(
            &format!("/api/tenant/devices?startingAfter={ghost}"),
            &reader()
        )),
        all
    );

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("status=gone", "status"),
        ("locationId=", "locationId"),
        ("locationId=a%20b", "locationId"),
        ("startingAfter=dev_123", "startingAfter"),
        ("sort=name", "sort"),
    ] {
        let response = app.get(&format!("/api/tenant/devices?{query}"), &reader());
        assert_eq!(response.status, 400, "{query}");
        assert_eq!(response.error_code(), "invalid_request");
        assert!(
            response.error_message().starts_with(&format!("{param}: ")),
            "{query}"
        );
    }
}

#[test]
fn scopes_decide_who_may_read_and_who_may_write() {
    let app = spawn_app();
    let (device, _) = app.register(&admin(), json!({"name": "A"}));
    let path = path_of(&device);
    let reader = reader();
    let nobody = token_for("acme", "profile devices:write");
    for token in [&reader, &nobody] {
        for response in [
            app.send_json("POST", "/api/tenant/devices", token, &json!({"name": "x"})),
            app.send_json("PATCH", &path, token, &json!({"name": "x"})),
            app.send("DELETE", &path, token),
            app.send("POST", &format!("{path}/api-key"), token),
        ] {
            assert_eq!(response.status, 403);
            assert_eq!(response.error_code(), "insufficient_scope");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"devicehub\", error=\"insufficient_scope\", scope=\"admin\"")
            );
        }
    }
    let denied = app.get(&path, &nobody);
    assert_eq!(denied.status, 403);
    assert!(denied
        .header("www-authenticate")
        .unwrap()
        .contains("scope=\"devices:read\""));
    assert_eq!(app.get(&path, &admin()).status, 200, "admin reads too");
    assert_eq!(app.get(&path, &reader).json()["data"]["name"], "A");
}

#[test]
fn every_error_is_a_json_envelope_routes_and_methods_included() {
    let app = spawn_app();
    let unknown = app.request("GET", "/api/tenant/nothing", &[], None);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "not_found");
    for (method, path, allow) in [
        ("PUT", "/api/tenant/devices", "GET, POST"),
        ("POST", "/api/tenant/devices/dev_x", "GET, PATCH, DELETE"),
        ("GET", "/api/tenant/devices/dev_x/api-key", "POST"),
        ("DELETE", "/api/device/me", "GET"),
        ("POST", "/healthz", "GET"),
    ] {
        let response = app.request(method, path, &[], None);
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(response.error_code(), "method_not_allowed");
        assert_eq!(response.header("allow"), Some(allow));
    }
    let no_token = app.request("GET", "/api/tenant/devices", &[], None);
    assert_eq!(no_token.status, 401);
    assert_eq!(no_token.error_code(), "unauthorized");
    assert_eq!(
        no_token.header("www-authenticate"),
        Some("Bearer realm=\"devicehub\"")
    );
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "bearer not.a.jwt",
    ] {
        let response = app.request(
            "GET",
            "/api/tenant/devices",
            &[("Authorization", header)],
            None,
        );
        assert_eq!(response.status, 401, "{header}");
        assert!(response
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""));
    }
}

#[test]
fn bodies_must_be_json_and_at_most_64_kib() {
    let app = spawn_app();
    let auth = format!("Bearer {}", admin());
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        let response = app.request(
            "POST",
            "/api/tenant/devices",
            &headers,
            Some(b"{\"name\":\"x\"}"),
        );
        assert_eq!(response.status, 415, "{content_type:?}");
        assert_eq!(response.error_code(), "unsupported_media_type");
    }
    let with_charset = app.request(
        "POST",
        "/api/tenant/devices",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        Some(b"{\"name\":\"x\"}"),
    );
    assert_eq!(with_charset.status, 201);

    let padding = " ".repeat(64 * 1024);
    let too_big = format!("{{\"name\":\"x\"{padding}}}");
    let response = app.request(
        "POST",
        "/api/tenant/devices",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(too_big.as_bytes()),
    );
    assert_eq!(response.status, 413);
    assert_eq!(response.error_code(), "payload_too_large");
    let just_fits = format!("{{\"name\":\"y\"{}}}", " ".repeat(64 * 1024 - 12));
    assert_eq!(just_fits.len(), 64 * 1024);
    let fits = app.request(
        "POST",
        "/api/tenant/devices",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(just_fits.as_bytes()),
    );
    assert_eq!(fits.status, 201);

    // Sent chunked, with no length announced, the limit holds all the same.
    let chunk = format!("{:x}\r\n{}\r\n", 70 * 1024, "a".repeat(70 * 1024));
    let request = format!(
        "POST /api/tenant/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n"
    );
    let chunked = common::raw(app.addr, request.as_bytes());
    assert_eq!(chunked.status, 413);
    assert_eq!(
        app.get("/api/tenant/devices", &reader()).json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn when_several_errors_apply_the_contract_order_wins() {
    let app = spawn_app();
    let (device, _) = app.register(&admin(), json!({"name": "A"}));
    let path = path_of(&device);
    let reader_auth = format!("Bearer {}", reader());
    let admin_auth = format!("Bearer {}", admin());
    let big = vec![b' '; 70 * 1024];

    // 405 before 401.
    assert_eq!(app.request("PUT", &path, &[], None).status, 405);
    // 401 before 415.
    assert_eq!(
        app.request(
            "PATCH",
            &path,
            &[("Content-Type", "text/plain")],
            Some(b"x")
        )
        .status,
        401
    );
    // 403 before 415.
    let r = app.request(
        "PATCH",
        &path,
        &[
            ("Authorization", &reader_auth),
            ("Content-Type", "text/plain"),
        ],
        Some(b"x"),
    );
    assert_eq!(r.status, 403);
    // 415 before 413.
    let r = app.request(
        "PATCH",
        &path,
        &[
            ("Authorization", &admin_auth),
            ("Content-Type", "text/plain"),
        ],
        Some(&big),
    );
    assert_eq!(r.status, 415);
    // 413 before 400.
    let r = app.request(
        "PATCH",
        &path,
        &[
            ("Authorization", &admin_auth),
            ("Content-Type", "application/json"),
        ],
        Some(&big),
    );
    assert_eq!(r.status, 413);
    // 400 before 404.
    let missing = format!("/api/tenant/devices/dev_{}", ulid::Ulid::new());
    let r = app.send_json("PATCH", &missing, &admin(), &json!({"bogus": 1}));
    assert_eq!(r.status, 400);
    // 409 before 412.
    app.send("DELETE", &path, &admin());
    let r = app.request(
        "PATCH",
        &path,
        &[
            ("Authorization", &admin_auth),
            ("Content-Type", "application/json"),
            ("If-Match", "\"stale\""),
        ],
        Some(b"{}"),
    );
    assert_eq!(r.status, 409);
}

#[test]
fn health_and_openapi_need_no_token() {
    let app = spawn_app();
    let health = app.request("GET", "/healthz", &[], None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    let spec = app.request("GET", "/openapi.json", &[], None);
    assert_eq!(spec.status, 200);
    let spec = spec.json();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    // Every route the server answers is described, with every method it allows.
    for (path, allow) in devicehub::http::ROUTES {
        let item = &spec["paths"][path];
        assert!(item.is_object(), "{path} is not in the spec");
        for method in allow.split(", ") {
            assert!(
                item[method.to_lowercase()].is_object(),
                "{method} {path} is not in the spec"
            );
        }
    }
}

#[test]
fn a_damaged_record_is_an_opaque_500() {
    if common::redb_only("a_damaged_record_is_an_opaque_500") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings_in(dir.path());
    let id = format!("dev_{}", ulid::Ulid::new());
    {
        // Made with redb directly: a device record that is not a record.
        let store = devicehub::store::Embedded::open(&settings.storage_path).unwrap();
        drop(store);
        let db = redb::Database::create(&settings.storage_path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(devicehub::store::tables::DEVICES)
            .unwrap()
            .insert(("acme", id.as_str()), b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let app: TestApp = common::spawn_app_in(dir, settings).unwrap();
    let response = app.get(&format!("/api/tenant/devices/{id}"), &reader());
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json(),
        json!({"error": {"code": "internal", "message": "internal error"}})
    );
}
