//! Endpoints about the service itself, open without a token.

use actix_web::{web, HttpResponse};

use super::{blocking, resource};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/openapi.json").route(web::get().to(openapi)));
}

pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/metrics").route(web::get().to(metrics)));
}

/// Prometheus text; the device counts are the store's kept counts, read at
/// each scrape.
async fn metrics(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let store = state.store.clone();
    let counts = blocking(move || store.all_stats()).await?;
    let text = crate::metrics::render(&counts).map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document())
}
