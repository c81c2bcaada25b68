//! Webhooks (API.md §7): where a tenant's events are sent, signed, in order
//! and at least once. This module is the webhook's fields and their rules;
//! `signature.rs` signs deliveries and sets the retry schedule, `client.rs`
//! sends one, `worker.rs` decides what to send when. The store keeps
//! webhooks and their delivery state (`store/webhooks.rs`).

pub mod client;
pub mod signature;
pub mod worker;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::devices::{as_rfc3339, Millis};
use crate::error::ApiError;
use crate::events::EventType;

/// At most this many webhooks per tenant.
pub const MAX_PER_TENANT: u64 = 20;
pub const URL_MAX_CHARS: usize = 2048;
pub const DESCRIPTION_MAX_CHARS: usize = 200;
/// `["*"]`: every event type.
pub const ALL_EVENTS: &str = "*";

/// A webhook id: `wh_` and a ULID.
pub mod id {
    pub const PREFIX: &str = "wh_";
    pub const PATTERN: &str = "^wh_[0-7][0-9A-HJKMNP-TV-Z]{25}$";

    pub fn format(ulid: ulid::Ulid) -> String {
        format!("{PREFIX}{ulid}")
    }

    /// The ULID inside a well-formed id, or None.
    pub fn parse(text: &str) -> Option<ulid::Ulid> {
        crate::devices::id::parse_prefixed(PREFIX, text)
    }
}

/// A webhook as clients see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: Millis,
    #[serde(serialize_with = "as_rfc3339")]
    pub updated_at: Millis,
}

impl Webhook {
    /// Whether events of `kind` go to this webhook.
    pub fn wants(&self, kind: EventType) -> bool {
        self.events
            .iter()
            .any(|e| e == ALL_EVENTS || e == kind.as_str())
    }
}

