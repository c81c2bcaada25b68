//! The OpenAPI 3.1 description of the API, built from the code rather than
//! written beside it: the paths and methods come from `ROUTES`, the limits and
//! patterns from the constants the validators use, the error codes from
//! `ApiError`, and the device's fields from a serialised `Device`. Tests fail
//! when a route has no operation here or a device field has no schema, and
//! schemathesis (scripts/api-fuzz.sh) checks the server against the result.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::ResponseError;
use serde_json::{json, Map, Value};

use super::devices::{DEVICE, DEVICES, DEVICE_KEY, MAX_LIMIT, Q_MAX_CHARS, STATS};
use super::events::{DEFAULT_LIMIT, EVENTS, MAX_WAIT_SECONDS};
use super::webhooks::{WEBHOOK, WEBHOOKS, WEBHOOK_DELIVERIES, WEBHOOK_SECRET, WEBHOOK_TEST};
use super::MAX_BODY_BYTES;
use crate::auth::guard::MAX_CREDENTIAL_BYTES;
use crate::auth::token::Scopes;
use crate::devices::{
    id, Device, DeviceStatus, Millis, MAX_GRACE_PERIOD_SECONDS, NAME_MAX_CHARS, TAGS_MAX_ENTRIES,
    TAG_MAX_CHARS,
};
use crate::error::ApiError;
use crate::events::{self, EventType};
use crate::idempotency;
use crate::store::DELIVERIES_KEPT;
use crate::webhooks;

/// The description as served, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| build().to_string())
}

