//! Access-token verification (API.md §2) through the HTTP stack: every way a
//! token can be wrong, and the public-key modes.

mod common;

use base64::Engine;
use common::{spawn_app, spawn_app_with, TestApp, SECRET};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(extra: Value) -> Value {
    let mut base = json!({"tenant_id": "acme", "scope": "devices:read", "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn hs(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn hs256(claims: &Value) -> String {
    hs(Algorithm::HS256, SECRET.as_bytes(), claims)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The status of a device list with `token`, checking 401s are well formed.
fn status_with(app: &TestApp, token: &str) -> u16 {
    let response = app.get("/api/tenant/devices", token);
    if response.status == 401 {
        assert_eq!(response.error_code(), "unauthorized");
        let challenge = response.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
    response.status
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn time_claims_are_enforced_with_30_seconds_of_leeway() {
    let app = spawn_app();
    assert_eq!(status_with(&app, &hs256(&claims(json!({})))), 200);
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"exp": now() - 120})))),
        401
    );
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"exp": now() - 10})))),
        200
    );
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"exp": null})))),
        401
    );
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"nbf": now() + 120})))),
        401
    );
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"nbf": now() + 10})))),
        200
    );
    assert_eq!(
        status_with(&app, &hs256(&claims(json!({"nbf": now() - 10})))),
        200
    );
    let expired = app.get(
        "/api/tenant/devices",
        &hs256(&claims(json!({"exp": now() - 120}))),
    );
    assert!(expired.error_message().contains("expired"));
}

