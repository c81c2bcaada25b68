//! The one error type of the HTTP API, and the one of start-up.
//!
//! `ApiError` is the only place that writes the error envelope of API.md §5:
//! `{"error": {"code": "...", "message": "..."}}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Why a bearer credential was refused; becomes the RFC 6750 `error` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerProblem {
    /// No credential at all: the challenge carries no `error` attribute.
    Missing,
    /// Present but malformed, badly signed, expired, of the wrong issuer...
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{message}")]
    Unauthorized {
        problem: BearerProblem,
        message: &'static str,
    },
    #[error("this device has been revoked")]
    DeviceRevokedAuth,
    #[error("this token lacks the `{0}` scope")]
    InsufficientScope(&'static str),
    #[error("this device is inactive")]
    DeviceInactive,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    #[error("this device has been revoked and can no longer be changed")]
    DeviceRevokedConflict,
    #[error("the device has changed since the given ETag")]
    PreconditionFailed,
    #[error("{0}")]
    IdempotencyConflict(&'static str),
    #[error("the tenant already has its maximum of {0} devices (limits.max_devices_per_tenant)")]
    QuotaExceeded(u64),
    #[error("the tenant already has its maximum of {0} webhooks")]
    WebhookQuotaExceeded(u64),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body must be sent as application/json")]
    UnsupportedMediaType,
    /// The body did not arrive in time; the connection is then closed.
    #[error("the request body did not arrive within {0} s of the request head")]
    BodyTimeout(u64),
    /// The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
    #[error("the database cannot be written just now; reads keep working")]
    StorageUnavailable,
}

pub type ApiResult<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// One error of each kind, for the API description and its tests.
    pub fn each_kind() -> Vec<ApiError> {
        vec![
            ApiError::InvalidRequest(String::new()),
            ApiError::missing_credentials(),
            ApiError::DeviceRevokedAuth,
            ApiError::InsufficientScope("admin"),
            ApiError::DeviceInactive,
            ApiError::NotFound,
            ApiError::MethodNotAllowed(""),
            ApiError::DeviceRevokedConflict,
            ApiError::PreconditionFailed,
            ApiError::IdempotencyConflict(""),
            ApiError::QuotaExceeded(0),
            ApiError::WebhookQuotaExceeded(0),
            ApiError::PayloadTooLarge(0),
            ApiError::UnsupportedMediaType,
            ApiError::BodyTimeout(0),
            ApiError::Internal(String::new()),
            ApiError::StorageUnavailable,
        ]
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::DeviceRevokedAuth | ApiError::DeviceRevokedConflict => "device_revoked",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::DeviceInactive => "device_inactive",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::QuotaExceeded(_) | ApiError::WebhookQuotaExceeded(_) => "quota_exceeded",
            ApiError::IdempotencyConflict(_) => "idempotency_conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BodyTimeout(_) => "request_timeout",
            ApiError::Internal(_) => "internal",
            ApiError::StorageUnavailable => "storage_unavailable",
        }
    }

    pub fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        ApiError::InvalidRequest(format!("{field}: {message}"))
    }

    pub fn unauthorized(message: &'static str) -> Self {
        ApiError::Unauthorized {
            problem: BearerProblem::Invalid,
            message,
        }
    }

    pub fn missing_credentials() -> Self {
        ApiError::Unauthorized {
            problem: BearerProblem::Missing,
            message: "a bearer token is required",
        }
    }

    fn www_authenticate(&self) -> Option<String> {
        const REALM: &str = "Bearer realm=\"devicehub\"";
        match self {
            ApiError::Unauthorized {
                problem: BearerProblem::Missing,
                ..
            } => Some(REALM.to_string()),
            ApiError::Unauthorized { message, .. } => Some(format!(
                "{REALM}, error=\"invalid_token\", error_description=\"{message}\""
            )),
            ApiError::DeviceRevokedAuth => Some(format!(
                "{REALM}, error=\"invalid_token\", error_description=\"device revoked\""
            )),
            ApiError::InsufficientScope(scope) => Some(format!(
                "{REALM}, error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } | ApiError::DeviceRevokedAuth => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_)
            | ApiError::DeviceInactive
            | ApiError::QuotaExceeded(_)
            | ApiError::WebhookQuotaExceeded(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DeviceRevokedConflict | ApiError::IdempotencyConflict(_) => {
                StatusCode::CONFLICT
            }
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            log::error!("internal error: {detail}");
        }
        let message = self.to_string();
        let body = serde_json::to_vec(&Envelope {
            error: Body {
                code: self.code(),
                message: &message,
            },
        })
        .unwrap_or_default();
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        if let Some(challenge) = self.www_authenticate() {
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if let ApiError::MethodNotAllowed(allow) = self {
            response.insert_header((header::ALLOW, *allow));
        }
        if let ApiError::BodyTimeout(_) = self {
            // The rest of the body may still come: never wait to drain it.
            response.force_close();
        }
        response.body(body)
    }
}

/// A reason the process cannot start or a command cannot run: one line for the
/// operator, naming the configuration key or file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

impl StartupError {
    /// Folds a multi-line cause (a TOML parser's excerpt, say) into one line:
    /// its first and last lines.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        let lines: Vec<&str> = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.as_slice() {
            [] | [_] => StartupError(message.trim().to_string()),
            [first, .., last] => StartupError(format!("{first}: {last}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(err: &ApiError) -> serde_json::Value {
        let bytes = err.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn internal_errors_never_show_their_detail() {
        let err = ApiError::Internal("redb: /secret/path corrupted".into());
        let body = body_of(&err);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["message"], "internal error");
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = ApiError::missing_credentials().error_response();
        assert_eq!(
            missing.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"devicehub\""
        );
        let scope = ApiError::InsufficientScope("admin").error_response();
        assert_eq!(scope.status(), StatusCode::FORBIDDEN);
        assert!(scope
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .contains("error=\"insufficient_scope\", scope=\"admin\""));
    }

    #[test]
    fn startup_errors_are_one_line() {
        let err = StartupError::new("config file x: invalid: TOML parse error at line 1\n  |\n1 | [server\n  |  ^\nunclosed table\n");
        assert_eq!(
            err.to_string(),
            "config file x: invalid: TOML parse error at line 1: unclosed table"
        );
    }

    #[test]
    fn the_two_device_revoked_codes_differ_in_status() {
        assert_eq!(
            ApiError::DeviceRevokedAuth.status_code(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::DeviceRevokedConflict.status_code(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            body_of(&ApiError::DeviceRevokedAuth)["error"]["code"],
            "device_revoked"
        );
    }
}
