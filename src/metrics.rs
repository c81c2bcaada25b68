//! Prometheus metrics (`GET /metrics`, API.md §8), kept in one process-wide
//! registry of the `prometheus` crate (lock-free counters and histograms).
//! The per-request series are counted per thread instead (`Shard`) and
//! added up when scraped.
//!
//! Labels hold route templates and method names from fixed lists, never a
//! path as sent: no device id, tenant, key or token reaches a label, and a
//! client cannot grow the series by inventing paths or methods.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
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

/// The upper bounds of `devicehub_http_request_duration_seconds`.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

struct Metrics {
    registry: Registry,
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
        registry.register(Box::new(Requests::new()?))?;
        registry.register(Box::new(commit_batch.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(deliveries.clone()))?;
        Ok(Metrics {
            registry,
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
    SHARD.with(|shard| shard.record(method, route, status, elapsed.as_secs_f64()));
}

/// Cells of `Shard::requests`: one per (method, route, status in `STATUSES`).
const REQUEST_CELLS: usize = METHODS.len() * STATUSES.len();

/// Cells of `Shard::durations` per route: one per bucket, one above the
/// largest bound, and the sum of the seconds (as `f64` bits).
const DURATION_CELLS: usize = DURATION_BUCKETS.len() + 2;

/// One thread's counts of `devicehub_http_requests_total` and
/// `devicehub_http_request_duration_seconds`. Only the thread that owns it
/// writes to it, with a plain load and store, so its cache lines stay on
/// that thread's core: counters shared by the workers moved between the two
/// cores on every request. A scrape adds up every thread's shard; shards
/// are never dropped, so a counter never goes back when a thread ends.
struct Shard {
    /// `REQUEST_CELLS` per route, in `ROUTE_LABELS` order.
    requests: Box<[AtomicU64]>,
    /// `DURATION_CELLS` per route; bucket counts are not cumulative.
    durations: Box<[AtomicU64]>,
}

/// Every thread's shard, and the requests answered with a status outside
/// `STATUSES` (rare: a lock is fine), by method, route and status.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());
static OTHER_STATUSES: Mutex<BTreeMap<(usize, usize, u16), u64>> = Mutex::new(BTreeMap::new());

thread_local! {
    static SHARD: Arc<Shard> = Shard::register();
}

/// Adds `by` to a cell only this thread writes.
fn bump(cell: &AtomicU64, by: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Shard {
    fn register() -> Arc<Shard> {
        let cells = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        let shard = Arc::new(Shard {
            requests: cells(ROUTE_LABELS.len() * REQUEST_CELLS),
            durations: cells(ROUTE_LABELS.len() * DURATION_CELLS),
        });
        lock(&SHARDS).push(shard.clone());
        shard
    }

    fn record(&self, method: usize, route: usize, status: StatusCode, seconds: f64) {
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(at) => bump(
                &self.requests[route * REQUEST_CELLS + method * STATUSES.len() + at],
                1,
            ),
            None => {
                *lock(&OTHER_STATUSES)
                    .entry((method, route, status.as_u16()))
                    .or_default() += 1
            }
        }
        let cells = &self.durations[route * DURATION_CELLS..][..DURATION_CELLS];
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        bump(&cells[bucket], 1);
        let sum = &cells[DURATION_CELLS - 1];
        let total = f64::from_bits(sum.load(Ordering::Relaxed)) + seconds;
        sum.store(total.to_bits(), Ordering::Relaxed);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The collector of the per-request series: adds up the shards when scraped.
struct Requests {
    descs: Vec<Desc>,
}

const REQUESTS_NAME: &str = "devicehub_http_requests_total";
const DURATIONS_NAME: &str = "devicehub_http_request_duration_seconds";

impl Requests {
    fn new() -> prometheus::Result<Requests> {
        let labels = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        Ok(Requests {
            descs: vec![
                Desc::new(
                    REQUESTS_NAME.into(),
                    "HTTP requests answered, by method, route template and status".into(),
                    labels(&["method", "route", "status"]),
                    HashMap::new(),
                )?,
                Desc::new(
                    DURATIONS_NAME.into(),
                    "Time from a request's arrival to its response head, by route template".into(),
                    labels(&["route"]),
                    HashMap::new(),
                )?,
            ],
        })
    }
}

fn label_pairs(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

fn family(name: &str, desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Collector for Requests {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let routes = ROUTE_LABELS.len();
        let mut requests = vec![0u64; routes * REQUEST_CELLS];
        let mut durations = vec![0u64; routes * DURATION_CELLS];
        let mut sums = vec![0f64; routes];
        for shard in lock(&SHARDS).iter() {
            for (total, cell) in requests.iter_mut().zip(shard.requests.iter()) {
                *total += cell.load(Ordering::Relaxed);
            }
            for (at, cell) in shard.durations.iter().enumerate() {
                let value = cell.load(Ordering::Relaxed);
                if at % DURATION_CELLS == DURATION_CELLS - 1 {
                    sums[at / DURATION_CELLS] += f64::from_bits(value);
                } else {
                    durations[at] += value;
                }
            }
        }
        // One series of `devicehub_http_requests_total`.
        let counter = |method: usize, route: usize, status: u16, value: u64| {
            let status = status.to_string();
            let labels = [
                ("method", METHODS[method]),
                ("route", ROUTE_LABELS[route]),
                ("status", status.as_str()),
            ];
            let mut counter = proto::Counter::default();
            counter.set_value(value as f64);
            let mut metric = proto::Metric::from_label(label_pairs(&labels));
            metric.set_counter(counter);
            metric
        };
        // Series appear once counted, as with the crate's own counters.
        let mut counted = Vec::new();
        for (at, &value) in requests.iter().enumerate().filter(|(_, v)| **v > 0) {
            let (route, rest) = (at / REQUEST_CELLS, at % REQUEST_CELLS);
            let (method, status) = (rest / STATUSES.len(), STATUSES[rest % STATUSES.len()]);
            counted.push(counter(method, route, status, value));
        }
        for (&(method, route, status), &value) in lock(&OTHER_STATUSES).iter() {
            counted.push(counter(method, route, status, value));
        }
        // Every route has its histogram, counted or not.
        let timed = (0..routes)
            .map(|route| {
                let cells = &durations[route * DURATION_CELLS..][..DURATION_CELLS];
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS
                    .iter()
                    .zip(cells)
                    .map(|(bound, count)| {
                        cumulative += count;
                        let mut bucket = proto::Bucket::default();
                        bucket.set_upper_bound(*bound);
                        bucket.set_cumulative_count(cumulative);
                        bucket
                    })
                    .collect();
                let mut histogram = proto::Histogram::default();
                histogram.set_bucket(buckets);
                histogram.set_sample_count(cumulative + cells[DURATION_BUCKETS.len()]);
                histogram.set_sample_sum(sums[route]);
                let mut metric =
                    proto::Metric::from_label(label_pairs(&[("route", ROUTE_LABELS[route])]));
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        vec![
            family(REQUESTS_NAME, &self.descs[0], MetricType::COUNTER, counted),
            family(DURATIONS_NAME, &self.descs[1], MetricType::HISTOGRAM, timed),
        ]
    }
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

    /// The value of the series `name` (its whole text up to the value) in
    /// a scrape; 0 when absent.
    fn scraped(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |value| value.parse().unwrap())
    }

    #[test]
    fn requests_counted_on_many_threads_add_up_in_one_scrape() {
        // A method, route and statuses no other test of this process uses.
        let (method, route) = (method_index(&Method::OPTIONS), route_index("/metrics"));
        let series = |status: u16| {
            format!(
                r#"devicehub_http_requests_total{{method="OPTIONS",route="/metrics",status="{status}"}}"#
            )
        };
        let bucket = |le: &str| {
            format!(
                r#"devicehub_http_request_duration_seconds_bucket{{route="/metrics",le="{le}"}}"#
            )
        };
        let count = r#"devicehub_http_request_duration_seconds_count{route="/metrics"}"#;
        let sum = r#"devicehub_http_request_duration_seconds_sum{route="/metrics"}"#;
        let before = render(&StatusCounts::default()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        let took = Duration::from_millis(3);
                        record_request(method, route, StatusCode::UNSUPPORTED_MEDIA_TYPE, took);
                    }
                    // A status outside `STATUSES`, counted all the same.
                    record_request(method, route, StatusCode::IM_A_TEAPOT, Duration::ZERO);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // The threads have ended: what they counted is still there.
        let after = render(&StatusCounts::default()).unwrap();
        let grew = |name: &str| scraped(&after, name) - scraped(&before, name);
        assert_eq!(grew(&series(415)), 1000.0, "{after}");
        assert_eq!(grew(&series(418)), 4.0, "{after}");
        assert_eq!(grew(count), 1004.0);
        // 3 ms is above 2.5 ms and within 5 ms; 0 s is in the first bucket.
        assert_eq!(grew(&bucket("0.0001")), 4.0);
        assert_eq!(grew(&bucket("0.0025")), 4.0);
        assert_eq!(grew(&bucket("0.005")), 1004.0);
        assert_eq!(grew(&bucket("+Inf")), 1004.0);
        assert!((grew(sum) - 3.0).abs() < 1e-9, "{}", grew(sum));
        // Every route has its histogram from the start.
        for route in ROUTE_LABELS.iter() {
            let name =
                format!(r#"devicehub_http_request_duration_seconds_count{{route="{route}"}}"#);
            assert!(after.contains(&name), "{name}");
        }
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        let brew = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(METHODS[method_index(&brew)], "other");
    }
}
