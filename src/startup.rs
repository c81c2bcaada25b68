//! Builds and runs the HTTP server from validated settings.

use std::cell::RefCell;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, Server, ServerHandle, Service, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::{Condition, DefaultHeaders};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use actix_web::{web, App, HttpServer};

use crate::auth::secret;
use crate::auth::token::TokenVerifier;
use crate::config::Settings;
use crate::error::StartupError;
use crate::files;
use crate::http;
use crate::state::AppState;
use crate::store::Store;

/// How long requests in flight get to finish after SIGINT or SIGTERM.
pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// A server bound and ready to be awaited.
pub struct Running {
    pub server: Server,
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    /// Whether this start made the HS256 secret: then no token exists yet.
    pub made_secret: bool,
    /// `https` with `server.tls_*` set, else `http`.
    pub scheme: &'static str,
}

/// Checks the storage path, loads the token key, opens the database and
/// binds the listener. Must be called inside an actix system.
///
/// Nothing is written before the storage path is known to name a file; the
/// folder and the database file are made private before the store opens them.
pub async fn start(settings: &Settings) -> Result<Running, StartupError> {
    let tls = settings
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    let store = match &settings.postgres {
        None => {
            files::check_storage_path(settings)?;
            None
        }
        Some(postgres) => {
            let ca_file = postgres.ca_file.as_deref();
            Some(Store::open_postgres(&postgres.url, ca_file).await?)
        }
    };
    let made_secret = secret::will_be_made(settings);
    let tokens = TokenVerifier::from_settings(settings)?;
    let store = Arc::new(match store {
        Some(store) => store,
        None => {
            files::prepare_database_file(settings)?;
            Store::open(&settings.storage_path)?
        }
    });
    store.set_event_retention(settings.event_retention);
    crate::webhooks::worker::start(&store, settings.webhooks.clone());
    start_backups(settings, &store)?;
    let listener = TcpListener::bind(settings.bind).map_err(|e| {
        StartupError::new(format!(
            "server.bind: cannot listen on {}: {e}",
            settings.bind
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::new(format!("server.bind: {e}")))?;
    let state = web::Data::new(AppState {
        store: store.clone(),
        tokens,
        limits: settings.limits.clone(),
        lists: http::ListGate::default(),
        idempotency: Default::default(),
        webhooks: settings.webhooks.clone(),
    });
    let metrics = settings.metrics_enabled;
    let server = HttpServer::new(move || {
        App::new()
            // Answers carry device keys (registration, rotation) and tenant
            // data: no cache may keep them. Errors included; pages that set
            // their own policy keep it.
            .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .wrap_fn(|mut req, service| {
                let held = hold_chunked_body(&mut req);
                let answer = service.call(req);
                async move {
                    let res = answer.await?;
                    Ok(res.map_body(|_, body| HoldingBody { body, held }))
                }
            })
            .app_data(state.clone())
            .wrap(Condition::new(metrics, crate::metrics::Track))
            .configure(http::configure)
            .configure(|cfg| {
                if metrics {
                    http::configure_metrics(cfg);
                }
            })
            .default_service(web::to(http::not_found))
    })
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    // `Running::run` handles SIGINT and SIGTERM alike (actix would force on SIGINT).
    .disable_signals()
    .client_request_timeout(Duration::from_secs(5));
    let (server, scheme) = match tls {
        None => (server.listen(listener), "http"),
        Some(config) => (server.listen_rustls_0_23(listener, config), "https"),
    };
    let server = server
        .map_err(|e| StartupError::new(format!("server.bind: {e}")))?
        .run();
    Ok(Running {
        server,
        addr,
        store,
        made_secret,
        scheme,
    })
}

/// Scheduled backups (API.md §8): with `backup.dir` set, a std thread
/// writes a snapshot at start and every `backup.interval`, and `SIGUSR1`
/// asks it for one at once. Snapshots never run on the async workers. The
/// thread ends when the server's actix system stops (the signal task, which
/// holds the only sender, is dropped) or the store is gone.
///
/// Without `backup.dir`, SIGUSR1 is still caught (so that a reload sent by
/// a service manager never stops the server) and logged as a no-op.
fn start_backups(settings: &Settings, store: &Arc<Store>) -> Result<(), StartupError> {
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(|e| StartupError::new(format!("cannot listen for SIGUSR1: {e}")))?;
    let Some(dir) = settings.backup.dir.clone() else {
        actix_web::rt::spawn(async move {
            while usr1.recv().await.is_some() {
                log::warn!("SIGUSR1: backup.dir is not set: no backup written");
            }
        });
        return Ok(());
    };
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            StartupError::new(format!(
                "backup.dir: cannot create the folder {}: {e}",
                dir.display()
            ))
        })?;
    let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
    let store = Arc::downgrade(store);
    let (interval, keep) = (settings.backup.interval, settings.backup.keep);
    std::thread::Builder::new()
        .name("backup".into())
        .spawn(move || loop {
            let Some(store) = store.upgrade() else {
                return;
            };
            match store.backup(&dir, keep) {
                Ok(done) => log::info!(
                    "backup: wrote {} ({} devices, {} ms)",
                    done.path.display(),
                    done.devices,
                    done.elapsed.as_millis()
                ),
                Err(e) => log::error!("backup failed: {e}"),
            }
            drop(store);
            match asked.recv_timeout(interval) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })
        .map_err(|e| StartupError::new(format!("cannot start the backup thread: {e}")))?;
    actix_web::rt::spawn(async move {
        while usr1.recv().await.is_some() {
            log::info!("SIGUSR1: backup requested");
            // One request already waiting covers this one too.
            let _ = ask.try_send(());
        }
    });
    Ok(())
}

/// A chunked request body, shared between the handler that reads it and the
/// answer's body.
///
/// When an answer goes out before its request body is whole (a 401, or the
/// 408 of a body that missed its deadline), actix closes the connection,
/// except for a chunked body whose reader has gone: that one it drains first,
/// for as long as the client keeps sending. Holding the request body until
/// the answer's body is sent keeps its reader alive when actix decides, so
/// the connection is closed instead.
struct HeldBody(Rc<RefCell<Payload>>);

/// An answer's body, with the request body it holds (if chunked).
struct HoldingBody<B> {
    body: B,
    held: Option<HeldBody>,
}

impl<B: MessageBody + Unpin> MessageBody for HoldingBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }

    fn try_into_bytes(self) -> Result<Bytes, Self>
    where
        Self: Sized,
    {
        // Only an answer that holds nothing may become plain bytes: the
        // bytes would outlive nothing.
        match self.held {
            None => self
                .body
                .try_into_bytes()
                .map_err(|body| HoldingBody { body, held: None }),
            held => Err(HoldingBody {
                body: self.body,
                held,
            }),
        }
    }
}

