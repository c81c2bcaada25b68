//! The HS256 secret: configured, or made on first start and kept beside the
//! database in `jwt-secret` (mode 0600) so that `devicehub token` signs with
//! the same one the server verifies with. A kept secret that others could
//! have read is refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::Settings;
use crate::error::StartupError;
use crate::files;

pub const MIN_SECRET_BYTES: usize = 32;
const SECRET_FILE: &str = "jwt-secret";

pub fn secret_path(settings: &Settings) -> PathBuf {
    settings.storage_dir().join(SECRET_FILE)
}

/// Whether `load_or_create` would make a new secret: none is configured,
/// tokens are not verified with a public key, and none is kept yet.
pub fn will_be_made(settings: &Settings) -> bool {
    settings.auth.hs256_secret.is_none()
        && settings.auth.public_key_file.is_none()
        && std::fs::symlink_metadata(secret_path(settings)).is_err()
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
    let cannot_read = |e: std::io::Error| {
        StartupError::new(format!(
            "storage.path: cannot read the kept secret {}: {e}",
            path.display()
        ))
    };
    let mut file = match files::open_no_follow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if files::is_symlink_error(&e) => {
            return Err(StartupError::new(format!(
                "auth.hs256_secret: the kept secret {} is a symbolic link; replace it with the file itself (mode 0600), or delete it to make a new one",
                path.display()
            )))
        }
        Err(e) => return Err(cannot_read(e)),
    };
    // Checked on the open file, so the name cannot be swapped in between.
    check_private(path, &file.metadata().map_err(cannot_read)?)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot_read)?;
    let secret = text.trim().as_bytes().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(StartupError::new(format!(
            "auth.hs256_secret: the kept secret {} is shorter than {MIN_SECRET_BYTES} bytes; delete it to make a new one",
            path.display()
        )));
    }
    Ok(Some(secret))
}

/// A kept secret is used only while no one else can have read it: no access
/// for group or other, and no second name (a hard link elsewhere would keep it
/// readable by whoever made that link).
#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), StartupError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StartupError::new(format!(
            "auth.hs256_secret: the kept secret {} is open to other users (mode {mode:04o}); delete it to make a new one, or `chmod 600` it if no one else can have read it",
            path.display()
        )));
    }
    if meta.nlink() != 1 {
        return Err(StartupError::new(format!(
            "auth.hs256_secret: the kept secret {} has {} hard links, so another name may expose it; delete it to make a new one",
            path.display(),
            meta.nlink()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::Metadata) -> Result<(), StartupError> {
    Ok(())
}

fn create(path: &Path) -> Result<Vec<u8>, StartupError> {
    let fail = |e: std::io::Error| {
        StartupError::new(format!(
            "storage.path: cannot write the secret file {}: {e}",
            path.display()
        ))
    };
    let random = |n: usize| {
        let mut raw = vec![0u8; n];
        getrandom::fill(&mut raw).map_err(|e| fail(std::io::Error::other(e.to_string())))?;
        Ok::<_, StartupError>(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    files::create_private_dir(dir).map_err(fail)?;
    let secret = random(48)?;

    // Written whole under a name no one can guess or have made beforehand
    // (a new file, never through a link, mode 0600 from the start), then
    // renamed into place only if nothing is there yet: a crash never leaves a
    // half-written secret, and of two processes starting at once the first
    // to rename wins and the other reads its secret.
    let tmp = dir.join(format!(".{SECRET_FILE}.{}.tmp", random(12)?));
    let mut file = files::create_private_file(&tmp).map_err(fail)?;
    let placed = file
        .write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| files::rename_no_replace(&tmp, path));
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    match placed {
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
            ..Settings::default()
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

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_folder_it_makes_is_private_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        load_or_create(&settings).unwrap();
        assert_eq!(mode(&dir.path().join("db")), 0o700);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("db"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);
    }

    /// The attack of issue 12: the old temporary name, made beforehand by
    /// another user with mode 0644 and a second link to keep reading it.
    #[cfg(unix)]
    #[test]
    fn a_pre_made_temporary_file_never_receives_the_secret() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let trap = db.join(format!(".{SECRET_FILE}.{}", std::process::id()));
        std::fs::write(&trap, b"").unwrap();
        std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o644)).unwrap();
        let spy = dir.path().join("spy");
        std::fs::hard_link(&trap, &spy).unwrap();

        let secret = load_or_create(&settings).unwrap();
        assert!(
            std::fs::read(&spy).unwrap().is_empty(),
            "the spy learnt nothing"
        );
        let kept = std::fs::metadata(secret_path(&settings)).unwrap();
        assert_eq!(kept.nlink(), 1);
        assert_eq!(kept.mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&settings).unwrap(), secret);
    }

    #[cfg(unix)]
    #[test]
    fn a_kept_secret_others_could_read_is_refused_naming_file_and_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        load_or_create(&settings).unwrap();
        let path = secret_path(&settings);
        let shown = path.display().to_string();
        for open in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
            let err = load_or_create(&settings).unwrap_err().to_string();
            assert!(err.starts_with("auth.hs256_secret:"), "{err}");
            assert!(err.contains(&shown), "{err}");
            assert!(!err.contains('\n'));
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(&settings).is_ok());

        let second = dir.path().join("second-name");
        std::fs::hard_link(&path, &second).unwrap();
        let err = load_or_create(&settings).unwrap_err().to_string();
        assert!(
            err.starts_with("auth.hs256_secret:") && err.contains("2 hard links"),
            "{err}"
        );
        std::fs::remove_file(&second).unwrap();
        assert!(load_or_create(&settings).is_ok());

        let real = dir.path().join("real-secret");
        std::fs::rename(&path, &real).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let err = load_or_create(&settings).unwrap_err().to_string();
        assert!(
            err.starts_with("auth.hs256_secret:") && err.contains("symbolic link"),
            "{err}"
        );
    }

    #[test]
    fn two_first_starts_at_once_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&settings).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(load_or_create(&settings).unwrap(), secrets[0]);
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
