//! Layered configuration (API.md §1): embedded defaults, then a file, then
//! `DEVICEHUB__SECTION__KEY` environment variables. Every problem is reported as
//! one line naming the key.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat, Map, Value};

use crate::error::StartupError;
pub use crate::logging::LogFormat;
pub use crate::webhooks::worker::DeliverySettings;

/// The built-in defaults, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every key devicehub knows, by section. Anything else is refused.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("server", &["bind", "tls_cert_file", "tls_key_file"]),
    ("storage", &["path", "postgres_url", "postgres_ca_file"]),
    (
        "auth",
        &["hs256_secret", "public_key_file", "issuer", "audience"],
    ),
    ("limits", &["max_devices_per_tenant"]),
    ("metrics", &["enabled"]),
    ("log", &["format"]),
    ("backup", &["dir", "interval", "keep"]),
    ("events", &["retention"]),
    ("webhooks", &["allow_loopback", "first_retry"]),
];

/// The environment `devicehub serve --help` lists (one line per variable).
pub const ENVIRONMENT_HELP: &str = "\
Environment (over the config file, which is over the built-in defaults; --bind wins over all):
  DEVICEHUB_CONFIG                           configuration file (TOML), like --config
  DEVICEHUB__SERVER__BIND                    HOST:PORT to listen on [default: 127.0.0.1:8080]; port 0 picks a free one
  DEVICEHUB__STORAGE__PATH                   the database file, relative to the working directory [default: data/devicehub.redb]
  DEVICEHUB__STORAGE__POSTGRES_URL           postgres://user:pass@host/db: use PostgreSQL, shared by any number of instances [default: the redb file]
  DEVICEHUB__STORAGE__POSTGRES_CA_FILE       PEM CA certificate(s) that PostgreSQL's TLS certificate is checked against, besides the public roots
  DEVICEHUB__AUTH__HS256_SECRET              HS256 token secret, at least 32 bytes [default: made on first start, kept in <storage dir>/jwt-secret]
  DEVICEHUB__AUTH__PUBLIC_KEY_FILE           PEM public key (RSA, EC P-256, Ed25519): verify RS256/ES256/EdDSA tokens instead
  DEVICEHUB__AUTH__ISSUER                    when set, tokens must carry this `iss`
  DEVICEHUB__AUTH__AUDIENCE                  when set, tokens must carry this `aud`
  DEVICEHUB__LIMITS__MAX_DEVICES_PER_TENANT  most devices a tenant may register, revoked ones included [default: no limit]
  DEVICEHUB__SERVER__TLS_CERT_FILE           PEM certificate chain; with TLS_KEY_FILE: HTTPS only (HTTP/1.1 and HTTP/2) [default: plain HTTP]
  DEVICEHUB__SERVER__TLS_KEY_FILE            PEM private key of that certificate
  DEVICEHUB__METRICS__ENABLED                serve GET /metrics (Prometheus) [default: true]
  DEVICEHUB__LOG__FORMAT                     text or json (one object per line) [default: text]
  DEVICEHUB__BACKUP__DIR                     folder for scheduled snapshots of the database [default: no scheduled backups]
  DEVICEHUB__BACKUP__INTERVAL                time between snapshots: 90s, 30m, 12h, 7d [default: 1h]
  DEVICEHUB__BACKUP__KEEP                    how many snapshots to keep, newest first [default: 24]
  DEVICEHUB__EVENTS__RETENTION               how long events are kept: 90s, 30m, 12h, 7d [default: 90d]
  DEVICEHUB__WEBHOOKS__ALLOW_LOOPBACK        send webhooks to loopback addresses too [default: false]
  DEVICEHUB__WEBHOOKS__FIRST_RETRY           delay before the first retry of a failed delivery; each later one doubles, up to 1h [default: 10s]
  RUST_LOG                                   log level or filter [default: info]";

#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub storage_path: PathBuf,
    /// `storage.postgres_url`: PostgreSQL instead of the redb file.
    pub postgres: Option<PostgresSettings>,
    pub auth: AuthSettings,
    pub limits: LimitSettings,
    /// `server.tls_cert_file` and `server.tls_key_file`; unset: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `metrics.enabled`: whether `GET /metrics` is served.
    pub metrics_enabled: bool,
    /// `log.format`.
    pub log_format: LogFormat,
    pub backup: BackupSettings,
    /// `events.retention`: events older than this are deleted.
    pub event_retention: std::time::Duration,
    /// `webhooks.allow_loopback` and `webhooks.first_retry`.
    pub webhooks: DeliverySettings,
}

