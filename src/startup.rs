//! Builds and runs the HTTP server from validated settings.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::auth::token::TokenVerifier;
use crate::config::Settings;
use crate::error::StartupError;
use crate::http;
use crate::state::AppState;
use crate::store::Store;

/// A server bound and ready to be awaited.
pub struct Running {
    pub server: Server,
    pub addr: SocketAddr,
    pub store: Arc<Store>,
}

/// Opens the database, loads the token key, binds the listener and logs
/// `listening on http://HOST:PORT`. Must be called inside an actix system.
pub fn start(settings: &Settings) -> Result<Running, StartupError> {
    let tokens = TokenVerifier::from_settings(settings)?;
    let store = Arc::new(Store::open(&settings.storage_path)?);
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
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .shutdown_timeout(10)
    .client_request_timeout(Duration::from_secs(5))
    .listen(listener)
    .map_err(|e| StartupError::new(format!("server.bind: {e}")))?
    .run();
    log::info!("listening on http://{addr}");
    Ok(Running {
        server,
        addr,
        store,
    })
}

/// Runs the server until SIGINT or SIGTERM, then drains and returns.
pub fn serve(settings: &Settings) -> Result<(), StartupError> {
    actix_web::rt::System::new().block_on(async {
        let running = start(settings)?;
        running
            .server
            .await
            .map_err(|e| StartupError::new(format!("server stopped: {e}")))?;
        log::info!("stopped");
        Ok(())
    })
}
