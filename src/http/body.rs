//! The JSON body of a write: `application/json` (else 415), at most 64 KiB
//! (else 413), complete within `BODY_DEADLINE` of the request head (else 408
//! and the connection is closed), a JSON object (else 400).

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use serde_json::{Map, Value};

use crate::error::ApiError;

pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a body may take to arrive once its request head has. A client
/// that dribbles a body holds a connection and a worker's attention; past
/// this it is cut off. The head has its own 5 s (`client_request_timeout`).
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

type LocalBoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

pub struct JsonObject(pub Map<String, Value>);

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl FromRequest for JsonObject {
    type Error = ApiError;
    type Future = LocalBoxFuture<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = if !is_json(req) {
            Err(ApiError::UnsupportedMediaType)
        } else if declared_length(req).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES))
        } else {
            web::Payload::from_request(req, payload)
                .into_inner()
                .map_err(|_| ApiError::invalid("body", "could not be read"))
        };
        // Extractors run as soon as the head is parsed, and the timer starts
        // when `timeout` is called: the deadline counts from the head.
        let read = checked.map(|body| {
            actix_web::rt::time::timeout(BODY_DEADLINE, body.to_bytes_limited(MAX_BODY_BYTES))
        });
        Box::pin(async move {
            let bytes = read?
                .await
                .map_err(|_| ApiError::BodyTimeout(BODY_DEADLINE.as_secs()))?
                .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY_BYTES))?
                .map_err(|_| ApiError::invalid("body", "could not be read"))?;
            parse_object(&bytes)
        })
    }
}

/// Reads a body of at most `MAX_BODY_BYTES` whatever its type, for a
/// request that must be fingerprinted before it is checked (an idempotent
/// write); None when it is larger. `json_object` then checks it as the
/// extractor would.
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Option<web::Bytes>, ApiError> {
    if declared_length(req).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Ok(None);
    }
    let read =
        actix_web::rt::time::timeout(BODY_DEADLINE, payload.to_bytes_limited(MAX_BODY_BYTES))
            .await
            .map_err(|_| ApiError::BodyTimeout(BODY_DEADLINE.as_secs()))?;
    match read {
        Err(_) => Ok(None),
        Ok(read) => read
            .map(Some)
            .map_err(|_| ApiError::invalid("body", "could not be read")),
    }
}

/// The checks of `JsonObject` (415, 413, 400) on a body read by
/// `read_limited`.
pub fn json_object(req: &HttpRequest, body: Option<&web::Bytes>) -> Result<JsonObject, ApiError> {
    if !is_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = body.ok_or(ApiError::PayloadTooLarge(MAX_BODY_BYTES))?;
    parse_object(bytes)
}

fn parse_object(bytes: &[u8]) -> Result<JsonObject, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(JsonObject(map)),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("malformed JSON ({e})"))),
    }
}