/// The documented default of `events.retention`: 90 days.
pub const DEFAULT_EVENT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(90 * 86_400);

/// `storage.postgres_url` and `storage.postgres_ca_file`.
#[derive(Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

/// The URL holds a password: never shown.
impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The PEM files of an HTTPS listener (read and checked at start-up).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Scheduled snapshots of the database (API.md §8).
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Unset: no scheduled backups.
    pub dir: Option<PathBuf>,
    pub interval: std::time::Duration,
    /// The newest this many snapshots are kept (at least 1).
    pub keep: usize,
}

impl Default for BackupSettings {
    /// The documented defaults: no folder, every hour, keep 24.
    fn default() -> Self {
        BackupSettings {
            dir: None,
            interval: std::time::Duration::from_secs(3600),
            keep: 24,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LimitSettings {
    /// Registrations past this many devices (revoked ones count) are refused.
    pub max_devices_per_tenant: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    pub hs256_secret: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// The documented defaults (what `config/default.toml` gives), for code that
/// builds settings by hand.
impl Default for Settings {
    fn default() -> Settings {
        Settings {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            storage_path: PathBuf::from("data/devicehub.redb"),
            postgres: None,
            auth: AuthSettings::default(),
            limits: LimitSettings::default(),
            tls: None,
            metrics_enabled: true,
            log_format: LogFormat::Text,
            backup: BackupSettings::default(),
            event_retention: DEFAULT_EVENT_RETENTION,
            webhooks: DeliverySettings::default(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` (or `$DEVICEHUB_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, StartupError> {
        let file = file.map(Path::to_path_buf).or_else(|| {
            std::env::var_os("DEVICEHUB_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartupError::new(format!(
                    "config file {}: cannot be read: {e}",
                    path.display()
                ))
            })?;
            // Parse it alone first so that a syntax error names the file.
            Config::builder()
                .add_source(File::from_str(&text, FileFormat::Toml))
                .build()
                .map_err(|e| {
                    let mut err =
                        StartupError::new(format!("config file {}: invalid: {e}", path.display()));
                    if looks_unquoted(&err.0) {
                        err.0.push_str(UNQUOTED_HINT);
                    }
                    err
                })?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
        }
        let merged = builder
            .add_source(
                Environment::with_prefix("DEVICEHUB")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .map_err(|e| StartupError::new(format!("configuration: {e}")))?;
        Settings::from_tree(
            merged
                .try_deserialize::<Map<String, Value>>()
                .map_err(|e| StartupError::new(format!("configuration: {e}")))?,
        )
    }

    fn from_tree(tree: Map<String, Value>) -> Result<Settings, StartupError> {
        let mut values = std::collections::HashMap::new();
        for (section, value) in tree {
            let Some((_, keys)) = KNOWN_KEYS.iter().find(|(name, _)| *name == section) else {
                return Err(unknown_key(&section));
            };
            let table = value.into_table().map_err(|_| {
                StartupError::new(format!(
                    "{section}: must be a section with keys, not a value"
                ))
            })?;
            for (key, value) in table {
                let name = format!("{section}.{key}");
                if !keys.contains(&key.as_str()) {
                    return Err(unknown_key(&name));
                }
                let text = value
                    .into_string()
                    .map_err(|_| StartupError::new(format!("{name}: must be a string")))?;
                let text = text.trim().to_string();
                if !text.is_empty() {
                    values.insert(name, text);
                }
            }
        }
        let mut take = |name: &str| values.remove(name);

        let bind_text = take("server.bind").unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let bind = parse_bind(&bind_text)?;
        let storage_path = PathBuf::from(
            take("storage.path").unwrap_or_else(|| "data/devicehub.redb".to_string()),
        );
        let postgres = postgres_settings(
            take("storage.postgres_url"),
            take("storage.postgres_ca_file"),
        )?;
        let auth = AuthSettings {
            hs256_secret: take("auth.hs256_secret"),
            public_key_file: take("auth.public_key_file").map(PathBuf::from),
            issuer: take("auth.issuer"),
            audience: take("auth.audience"),
        };
        if let Some(secret) = &auth.hs256_secret {
            if secret.len() < crate::auth::secret::MIN_SECRET_BYTES {
                return Err(StartupError::new(format!(
                    "auth.hs256_secret: must be at least {} bytes (it has {}); make one with `openssl rand -base64 48`",
                    crate::auth::secret::MIN_SECRET_BYTES,
                    secret.len()
                )));
            }
            if auth.public_key_file.is_some() {
                return Err(StartupError::new(
                    "auth.hs256_secret and auth.public_key_file are both set: set only one",
                ));
            }
        }
        let limits = LimitSettings {
            max_devices_per_tenant: take("limits.max_devices_per_tenant")
                .map(|text| {
                    text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        StartupError::new(format!(
                            "limits.max_devices_per_tenant: `{text}` is not a whole number of at least 1"
                        ))
                    })
                })
                .transpose()?,
        };
        let tls = tls_files(take("server.tls_cert_file"), take("server.tls_key_file"))?;
        let metrics_enabled = match take("metrics.enabled") {
            None => true,
            Some(text) => parse_bool("metrics.enabled", &text)?,
        };
        let log_format = match take("log.format") {
            None => LogFormat::Text,
            Some(text) => LogFormat::parse(&text).ok_or_else(|| {
                StartupError::new(format!("log.format: `{text}` is not text or json"))
            })?,
        };
        let backup = backup_settings(&mut take)?;
        let event_retention =
            duration(&mut take, "events.retention")?.unwrap_or(DEFAULT_EVENT_RETENTION);
        let defaults = DeliverySettings::default();
        let webhooks = DeliverySettings {
            allow_loopback: match take("webhooks.allow_loopback") {
                None => defaults.allow_loopback,
                Some(text) => parse_bool("webhooks.allow_loopback", &text)?,
            },
            first_retry: duration(&mut take, "webhooks.first_retry")?
                .unwrap_or(defaults.first_retry),
        };
        if postgres.is_some() {
            if auth.hs256_secret.is_none() && auth.public_key_file.is_none() {
                return Err(StartupError::new(
                    "storage.postgres_url: set auth.hs256_secret or auth.public_key_file too, so every instance verifies the same tokens",
                ));
            }
            if backup.dir.is_some() {
                return Err(StartupError::new(
                    "backup.dir: scheduled snapshots are for the redb file; with storage.postgres_url use PostgreSQL's own backups (pg_dump, replicas)",
                ));
            }
        }
        Ok(Settings {
            bind,
            storage_path,
            postgres,
            auth,
            limits,
            tls,
            metrics_enabled,
            log_format,
            backup,
            event_retention,
            webhooks,
        })
    }

    /// The folder that holds the database file (and the generated secret).
    pub fn storage_dir(&self) -> PathBuf {
        match self.storage_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// `storage.postgres_url` (a `postgres://` or `postgresql://` URL) and its
/// optional CA file; the CA file alone is a mistake.
fn postgres_settings(
    url: Option<String>,
    ca_file: Option<String>,
) -> Result<Option<PostgresSettings>, StartupError> {
    let Some(url) = url else {
        if ca_file.is_some() {
            return Err(StartupError::new(
                "storage.postgres_ca_file: set only with storage.postgres_url",
            ));
        }
        return Ok(None);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StartupError::new(
            "storage.postgres_url: must start with postgres:// or postgresql://",
        ));
    }
    Ok(Some(PostgresSettings {
        url,
        ca_file: ca_file.map(PathBuf::from),
    }))
}

/// `backup.dir`, `backup.interval` (a duration like `--ttl`) and
/// `backup.keep` (a whole number of at least 1).
fn backup_settings(
    take: &mut impl FnMut(&str) -> Option<String>,
) -> Result<BackupSettings, StartupError> {
    let interval = duration(take, "backup.interval")?.unwrap_or(Duration::from_secs(3600));
    let keep = match take("backup.keep") {
        None => 24,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                StartupError::new(format!(
                    "backup.keep: `{text}` is not a whole number of at least 1"
                ))
            })?,
    };
    Ok(BackupSettings {
        dir: take("backup.dir").map(PathBuf::from),
        interval,
        keep,
    })
}

/// The duration under `key`, written like `--ttl` (`90s`, `30m`, `12h`,
/// `7d`), or None when unset.
fn duration(
    take: &mut impl FnMut(&str) -> Option<String>,
    key: &str,
) -> Result<Option<Duration>, StartupError> {
    take(key)
        .map(|text| {
            crate::auth::token::parse_ttl(&text)
                .map(Duration::from_secs)
                .map_err(|e| StartupError::new(format!("{key}: {e}")))
        })
        .transpose()
}

/// TOML reads an unquoted `127.0.0.1:8080` or `data/x.redb` as a broken
/// number or a bare word: say what to do.
const UNQUOTED_HINT: &str =
    " (addresses, paths and other text must be quoted, for example bind = \"127.0.0.1:8080\")";

/// Whether a TOML parse error is about a value that needed quotes.
fn looks_unquoted(message: &str) -> bool {
    ["invalid float", "string values must be quoted"]
        .iter()
        .any(|m| message.contains(m))
}

fn unknown_key(name: &str) -> StartupError {
    let env = format!("DEVICEHUB__{}", name.replace('.', "__").to_uppercase());
    StartupError::new(format!(
        "{name}: unknown configuration key (from the config file or {env})"
    ))
}

/// `--bind HOST:PORT`, which wins over `server.bind` from any source.
pub fn parse_bind_flag(text: &str) -> Result<SocketAddr, StartupError> {
    parse_bind_named("--bind", text.trim())
}

fn tls_files(cert: Option<String>, key: Option<String>) -> Result<Option<TlsFiles>, StartupError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        })),
        (Some(_), None) => Err(StartupError::new(
            "server.tls_key_file: must be set when server.tls_cert_file is (or unset both for plain HTTP)",
        )),
        (None, Some(_)) => Err(StartupError::new(
            "server.tls_cert_file: must be set when server.tls_key_file is (or unset both for plain HTTP)",
        )),
    }
}

