//! Tenant endpoints (API.md §3), reached with an access token.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::{header, Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Serialize;

use super::idempotent::{self, Pending, Prepared};
use super::list_gate::ListPass;
use super::query;
use super::{allowed_methods, body, json, resource, Data, JsonObject};
use crate::auth::device_key::NewDeviceKey;
use crate::auth::guard::{Admin, DevicesRead, TenantAuth};
use crate::devices::{
    self, Device, DevicePatch, DeviceStatus, IfMatch, KeyRotation, Millis, NewDevice,
};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::Answer;
use crate::state::AppState;
use crate::store::{DeviceList, ListQuery, Order};

pub const MAX_LIMIT: usize = 1000;
/// The longest `q` a list accepts, in characters.
pub const Q_MAX_CHARS: usize = 200;
/// A streamed list sends at most this many devices per chunk...
const STREAM_BATCH: usize = 256;
/// ...and looks at no more than this many per turn on the worker, so a
/// filter that matches little cannot hold a worker for a whole tenant.
const STREAM_VISITS: usize = 1024;

pub const DEVICES: &str = "/api/tenant/devices";
pub const DEVICE: &str = "/api/tenant/devices/{id}";
pub const DEVICE_KEY: &str = "/api/tenant/devices/{id}/api-key";
pub const STATS: &str = "/api/tenant/stats";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(DEVICES)
            .route(web::get().to(list))
            .route(web::post().to(register)),
    )
    .service(resource(STATS).route(web::get().to(stats)))
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
    // The writes run in futures of their own (boxed): this handler's future
    // is as large as its largest state, and actix moves it into a box on
    // every request, so with the writes inline every GET copied PATCH's
    // kilobytes of state.
    match (route, req.method()) {
        (DEVICE, &Method::GET) => get(TenantAuth::extract(&req).await?, id, state).await,
        (DEVICE, &Method::PATCH) => {
            Box::pin(async {
                let auth = TenantAuth::extract(&req).await?;
                let body = JsonObject::from_request(&req, &mut payload.into_inner()).await?;
                update(auth, id, &req, body, state).await
            })
            .await
        }
        (DEVICE, &Method::DELETE) => {
            Box::pin(async { revoke(TenantAuth::extract(&req).await?, id, state).await }).await
        }
        (DEVICE_KEY, &Method::POST) => Box::pin(rotate(&req, id, payload, state)).await,
        _ => Err(ApiError::MethodNotAllowed(allowed_methods(route))),
    }
}

/// `POST /api/tenant/devices/{id}/api-key`.
async fn rotate(
    req: &HttpRequest,
    id: &str,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let auth = TenantAuth::extract(req).await?;
    let raw = body::read_limited(req, payload).await?;
    let pending = match idempotent::prepare(req, raw.as_ref(), auth.tenant(), &state).await? {
        Prepared::Replay(response) => return Ok(response),
        Prepared::Run(pending) => pending,
    };
    let rotation = if has_body(req) {
        KeyRotation::parse(&body::json_object(req, raw.as_ref())?.0)?
    } else {
        KeyRotation::default()
    };
    rotate_key(auth, id, rotation, pending, state).await
}

/// Whether the request carries a body (the rotation's is optional).
fn has_body(req: &HttpRequest) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
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
struct RotatedKey<'a> {
    data: &'a Device,
    api_key: &'a str,
    #[serde(serialize_with = "devices::opt_as_rfc3339")]
    previous_key_expires_at: Option<Millis>,
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
    // From the String itself: no second copy of the tag.
    let etag = header::HeaderValue::try_from(device.etag())
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
    if query.limit.is_some() {
        let page = state.store.list(&tenant, &query).await?;
        return json(
            StatusCode::OK,
            &ListBody {
                data: page.devices,
                has_more: page.has_more,
            },
        );
    }
    let pass = state.lists.enter(&tenant).await;
    let cursor = state.store.cursor(&tenant, query).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(StreamedList {
            cursor,
            batch: Vec::with_capacity(STREAM_BATCH),
            started: false,
            first: true,
            done: false,
            _pass: pass,
        }))
}