#[test]
fn signatures_algorithms_and_tampering_are_refused() {
    let app = spawn_app();
    let good = hs256(&claims(json!({})));
    assert_eq!(
        status_with(
            &app,
            &hs(
                Algorithm::HS256,
                b"another-secret-that-is-long-enough!",
                &claims(json!({}))
            )
        ),
        401
    );
    assert_eq!(
        status_with(
            &app,
            &hs(Algorithm::HS384, SECRET.as_bytes(), &claims(json!({})))
        ),
        401
    );
    assert_eq!(
        status_with(
            &app,
            &hs(Algorithm::HS512, SECRET.as_bytes(), &claims(json!({})))
        ),
        401
    );

    let parts: Vec<&str> = good.split('.').collect();
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(
        status_with(&app, &format!("{none_header}.{}.", parts[1])),
        401
    );
    assert_eq!(
        status_with(&app, &format!("{none_header}.{}.{}", parts[1], parts[2])),
        401
    );

    // Another tenant in the payload, the original signature.
    let forged = b64(claims(json!({"tenant_id": "other", "scope": "admin"}))
        .to_string()
        .as_bytes());
    assert_eq!(
        status_with(&app, &format!("{}.{forged}.{}", parts[0], parts[2])),
        401
    );
    assert_eq!(
        status_with(&app, &format!("{}.{}", parts[0], parts[1])),
        401
    );
    assert_eq!(status_with(&app, "a.b.c"), 401);
    assert_eq!(status_with(&app, &good[..good.len() - 2]), 401);
    // Headers that point elsewhere for keys are ignored, not followed.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("attacker".into());
    header.jku = Some("http://127.0.0.1:1/jwks".into());
    header.x5u = Some("http://127.0.0.1:1/cert.pem".into());
    let with_kid = encode(
        &header,
        &claims(json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(status_with(&app, &with_kid), 200);
}

#[test]
fn tenant_id_is_required_and_must_be_a_non_empty_string() {
    let app = spawn_app();
    for tenant in [Value::Null, json!(""), json!(7), json!(["acme"])] {
        let token = hs256(&claims(json!({ "tenant_id": tenant.clone() })));
        assert_eq!(status_with(&app, &token), 401, "{tenant}");
    }
}

#[test]
fn scope_is_read_first_then_scp_as_string_or_array() {
    let app = spawn_app();
    let with = |extra: Value| hs256(&claims(extra));
    assert_eq!(
        status_with(&app, &with(json!({"scope": null, "scp": "devices:read"}))),
        200
    );
    assert_eq!(
        status_with(
            &app,
            &with(json!({"scope": null, "scp": ["openid", "devices:read"]}))
        ),
        200
    );
    assert_eq!(
        app.get("/api/tenant/devices", &with(json!({"scope": null})))
            .status,
        403
    );
    // When scope is present, scp is not read.
    assert_eq!(
        app.get(
            "/api/tenant/devices",
            &with(json!({"scope": "profile", "scp": "admin"}))
        )
        .status,
        403
    );
    assert_eq!(
        app.get(
            "/api/tenant/devices",
            &with(json!({"scope": "devices:readonly"}))
        )
        .status,
        403
    );
    assert_eq!(
        status_with(&app, &with(json!({"scope": ["devices:read"]}))),
        401
    );
    assert_eq!(
        status_with(&app, &with(json!({"scope": null, "scp": [1]}))),
        401
    );
    let admin_by_scp = with(json!({"scope": null, "scp": ["admin"]}));
    let created = app.send_json(
        "POST",
        "/api/tenant/devices",
        &admin_by_scp,
        &json!({"name": "x"}),
    );
    assert_eq!(created.status, 201);
}

#[test]
fn issuer_and_audience_are_ignored_unless_configured() {
    let app = spawn_app();
    let token = hs256(&claims(json!({"iss": "https://anyone", "aud": "whatever"})));
    assert_eq!(status_with(&app, &token), 200);
}

#[test]
fn issuer_and_audience_must_match_when_configured() {
    let app = spawn_app_with(|s| {
        s.auth.issuer = Some("https://id.example".into());
        s.auth.audience = Some("devicehub".into());
    });
    let with = |extra: Value| hs256(&claims(extra));
    assert_eq!(
        status_with(
            &app,
            &with(json!({"iss": "https://id.example", "aud": "devicehub"}))
        ),
        200
    );
    assert_eq!(
        status_with(
            &app,
            &with(json!({"iss": "https://id.example", "aud": ["other", "devicehub"]}))
        ),
        200
    );
    assert_eq!(
        status_with(
            &app,
            &with(json!({"iss": "https://evil", "aud": "devicehub"}))
        ),
        401
    );
    assert_eq!(
        status_with(
            &app,
            &with(json!({"iss": "https://id.example", "aud": "other"}))
        ),
        401
    );
    assert_eq!(status_with(&app, &with(json!({"aud": "devicehub"}))), 401);
    assert_eq!(
        status_with(&app, &with(json!({"iss": "https://id.example"}))),
        401
    );
    let wrong = app.get(
        "/api/tenant/devices",
        &with(json!({"iss": "https://evil", "aud": "devicehub"})),
    );
    assert!(wrong.error_message().contains("issuer"));
}

#[test]
fn oversized_tokens_get_a_clear_4xx() {
    let app = spawn_app();
    let huge = hs256(&claims(json!({"padding": "x".repeat(40_000)})));
    assert!(huge.len() > devicehub::auth::guard::MAX_CREDENTIAL_BYTES);
    let response = app.get("/api/tenant/devices", &huge);
    assert_eq!(response.status, 401);
    assert!(response.error_message().contains("too large"));
}

fn public_key_app(public: &str) -> TestApp {
    let path = format!("{}/tests/fixtures/{public}", env!("CARGO_MANIFEST_DIR"));
    spawn_app_with(|s| {
        s.auth.hs256_secret = None;
        s.auth.public_key_file = Some(path.into());
    })
}

#[test]
fn public_key_modes_verify_their_own_algorithm_only() {
    let cases = [
        (
            "rsa",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap(),
        ),
        (
            "ec",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&fixture("ec-private.pem")).unwrap(),
        ),
        (
            "ed25519",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&fixture("ed25519-private.pem")).unwrap(),
        ),
    ];
    for (name, alg, key) in cases {
        let public = format!("{name}-public.pem");
        let app = public_key_app(&public);
        let token = encode(&Header::new(alg), &claims(json!({})), &key).unwrap();
        assert_eq!(status_with(&app, &token), 200, "{name}");
        // Algorithm confusion: an HMAC keyed with the public key itself.
        let confused = hs(Algorithm::HS256, &fixture(&public), &claims(json!({})));
        assert_eq!(status_with(&app, &confused), 401, "{name}");
        // The shared-secret kind is not accepted in public-key mode.
        assert_eq!(status_with(&app, &hs256(&claims(json!({})))), 401, "{name}");
    }
    // A token signed by another key of the same type.
    let app = public_key_app("ec-public.pem");
    let other = jsonwebtoken::EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &claims(json!({})), &other).unwrap();
    assert_eq!(status_with(&app, &token), 401);
}

