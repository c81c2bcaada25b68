//! Tenant endpoints (API.md §3), reached with an access token.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{blocking, json, resource, JsonObject};
use crate::auth::device_key::NewDeviceKey;
use crate::auth::guard::{Admin, DevicesRead, TenantAuth};
use crate::devices::{self, Device, DevicePatch, DeviceStatus, IfMatch, Millis, NewDevice};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::ListQuery;

const MAX_LIMIT: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/tenant/devices")
            .route(web::get().to(list))
            .route(web::post().to(register)),
    )
    .service(
        resource("/api/tenant/devices/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(revoke)),
    )
    .service(resource("/api/tenant/devices/{id}/api-key").route(web::post().to(rotate_key)));
}

#[derive(Serialize)]
struct Data<'a> {
    data: &'a Device,
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

fn device_id(req: &HttpRequest) -> String {
    req.match_info().get("id").unwrap_or_default().to_string()
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
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    // A point read is a few microseconds over redb's cache: done here, it
    // saves the hop to the blocking pool, which halved throughput.
    let device = state.store.get(auth.tenant(), &device_id(&req))?;
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
    log::info!(
        "device registered tenant={:?} device={} actor={:?}",
        auth.tenant(),
        device.id,
        auth.actor()
    );
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
    req: HttpRequest,
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
        .update(
            auth.tenant(),
            &device_id(&req),
            patch,
            if_match,
            Millis::now(),
        )
        .await?;
    log::info!(
        "device updated tenant={:?} device={} version={} actor={:?}",
        auth.tenant(),
        device.id,
        device.version,
        auth.actor()
    );
    with_etag(StatusCode::OK, &device, &Data { data: &device })
}

async fn revoke(
    auth: TenantAuth<Admin>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let device = state
        .store
        .revoke(auth.tenant(), &device_id(&req), Millis::now())
        .await?;
    log::info!(
        "device revoked tenant={:?} device={} actor={:?}",
        auth.tenant(),
        device.id,
        auth.actor()
    );
    json(StatusCode::OK, &serde_json::json!({ "success": true }))
}

async fn rotate_key(
    auth: TenantAuth<Admin>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let key = new_key()?;
    let device = state
        .store
        .rotate_key(auth.tenant(), &device_id(&req), key.hash, Millis::now())
        .await?;
    log::info!(
        "device key rotated tenant={:?} device={} actor={:?}",
        auth.tenant(),
        device.id,
        auth.actor()
    );
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