/// Who may call an operation.
#[derive(Clone, Copy)]
enum Access {
    Token(&'static str),
    DeviceKey,
    Open,
}

struct Operation {
    path: &'static str,
    method: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    parameters: Vec<Value>,
    body: Option<Value>,
    success: (u16, Value),
    errors: &'static [u16],
}

fn operations() -> Vec<Operation> {
    let read = Access::Token(Scopes::DEVICES_READ);
    let admin = Access::Token(Scopes::ADMIN);
    let device = json!({"$ref": "#/components/schemas/Device"});
    let one = |description: &str| {
        response(
            description,
            object(&[("data", device.clone())]),
            &[(
                "ETag",
                "The device's strong entity tag: it changes exactly when the stored device does",
            )],
        )
    };
    let webhook = json!({"$ref": "#/components/schemas/Webhook"});
    let one_webhook =
        |description: &str| response(description, object(&[("data", webhook.clone())]), &[]);
    let with_key = |description: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![(
            "ETag",
            "The device's strong entity tag: it changes exactly when the stored device does",
        )];
        headers.extend_from_slice(extra);
        response(
            description,
            object(&[
                ("data", device.clone()),
                ("apiKey", json!({"$ref": "#/components/schemas/ApiKey"})),
            ]),
            &headers,
        )
    };
    vec![
        Operation {
            path: DEVICES,
            method: "get",
            id: "listDevices",
            tag: "devices",
            summary: "List the tenant's devices in creation order (or newest first); without limit, all of them, streamed",
            access: read,
            parameters: vec![
                query("status", json!({"type": "string", "enum": statuses(&DeviceStatus::ALL)})),
                query("locationId", tag_schema()),
                query(
                    "q",
                    json!({"type": "string", "minLength": 1, "maxLength": Q_MAX_CHARS,
                           "description": "devices whose name contains this, ignoring case"}),
                ),
                query(
                    "lastSeenBefore",
                    json!({"type": "string", "format": "date-time",
                           "description": "devices never seen or last seen before this time"}),
                ),
                query(
                    "lastSeenAfter",
                    json!({"type": "string", "format": "date-time",
                           "description": "devices last seen at or after this time"}),
                ),
                query("order", json!({"type": "string", "enum": ["asc", "desc"], "default": "asc"})),
                query("limit", json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})),
                query("startingAfter", json!({"type": "string", "pattern": id::PATTERN})),
            ],
            body: None,
            success: (
                200,
                response(
                    "A page of devices; hasMore is true exactly when a further page exists",
                    object(&[
                        ("data", json!({"type": "array", "items": device.clone()})),
                        ("hasMore", json!({"type": "boolean"})),
                    ]),
                    &[],
                ),
            ),
            errors: &[400, 401, 403, 405, 500],
        },
        Operation {
            path: STATS,
            method: "get",
            id: "deviceStats",
            tag: "devices",
            summary: "Count the tenant's devices by status (exact, kept by every write)",
            access: read,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "The tenant's device counts",
                    object(&[(
                        "data",
                        object(&[
                            ("total", json!({"type": "integer", "minimum": 0})),
                            ("active", json!({"type": "integer", "minimum": 0})),
                            ("inactive", json!({"type": "integer", "minimum": 0})),
                            ("revoked", json!({"type": "integer", "minimum": 0})),
                        ]),
                    )]),
                    &[],
                ),
            ),
            errors: &[401, 403, 405, 500],
        },
        Operation {
            path: EVENTS,
            method: "get",
            id: "listEvents",
            tag: "events",
            summary: "The tenant's change feed, oldest first; with waitSeconds, waits for the first event after the cursor",
            access: read,
            parameters: vec![
                query(
                    "type",
                    json!({"type": "string", "enum": EventType::ALL.map(EventType::as_str)}),
                ),
                query("deviceId", json!({"type": "string", "pattern": id::PATTERN})),
                query(
                    "limit",
                    json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
                ),
                query(
                    "startingAfter",
                    json!({"type": "string", "pattern": events::id::PATTERN,
                           "description": "an event id: only events after it"}),
                ),
                query(
                    "waitSeconds",
                    json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0,
                           "description": "when nothing after the cursor matches, wait up to this long for the first event that does"}),
                ),
            ],
            body: None,
            success: (
                200,
                response(
                    "A page of events, oldest first; hasMore is true exactly when a further page exists",
                    object(&[
                        (
                            "data",
                            json!({"type": "array", "items": {"$ref": "#/components/schemas/Event"}}),
                        ),
                        ("hasMore", json!({"type": "boolean"})),
                    ]),
                    &[],
                ),
            ),
            errors: &[400, 401, 403, 405, 500],
        },
        Operation {
            path: WEBHOOKS,
            method: "post",
            id: "createWebhook",
            tag: "webhooks",
            summary: "Add a webhook (at most 20 per tenant); its signing secret is returned once",
            access: admin,
            parameters: vec![],
            body: Some(webhook_body(true)),
            success: (
                201,
                response(
                    "The webhook and its signing secret (shown only now)",
                    object(&[("data", webhook.clone()), ("secret", secret_schema())]),
                    &[("Location", "The webhook's URL")],
                ),
            ),
            errors: &[400, 401, 403, 405, 413, 415, 500, 503],
        },
        Operation {
            path: WEBHOOKS,
            method: "get",
            id: "listWebhooks",
            tag: "webhooks",
            summary: "The tenant's webhooks, oldest first",
            access: admin,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "Every webhook of the tenant",
                    object(&[("data", json!({"type": "array", "items": webhook.clone()}))]),
                    &[],
                ),
            ),
            errors: &[401, 403, 405, 500],
        },
        Operation {
            path: WEBHOOK,
            method: "get",
            id: "getWebhook",
            tag: "webhooks",
            summary: "Retrieve a webhook (never its secret)",
            access: admin,
            parameters: vec![],
            body: None,
            success: (200, one_webhook("The webhook")),
            errors: &[401, 403, 404, 405, 500],
        },
        Operation {
            path: WEBHOOK,
            method: "patch",
            id: "updateWebhook",
            tag: "webhooks",
            summary: "Change a webhook's url, events, description or enabled; enabling it again resumes at its first undelivered event",
            access: admin,
            parameters: vec![],
            body: Some(webhook_body(false)),
            success: (200, one_webhook("The updated webhook")),
            errors: &[400, 401, 403, 404, 405, 413, 415, 500, 503],
        },
        Operation {
            path: WEBHOOK,
            method: "delete",
            id: "deleteWebhook",
            tag: "webhooks",
            summary: "Delete a webhook: nothing more is sent to it",
            access: admin,
            parameters: vec![],
            body: None,
            success: (200, success_true("Deleted")),
            errors: &[401, 403, 404, 405, 500, 503],
        },
        Operation {
            path: WEBHOOK_SECRET,
            method: "post",
            id: "rotateWebhookSecret",
            tag: "webhooks",
            summary: "A new signing secret, used from the next delivery attempt on",
            access: admin,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "The webhook and its new signing secret (shown only now)",
                    object(&[("data", webhook.clone()), ("secret", secret_schema())]),
                    &[],
                ),
            ),
            errors: &[401, 403, 404, 405, 500, 503],
        },
        Operation {
            path: WEBHOOK_DELIVERIES,
            method: "get",
            id: "listWebhookDeliveries",
            tag: "webhooks",
            summary: "The webhook's last 100 delivery attempts, newest first",
            access: admin,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "Delivery attempts, newest first",
                    object(&[(
                        "data",
                        json!({"type": "array", "maxItems": DELIVERIES_KEPT,
                               "items": {"$ref": "#/components/schemas/Delivery"}}),
                    )]),
                    &[],
                ),
            ),
            errors: &[401, 403, 404, 405, 500],
        },
        Operation {
            path: WEBHOOK_TEST,
            method: "post",
            id: "testWebhook",
            tag: "webhooks",
            summary: "Send one signed webhook.test event to the webhook now and answer what happened (logged; its queue is untouched)",
            access: admin,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "The attempt",
                    object(&[("data", json!({"$ref": "#/components/schemas/Delivery"}))]),
                    &[],
                ),
            ),
            errors: &[401, 403, 404, 405, 500, 503],
        },
        Operation {
            path: DEVICES,
            method: "post",
            id: "registerDevice",
            tag: "devices",
            summary: "Register a device; its API key is returned once",
            access: admin,
            parameters: vec![idempotency_key()],
            body: Some(write_body(true)),
            success: (
                201,
                with_key(
                    "The registered device and its one-time API key",
                    &[("Location", "The device's URL")],
                ),
            ),
            errors: &[400, 401, 403, 405, 409, 413, 415, 500, 503],
        },
        Operation {
            path: DEVICE,
            method: "get",
            id: "getDevice",
            tag: "devices",
            summary: "Retrieve a single device by id",
            access: read,
            parameters: vec![],
            body: None,
            success: (200, one("The device")),
            errors: &[401, 403, 404, 405, 500],
        },
        Operation {
            path: DEVICE,
            method: "patch",
            id: "updateDevice",
            tag: "devices",
            summary: "Update device properties; every field is optional",
            access: admin,
            parameters: vec![json!({
                "name": "If-Match", "in": "header",
                "description": "Makes the update conditional on the device's current ETag (412 when it has changed)",
                "schema": {"type": "string"}
            })],
            body: Some(write_body(false)),
            success: (200, one("The updated device")),
            errors: &[400, 401, 403, 404, 405, 409, 412, 413, 415, 500, 503],
        },
        Operation {
            path: DEVICE,
            method: "delete",
            id: "revokeDevice",
            tag: "devices",
            summary: "Revoke a device: its key never authenticates again; revoking again is a success too",
            access: admin,
            parameters: vec![],
            body: None,
            success: (200, success_true("Revoked")),
            errors: &[401, 403, 404, 405, 500, 503],
        },
        Operation {
            path: DEVICE_KEY,
            method: "post",
            id: "rotateDeviceKey",
            tag: "devices",
            summary: "Issue a new API key; the old one stops at once or after its grace period",
            access: admin,
            parameters: vec![idempotency_key()],
            body: Some(json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {"gracePeriodSeconds": {
                    "type": "integer", "minimum": 0, "maximum": MAX_GRACE_PERIOD_SECONDS, "default": 0,
                    "description": "how long the old key keeps working beside the new one"
                }}
            })),
            success: (
                200,
                response(
                    "The device, its new one-time API key, and when the old key stops",
                    object(&[
                        ("data", device.clone()),
                        ("apiKey", json!({"$ref": "#/components/schemas/ApiKey"})),
                        (
                            "previousKeyExpiresAt",
                            json!({"type": ["string", "null"], "format": "date-time"}),
                        ),
                    ]),
                    &[(
                        "ETag",
                        "The device's strong entity tag: it changes exactly when the stored device does",
                    )],
                ),
            ),
            errors: &[400, 401, 403, 404, 405, 409, 413, 415, 500, 503],
        },
        Operation {
            path: "/api/device/me",
            method: "get",
            id: "getOwnDevice",
            tag: "device",
            summary: "The calling device's own record; marks it as seen",
            access: Access::DeviceKey,
            parameters: vec![],
            body: None,
            success: (
                200,
                response(
                    "The device",
                    object(&[("data", device.clone())]),
                    &[(
                        "Deprecation",
                        "`true` when the key used is the previous one, within its grace period",
                    )],
                ),
            ),
            errors: &[401, 403, 405, 500],
        },
        Operation {
            path: "/healthz",
            method: "get",
            id: "health",
            tag: "service",
            summary: "Liveness",
            access: Access::Open,
            parameters: vec![],
            body: None,
            success: (
                200,
                response("Up", object(&[("status", json!({"const": "ok"}))]), &[]),
            ),
            errors: &[405],
        },
        Operation {
            path: "/openapi.json",
            method: "get",
            id: "openapi",
            tag: "service",
            summary: "This description",
            access: Access::Open,
            parameters: vec![],
            body: None,
            success: (
                200,
                response("The OpenAPI 3.1 document", json!({"type": "object"}), &[]),
            ),
            errors: &[405],
        },
        Operation {
            path: "/metrics",
            method: "get",
            id: "metrics",
            tag: "service",
            summary: "Prometheus metrics (404 when metrics.enabled is false)",
            access: Access::Open,
            parameters: vec![],
            body: None,
            success: (
                200,
                json!({
                    "description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}}
                }),
            ),
            errors: &[404, 405],
        },
    ]
}