/// An unlimited list, `{"data":[…],"hasMore":false}`, read from one snapshot
/// a batch at a time as the client takes it: its memory does not grow with
/// the tenant. A storage error midway ends the response early, so the
/// client sees a truncated body rather than a list that looks whole.
struct StreamedList {
    cursor: DeviceList,
    batch: Vec<Device>,
    started: bool,
    first: bool,
    done: bool,
    _pass: ListPass,
}

impl MessageBody for StreamedList {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let more = match this
            .cursor
            .poll_batch(cx, STREAM_BATCH, STREAM_VISITS, &mut this.batch)
        {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(more)) => more,
            Poll::Ready(Err(e)) => {
                this.done = true;
                log::error!("a streamed list stopped: {e}");
                return Poll::Ready(Some(Err(std::io::Error::other("storage error"))));
            }
        };
        let mut out = Vec::with_capacity(this.batch.len() * 320 + 32);
        if !this.started {
            this.started = true;
            out.extend_from_slice(b"{\"data\":[");
        }
        for device in this.batch.drain(..) {
            if !this.first {
                out.push(b',');
            }
            this.first = false;
            if let Err(e) = serde_json::to_writer(&mut out, &device) {
                this.done = true;
                return Poll::Ready(Some(Err(std::io::Error::other(e))));
            }
        }
        if !more {
            this.done = true;
            out.extend_from_slice(b"],\"hasMore\":false}");
        }
        if out.is_empty() {
            // A turn that matched nothing: let other work run, then go on.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Ok(Bytes::from(out))))
    }
}

async fn stats(
    auth: TenantAuth<DevicesRead>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let counts = state.store.stats(auth.tenant()).await?;
    json(
        StatusCode::OK,
        &serde_json::json!({ "data": {
            "total": counts.total(),
            "active": counts.active,
            "inactive": counts.inactive,
            "revoked": counts.revoked,
        }}),
    )
}

async fn get(
    auth: TenantAuth<DevicesRead>,
    id: &str,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    // A point read is a few microseconds over redb's cache: done here, it
    // saves the hop to the blocking pool, which halved throughput.
    let device = state.store.get(auth.tenant(), id).await?;
    with_etag(StatusCode::OK, &device, &Data { data: &device })
}

async fn register(
    auth: TenantAuth<Admin>,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let raw = body::read_limited(&req, payload).await?;
    let pending = match idempotent::prepare(&req, raw.as_ref(), auth.tenant(), &state).await? {
        Prepared::Replay(response) => return Ok(response),
        Prepared::Run(pending) => pending,
    };
    let new = NewDevice::parse(&body::json_object(&req, raw.as_ref())?.0)?;
    let key = new_key()?;
    let api_key = key.key.clone();
    let remember =
        pending.remember(auth.tenant(), move |device, _| registered(device, &api_key))?;
    let device = state
        .store
        .create(
            auth.author(),
            new,
            key.hash,
            Millis::now(),
            state.limits.max_devices_per_tenant,
            remember,
        )
        .await?;
    log_change(&auth, "registered", &device);
    idempotent::respond(&registered(&device, &key.key)?, false)
}

/// The answer to a registration: 201, the device and its one-time key.
fn registered(device: &Device, api_key: &str) -> ApiResult<Answer> {
    Ok(Answer {
        status: StatusCode::CREATED.as_u16(),
        headers: vec![
            (header::ETAG.to_string(), device.etag()),
            (
                header::LOCATION.to_string(),
                format!("{DEVICES}/{}", device.id),
            ),
        ],
        body: to_json(&DataWithKey {
            data: device,
            api_key,
        })?,
    })
}

/// The answer to a rotation: the device, its new key, and when the old one
/// stops.
fn rotated(device: &Device, api_key: &str, grace_end: Option<Millis>) -> ApiResult<Answer> {
    Ok(Answer {
        status: StatusCode::OK.as_u16(),
        headers: vec![(header::ETAG.to_string(), device.etag())],
        body: to_json(&RotatedKey {
            data: device,
            api_key,
            previous_key_expires_at: grace_end,
        })?,
    })
}