fn parse_bool(name: &str, text: &str) -> Result<bool, StartupError> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(StartupError::new(format!(
            "{name}: `{text}` is not true or false"
        ))),
    }
}

fn parse_bind(text: &str) -> Result<SocketAddr, StartupError> {
    parse_bind_named("server.bind", text)
}

fn parse_bind_named(name: &str, text: &str) -> Result<SocketAddr, StartupError> {
    let invalid = || {
        StartupError::new(format!(
            "{name}: `{text}` is not a HOST:PORT address (for example 127.0.0.1:8080)"
        ))
    };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|_| invalid())?
        .next()
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(toml: &str) -> Map<String, Value> {
        Config::builder()
            .add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml))
            .add_source(File::from_str(toml, FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap()
    }

    fn error_of(toml: &str) -> String {
        Settings::from_tree(tree(toml)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = Settings::from_tree(tree("")).unwrap();
        assert_eq!(settings.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.storage_path, PathBuf::from("data/devicehub.redb"));
        assert_eq!(settings.storage_dir(), PathBuf::from("data"));
        assert!(settings.auth.hs256_secret.is_none());
        assert!(settings.auth.public_key_file.is_none());
    }

    #[test]
    fn the_default_settings_are_those_of_the_default_file() {
        let loaded = Settings::from_tree(tree("")).unwrap();
        let built = Settings::default();
        assert_eq!(format!("{loaded:?}"), format!("{built:?}"));
    }

    #[test]
    fn unknown_keys_are_named() {
        assert!(error_of("[server]\nport = \"1\"").starts_with("server.port: unknown"));
        assert!(error_of("[cache]\nsize = \"1\"").starts_with("cache: unknown"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(error_of("[server]\nbind = \"nonsense\"").starts_with("server.bind:"));
        let short = error_of("[auth]\nhs256_secret = \"short\"");
        assert!(short.starts_with("auth.hs256_secret:"), "{short}");
        assert!(!short.contains("\"short\""));
        let both = error_of(
            "[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\npublic_key_file = \"k.pem\"",
        );
        assert!(both.contains("both set"));
        for bad in ["0", "-1", "ten", "1.5"] {
            let quota = error_of(&format!("[limits]\nmax_devices_per_tenant = \"{bad}\""));
            assert!(
                quota.starts_with("limits.max_devices_per_tenant:"),
                "{quota}"
            );
        }
    }

    #[test]
    fn the_device_quota_is_read_as_a_number() {
        let settings = Settings::from_tree(tree("[limits]\nmax_devices_per_tenant = 250")).unwrap();
        assert_eq!(settings.limits.max_devices_per_tenant, Some(250));
        let unset = Settings::from_tree(tree("")).unwrap();
        assert_eq!(unset.limits.max_devices_per_tenant, None);
    }

    fn load_error(toml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("devicehub.toml");
        std::fs::write(&file, toml).unwrap();
        Settings::load(Some(&file)).unwrap_err().to_string()
    }

    #[test]
    fn an_unquoted_value_gets_a_hint_to_quote_it() {
        for toml in [
            "[server]\nbind = 127.0.0.1:0\n",
            "[server]\nbind = 8080.5.1\n",
            "[storage]\npath = data/x.redb\n",
        ] {
            let err = load_error(toml);
            assert!(err.contains("devicehub.toml: invalid"), "{err}");
            assert!(err.contains("must be quoted, for example"), "{toml}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let other = load_error("[server\n");
        assert!(!other.contains("must be quoted, for example"), "{other}");
    }

    #[test]
    fn the_help_lists_every_environment_variable() {
        for (section, keys) in KNOWN_KEYS {
            for key in *keys {
                let env = format!("DEVICEHUB__{}__{}", section, key).to_uppercase();
                assert!(ENVIRONMENT_HELP.contains(&format!("  {env} ")), "{env}");
            }
        }
        assert!(ENVIRONMENT_HELP.contains("DEVICEHUB_CONFIG"));
        assert!(ENVIRONMENT_HELP.contains("RUST_LOG"));
    }

    #[test]
    fn the_bind_flag_names_itself() {
        assert_eq!(
            parse_bind_flag(" 127.0.0.1:9 ").unwrap().to_string(),
            "127.0.0.1:9"
        );
        assert!(parse_bind_flag("9090")
            .unwrap_err()
            .to_string()
            .starts_with("--bind:"));
    }

    #[test]
    fn ops_keys_default_to_plain_http_metrics_on_text_logs() {
        let settings = Settings::from_tree(tree("")).unwrap();
        assert!(settings.tls.is_none());
        assert!(settings.metrics_enabled);
        assert_eq!(settings.log_format, LogFormat::Text);
        let set = Settings::from_tree(tree(
            "[server]\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n[metrics]\nenabled = false\n[log]\nformat = \"json\"",
        ))
        .unwrap();
        let tls = set.tls.unwrap();
        assert_eq!((tls.cert, tls.key), ("c.pem".into(), "k.pem".into()));
        assert!(!set.metrics_enabled);
        assert_eq!(set.log_format, LogFormat::Json);
        // Environment variables arrive as strings.
        let env = Settings::from_tree(tree("[metrics]\nenabled = \"FALSE\"")).unwrap();
        assert!(!env.metrics_enabled);
    }

    #[test]
    fn bad_ops_values_name_their_key() {
        let half = error_of("[server]\ntls_cert_file = \"c.pem\"");
        assert!(half.starts_with("server.tls_key_file:"), "{half}");
        let half = error_of("[server]\ntls_key_file = \"k.pem\"");
        assert!(half.starts_with("server.tls_cert_file:"), "{half}");
        let yes = error_of("[metrics]\nenabled = \"yes\"");
        assert!(yes.starts_with("metrics.enabled:"), "{yes}");
        let xml = error_of("[log]\nformat = \"xml\"");
        assert!(xml.starts_with("log.format:"), "{xml}");
    }

    #[test]
    fn webhook_keys_are_read_and_checked() {
        let unset = Settings::from_tree(tree("")).unwrap();
        assert!(!unset.webhooks.allow_loopback);
        assert_eq!(unset.webhooks.first_retry.as_secs(), 10);
        let set = Settings::from_tree(tree(
            "[webhooks]\nallow_loopback = \"true\"\nfirst_retry = \"2m\"",
        ))
        .unwrap();
        assert!(set.webhooks.allow_loopback);
        assert_eq!(set.webhooks.first_retry.as_secs(), 120);
        assert!(error_of("[webhooks]\nallow_loopback = \"yes\"")
            .starts_with("webhooks.allow_loopback:"));
        assert!(error_of("[webhooks]\nfirst_retry = \"soon\"").starts_with("webhooks.first_retry:"));
    }

    #[test]
    fn event_retention_is_a_duration() {
        let unset = Settings::from_tree(tree("")).unwrap();
        assert_eq!(unset.event_retention, DEFAULT_EVENT_RETENTION);
        let set = Settings::from_tree(tree("[events]\nretention = \"12h\"")).unwrap();
        assert_eq!(set.event_retention.as_secs(), 12 * 3600);
        for bad in ["0s", "soon", "-1d"] {
            let err = error_of(&format!("[events]\nretention = \"{bad}\""));
            assert!(err.starts_with("events.retention:"), "{err}");
        }
    }

    #[test]
    fn backup_keys_are_read_and_checked() {
        let unset = Settings::from_tree(tree("")).unwrap();
        assert!(unset.backup.dir.is_none());
        assert_eq!(unset.backup.interval.as_secs(), 3600);
        assert_eq!(unset.backup.keep, 24);
        let set = Settings::from_tree(tree(
            "[backup]\ndir = \"/var/backups/dh\"\ninterval = \"90s\"\nkeep = 3",
        ))
        .unwrap();
        assert_eq!(set.backup.dir, Some(PathBuf::from("/var/backups/dh")));
        assert_eq!(set.backup.interval.as_secs(), 90);
        assert_eq!(set.backup.keep, 3);
        let days = Settings::from_tree(tree("[backup]\ninterval = \"7d\"")).unwrap();
        assert_eq!(days.backup.interval.as_secs(), 7 * 86_400);
        for bad in ["0", "soon", "5w", "-1m"] {
            let err = error_of(&format!("[backup]\ninterval = \"{bad}\""));
            assert!(err.starts_with("backup.interval:"), "{err}");
        }
        for bad in ["0", "-2", "many", "1.5"] {
            let err = error_of(&format!("[backup]\nkeep = \"{bad}\""));
            assert!(err.starts_with("backup.keep:"), "{err}");
        }
    }

    #[test]
    fn postgres_keys_are_read_and_checked() {
        let secret = "[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n";
        let url = "postgres://dh:pw@db.internal:5432/devicehub?sslmode=require";
        let set = Settings::from_tree(tree(&format!(
            "{secret}[storage]\npostgres_url = \"{url}\"\npostgres_ca_file = \"/etc/dh/ca.pem\""
        )))
        .unwrap();
        let postgres = set.postgres.expect("postgres settings");
        assert_eq!(postgres.url, url);
        assert_eq!(postgres.ca_file, Some(PathBuf::from("/etc/dh/ca.pem")));
        assert!(
            !format!("{postgres:?}").contains("pw"),
            "the URL is never shown"
        );
        assert!(Settings::from_tree(tree("")).unwrap().postgres.is_none());

        let err = error_of(&format!("[storage]\npostgres_url = \"{url}\""));
        assert!(
            err.starts_with("storage.postgres_url:") && err.contains("auth.hs256_secret"),
            "{err}"
        );
        let err = error_of(&format!(
            "{secret}[storage]\npostgres_url = \"mysql://x/y\""
        ));
        assert!(err.starts_with("storage.postgres_url:"), "{err}");
        let err = error_of("[storage]\npostgres_ca_file = \"/etc/dh/ca.pem\"");
        assert!(err.starts_with("storage.postgres_ca_file:"), "{err}");
        let err = error_of(&format!(
            "{secret}[storage]\npostgres_url = \"{url}\"\n[backup]\ndir = \"/var/backups/dh\""
        ));
        assert!(err.starts_with("backup.dir:"), "{err}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let settings =
            Settings::from_tree(tree("[server]\nbind = \"\"\n[auth]\nissuer = \"\"")).unwrap();
        assert_eq!(settings.bind.to_string(), "127.0.0.1:8080");
        assert!(settings.auth.issuer.is_none());
    }
}