#[test]
fn unusable_public_keys_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let p384 = format!(
        "{}/tests/fixtures/ec-p384-public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    for path in [garbage, dir.path().join("missing.pem"), p384.into()] {
        let run = tempfile::tempdir().unwrap();
        let mut settings = common::settings_in(run.path());
        settings.auth.hs256_secret = None;
        settings.auth.public_key_file = Some(path.clone());
        let err = common::spawn_app_in(run, settings)
            .err()
            .expect("must refuse");
        assert!(err.starts_with("auth.public_key_file:"), "{path:?}: {err}");
    }
}

#[test]
fn scope_words_are_split_at_spaces_only() {
    let app = spawn_app();
    let register = |scope: &str| {
        let token = hs256(&claims(json!({ "scope": scope })));
        app.send_json("POST", "/api/tenant/devices", &token, &json!({"name": "x"}))
            .status
    };
    assert_eq!(register("x\tadmin"), 403, "a tab does not separate scopes");
    assert_eq!(register("x\nadmin"), 403);
    assert_eq!(register("devices:read  admin"), 201);
}

#[test]
fn tenant_id_is_1_to_128_characters_without_control_characters() {
    let app = spawn_app();
    let with = |tenant: &str| status_with(&app, &hs256(&claims(json!({ "tenant_id": tenant }))));
    assert_eq!(with(&"t".repeat(128)), 200);
    assert_eq!(with(&"ü".repeat(128)), 200, "counted in characters");
    assert_eq!(with(&"t".repeat(129)), 401);
    assert_eq!(with("acme\u{0}"), 401);
    assert_eq!(with("acme\u{85}"), 401);
    let response = app.get(
        "/api/tenant/devices",
        &hs256(&claims(json!({"tenant_id": "a\nb"}))),
    );
    assert!(response.error_message().contains("tenant_id"));
}

#[test]
fn a_token_whose_header_has_crit_is_refused() {
    let app = spawn_app();
    let sign = |crit: Option<Vec<String>>| {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = crit;
        encode(
            &header,
            &claims(json!({})),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(status_with(&app, &sign(None)), 200);
    for crit in [vec!["exp".to_string()], vec!["b64".to_string()], vec![]] {
        let response = app.get("/api/tenant/devices", &sign(Some(crit.clone())));
        assert_eq!(response.status, 401, "{crit:?}");
        assert!(response.error_message().contains("crit"), "{crit:?}");
    }
}

#[test]
fn a_credential_with_non_ascii_characters_is_named_as_such() {
    let app = spawn_app();
    let raw = |value: &[u8]| {
        let mut request =
            b"GET /api/tenant/devices HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
                .to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n\r\n");
        common::raw(app.addr, &request)
    };
    let placeholder = raw("Bearer dhk_\u{2026}".as_bytes());
    assert_eq!(placeholder.status, 401);
    assert_eq!(placeholder.error_code(), "unauthorized");
    let message = placeholder.error_message();
    assert!(
        message.contains("characters that are not allowed"),
        "{message}"
    );
    assert!(!message.contains("Bearer <token>"), "{message}");
    let challenge = placeholder.header("www-authenticate").unwrap();
    assert!(challenge.contains("not allowed"), "{challenge}");
    // Without the scheme, the scheme is what is wrong.
    let unschemed = raw("dhk_\u{2026}".as_bytes());
    assert!(unschemed.error_message().contains("Bearer <token>"));
}

#[test]
fn a_device_key_sent_to_the_tenant_api_is_pointed_to_the_device_api() {
    let app = spawn_app();
    let (_, key) = app.register(&common::token_for("acme", "admin"), json!({"name": "x"}));
    let response = app.get("/api/tenant/devices", &key);
    assert_eq!(response.status, 401);
    assert_eq!(response.error_code(), "unauthorized");
    let message = response.error_message();
    assert!(message.contains("/api/device/me"), "{message}");
    assert!(!message.contains(&key), "the key is not echoed");
    assert_eq!(app.get("/api/device/me", &key).status, 200);
}