/// One attempt to deliver an event, as the deliveries log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub event_id: String,
    pub attempt: u32,
    /// When the attempt began (RFC 3339, as every timestamp).
    pub at: String,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed (timeout, refused address, connection…), or null.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Delivery {
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The body of `POST /api/tenant/webhooks` or of a PATCH: each field present
/// is to be set. For a creation, `url` and `events` are required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

const FIELDS: &[&str] = &["url", "events", "description", "enabled"];

impl WebhookPatch {
    pub fn parse(body: &Map<String, Value>) -> Result<WebhookPatch, ApiError> {
        let field = crate::devices::known_fields(body, FIELDS)?;
        Ok(WebhookPatch {
            url: field("url")?.map(parse_url).transpose()?,
            events: field("events")?.map(parse_events).transpose()?,
            description: field("description")?.map(parse_description).transpose()?,
            enabled: field("enabled")?
                .map(|v| {
                    v.as_bool()
                        .ok_or_else(|| ApiError::invalid("enabled", "must be a boolean"))
                })
                .transpose()?,
        })
    }

    /// A creation's body: `url` and `events` required.
    pub fn parse_new(body: &Map<String, Value>) -> Result<WebhookPatch, ApiError> {
        let new = WebhookPatch::parse(body)?;
        if new.url.is_none() {
            return Err(ApiError::invalid("url", "is required"));
        }
        if new.events.is_none() {
            return Err(ApiError::invalid("events", "is required"));
        }
        Ok(new)
    }

    /// Applies the patch; true when anything actually changed.
    pub fn apply(&self, hook: &mut Webhook) -> bool {
        let before = hook.clone();
        if let Some(url) = &self.url {
            hook.url.clone_from(url);
        }
        if let Some(events) = &self.events {
            hook.events.clone_from(events);
        }
        if let Some(description) = &self.description {
            hook.description.clone_from(description);
        }
        if let Some(enabled) = self.enabled {
            hook.enabled = enabled;
        }
        *hook != before
    }
}

/// An `http` or `https` URL with a host, at most 2048 characters, without
/// credentials.
fn parse_url(value: &Value) -> Result<String, ApiError> {
    let text = value
        .as_str()
        .ok_or_else(|| ApiError::invalid("url", "must be a string"))?;
    if text.chars().count() > URL_MAX_CHARS {
        return Err(ApiError::invalid(
            "url",
            format!("must be at most {URL_MAX_CHARS} characters"),
        ));
    }
    let url = client::Target::parse(text).map_err(|m| ApiError::invalid("url", m))?;
    Ok(url.to_string())
}

/// 1-4 distinct event types, or `["*"]`.
fn parse_events(value: &Value) -> Result<Vec<String>, ApiError> {
    const RULE: &str = "must be 1-4 distinct event types (device.created, device.updated, device.revoked, device.key_rotated), or [\"*\"]";
    let items = value
        .as_array()
        .ok_or_else(|| ApiError::invalid("events", RULE))?;
    if items.len() == 1 && items[0].as_str() == Some(ALL_EVENTS) {
        return Ok(vec![ALL_EVENTS.to_string()]);
    }
    if items.is_empty() || items.len() > EventType::ALL.len() {
        return Err(ApiError::invalid("events", RULE));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let kind = item
            .as_str()
            .and_then(EventType::parse)
            .ok_or_else(|| ApiError::invalid(format!("events[{i}]"), RULE))?;
        if out.iter().any(|e| e == kind.as_str()) {
            return Err(ApiError::invalid(format!("events[{i}]"), "is given twice"));
        }
        out.push(kind.as_str().to_string());
    }
    Ok(out)
}

/// 0-200 characters, no control characters.
fn parse_description(value: &Value) -> Result<String, ApiError> {
    let text = value
        .as_str()
        .ok_or_else(|| ApiError::invalid("description", "must be a string"))?;
    if text.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(ApiError::invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(text.to_string())
}

/// A new signing secret: `whsec_` and 32 random bytes, base64url.
pub fn new_secret() -> Result<String, ApiError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        match WebhookPatch::parse_new(v.as_object().unwrap()).unwrap_err() {
            ApiError::InvalidRequest(m) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn a_new_webhook_needs_a_url_and_events_and_nothing_unknown() {
        let ok = WebhookPatch::parse_new(
            json!({"url": "https://example.com/hook", "events": ["*"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ok.events, Some(vec!["*".to_string()]));
        assert_eq!(err(json!({"events": ["*"]})), "url: is required");
        assert_eq!(
            err(json!({"url": "http://x.example"})),
            "events: is required"
        );
        assert_eq!(
            err(json!({"url": "http://x.example", "events": ["*"], "secret": "s"})),
            "secret: unknown field"
        );
        assert_eq!(
            err(json!({"url": null, "events": ["*"]})),
            "url: must not be null"
        );
        for bad in [
            json!("ftp://x.example/"),
            json!("http://"),
            json!("not a url"),
            json!("http://user:pw@x.example/"),
            json!(format!("http://x.example/{}", "a".repeat(2048))),
            json!(5),
        ] {
            let e = err(json!({"url": bad, "events": ["*"]}));
            assert!(e.starts_with("url:"), "{bad}: {e}");
        }
        for bad in [
            json!([]),
            json!(["*", "device.created"]),
            json!(["device.deleted"]),
            json!(["device.created", "device.created"]),
            json!("device.created"),
        ] {
            let e = err(json!({"url": "http://x.example", "events": bad}));
            assert!(e.starts_with("events"), "{bad}: {e}");
        }
        let long = "d".repeat(201);
        assert!(
            err(json!({"url": "http://x.example", "events": ["*"], "description": long}))
                .starts_with("description:")
        );
        assert!(
            err(json!({"url": "http://x.example", "events": ["*"], "enabled": "yes"}))
                .starts_with("enabled:")
        );
    }

    #[test]
    fn a_webhook_wants_the_types_it_names() {
        let mut hook = Webhook {
            id: "wh_x".into(),
            url: "http://x.example/".into(),
            events: vec!["device.revoked".into()],
            description: String::new(),
            enabled: true,
            created_at: Millis(0),
            updated_at: Millis(0),
        };
        assert!(hook.wants(EventType::Revoked));
        assert!(!hook.wants(EventType::Created));
        hook.events = vec!["*".into()];
        assert!(EventType::ALL.iter().all(|t| hook.wants(*t)));
        let patch = WebhookPatch {
            enabled: Some(true),
            ..Default::default()
        };
        assert!(!patch.apply(&mut hook), "no change");
        let patch = WebhookPatch {
            description: Some("x".into()),
            ..Default::default()
        };
        assert!(patch.apply(&mut hook));
    }

    #[test]
    fn secrets_are_whsec_and_random() {
        let a = new_secret().unwrap();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 43);
        assert_ne!(a, new_secret().unwrap());
    }
}
