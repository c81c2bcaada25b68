//! Prometheus metrics (`GET /metrics`, API.md §8), kept in one process-wide
//! registry of the `prometheus` crate (lock-free counters and histograms).
//!
//! Labels hold route templates and method names from fixed lists, never a
//! path as sent: no device id, tenant, key or token reaches a label, and a
//! client cannot grow the series by inventing paths or methods.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::{LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::devices::DeviceStatus;
use crate::http::{PAGE_ROUTES, ROUTES};
use crate::store::StatusCounts;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label of a path no route claims.
pub const UNMATCHED: &str = "unmatched";

/// Every route label: the templates of `ROUTES` and `PAGE_ROUTES`, then
/// `UNMATCHED`.
static ROUTE_LABELS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .chain(PAGE_ROUTES)
        .map(|(path, _)| *path)
        .chain([UNMATCHED])
        .collect()
});

/// The method labels: the standard methods, then `other` for the rest.
const METHODS: [&str; 8] = [
    "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "other",
];

/// The statuses whose counters are kept at hand (those devicehub answers
/// with); any other status is looked up by its labels.
const STATUSES: [u16; 16] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 412, 413, 415, 429, 500, 503,
];

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// The counter of each (method, route, status in `STATUSES`), made on
    /// first use: a request then costs one atomic add, not a locked look-up
    /// by labels.
    request_cells: Vec<OnceLock<IntCounter>>,
    /// `devicehub_http_request_duration_seconds`, one per entry of `ROUTE_LABELS`.
    durations: Vec<Histogram>,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    /// `devicehub_webhook_deliveries_total{result}`: delivered, failed.
    deliveries: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics::new().unwrap_or_else(|e| panic!("the metric definitions are invalid: {e}"))
});

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "devicehub_http_requests_total",
                "HTTP requests answered, by method, route template and status",
            ),
            &["method", "route", "status"],
        )?;
        let duration_vec = HistogramVec::new(
            HistogramOpts::new(
                "devicehub_http_request_duration_seconds",
                "Time from a request's arrival to its response head, by route template",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        let commit_batch = Histogram::with_opts(
            HistogramOpts::new(
                "devicehub_store_commit_batch_size",
                "Writes that shared one commit (one fsync)",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "devicehub_store_commit_duration_seconds",
                "Time to commit one batch of writes to disk, fsync included",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "devicehub_build_info",
                "Always 1; the version label names the running build",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let deliveries = IntCounterVec::new(
            Opts::new(
                "devicehub_webhook_deliveries_total",
                "Webhook delivery attempts, by result (delivered: a 2xx within 10 s; failed: anything else)",
            ),
            &["result"],
        )?;
        for result in ["delivered", "failed"] {
            deliveries.with_label_values(&[result]);
        }
        let durations = ROUTE_LABELS
            .iter()
            .map(|route| duration_vec.get_metric_with_label_values(&[route]))
            .collect::<prometheus::Result<Vec<_>>>()?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration_vec))?;
        registry.register(Box::new(commit_batch.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(deliveries.clone()))?;
        let cells = METHODS.len() * ROUTE_LABELS.len() * STATUSES.len();
        Ok(Metrics {
            registry,
            requests,
            request_cells: (0..cells).map(|_| OnceLock::new()).collect(),
            durations,
            commit_batch,
            commit_seconds,
            deliveries,
        })
    }
}

/// A route template, prepared once so that matching a request costs a few
/// comparisons: the route label is found on every request.
enum Template {
    /// No `{…}` segment: the path must be this text.
    Exact(&'static str),
    /// The literal text up to the first `{…}` segment (ending in `/`), then
    /// the segments from there on: `None` for a `{…}` segment, which stands
    /// for any one non-empty segment.
    Pattern {
        prefix: &'static str,
        rest: Vec<Option<&'static str>>,
    },
}

impl Template {
    fn new(template: &'static str) -> Template {
        match template.find("/{") {
            None => Template::Exact(template),
            Some(at) => Template::Pattern {
                prefix: &template[..=at],
                rest: template[at + 1..]
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then_some(segment))
                    .collect(),
            },
        }
    }

    fn matches(&self, path: &str) -> bool {
        let (prefix, rest) = match self {
            Template::Exact(template) => return *template == path,
            Template::Pattern { prefix, rest } => (prefix, rest),
        };
        let Some(text) = path.strip_prefix(prefix) else {
            return false;
        };
        let mut given = Some(text);
        for wanted in rest {
            let Some(text) = given else {
                return false;
            };
            // memchr: a byte-by-byte split of a 30-byte id costs more than
            // all the rest of the look-up.
            let (segment, tail) = match memchr::memchr(b'/', text.as_bytes()) {
                Some(at) => (&text[..at], Some(&text[at + 1..])),
                None => (text, None),
            };
            let fits = match wanted {
                None => !segment.is_empty(),
                Some(literal) => *literal == segment,
            };
            if !fits {
                return false;
            }
            given = tail;
        }
        given.is_none()
    }
}

/// The templates of `ROUTE_LABELS` (all but `UNMATCHED`), in its order.
static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(|| {
    let labels = &*ROUTE_LABELS;
    labels[..labels.len() - 1]
        .iter()
        .map(|template| Template::new(template))
        .collect()
});

/// The index in `ROUTE_LABELS` of the route that answers `path`: the first
/// template that matches, where a `{id}` segment stands for any one
/// non-empty segment.
fn route_index(path: &str) -> usize {
    let templates = &*TEMPLATES;
    templates
        .iter()
        .position(|template| template.matches(path))
        .unwrap_or(templates.len())
}

/// The index in `METHODS` of `method`'s label.
fn method_index(method: &Method) -> usize {
    let known = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::PUT,
        Method::HEAD,
        Method::OPTIONS,
    ];
    known
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len() - 1)
}

