//! The HTTP API: one module per resource, each registering its own routes.

mod body;
mod dashboard;
mod device_api;
mod devices;
mod events;
mod idempotent;
mod list_gate;
mod meta;
mod openapi;
mod query;
mod webhooks;

pub use body::{JsonObject, MAX_BODY_BYTES};
pub use list_gate::ListGate;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// Every route: its path and the methods it answers (the `Allow` of its 405).
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/tenant/devices", "GET, POST"),
    ("/api/tenant/devices/{id}", "GET, PATCH, DELETE"),
    ("/api/tenant/devices/{id}/api-key", "POST"),
    ("/api/tenant/stats", "GET"),
    ("/api/tenant/events", "GET"),
    ("/api/tenant/webhooks", "GET, POST"),
    ("/api/tenant/webhooks/{id}", "GET, PATCH, DELETE"),
    ("/api/tenant/webhooks/{id}/secret", "POST"),
    ("/api/tenant/webhooks/{id}/deliveries", "GET"),
    ("/api/tenant/webhooks/{id}/test", "POST"),
    ("/api/device/me", "GET"),
    ("/healthz", "GET"),
    ("/openapi.json", "GET"),
    ("/metrics", "GET"),
];

/// The dashboard's pages and assets (not part of the API description).
pub const PAGE_ROUTES: &[(&str, &str)] = &[("/", "GET"), ("/app.js", "GET"), ("/app.css", "GET")];

pub fn configure(cfg: &mut web::ServiceConfig) {
    devices::configure(cfg);
    events::configure(cfg);
    webhooks::configure(cfg);
    device_api::configure(cfg);
    meta::configure(cfg);
    dashboard::configure(cfg);
}

/// `GET /metrics`, registered only when `metrics.enabled` (else the path is
/// unknown: 404).
pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    meta::configure_metrics(cfg);
}

/// Answers every path no route claims.
pub async fn not_found() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound)
}

/// The `Allow` of a route in `ROUTES` or `PAGE_ROUTES`.
fn allowed_methods(path: &str) -> &'static str {
    ROUTES
        .iter()
        .chain(PAGE_ROUTES)
        .find(|(p, _)| *p == path)
        .map(|(_, allow)| *allow)
        .unwrap_or("")
}

/// A resource at `path` whose wrong methods answer 405 with its `Allow`.
fn resource(path: &'static str) -> actix_web::Resource {
    let allow = allowed_methods(path);
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// Runs a blocking store operation off the async workers.
pub async fn blocking<T, E, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match web::block(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(ApiError::Internal(format!("blocking task failed: {e}"))),
    }
}

/// `{"data": device}`, the envelope of a single device.
#[derive(Serialize)]
struct Data<'a> {
    data: &'a crate::devices::Device,
}

/// A JSON response of `body`.
fn json<T: Serialize>(status: actix_web::http::StatusCode, body: &T) -> ApiResult<HttpResponse> {
    // Room for one device's answer from the start, so that a typical body
    // is written without growing the buffer.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(bytes))
}