impl futures_core::Stream for HeldBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

fn hold_chunked_body(req: &mut ServiceRequest) -> Option<HeldBody> {
    if !req.chunked().unwrap_or(false) {
        return None;
    }
    let shared = Rc::new(RefCell::new(req.take_payload()));
    let stream: Pin<Box<dyn futures_core::Stream<Item = _>>> = Box::pin(HeldBody(shared.clone()));
    req.set_payload(Payload::from(stream));
    Some(HeldBody(shared))
}

impl Running {
    /// Serves until SIGINT or SIGTERM, then drains in-flight requests.
    ///
    /// `listening on` is logged only after the signal handlers are installed
    /// and the server's first poll: whoever waits for that line may signal at
    /// once.
    /// `banner`, when given, goes to stdout right after that line.
    pub async fn run(self, banner: Option<String>) -> std::io::Result<()> {
        stop_gracefully_on_signals(self.server.handle())?;
        let mut server = self.server;
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut server).poll(cx))).await;
        if let Poll::Ready(result) = first {
            return result;
        }
        log::info!("listening on {}://{}", self.scheme, self.addr);
        if let Some(banner) = banner {
            println!("{banner}");
        }
        server.await
    }
}

/// Logged once, on the start that made the HS256 secret (no token can exist
/// yet). It says how to get a token and never contains one.
pub const FIRST_TOKEN_HINT: &str = "no access token exists yet: get one with `devicehub token --tenant <tenant> --scope \"devices:read admin\"` (same --config and environment as this server)";

/// On the first SIGINT or SIGTERM, stops the server gracefully: it stops
/// accepting, lets the requests in flight finish (up to
/// `SHUTDOWN_TIMEOUT_SECS`), then `run` returns and the process exits 0.
fn stop_gracefully_on_signals(handle: ServerHandle) -> std::io::Result<()> {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    actix_web::rt::spawn(async move {
        let name = std::future::poll_fn(|cx| {
            if interrupt.poll_recv(cx).is_ready() {
                Poll::Ready("SIGINT")
            } else if terminate.poll_recv(cx).is_ready() {
                Poll::Ready("SIGTERM")
            } else {
                Poll::Pending
            }
        })
        .await;
        log::info!(
            "{name} received: stopping; requests in flight get up to {SHUTDOWN_TIMEOUT_SECS} s to finish"
        );
        handle.stop(true).await;
    });
    Ok(())
}

/// Closes the database once the server's workers have let go of it (they
/// hold it until their threads end, a moment after the server future), so
/// that a stopped server leaves a cleanly closed file: the next start then
/// has nothing to repair. Waits at most 10 s.
async fn close(store: Arc<Store>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if Arc::strong_count(&store) > 1 {
        log::warn!("the database is still in use at exit: the next start will check it");
    }
    store.close().await;
    drop(store);
}

/// Runs the server until SIGINT or SIGTERM, then drains and returns. With
/// `demo`, seeds the demo tenant into an empty database and prints its banner.
pub fn serve(settings: &Settings, demo: bool) -> Result<(), StartupError> {
    actix_web::rt::System::new().block_on(async {
        let running = start(settings).await?;
        let banner = if demo {
            if crate::demo::seed(&running.store).await? {
                log::info!("seeded the demo tenant {:?}", crate::demo::TENANT);
            } else {
                log::info!("the database already holds devices: nothing seeded");
            }
            Some(crate::demo::banner(settings, running.addr)?)
        } else {
            if running.made_secret {
                log::info!("{}", FIRST_TOKEN_HINT);
            }
            None
        };
        let store = running.store.clone();
        running
            .run(banner)
            .await
            .map_err(|e| StartupError::new(format!("server stopped: {e}")))?;
        close(store).await;
        log::info!("stopped");
        Ok(())
    })
}