fn record_request(method: usize, route: usize, status: StatusCode, elapsed: Duration) {
    let metrics = &*METRICS;
    let labels = [METHODS[method], ROUTE_LABELS[route], status.as_str()];
    match STATUSES.iter().position(|s| *s == status.as_u16()) {
        Some(at) => {
            let cell = (method * ROUTE_LABELS.len() + route) * STATUSES.len() + at;
            metrics.request_cells[cell]
                .get_or_init(|| metrics.requests.with_label_values(&labels))
                .inc();
        }
        None => metrics.requests.with_label_values(&labels).inc(),
    }
    metrics.durations[route].observe(elapsed.as_secs_f64());
}

/// Records one commit of the group-commit writer: how many writes it held
/// and how long `commit` (the fsync) took.
pub fn record_commit(batch_size: usize, took: Duration) {
    let metrics = &*METRICS;
    metrics.commit_batch.observe(batch_size as f64);
    metrics.commit_seconds.observe(took.as_secs_f64());
}

/// Counts one webhook delivery attempt.
pub fn record_delivery(delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    METRICS.deliveries.with_label_values(&[result]).inc();
}

/// The text exposition of every series, with `devices` as
/// `devicehub_devices{status}`.
pub fn render(devices: &StatusCounts) -> Result<String, String> {
    // A gauge of this scrape alone: servers sharing the process (tests)
    // never see each other's counts.
    let gauge = IntGaugeVec::new(
        Opts::new(
            "devicehub_devices",
            "Devices stored, all tenants together, by status",
        ),
        &["status"],
    )
    .map_err(|e| e.to_string())?;
    for (status, count) in [
        (DeviceStatus::Active, devices.active),
        (DeviceStatus::Inactive, devices.inactive),
        (DeviceStatus::Revoked, devices.revoked),
    ] {
        gauge
            .with_label_values(&[status.as_str()])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    let mut families = METRICS.registry.gather();
    families.extend(prometheus::core::Collector::collect(&gauge));
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// Middleware counting and timing every request, by route template.
pub struct Track;

impl<S, B> Transform<S, ServiceRequest> for Track
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = TrackService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TrackService { service }))
    }
}