fn to_json(body: &impl Serialize) -> ApiResult<String> {
    serde_json::to_string(body).map_err(|e| ApiError::Internal(e.to_string()))
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
        .update(auth.author(), id, patch, if_match, Millis::now())
        .await?;
    log_change(&auth, "updated", &device);
    with_etag(StatusCode::OK, &device, &Data { data: &device })
}

async fn revoke(
    auth: TenantAuth<Admin>,
    id: &str,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let device = state.store.revoke(auth.author(), id, Millis::now()).await?;
    log_change(&auth, "revoked", &device);
    json(StatusCode::OK, &serde_json::json!({ "success": true }))
}

async fn rotate_key(
    auth: TenantAuth<Admin>,
    id: &str,
    rotation: KeyRotation,
    pending: Pending,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let key = new_key()?;
    let api_key = key.key.clone();
    let remember = pending.remember(auth.tenant(), move |device, grace_end| {
        rotated(device, &api_key, grace_end)
    })?;
    let (device, grace_end) = state
        .store
        .rotate_key(
            auth.author(),
            id,
            key.hash,
            rotation.grace_period_seconds,
            Millis::now(),
            remember,
        )
        .await?;
    log_change(&auth, "key rotated", &device);
    idempotent::respond(&rotated(&device, &key.key, grace_end)?, false)
}

/// `status`, `locationId`, `q`, `lastSeenBefore`, `lastSeenAfter`, `order`,
/// `limit`, `startingAfter`; anything else is a 400.
fn parse_list_query(query: &str) -> ApiResult<ListQuery> {
    let mut out = ListQuery::default();
    for (name, value) in &query::pairs(query)? {
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
            "q" => {
                let chars = value.chars().count();
                if chars == 0 || chars > Q_MAX_CHARS {
                    return Err(ApiError::invalid(
                        name,
                        format!("must be 1-{Q_MAX_CHARS} characters"),
                    ));
                }
                out.name_contains = Some(value.to_lowercase());
            }
            "lastSeenBefore" => out.last_seen_before = Some(parse_time(name, value)?),
            "lastSeenAfter" => out.last_seen_after = Some(parse_time(name, value)?),
            "order" => {
                out.order = match value.as_str() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => return Err(ApiError::invalid(name, "must be asc or desc")),
                }
            }
            "limit" => out.limit = Some(query::whole_number(name, value, 1..=MAX_LIMIT)?),
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

/// An RFC 3339 time as Unix milliseconds (times before 1970 count as 0).
fn parse_time(name: &str, value: &str) -> ApiResult<Millis> {
    let time = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        ApiError::invalid(
            name,
            "must be an RFC 3339 time, for example 2024-01-15T10:00:00.000Z",
        )
    })?;
    let millis = time.unix_timestamp_nanos() / 1_000_000;
    Ok(Millis(u64::try_from(millis.max(0)).unwrap_or(u64::MAX)))
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

    #[test]
    fn search_order_and_check_in_filters_are_parsed() {
        let q = parse_list_query(
            "q=Scanner%20%C3%89&order=desc&lastSeenBefore=2024-01-15T10:00:00.000Z&lastSeenAfter=2024-01-15T11:00:00%2B01:00",
        )
        .unwrap();
        assert_eq!(q.name_contains.as_deref(), Some("scanner é"));
        assert_eq!(q.order, Order::Desc);
        assert_eq!(q.last_seen_before, Some(Millis(1_705_312_800_000)));
        assert_eq!(q.last_seen_after, Some(Millis(1_705_312_800_000)));
        assert_eq!(parse_list_query("").unwrap().order, Order::Asc);
        assert!(err("q=").starts_with("q:"));
        assert!(err(&format!("q={}", "a".repeat(201))).starts_with("q:"));
        assert!(parse_list_query(&format!("q={}", "é".repeat(200))).is_ok());
        assert!(err("order=newest").starts_with("order:"));
        assert!(err("lastSeenBefore=yesterday").starts_with("lastSeenBefore:"));
        assert!(err("lastSeenAfter=2024-01-15").starts_with("lastSeenAfter:"));
    }
}
