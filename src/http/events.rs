//! The change feed (API.md §7): `GET /api/tenant/events`, a page of the
//! tenant's events after a cursor, waiting up to `waitSeconds` for the first
//! one when there is none yet.

use std::time::Duration;

use actix_web::dev::Service;
use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::rt::time::{timeout, Instant};
use actix_web::{web, HttpRequest, HttpResponse};

use super::{devices::MAX_LIMIT, query, resource};
use crate::auth::guard::{DevicesRead, TenantAuth};
use crate::devices;
use crate::error::{ApiError, ApiResult};
use crate::events::{self, EventType};
use crate::state::AppState;
use crate::store::{EventPage, EventQuery};

pub const EVENTS: &str = "/api/tenant/events";

/// The longest a request may wait for events, in seconds.
pub const MAX_WAIT_SECONDS: usize = 60;
/// A page's size when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(EVENTS)
            .wrap_fn(|mut req, service| {
                fit_headers(&mut req.head_mut().headers);
                service.call(req)
            })
            .route(web::get().to(feed)),
    );
}

/// Re-makes a request's header map to the size of what it holds. actix-web
/// gives every request a map sized for 16 headers (32 slots of about 200
/// bytes: 6.4 KiB), and keeps it until the answer is sent. A long poll
/// keeps its request for up to a minute, and 1,000 parked polls held
/// 6.7 MiB in those maps. Values are not copied: they share their bytes.
fn fit_headers(headers: &mut HeaderMap) {
    if headers.capacity() <= 2 * headers.len().max(FITTED_AT_LEAST) {
        return;
    }
    let mut fitted = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers.iter() {
        fitted.append(name.clone(), value.clone());
    }
    *headers = fitted;
}

/// Below this many headers a map is not re-made.
const FITTED_AT_LEAST: usize = 4;

async fn feed(
    auth: TenantAuth<DevicesRead>,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let (query, wait) = parse_query(req.query_string())?;
    let deadline = Instant::now() + wait;
    // Watch before the first read, so a commit between the read and the
    // wait still wakes this request.
    let mut waiter = match wait.is_zero() {
        true => None,
        false => {
            let filter = events::Filter {
                kind: query.kind,
                device_id: query.device_id.clone(),
            };
            state.store.event_bus().watch(auth.tenant(), filter)
        }
    };
    loop {
        let page = state.store.events(auth.tenant(), &query).await?;
        let Some(waiter) = waiter.as_mut().filter(|_| page.events.is_empty()) else {
            return Ok(respond(&page));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if timeout(left, waiter.changed()).await.is_err() {
            return Ok(respond(&page));
        }
    }
}

/// `{"data": [event…], "hasMore": bool}`, the stored JSON of each event as it is.
fn respond(page: &EventPage) -> HttpResponse {
    let size: usize = page.events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(b"{\"data\":[");
    for (at, event) in page.events.iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&event.json);
    }
    out.extend_from_slice(if page.has_more {
        b"],\"hasMore\":true}".as_slice()
    } else {
        b"],\"hasMore\":false}".as_slice()
    });
    HttpResponse::build(StatusCode::OK)
        .content_type("application/json")
        .body(out)
}

fn parse_query(text: &str) -> ApiResult<(EventQuery, Duration)> {
    let mut out = EventQuery {
        limit: DEFAULT_LIMIT,
        ..EventQuery::default()
    };
    let mut wait = 0;
    for (name, value) in &query::pairs(text)? {
        match name.as_str() {
            "type" => {
                out.kind = Some(EventType::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                    name,
                    "must be device.created, device.updated, device.revoked or device.key_rotated",
                )
                })?)
            }
            "deviceId" => {
                if devices::id::parse(value).is_none() {
                    return Err(ApiError::invalid(
                        name,
                        "must be a device id (dev_ and a ULID)",
                    ));
                }
                out.device_id = Some(value.clone());
            }
            "limit" => out.limit = query::whole_number(name, value, 1..=MAX_LIMIT)?,
            "startingAfter" => {
                if events::id::parse(value).is_none() {
                    return Err(ApiError::invalid(
                        name,
                        "must be an event id (evt_ and a ULID)",
                    ));
                }
                out.starting_after = Some(value.clone());
            }
            "waitSeconds" => wait = query::whole_number(name, value, 0..=MAX_WAIT_SECONDS)?,
            _ => return Err(ApiError::invalid(name, "unknown query parameter")),
        }
    }
    Ok((out, Duration::from_secs(wait as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        parse_query(q).unwrap_err().to_string()
    }

    #[test]
    fn a_request_header_map_is_refitted_to_what_it_holds() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let mut headers = actix_web::dev::RequestHead::default().headers;
        let sent = [
            ("host", "127.0.0.1"),
            ("authorization", "Bearer x"),
            ("accept", "application/json"),
            ("accept", "text/plain"),
            ("x-trace", "1"),
        ];
        for (name, value) in sent {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let before = headers.capacity();
        fit_headers(&mut headers);
        assert!(
            headers.capacity() < before,
            "{} -> {}",
            before,
            headers.capacity()
        );
        assert_eq!(headers.len(), sent.len());
        let accept: Vec<_> = headers.get_all("accept").collect();
        assert_eq!(accept, ["application/json", "text/plain"]);
        assert_eq!(headers.get("authorization").unwrap(), "Bearer x");
        // A map already small enough is left as it is.
        let fitted = headers.capacity();
        fit_headers(&mut headers);
        assert_eq!(headers.capacity(), fitted);
    }

    #[test]
    fn the_feed_query_is_checked() {
        let (q, wait) = parse_query("").unwrap();
        assert_eq!((q.limit, wait), (DEFAULT_LIMIT, Duration::ZERO));
        let (q, wait) = parse_query(
            "type=device.revoked&deviceId=dev_01JD0000000000000000000000&limit=5&startingAfter=evt_01JD0000000000000000000000&waitSeconds=60",
        )
        .unwrap();
        assert_eq!(q.kind, Some(EventType::Revoked));
        assert_eq!(q.limit, 5);
        assert_eq!(wait, Duration::from_secs(60));
        assert!(err("type=device.deleted").starts_with("type:"));
        assert!(err("deviceId=evt_01JD0000000000000000000000").starts_with("deviceId:"));
        assert!(err("startingAfter=dev_01JD0000000000000000000000").starts_with("startingAfter:"));
        assert!(err("waitSeconds=61").starts_with("waitSeconds:"));
        assert!(err("limit=0").starts_with("limit:"));
        assert!(err("since=1").starts_with("since:"));
        assert!(err("limit=1&limit=2").starts_with("limit:"));
    }
}