fn build() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for op in operations() {
        let mut responses = Map::new();
        responses.insert(op.success.0.to_string(), op.success.1);
        for status in op.errors {
            responses.insert(status.to_string(), error_response(*status, op.access));
        }
        let security = match op.access {
            Access::Token(scope) => json!([{ "accessToken": [scope] }]),
            Access::DeviceKey => json!([{ "deviceKey": [] }]),
            Access::Open => json!([]),
        };
        let mut operation = json!({
            "tags": [op.tag],
            "operationId": op.id,
            "summary": op.summary,
            "security": security,
            "responses": responses,
        });
        if !op.parameters.is_empty() {
            operation["parameters"] = Value::Array(op.parameters);
        }
        if let Some(body) = op.body {
            // Only the rotation's body may be left out.
            let required = op.path != DEVICE_KEY;
            operation["requestBody"] =
                json!({"required": required, "content": {"application/json": {"schema": body}}});
        }
        let item = paths.entry(op.path).or_default();
        if op.path.contains("{id}") {
            let (what, pattern) = if op.path.starts_with(WEBHOOKS) {
                ("The webhook id: wh_ and a ULID", webhooks::id::PATTERN)
            } else {
                ("The device id: dev_ and a ULID", id::PATTERN)
            };
            item.insert(
                "parameters".into(),
                json!([{
                    "name": "id", "in": "path", "required": true,
                    "description": what,
                    "schema": {"type": "string", "pattern": pattern}
                }]),
            );
        }
        item.insert(op.method.into(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "devicehub Devices API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Read and manage devices registered to your tenant. Tenant endpoints take an access token (JWT) with the devices:read or admin scope (admin implies devices:read); the device endpoint takes the device's own API key. Every error is {\"error\": {\"code\", \"message\"}}."
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "devices", "description": "The tenant's device registry (access token)"},
            {"name": "device", "description": "A device's own endpoint (device API key)"},
            {"name": "events", "description": "The change feed: one event per change to a device (access token)"},
            {"name": "webhooks", "description": "Signed deliveries of events to your endpoints (admin)"},
            {"name": "service"}
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "accessToken": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": format!("Access token with tenant_id, exp and scope ({} or {}); at most {MAX_CREDENTIAL_BYTES} bytes", Scopes::DEVICES_READ, Scopes::ADMIN)
                },
                "deviceKey": {
                    "type": "http", "scheme": "bearer",
                    "description": "The device's API key, shown once at registration or rotation"
                }
            },
            "schemas": {
                "Device": device_schema(),
                "Event": event_schema(),
                "Webhook": webhook_schema(),
                "Delivery": delivery_schema(),
                "Timestamp": {"type": "string", "format": "date-time", "pattern": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$"},
                "ApiKey": {"type": "string", "pattern": "^dhk_[A-Za-z0-9_-]{43}$"},
                "Error": {
                    "type": "object", "required": ["error"], "additionalProperties": false,
                    "properties": {"error": {
                        "type": "object", "required": ["code", "message"], "additionalProperties": false,
                        "properties": {
                            "code": {"type": "string", "enum": error_codes(None)},
                            "message": {"type": "string"}
                        }
                    }}
                }
            }
        }
    })
}

