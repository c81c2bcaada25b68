//! The device endpoint (API.md §4), reached with a device API key.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{blocking, json, resource};
use crate::auth::guard::DeviceAuth;
use crate::devices::Millis;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/api/device/me").route(web::get().to(me)));
}

/// The device's own record; marks it as seen.
async fn me(auth: DeviceAuth, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let DeviceAuth { tenant, mut device } = auth;
    let store = state.store.clone();
    let id = device.id.clone();
    let seen =
        blocking(move || Ok::<_, ApiError>(store.touch(&tenant, &id, Millis::now()))).await?;
    device.last_seen_at = Some(seen);
    json(StatusCode::OK, &json!({ "data": device }))
}
