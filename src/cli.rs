//! One function per subcommand.

use std::path::Path;

use crate::auth::{secret, token};
use crate::config::{PostgresSettings, Settings};
use crate::error::StartupError;
use crate::store::export::{Source, Transferred};
use crate::store::postgres::Postgres;
use crate::store::Embedded;

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
    let info = Embedded::restore(snapshot, &settings.storage_path).map_err(StartupError::new)?;
    Ok(format!(
        "restored {} ({} devices) into {}",
        snapshot.display(),
        info.devices,
        settings.storage_path.display()
    ))
}

/// `devicehub export`: writes the configured store (or the snapshot `from`),
/// or one tenant of it, to stdout as NDJSON (docs/EXPORT.md). The database
/// is opened read-only; one a running server holds is refused. Returns the
/// summary line for stderr.
pub fn export(
    config: Option<&Path>,
    from: Option<&Path>,
    tenant: Option<&str>,
) -> Result<String, StartupError> {
    if let Some(tenant) = tenant {
        if !token::is_tenant_id(tenant) {
            return Err(StartupError::new(format!(
                "--tenant: must be 1-{} characters without control characters",
                token::TENANT_ID_MAX_CHARS
            )));
        }
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let (path, source) = match from {
        Some(snapshot) => (snapshot.to_path_buf(), Source::Snapshot),
        None => {
            let settings = Settings::load(config)?;
            if let Some(postgres) = &settings.postgres {
                let written = on_postgres(postgres, |store| async move {
                    store
                        .export_to(&mut out, tenant)
                        .await
                        .map_err(|e| e.to_string())
                })?;
                return Ok(format!("exported {} from PostgreSQL", tally(written)));
            }
            (settings.storage_path, Source::Live)
        }
    };
    let written = Embedded::export_file(&path, source, &mut out, tenant)
        .map_err(|e| StartupError::new(e.to_string()))?;
    Ok(format!(
        "exported {} from {}",
        tally(written),
        path.display()
    ))
}

/// `devicehub import`: reads an export from stdin into the configured store,
/// which must be empty. A bad line, or a store that is not empty, writes
/// nothing. Returns the line to print.
pub fn import(config: Option<&Path>) -> Result<String, StartupError> {
    use std::io::IsTerminal;
    let settings = Settings::load(config)?;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(StartupError::new(
            "import reads an export from stdin: devicehub import < devicehub-export.ndjson",
        ));
    }
    if let Some(postgres) = &settings.postgres {
        // Checked by the embedded importer into a scratch file first (the
        // same checks and messages), then copied in one transaction.
        let scratch = std::env::temp_dir().join(format!("devicehub-import-{}", ulid::Ulid::new()));
        let checked = Embedded::open(&scratch.join("scratch.redb")).and_then(|store| {
            store
                .import_from(stdin.lock())
                .map_err(|e| StartupError::new(format!("import: {e}")))?;
            store
                .rows()
                .map_err(|e| StartupError::new(format!("import: {e}")))
        });
        let _ = std::fs::remove_dir_all(&scratch);
        let rows = checked?;
        let read = on_postgres(postgres, |store| async move {
            store
                .import_rows(rows)
                .await
                .map_err(|e| format!("import: {e}"))
        })?;
        return Ok(format!("imported {} into PostgreSQL", tally(read)));
    }
    crate::files::prepare_database_file(&settings)?;
    let store = Embedded::open(&settings.storage_path)?;
    let read = store
        .import_from(stdin.lock())
        .map_err(|e| StartupError::new(format!("import: {e}")))?;
    Ok(format!(
        "imported {} into {}",
        tally(read),
        settings.storage_path.display()
    ))
}

/// Runs `work` on the configured PostgreSQL store, in a runtime of its own.
fn on_postgres<T, F, Fut>(settings: &PostgresSettings, work: F) -> Result<T, StartupError>
where
    F: FnOnce(Postgres) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    actix_web::rt::System::new().block_on(async {
        let store = Postgres::open(&settings.url, settings.ca_file.as_deref()).await?;
        work(store).await.map_err(StartupError::new)
    })
}

/// `3 devices, 7 events and 1 webhook`.
fn tally(done: Transferred) -> String {
    let count = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {} and {}",
        count(done.devices, "device"),
        count(done.events, "event"),
        count(done.webhooks, "webhook")
    )
}
