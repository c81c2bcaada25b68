//! Tenant endpoints (API.md §3), reached with an access token.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{allowed_methods, blocking, json, resource, Data, JsonObject};
use crate::auth::device_key::NewDeviceKey;
use crate::auth::guard::{Admin, DevicesRead, TenantAuth};
use crate::devices::{self, Device, DevicePatch, DeviceStatus, IfMatch, Millis, NewDevice};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::ListQuery;

pub const MAX_LIMIT: usize = 1000;

pub const DEVICES: &str = "/api/tenant/devices";
pub const DEVICE: &str = "/api/tenant/devices/{id}";
pub const DEVICE_KEY: &str = "/api/tenant/devices/{id}/api-key";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(DEVICES)
            .route(web::get().to(list))
            .route(web::post().to(register)),
    )
    .service(web::scope(DEVICES).default_service(web::to(by_id)));
}

/// `{id}` and `{id}/api-key` under `/api/tenant/devices`, matched by hand:
/// actix's router matches a dynamic segment with a regular expression, which
/// perf showed as a tenth of a GET's time. The guards still run as
/// extractors, before anything else, in the contract's order: unknown route,
/// wrong method, then 401/403.
async fn by_id(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (id, route) = match split_device_path(req.path()) {
        Some((id, false)) => (id, DEVICE),
        Some((id, true)) => (id, DEVICE_KEY),
        None => return Err(ApiError::NotFound),
    };
    match (route, req.method()) {
        (DEVICE, &Method::GET) => get(TenantAuth::extract(&req).await?, id, state).await,
        (DEVICE, &Method::PATCH) => {
            let auth = TenantAuth::extract(&req).await?;
            let body = JsonObject::from_request(&req, &mut payload.into_inner()).await?;
            update(auth, id, &req, body, state).await
        }
        (DEVICE, &Method::DELETE) => revoke(TenantAuth::extract(&req).await?, id, state).await,
        (DEVICE_KEY, &Method::POST) => {
            rotate_key(TenantAuth::extract(&req).await?, id, state).await
        }
        _ => Err(ApiError::MethodNotAllowed(allowed_methods(route))),
    }
}