/// A webhook as served (never its secret).
fn webhook_schema() -> Value {
    let timestamp = json!({"$ref": "#/components/schemas/Timestamp"});
    object(&[
        (
            "id",
            json!({"type": "string", "pattern": webhooks::id::PATTERN}),
        ),
        (
            "url",
            json!({"type": "string", "maxLength": webhooks::URL_MAX_CHARS}),
        ),
        ("events", webhook_events()),
        (
            "description",
            json!({"type": "string", "maxLength": webhooks::DESCRIPTION_MAX_CHARS}),
        ),
        ("enabled", json!({"type": "boolean"})),
        ("createdAt", timestamp.clone()),
        ("updatedAt", timestamp),
    ])
}

/// `events` of a webhook: 1-4 distinct types, or `["*"]`.
fn webhook_events() -> Value {
    let types = EventType::ALL.map(EventType::as_str);
    json!({"oneOf": [
        {"type": "array", "minItems": 1, "maxItems": types.len(), "uniqueItems": true,
         "items": {"type": "string", "enum": types}},
        {"type": "array", "minItems": 1, "maxItems": 1,
         "items": {"const": webhooks::ALL_EVENTS}}
    ]})
}

/// The body of a webhook's creation (`url`, `events` required) or PATCH.
fn webhook_body(creation: bool) -> Value {
    let mut body = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": webhooks::URL_MAX_CHARS,
                    "format": "uri", "pattern": "^https?://",
                    "description": "http or https, no credentials"},
            "events": webhook_events(),
            "description": {"type": "string", "maxLength": webhooks::DESCRIPTION_MAX_CHARS, "default": ""},
            "enabled": {"type": "boolean", "default": true}
        }
    });
    if creation {
        body["required"] = json!(["url", "events"]);
    }
    body
}

