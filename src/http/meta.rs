//! Endpoints about the service itself, open without a token.

use actix_web::{web, HttpResponse};

use super::resource;
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
    let counts = state.store.all_stats().await?;
    let text = crate::metrics::render(&counts).map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}

/// 200 while the store answers reads; 503 while it does not (PostgreSQL
/// down), and 200 again once it does.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.store.is_reachable().await {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(r#"{"status":"ok"}"#)
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(r#"{"status":"unavailable"}"#)
    }
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::openapi::document())
}
