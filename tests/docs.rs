//! docs/API.md is kept in step with the code: every route and method, every
//! error code (with its status) and every parameter of the served OpenAPI
//! description (each query parameter with a row of its own) must appear in it.

mod common;

use actix_web::ResponseError;
use devicehub::error::ApiError;
use devicehub::http::{PAGE_ROUTES, ROUTES};
use serde_json::Value;

fn api_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

#[test]
fn every_route_and_method_is_documented() {
    let doc = api_md();
    let mut missing = Vec::new();
    for (path, allow) in ROUTES.iter().chain(PAGE_ROUTES) {
        for method in allow.split(',').map(str::trim) {
            let entry = format!("`{method} {path}`");
            if !doc.contains(&entry) {
                missing.push(entry);
            }
        }
    }
    assert!(missing.is_empty(), "docs/API.md lacks {missing:?}");
}

#[test]
fn every_error_code_is_documented_with_its_status() {
    let doc = api_md();
    let mut missing = Vec::new();
    for err in ApiError::each_kind() {
        let row = format!("| {} | `{}` |", err.status_code().as_u16(), err.code());
        if !doc.contains(&row) {
            missing.push(row);
        }
    }
    assert!(missing.is_empty(), "docs/API.md lacks the rows {missing:?}");
}

#[test]
fn every_parameter_of_the_api_description_is_documented() {
    let app = common::spawn_app();
    let response = common::raw(
        app.addr,
        b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    let spec = response.json();
    let paths = spec["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let doc = api_md();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, item) in paths {
        let item = item.as_object().expect("path item");
        let shared = item.get("parameters").and_then(Value::as_array);
        for (method, op) in item.iter().filter(|(k, _)| *k != "parameters") {
            let entry = format!("`{} {path}`", method.to_uppercase());
            if !doc.contains(&entry) {
                missing.push(entry);
            }
            let own = op.get("parameters").and_then(Value::as_array);
            for param in own.into_iter().chain(shared).flatten() {
                let name = param["name"].as_str().expect("parameter name");
                checked += 1;
                // A query parameter has its own row in a table; a header or
                // path parameter is at least named.
                let wanted = match param["in"].as_str() {
                    Some("query") => format!("| `{name}` |"),
                    _ => format!("`{name}`"),
                };
                if !doc.contains(&wanted) {
                    missing.push(format!("{} parameter `{name}`", param["in"]));
                }
            }
        }
    }
    assert!(checked > 0, "the description has no parameters at all");
    assert!(missing.is_empty(), "docs/API.md lacks {missing:?}");
}
