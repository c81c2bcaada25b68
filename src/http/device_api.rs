//! The device endpoint (API.md §4), reached with a device API key.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{json, resource, Data};
use crate::auth::guard::DeviceAuth;
use crate::devices::Millis;
use crate::error::ApiResult;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/device/me").route(web::get().to(me)));
}

/// The device's own record; marks it as seen.
async fn me(auth: DeviceAuth, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let DeviceAuth {
        tenant,
        mut device,
        deprecated,
    } = auth;
    // In memory; the write, when due, is queued for the writer thread.
    device.last_seen_at = Some(state.store.touch(&tenant, &device.id, Millis::now()));
    let mut response = json(StatusCode::OK, &Data { data: &device })?;
    if deprecated {
        // RFC 9745: this key is on its way out; the device has a new one.
        response.headers_mut().insert(
            HeaderName::from_static("deprecation"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}
