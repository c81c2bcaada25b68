//! The guards: typed extractors that authenticate a request before its
//! handler runs. A handler states the access it needs in its signature
//! (`TenantAuth<Admin>`, `DeviceAuth`) and never reads `Authorization` itself.

use std::future::{ready, Future, Ready};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use super::device_key;
use super::token::{Principal, Scopes};
use crate::devices::{Device, DeviceStatus, Millis};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::KeyOwner;

/// A scope a tenant endpoint requires.
pub trait RequiredScope {
    const NAME: &'static str;
    fn granted(scopes: Scopes) -> bool;
}

/// `devices:read` (or `admin`, which implies it).
pub struct DevicesRead;
/// `admin`.
pub struct Admin;

impl RequiredScope for DevicesRead {
    const NAME: &'static str = Scopes::DEVICES_READ;
    fn granted(scopes: Scopes) -> bool {
        scopes.can_read()
    }
}

impl RequiredScope for Admin {
    const NAME: &'static str = Scopes::ADMIN;
    fn granted(scopes: Scopes) -> bool {
        scopes.is_admin()
    }
}

/// A verified access token carrying scope `S`.
pub struct TenantAuth<S> {
    pub principal: Arc<Principal>,
    scope: PhantomData<S>,
}

impl<S> TenantAuth<S> {
    pub fn tenant(&self) -> &str {
        &self.principal.tenant_id
    }

    /// The tenant and the token's `sub`: who makes a change, for its event.
    pub fn author(&self) -> crate::store::Author<'_> {
        crate::store::Author {
            tenant: &self.principal.tenant_id,
            actor: self.principal.subject.as_deref(),
        }
    }

    /// Who to name in change logs.
    pub fn actor(&self) -> &str {
        self.principal.subject.as_deref().unwrap_or("-")
    }
}

impl<S: RequiredScope> FromRequest for TenantAuth<S> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate::<S>(req))
    }
}

fn authenticate<S: RequiredScope>(req: &HttpRequest) -> Result<TenantAuth<S>, ApiError> {
    let token = bearer(req)?;
    if token.starts_with(device_key::PREFIX) {
        return Err(ApiError::unauthorized(
            "this is a device key: device keys are for GET /api/device/me; the tenant API takes an access token",
        ));
    }
    let principal = state(req)?.tokens.verify(token)?;
    if !S::granted(principal.scopes) {
        return Err(ApiError::InsufficientScope(S::NAME));
    }
    Ok(TenantAuth {
        principal,
        scope: PhantomData,
    })
}

fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))
}

/// Longer credentials are refused before any decoding: real access tokens are
/// well under 2 KiB, device keys 47 bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::missing_credentials());
    };
    let malformed = || ApiError::unauthorized("the Authorization header must be `Bearer <token>`");
    let value = value.to_str().map_err(|_| {
        // Usually a placeholder with a literal ellipsis copied from the docs:
        // the header has the right shape, its token does not. (The message
        // also goes into `WWW-Authenticate`, so it stays ASCII itself.)
        let bytes = value.as_bytes();
        if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            ApiError::unauthorized(
                "the token has characters that are not allowed: only printable ASCII (was a placeholder with an ellipsis copied from the docs?)",
            )
        } else {
            malformed()
        }
    })?;
    let (scheme, credential) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let credential = credential.trim();
    if credential.is_empty() {
        return Err(malformed());
    }
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(ApiError::unauthorized("the token is too large"));
    }
    Ok(credential)
}

/// A device authenticated by its API key, active and not revoked.
pub struct DeviceAuth {
    pub tenant: String,
    pub device: Device,
    /// The key is the one replaced by the last rotation, still in its grace
    /// period: the device should pick up its new key.
    pub deprecated: bool,
}

/// The look-up of a device key: answered in place from the embedded store
/// (a point read, like any other), or a query to PostgreSQL.
pub enum DeviceAuthFuture {
    Ready(Ready<Result<DeviceAuth, ApiError>>),
    Query(Pin<Box<dyn Future<Output = Result<DeviceAuth, ApiError>>>>),
}

impl Future for DeviceAuthFuture {
    type Output = Result<DeviceAuth, ApiError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            DeviceAuthFuture::Ready(ready) => Pin::new(ready).poll(cx),
            DeviceAuthFuture::Query(query) => query.as_mut().poll(cx),
        }
    }
}

impl FromRequest for DeviceAuth {
    type Error = ApiError;
    type Future = DeviceAuthFuture;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let found = bearer(req).and_then(|key| {
            if !device_key::is_well_formed(key) {
                return Err(ApiError::unauthorized("unknown device key"));
            }
            Ok((device_key::hash(key), state(req)?.store.clone()))
        });
        let (hash, store) = match found {
            Ok(found) => found,
            Err(e) => return DeviceAuthFuture::Ready(ready(Err(e))),
        };
        match store.embedded() {
            Some(embedded) => DeviceAuthFuture::Ready(ready(
                embedded
                    .find_by_key(&hash, Millis::now())
                    .map_err(ApiError::from)
                    .and_then(authenticated),
            )),
            None => DeviceAuthFuture::Query(Box::pin(async move {
                authenticated(store.find_by_key(&hash, Millis::now()).await?)
            })),
        }
    }
}

/// The device a key names, if it may call the device API.
fn authenticated(owner: Option<KeyOwner>) -> Result<DeviceAuth, ApiError> {
    match owner {
        None => Err(ApiError::unauthorized("unknown device key")),
        Some(owner) if owner.device.status == DeviceStatus::Revoked => {
            Err(ApiError::DeviceRevokedAuth)
        }
        Some(owner) if owner.device.status == DeviceStatus::Inactive => {
            Err(ApiError::DeviceInactive)
        }
        Some(owner) => Ok(DeviceAuth {
            tenant: owner.tenant,
            device: owner.device,
            deprecated: owner.deprecated,
        }),
    }
}
