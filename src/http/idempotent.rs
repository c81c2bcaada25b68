//! The HTTP side of `Idempotency-Key` (API.md §3): a replay is answered
//! right after the guard, before any other check; a new key is claimed for
//! the duration of the request and its answer is kept with the write.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use crate::devices::{Device, Millis};
use crate::error::{ApiError, ApiResult};
use crate::idempotency::{self, Answer, Claim, IdempotencyKey};
use crate::state::AppState;
use crate::store::Remember;

/// What to do with an idempotent write once its key has been looked at.
pub enum Prepared {
    /// Answer with this: the kept answer of an earlier request.
    Replay(HttpResponse),
    /// Go on; `Pending` keeps the answer if the write succeeds.
    Run(Pending),
}

/// An idempotent write in progress.
pub enum Pending {
    /// No `Idempotency-Key` was sent.
    Plain,
    /// The header is malformed: a 400 with this message, once the body
    /// checks have passed.
    Malformed(String),
    /// A fresh key, claimed until this request ends.
    Claimed {
        key: IdempotencyKey,
        fingerprint: idempotency::Fingerprint,
        _claim: Claim,
    },
}

/// Looks up the request's `Idempotency-Key`: replays the kept answer when the
/// same key came with the same method, path and body (`raw`; None when too
/// large to have been kept), refuses another request under the same key
/// (409), and otherwise claims the key for this request.
pub async fn prepare(
    req: &HttpRequest,
    raw: Option<&Bytes>,
    tenant: &str,
    state: &AppState,
) -> ApiResult<Prepared> {
    let Some(header) = req.headers().get(idempotency::HEADER) else {
        return Ok(Prepared::Run(Pending::Plain));
    };
    let key = match IdempotencyKey::parse(header.as_bytes()) {
        Ok(key) => key,
        Err(e) => return Ok(Prepared::Run(Pending::Malformed(e.to_string()))),
    };
    let id = key.id();
    let fingerprint = idempotency::fingerprint(
        req.method().as_str(),
        req.path(),
        raw.map_or(&[][..], |b| b.as_ref()),
    );
    let Some(claim) = state.idempotency.claim(tenant, id) else {
        return Err(ApiError::IdempotencyConflict(
            "a request with this Idempotency-Key is still running",
        ));
    };
    if let Some(kept) = state.store.remembered(tenant, &id, Millis::now()).await? {
        if raw.is_none() || kept.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyConflict(
                "this Idempotency-Key was used with another request",
            ));
        }
        let answer = key
            .open(tenant, &kept.sealed)
            .map_err(|e| ApiError::Internal(format!("idempotency: {e}")))?;
        return Ok(Prepared::Replay(respond(&answer, true)?));
    }
    Ok(Prepared::Run(Pending::Claimed {
        key,
        fingerprint,
        _claim: claim,
    }))
}

impl Pending {
    /// What to keep with the write: `answer` builds the response from the
    /// device the write made (and, for a rotation, the old key's grace end).
    /// A malformed header is refused here, after the body checks.
    pub fn remember(
        &self,
        tenant: &str,
        answer: impl FnOnce(&Device, Option<Millis>) -> ApiResult<Answer> + Send + 'static,
    ) -> ApiResult<Option<Remember>> {
        match self {
            Pending::Plain => Ok(None),
            Pending::Malformed(message) => Err(ApiError::InvalidRequest(message.clone())),
            Pending::Claimed {
                key, fingerprint, ..
            } => {
                // The claim stays with this request until it has answered,
                // after the commit that keeps the answer.
                let (key, tenant) = (key.clone(), tenant.to_string());
                Ok(Some(Remember {
                    id: key.id(),
                    fingerprint: *fingerprint,
                    seal: Box::new(move |device, grace_end| {
                        let answer = answer(device, grace_end).map_err(|e| e.to_string())?;
                        key.seal(&tenant, &answer)
                    }),
                }))
            }
        }
    }
}

/// The response an `Answer` describes; a replay says so.
pub fn respond(answer: &Answer, replayed: bool) -> ApiResult<HttpResponse> {
    let status = StatusCode::from_u16(answer.status)
        .map_err(|e| ApiError::Internal(format!("a kept status: {e}")))?;
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    for (name, value) in &answer.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|e| ApiError::Internal(format!("a kept header: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| ApiError::Internal(format!("a kept header: {e}")))?;
        response.insert_header((name, value));
    }
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.body(answer.body.clone()))
}
