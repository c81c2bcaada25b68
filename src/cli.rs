//! One function per subcommand.

use std::path::Path;

use crate::auth::{secret, token};
use crate::config::Settings;
use crate::error::StartupError;

/// `devicehub serve [--config FILE] [--bind HOST:PORT] [--demo]`.
pub fn serve(config: Option<&Path>, bind: Option<&str>, demo: bool) -> Result<(), StartupError> {
    let mut settings = Settings::load(config)?;
    if let Some(bind) = bind {
        settings.bind = crate::config::parse_bind_flag(bind)?;
    }
    crate::logging::set_format(settings.log_format);
    crate::startup::serve(&settings, demo)
}

/// `devicehub healthcheck`: a line for stdout when the configured server's
/// `/healthz` answered 200 within 2 s, else the reason.
pub fn healthcheck(config: Option<&Path>) -> Result<String, StartupError> {
    let settings = Settings::load(config)?;
    crate::healthcheck::check(&settings)
}

/// `devicehub token`: prints a signed access token on the last line of stdout.
pub fn token(
    config: Option<&Path>,
    tenant: &str,
    scope: &str,
    ttl: &str,
    subject: Option<&str>,
) -> Result<String, StartupError> {
    let settings = Settings::load(config)?;
    if settings.auth.public_key_file.is_some() {
        return Err(StartupError::new(
            "auth.public_key_file is set: tokens are signed by your identity provider, devicehub has no private key to sign with",
        ));
    }
    if tenant.trim().is_empty() {
        return Err(StartupError::new("--tenant: must not be empty"));
    }
    if !token::is_tenant_id(tenant) {
        return Err(StartupError::new(format!(
            "--tenant: must be 1-{} characters without control characters",
            token::TENANT_ID_MAX_CHARS
        )));
    }
    let ttl_secs = token::parse_ttl(ttl).map_err(|e| StartupError::new(format!("--ttl: {e}")))?;
    crate::files::check_storage_path(&settings)?;
    let secret = secret::load_or_create(&settings)?;
    token::mint_hs256(
        &secret,
        &token::TokenRequest {
            tenant_id: tenant,
            scope,
            ttl_secs,
            subject,
            issuer: settings.auth.issuer.as_deref(),
            audience: settings.auth.audience.as_deref(),
        },
    )
}

/// `devicehub restore SNAPSHOT`: checks the snapshot, then replaces the
/// configured database with it. Refuses while a server holds the database.
/// Returns the one line to print.
pub fn restore(config: Option<&Path>, snapshot: &Path) -> Result<String, StartupError> {
    let settings = Settings::load(config)?;
    let info = crate::store::Store::restore(snapshot, &settings.storage_path)
        .map_err(StartupError::new)?;
    Ok(format!(
        "restored {} ({} devices) into {}",
        snapshot.display(),
        info.devices,
        settings.storage_path.display()
    ))
}