fn secret_schema() -> Value {
    json!({"type": "string", "pattern": "^whsec_[A-Za-z0-9_-]{43}$",
           "description": "The HMAC-SHA256 key of Devicehub-Signature, shown only here"})
}

/// One delivery attempt.
fn delivery_schema() -> Value {
    object(&[
        (
            "eventId",
            json!({"type": "string", "pattern": events::id::PATTERN}),
        ),
        ("attempt", json!({"type": "integer", "minimum": 1})),
        ("at", json!({"$ref": "#/components/schemas/Timestamp"})),
        (
            "status",
            json!({"type": ["integer", "null"], "description": "the HTTP status answered, if any"}),
        ),
        (
            "error",
            json!({"type": ["string", "null"], "description": "why it failed: timeout, refused address, connection…"}),
        ),
        ("durationMs", json!({"type": "integer", "minimum": 0})),
    ])
}

/// An event as stored and served (API.md §7).
fn event_schema() -> Value {
    let seed_fields = [
        "name",
        "status",
        "locationIds",
        "pimEnabled",
        "pimSegmentIds",
    ];
    let mut previous = Map::new();
    for key in seed_fields {
        previous.insert(key.into(), device_field_schema(key));
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["id", "type", "createdAt", "actor", "deviceId", "data"],
        "properties": {
            "id": {"type": "string", "pattern": events::id::PATTERN},
            "type": {"type": "string", "enum": EventType::ALL.map(EventType::as_str)},
            "createdAt": {"$ref": "#/components/schemas/Timestamp"},
            "actor": {"type": ["string", "null"], "description": "the token's sub, or null"},
            "deviceId": {"type": "string", "pattern": id::PATTERN},
            "data": {
                "type": "object",
                "additionalProperties": false,
                "required": ["object", "previousAttributes"],
                "properties": {
                    "object": {"$ref": "#/components/schemas/Device"},
                    "previousAttributes": {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": previous,
                        "description": "the old value of each seed field the change altered"
                    }
                }
            }
        }
    })
}