pub struct TrackService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for TrackService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = TrackFuture<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let route = route_index(req.path());
        let method = method_index(req.method());
        TrackFuture {
            answer: self.service.call(req),
            started,
            method,
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, recorded when it is ready. A named future
    /// rather than a boxed `async` block: no allocation per request.
    pub struct TrackFuture<F> {
        #[pin]
        answer: F,
        started: Instant,
        method: usize,
        route: usize,
    }
}

impl<F, B> Future for TrackFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.answer.poll(cx));
        let status = match &result {
            Ok(response) => response.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        record_request(*this.method, *this.route, status, this.started.elapsed());
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(path: &str) -> &'static str {
        ROUTE_LABELS[route_index(path)]
    }

    #[test]
    fn paths_become_route_templates() {
        assert_eq!(label("/api/tenant/devices"), "/api/tenant/devices");
        assert_eq!(
            label("/api/tenant/devices/dev_01JD0000000000000000000000"),
            "/api/tenant/devices/{id}"
        );
        assert_eq!(
            label("/api/tenant/devices/anything/api-key"),
            "/api/tenant/devices/{id}/api-key"
        );
        assert_eq!(label("/healthz"), "/healthz");
        assert_eq!(label("/"), "/");
        for unknown in [
            "/api/tenant/devices/",
            "/api/tenant/devices//api-key",
            "/api/tenant/devices/x/y",
            "/secret-token-in-a-path",
            "/healthz/",
        ] {
            assert_eq!(label(unknown), UNMATCHED, "{unknown}");
        }
    }

    /// The plain definition of a match, segment by segment, which the
    /// prepared `Template` must agree with.
    fn template_matches(template: &str, path: &str) -> bool {
        let (mut wanted, mut given) = (template.split('/'), path.split('/'));
        loop {
            match (wanted.next(), given.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }

    fn reference_index(path: &str) -> usize {
        let unmatched = ROUTE_LABELS.len() - 1;
        ROUTE_LABELS[..unmatched]
            .iter()
            .position(|template| template_matches(template, path))
            .unwrap_or(unmatched)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4000,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Paths made from a template by a few edits (a segment replaced,
        /// dropped or added, with pieces of other templates, ids and empty
        /// segments), so that near misses are frequent: the prepared matcher
        /// picks the same route as the definition for every one.
        #[test]
        fn prepared_templates_agree_with_the_definition(
            template in 0usize..64,
            edits in proptest::collection::vec((0usize..3, 0usize..64, 0usize..64), 0..4),
        ) {
            let mut pieces: Vec<&str> = ROUTE_LABELS
                .iter()
                .flat_map(|template| template.split('/'))
                .collect();
            pieces.extend(["", "", "dev_01JD0000000000000000000000", "x"]);
            let template = ROUTE_LABELS[template % ROUTE_LABELS.len()];
            let mut segments: Vec<&str> = template.split('/').collect();
            for (edit, at, piece) in edits {
                let at = at % (segments.len() + 1);
                let piece = pieces[piece % pieces.len()];
                match edit {
                    0 if at < segments.len() => segments[at] = piece,
                    1 if at < segments.len() => {
                        segments.remove(at);
                    }
                    _ => segments.insert(at, piece),
                }
            }
            let path = segments.join("/");
            proptest::prop_assert_eq!(route_index(&path), reference_index(&path), "{}", path);
        }
    }

    #[test]
    fn every_template_matches_itself_and_a_filled_in_path() {
        for (at, template) in ROUTE_LABELS[..ROUTE_LABELS.len() - 1].iter().enumerate() {
            assert_eq!(route_index(template), at, "{template}");
            let filled = template.replace("{id}", "dev_01JD0000000000000000000000");
            assert_eq!(route_index(&filled), at, "{filled}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        let brew = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHODS[method_index(&brew)], "other");
    }
}
