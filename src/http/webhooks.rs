//! Webhooks (API.md §7): create, read, update, delete, a new secret, and the
//! deliveries log. All need the `admin` scope.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{json, resource, JsonObject};
use crate::auth::guard::{Admin, TenantAuth};
use crate::devices::Millis;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::webhooks::{self, Webhook, WebhookPatch};

pub const WEBHOOKS: &str = "/api/tenant/webhooks";
pub const WEBHOOK: &str = "/api/tenant/webhooks/{id}";
pub const WEBHOOK_SECRET: &str = "/api/tenant/webhooks/{id}/secret";
pub const WEBHOOK_DELIVERIES: &str = "/api/tenant/webhooks/{id}/deliveries";
pub const WEBHOOK_TEST: &str = "/api/tenant/webhooks/{id}/test";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource(WEBHOOKS)
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource(WEBHOOK)
            .route(web::get().to(read))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    )
    .service(resource(WEBHOOK_SECRET).route(web::post().to(new_secret)))
    .service(resource(WEBHOOK_DELIVERIES).route(web::get().to(deliveries)))
    .service(resource(WEBHOOK_TEST).route(web::post().to(test)));
}

#[derive(Serialize)]
struct One<'a> {
    data: &'a Webhook,
}

#[derive(Serialize)]
struct WithSecret<'a> {
    data: &'a Webhook,
    secret: &'a str,
}

#[derive(Serialize)]
struct Many<T> {
    data: Vec<T>,
}

/// The webhook id in the path, or 404 when it cannot name one.
fn webhook_id(path: &web::Path<String>) -> ApiResult<&str> {
    let id = path.as_str();
    webhooks::id::parse(id)
        .map(|_| id)
        .ok_or(ApiError::NotFound)
}

fn log_change(auth: &TenantAuth<Admin>, what: &str, id: &str) {
    log::info!(
        "webhook {what} tenant={:?} webhook={id} actor={:?}",
        auth.tenant(),
        auth.actor()
    );
}

async fn create(
    auth: TenantAuth<Admin>,
    body: JsonObject,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let new = WebhookPatch::parse_new(&body.0)?;
    let secret = webhooks::new_secret()?;
    let hook = state
        .store
        .create_webhook(auth.tenant(), new, secret.clone(), Millis::now())
        .await?;
    log_change(&auth, "created", &hook.id);
    let mut response = json(
        StatusCode::CREATED,
        &WithSecret {
            data: &hook,
            secret: &secret,
        },
    )?;
    let location = header::HeaderValue::from_str(&format!("{WEBHOOKS}/{}", hook.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

async fn list(auth: TenantAuth<Admin>, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let data = state.store.webhooks(auth.tenant()).await?;
    json(StatusCode::OK, &Many { data })
}

async fn read(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let hook = state
        .store
        .webhook(auth.tenant(), webhook_id(&path)?)
        .await?;
    json(StatusCode::OK, &One { data: &hook })
}

async fn update(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    body: JsonObject,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let patch = WebhookPatch::parse(&body.0)?;
    let id = webhook_id(&path)?;
    let hook = state
        .store
        .update_webhook(auth.tenant(), id, patch, Millis::now())
        .await?;
    log_change(&auth, "updated", id);
    json(StatusCode::OK, &One { data: &hook })
}

async fn delete(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let id = webhook_id(&path)?;
    state.store.delete_webhook(auth.tenant(), id).await?;
    log_change(&auth, "deleted", id);
    json(StatusCode::OK, &serde_json::json!({"success": true}))
}

async fn new_secret(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let id = webhook_id(&path)?;
    let secret = webhooks::new_secret()?;
    let hook = state
        .store
        .set_webhook_secret(auth.tenant(), id, secret.clone(), Millis::now())
        .await?;
    log_change(&auth, "secret rotated", id);
    json(
        StatusCode::OK,
        &WithSecret {
            data: &hook,
            secret: &secret,
        },
    )
}

async fn deliveries(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let data = state
        .store
        .webhook_deliveries(auth.tenant(), webhook_id(&path)?)
        .await?;
    json(StatusCode::OK, &Many { data })
}

/// The body of a test delivery: an event of type `webhook.test`, about no
/// device, that is not part of the feed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TestEvent<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    actor: Option<&'a str>,
    device_id: Option<&'a str>,
    data: TestData,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TestData {
    object: Option<()>,
    previous_attributes: serde_json::Map<String, serde_json::Value>,
}

/// Sends one signed `webhook.test` event to the webhook now (enabled or
/// not), logs the attempt, and answers what happened. The webhook's queue
/// and retries are untouched.
async fn test(
    auth: TenantAuth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let id = webhook_id(&path)?;
    let (url, secret) = state.store.webhook_test_target(auth.tenant(), id).await?;
    let now = Millis::now();
    let event_id = crate::events::id::format(ulid::Ulid::new());
    let body = serde_json::to_vec(&TestEvent {
        id: &event_id,
        kind: TEST_EVENT_TYPE,
        created_at: now.to_rfc3339(),
        actor: auth.principal.subject.as_deref(),
        device_id: None,
        data: TestData {
            object: None,
            previous_attributes: serde_json::Map::new(),
        },
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let delivery =
        crate::webhooks::worker::deliver_once(&url, &secret, &event_id, &body, 1, &state.webhooks)
            .await;
    crate::metrics::record_delivery(delivery.delivered());
    state
        .store
        .log_test_delivery(auth.tenant(), id, delivery.clone())
        .await?;
    log_change(&auth, "tested", id);
    json(StatusCode::OK, &serde_json::json!({ "data": delivery }))
}

/// The type of a test delivery's event.
pub const TEST_EVENT_TYPE: &str = "webhook.test";