/// The device as serialised, each field given its schema.
fn device_schema() -> Value {
    let mut properties = Map::new();
    for key in device_fields() {
        properties.insert(key.clone(), device_field_schema(&key));
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": device_fields(),
        "properties": properties,
    })
}

/// The field names a `Device` serialises to, in order.
fn device_fields() -> Vec<String> {
    let sample = Device {
        id: id::format(ulid::Ulid::nil()),
        name: String::new(),
        status: DeviceStatus::Active,
        location_ids: vec![],
        pim_enabled: false,
        pim_segment_ids: vec![],
        created_at: Millis(0),
        updated_at: Millis(0),
        last_seen_at: None,
        version: 0,
    };
    match serde_json::to_value(&sample) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => vec![],
    }
}

fn device_field_schema(key: &str) -> Value {
    let timestamp = json!({"$ref": "#/components/schemas/Timestamp"});
    match key {
        "id" => json!({"type": "string", "pattern": id::PATTERN}),
        "name" => json!({"type": "string", "minLength": 1, "maxLength": NAME_MAX_CHARS}),
        "status" => json!({"type": "string", "enum": statuses(&DeviceStatus::ALL)}),
        "locationIds" | "pimSegmentIds" => json!({"type": "array", "items": tag_schema()}),
        "pimEnabled" => json!({"type": "boolean"}),
        "createdAt" | "updatedAt" => timestamp,
        "lastSeenAt" => json!({"oneOf": [timestamp, {"type": "null"}]}),
        // A field without a schema: the test `every_device_field_has_a_schema` fails.
        _ => json!({}),
    }
}

/// The body of a registration (`name` required) or a PATCH.
fn write_body(registration: bool) -> Value {
    let tags = |what: &str| {
        json!({
            "type": "array", "maxItems": TAGS_MAX_ENTRIES, "items": tag_schema(),
            "description": format!("{what} At most {TAGS_MAX_ENTRIES} entries as sent; duplicates are dropped, the first kept.")
        })
    };
    let settable: Vec<DeviceStatus> = DeviceStatus::ALL
        .into_iter()
        .filter(|s| *s != DeviceStatus::Revoked)
        .collect();
    let mut body = json!({
        "type": "object",
        "additionalProperties": false,
        "description": format!("At most {MAX_BODY_BYTES} bytes, sent as application/json; null for a field is refused"),
        "properties": {
            "name": {
                "type": "string", "pattern": name_pattern(),
                "description": format!("Display name: surrounding white space is trimmed; 1-{NAME_MAX_CHARS} characters after trimming; no control characters")
            },
            "locationIds": tags("Location ids to assign the device to."),
            "status": {"type": "string", "enum": statuses(&settable), "description": "revoked is reached only through DELETE"},
            "pimEnabled": {"type": "boolean"},
            "pimSegmentIds": tags("PIM segment ids to associate with the device."),
        }
    });
    if registration {
        body["required"] = json!(["name"]);
    }
    body
}

/// What `DeviceName::new` accepts: white space around 1-NAME_MAX_CHARS
/// characters that start and end with a non-space, none of them a control
/// character. The white space is the set `str::trim` removes.
fn name_pattern() -> String {
    const WS: &str = "\\t\\n\\u000B\\f\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";
    const CONTROL: &str = "\\u0000-\\u001F\\u007F-\\u009F";
    let inner = NAME_MAX_CHARS - 2;
    format!("^[{WS}]*[^{CONTROL}{WS}](?:[^{CONTROL}]{{0,{inner}}}[^{CONTROL}{WS}])?[{WS}]*$")
}

