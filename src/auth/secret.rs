//! The HS256 secret: configured, or made on first start and kept beside the
//! database in `jwt-secret` (mode 0600) so that `devicehub token` signs with
//! the same one the server verifies with.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Settings;
use crate::error::StartupError;

pub const MIN_SECRET_BYTES: usize = 32;
const SECRET_FILE: &str = "jwt-secret";

pub fn secret_path(settings: &Settings) -> PathBuf {
    settings.storage_dir().join(SECRET_FILE)
}

/// The configured secret, else the kept one, else a new one written atomically.
pub fn load_or_create(settings: &Settings) -> Result<Vec<u8>, StartupError> {
    if let Some(secret) = &settings.auth.hs256_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = secret_path(settings);
    match read(&path)? {
        Some(secret) => Ok(secret),
        None => create(&path),
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, StartupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().as_bytes().to_vec();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(StartupError::new(format!(
                    "auth.hs256_secret: the kept secret {} is shorter than {MIN_SECRET_BYTES} bytes; delete it to make a new one",
                    path.display()
                )));
            }
            Ok(Some(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StartupError::new(format!(
            "storage.path: cannot read the kept secret {}: {e}",
            path.display()
        ))),
    }
}

fn create(path: &Path) -> Result<Vec<u8>, StartupError> {
    let fail = |e: std::io::Error| {
        StartupError::new(format!(
            "storage.path: cannot write the secret file {}: {e}",
            path.display()
        ))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut raw = [0u8; 48];
    getrandom::fill(&mut raw).map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);

    // Written whole to a temporary file, then linked into place: a crash never
    // leaves a half-written secret, and two processes starting at once agree
    // on the first one linked.
    let tmp = dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(fail)?;
        file.write_all(secret.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            log::info!("made a new token secret in {}", path.display());
            Ok(secret.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path)?.ok_or_else(|| fail(e))
        }
        Err(e) => Err(fail(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_in(dir: &Path) -> Settings {
        Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            storage_path: dir.join("db").join("devicehub.redb"),
            auth: Default::default(),
            limits: Default::default(),
        }
    }

    #[test]
    fn first_use_makes_a_private_secret_that_is_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let first = load_or_create(&settings).unwrap();
        assert!(first.len() >= MIN_SECRET_BYTES);
        assert_eq!(load_or_create(&settings).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(secret_path(&settings))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_configured_secret_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings_in(dir.path());
        settings.auth.hs256_secret = Some("x".repeat(40));
        assert_eq!(
            load_or_create(&settings).unwrap(),
            "x".repeat(40).into_bytes()
        );
        assert!(!secret_path(&settings).exists());
    }
}
