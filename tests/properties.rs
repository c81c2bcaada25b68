//! Property tests for the field rules: any body either becomes a valid
//! device or a 400 naming the field, and a rejected body changes nothing.

mod common;

use devicehub::devices::{is_tag, DevicePatch, NewDevice};
use devicehub::error::ApiError;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const FIELDS: [&str; 5] = [
    "name",
    "locationIds",
    "status",
    "pimEnabled",
    "pimSegmentIds",
];

/// Strings that stress the rules: tag alphabet, spaces, controls, non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.:-]{0,70}",
        "[ \\t\\n\\u{3000}]{0,3}[a-zA-Z0-9 é]{0,12}[ \\t]{0,3}",
        ".{0,8}",
        "\\PC{195,205}",
        Just("active".to_string()),
        Just("inactive".to_string()),
        Just("revoked".to_string()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 120, 110, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..110).prop_map(Value::Array),
            prop::collection::vec(text().prop_map(Value::String), 0..6).prop_map(Value::Array),
        ]
    })
}

fn body() -> impl Strategy<Value = Map<String, Value>> {
    let key = prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
        1 => "[a-zA-Z]{1,8}",
    ];
    prop::collection::btree_map(key, value(), 0..5).prop_map(|m| m.into_iter().collect())
}

fn named_field(message: &str, body: &Map<String, Value>) -> bool {
    let field = message.split(": ").next().unwrap_or_default();
    let base = field.split('[').next().unwrap_or_default();
    body.contains_key(base) || (field == "name" && !body.contains_key("name"))
}

fn check_valid_tags(tags: &[String]) {
    assert!(tags.len() <= 100);
    for (i, t) in tags.iter().enumerate() {
        assert!(is_tag(t), "{t:?}");
        assert!(!tags[..i].contains(t), "duplicate {t:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn a_patch_body_is_valid_or_a_400_naming_its_field(body in body()) {
        match DevicePatch::parse(&body) {
            Ok(patch) => {
                for key in body.keys() {
                    prop_assert!(FIELDS.contains(&key.as_str()));
                }
                if let Some(name) = &patch.name {
                    let n = name.as_str();
                    prop_assert_eq!(n.trim(), n);
                    prop_assert!((1..=200).contains(&n.chars().count()));
                    prop_assert!(!n.chars().any(char::is_control));
                }
                if let Some(tags) = &patch.location_ids { check_valid_tags(&tags.to_vec()); }
                if let Some(tags) = &patch.pim_segment_ids { check_valid_tags(&tags.to_vec()); }
            }
            Err(ApiError::InvalidRequest(message)) => {
                prop_assert!(named_field(&message, &body), "{} does not name a field of {:?}", message, body);
            }
            Err(other) => prop_assert!(false, "not a 400: {:?}", other),
        }
    }

    #[test]
    fn a_registration_body_is_valid_or_a_400_naming_its_field(body in body()) {
        match NewDevice::parse(&body) {
            Ok(new) => prop_assert!(body.contains_key("name") && !new.name.as_str().is_empty()),
            Err(ApiError::InvalidRequest(message)) => {
                prop_assert!(named_field(&message, &body), "{} does not name a field of {:?}", message, body);
            }
            Err(other) => prop_assert!(false, "not a 400: {:?}", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    /// Through the HTTP stack: a refused PATCH leaves the device byte for byte
    /// as it was; an accepted one stores exactly what it answered.
    #[test]
    fn a_rejected_patch_changes_nothing(body in body()) {
        let app = shared_app();
        let admin = common::token_for("acme", "admin");
        let path = format!("/api/tenant/devices/{}", shared_device());
        let before = app.get(&path, &admin);
        let response = app.send_json("PATCH", &path, &admin, &Value::Object(body.clone()));
        let after = app.get(&path, &admin);
        match response.status {
            200 => prop_assert_eq!(response.json(), after.json()),
            400 => {
                prop_assert_eq!(before.json(), after.json());
                prop_assert_eq!(before.header("etag"), after.header("etag"));
                prop_assert!(named_field(&response.error_message(), &body));
            }
            other => prop_assert!(false, "status {}", other),
        }
    }
}

use std::sync::OnceLock;

fn shared_app() -> &'static common::TestApp {
    static APP: OnceLock<common::TestApp> = OnceLock::new();
    APP.get_or_init(common::spawn_app)
}

fn shared_device() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let (device, _) =
            shared_app().register(&common::token_for("acme", "admin"), json!({"name": "Prop"}));
        device["id"].as_str().unwrap().to_string()
    })
}