fn tag_schema() -> Value {
    json!({
        "type": "string", "minLength": 1, "maxLength": TAG_MAX_CHARS,
        "pattern": format!("^[A-Za-z0-9_.:-]{{1,{TAG_MAX_CHARS}}}$")
    })
}

fn statuses(list: &[DeviceStatus]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

/// The `Idempotency-Key` request header of registration and rotation.
fn idempotency_key() -> Value {
    json!({
        "name": idempotency::HEADER, "in": "header", "required": false,
        "description": "Retry safely: for 24 h the same key, path and body get the first answer again, with Idempotent-Replayed: true",
        "schema": {"type": "string", "minLength": idempotency::MIN_CHARS,
                   "maxLength": idempotency::MAX_CHARS, "pattern": "^[!-~]+$"}
    })
}

/// `{"success": true}`, the answer of a DELETE.
fn success_true(description: &str) -> Value {
    response(
        description,
        object(&[("success", json!({"const": true}))]),
        &[],
    )
}

fn query(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "schema": schema})
}

fn object(fields: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let required: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties})
}

fn response(description: &str, schema: Value, headers: &[(&str, &str)]) -> Value {
    let mut out = json!({
        "description": description,
        "content": {"application/json": {"schema": schema}}
    });
    if !headers.is_empty() {
        let headers: Map<String, Value> = headers
            .iter()
            .map(|(name, what)| {
                (
                    name.to_string(),
                    json!({"description": what, "schema": {"type": "string"}}),
                )
            })
            .collect();
        out["headers"] = Value::Object(headers);
    }
    out
}

/// The error codes `ApiError` answers with, all of them or those of one status.
fn error_codes(status: Option<u16>) -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = Vec::new();
    for e in ApiError::each_kind() {
        if status.is_none_or(|s| e.status_code().as_u16() == s) && !codes.contains(&e.code()) {
            codes.push(e.code());
        }
    }
    codes
}

fn error_response(status: u16, access: Access) -> Value {
    let codes = match (status, access) {
        // A tenant token never meets the device-only codes, nor the reverse.
        (401, Access::Token(_)) => vec!["unauthorized"],
        (403, Access::Token(_)) => vec!["insufficient_scope"],
        (403, Access::DeviceKey) => vec!["device_inactive"],
        _ => error_codes(Some(status)),
    };
    let description = format!("Error: {}", codes.join(" or "));
    response(
        &description,
        json!({"$ref": "#/components/schemas/Error"}),
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_method_has_an_operation() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        for (path, allow) in super::super::ROUTES {
            for method in allow.split(", ") {
                assert!(
                    doc["paths"][path][method.to_lowercase()].is_object(),
                    "{method} {path} is not described"
                );
            }
        }
        let described: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .count()
            })
            .sum();
        let routed: usize = super::super::ROUTES
            .iter()
            .map(|(_, a)| a.split(", ").count())
            .sum();
        assert_eq!(described, routed, "no operation without a route");
    }

    #[test]
    fn every_device_field_has_a_schema() {
        let fields = device_fields();
        assert_eq!(fields.len(), 9);
        for field in fields {
            assert_ne!(device_field_schema(&field), json!({}), "{field}");
        }
    }

    #[test]
    fn every_error_code_is_listed() {
        let codes = error_codes(None);
        for code in [
            "invalid_request",
            "unauthorized",
            "device_revoked",
            "insufficient_scope",
            "device_inactive",
            "not_found",
            "method_not_allowed",
            "precondition_failed",
            "payload_too_large",
            "unsupported_media_type",
            "internal",
            "storage_unavailable",
            "quota_exceeded",
            "idempotency_conflict",
        ] {
            assert!(codes.contains(&code), "{code}");
        }
        assert_eq!(
            error_codes(Some(409)),
            vec!["device_revoked", "idempotency_conflict"]
        );
    }

    #[test]
    fn the_name_pattern_counts_to_the_limit() {
        assert!(name_pattern().contains(&format!("{{0,{}}}", NAME_MAX_CHARS - 2)));
    }
}