/// `/api/tenant/devices/<id>` → (id, false); `…/<id>/api-key` → (id, true).
fn split_device_path(path: &str) -> Option<(&str, bool)> {
    let tail = path.strip_prefix(DEVICES)?.strip_prefix('/')?;
    let (id, key) = match tail.split_once('/') {
        None => (tail, false),
        Some((id, "api-key")) => (id, true),
        Some(_) => return None,
    };
    (!id.is_empty()).then_some((id, key))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataWithKey<'a> {
    data: &'a Device,
    api_key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody {
    data: Vec<Device>,
    has_more: bool,
}

/// The one log line of a change: who, which tenant, which device. Never a
/// key or a token.
fn log_change<S>(auth: &TenantAuth<S>, what: &str, device: &Device) {
    log::info!(
        "device {what} tenant={:?} device={} version={} actor={:?}",
        auth.tenant(),
        device.id,
        device.version,
        auth.actor()
    );
}

/// `{"data": device}` with the device's `ETag`.
fn with_etag(
    status: StatusCode,
    device: &Device,
    body: &impl Serialize,
) -> ApiResult<HttpResponse> {
    let mut response = json(status, body)?;
    let etag = header::HeaderValue::from_str(&device.etag())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

fn new_key() -> ApiResult<NewDeviceKey> {
    NewDeviceKey::generate().map_err(|e| ApiError::Internal(format!("no randomness: {e}")))
}

async fn list(
    auth: TenantAuth<DevicesRead>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let query = parse_list_query(req.query_string())?;
    let tenant = auth.tenant().to_string();
    let store = state.store.clone();
    let page = blocking(move || store.list(&tenant, &query)).await?;
    json(
        StatusCode::OK,
        &ListBody {
            data: page.devices,
            has_more: page.has_more,
        },
    )
}

async fn get(
    auth: TenantAuth<DevicesRead>,
    id: &str,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    // A point read is a few microseconds over redb's cache: done here, it
    // saves the hop to the blocking pool, which halved throughput.
    let device = state.store.get(auth.tenant(), id)?;
    with_etag(StatusCode::OK, &device, &Data { data: &device })
}

async fn register(
    auth: TenantAuth<Admin>,
    body: JsonObject,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let new = NewDevice::parse(&body.0)?;
    let key = new_key()?;
    let device = state
        .store
        .create(auth.tenant(), new, key.hash, Millis::now())
        .await?;
    log_change(&auth, "registered", &device);
    let mut response = with_etag(
        StatusCode::CREATED,
        &device,
        &DataWithKey {
            data: &device,
            api_key: &key.key,
        },
    )?;
    let location = header::HeaderValue::from_str(&format!("/api/tenant/devices/{}", device.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

async fn update(
    auth: TenantAuth<Admin>,
    id: &str,
    req: &HttpRequest,
    body: JsonObject,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let patch = DevicePatch::parse(&body.0)?;
    // A header that is not text cannot name our ETag, so it never matches.
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .map(|v| IfMatch::parse(v.to_str().unwrap_or("\u{0}")));
    let device = state
        .store
        .update(auth.tenant(), id, patch, if_match, Millis::now())
        .await?;
    log_change(&auth, "updated", &device);
    with_etag(StatusCode::OK, &device, &Data { data: &device })
}

async fn revoke(
    auth: TenantAuth<Admin>,
    id: &str,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let device = state.store.revoke(auth.tenant(), id, Millis::now()).await?;
    log_change(&auth, "revoked", &device);
    json(StatusCode::OK, &serde_json::json!({ "success": true }))
}

async fn rotate_key(
    auth: TenantAuth<Admin>,
    id: &str,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let key = new_key()?;
    let device = state
        .store
        .rotate_key(auth.tenant(), id, key.hash, Millis::now())
        .await?;
    log_change(&auth, "key rotated", &device);
    with_etag(
        StatusCode::OK,
        &device,
        &DataWithKey {
            data: &device,
            api_key: &key.key,
        },
    )
}

/// `status`, `locationId`, `limit`, `startingAfter`; anything else is a 400.
fn parse_list_query(query: &str) -> ApiResult<ListQuery> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::invalid("query", "is not a valid query string"))?;
    let mut out = ListQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &pairs {
        if seen.contains(&name.as_str()) {
            return Err(ApiError::invalid(name, "is given more than once"));
        }
        seen.push(name);
        match name.as_str() {
            "status" => {
                out.status = Some(DeviceStatus::parse(value).ok_or_else(|| {
                    ApiError::invalid(name, "must be active, inactive or revoked")
                })?)
            }
            "locationId" => {
                if !devices::is_tag(value) {
                    return Err(ApiError::invalid(
                        name,
                        "must be 1-64 characters of A-Z a-z 0-9 _ - . :",
                    ));
                }
                out.location_id = Some(value.clone());
            }
            "limit" => {
                let limit = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<usize>().ok())
                    .flatten()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(name, "must be a whole number from 1 to 1000")
                    })?;
                out.limit = Some(limit);
            }
            "startingAfter" => {
                if devices::id::parse(value).is_none() {
                    return Err(ApiError::invalid(
                        name,
                        "must be a device id (dev_ and a ULID)",
                    ));
                }
                out.starting_after = Some(value.clone());
            }
            _ => return Err(ApiError::invalid(name, "unknown query parameter")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        parse_list_query(q).unwrap_err().to_string()
    }

    #[test]
    fn device_paths_are_split_by_hand_exactly() {
        assert_eq!(
            split_device_path("/api/tenant/devices/dev_1"),
            Some(("dev_1", false))
        );
        assert_eq!(
            split_device_path("/api/tenant/devices/dev_1/api-key"),
            Some(("dev_1", true))
        );
        for bad in [
            "/api/tenant/devices/",
            "/api/tenant/devices//api-key",
            "/api/tenant/devices/dev_1/",
            "/api/tenant/devices/dev_1/api-key/",
            "/api/tenant/devices/dev_1/other",
            "/api/tenant/devicesdev_1",
        ] {
            assert_eq!(split_device_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_queries_are_checked_parameter_by_parameter() {
        let q = parse_list_query("status=inactive&limit=1000&locationId=loc:1").unwrap();
        assert_eq!(q.status, Some(DeviceStatus::Inactive));
        assert_eq!(q.limit, Some(1000));
        assert_eq!(q.location_id.as_deref(), Some("loc:1"));
        assert!(parse_list_query("").unwrap().limit.is_none());
        assert!(err("limit=0").starts_with("limit:"));
        assert!(err("limit=1001").starts_with("limit:"));
        assert!(err("limit=+5").starts_with("limit:"));
        assert!(err("limit=99999999999999999999999").starts_with("limit:"));
        assert!(err("status=deleted").starts_with("status:"));
        assert!(err("locationId=a%20b").starts_with("locationId:"));
        assert!(err("startingAfter=dev_abc").starts_with("startingAfter:"));
        assert_eq!(err("page=2"), "page: unknown query parameter");
        assert!(err("limit=1&limit=2").starts_with("limit:"));
    }
}
