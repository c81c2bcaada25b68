//! The web dashboard: static assets embedded in the binary, served at `/`.
//! It talks to the same tenant API as any client, with a token the user
//! pastes (or the demo URL carries in its fragment, which never reaches the
//! server).

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::resource;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/").route(web::get().to(index)))
        .service(resource("/app.js").route(web::get().to(app_js)))
        .service(resource("/app.css").route(web::get().to(app_css)));
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    response
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain files, no build step, no CDN: the page loads its own two files
    /// and nothing from anywhere else, and no test tool (axe-core) is bundled.
    #[test]
    fn the_dashboard_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import", "axe"] {
                assert!(!text.contains(needle), "{name} contains {needle:?}");
            }
        }
        let sources: Vec<&str> = INDEX_HTML
            .split(" src=\"")
            .skip(1)
            .chain(INDEX_HTML.split(" href=\"").skip(1))
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        // The sections' links lead to this page itself.
        assert_eq!(
            sources,
            [
                "/app.js",
                "data:,",
                "/app.css",
                "#main",
                "/",
                "/?view=webhooks"
            ]
        );
    }
}
