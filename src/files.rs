//! The files and folders devicehub creates (API.md §1): private to its user
//! (files 0600, folders 0700), never opened through a symbolic link, and the
//! storage path checked before anything is written.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::config::Settings;
use crate::error::StartupError;

/// Refuses a `storage.path` that is a folder: it must name the database
/// file. Checked first, so that a bad path writes nothing anywhere.
pub fn check_storage_path(settings: &Settings) -> Result<(), StartupError> {
    let path = &settings.storage_path;
    if path.is_dir() {
        return Err(StartupError::new(format!(
            "storage.path: {} is a folder; give the database file inside it, for example {}",
            path.display(),
            path.join("devicehub.redb").display()
        )));
    }
    Ok(())
}

/// Makes the storage folder (mode 0700) and an empty database file (mode
/// 0600) when they do not exist yet, so that the store opens a file that is
/// already private. Existing ones are left as they are.
pub fn prepare_database_file(settings: &Settings) -> Result<(), StartupError> {
    check_storage_path(settings)?;
    let path = &settings.storage_path;
    let dir = settings.storage_dir();
    create_private_dir(&dir).map_err(|e| {
        StartupError::new(format!(
            "storage.path: cannot create the folder {}: {e}",
            dir.display()
        ))
    })?;
    match create_private_file(path) {
        Ok(file) => file.sync_all().map_err(|e| {
            StartupError::new(format!(
                "storage.path: cannot create {}: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StartupError::new(format!(
            "storage.path: cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Creates `dir` and any missing parents with mode 0700. Folders that
/// already exist keep their mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates a new file with mode 0600 for writing. Fails when anything is
/// already at `path`, a symbolic link included (`O_EXCL`, `O_NOFOLLOW`).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Opens an existing file for reading without following a symbolic link at
/// `path` (that is an error: `ELOOP`).
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    options.open(path)
}

/// Whether opening failed because `path` is a symbolic link.
pub fn is_symlink_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    let _ = e;
    false
}

/// Renames `from` to `to` unless something is already at `to`
/// (`AlreadyExists`). The file moves under its one name: no second link to
/// it exists at any moment.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))
        };
        let (from_c, to_c) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // Filesystems without RENAME_NOREPLACE fall through to a link.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_at(path: &Path) -> Settings {
        Settings {
            bind: "127.0.0.1:0".parse().unwrap(),
            storage_path: path.to_path_buf(),
            ..Settings::default()
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_folder_as_storage_path_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = prepare_database_file(&settings_at(dir.path())).unwrap_err();
        assert!(err.to_string().starts_with("storage.path:"), "{err}");
        assert!(err.to_string().contains("is a folder"), "{err}");
        assert!(!dir.path().join("devicehub.redb").exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_folders_and_the_database_file_it_creates_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/devicehub.redb");
        prepare_database_file(&settings_at(&db)).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
        // Again: what exists is kept, contents and mode alike.
        std::fs::write(&db, b"kept").unwrap();
        prepare_database_file(&settings_at(&db)).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_refuse_an_existing_name_or_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private_file(&link).is_err(), "a dangling link");
        assert!(!target.exists());
        std::fs::write(&target, b"x").unwrap();
        assert!(create_private_file(&target).is_err());
        assert!(is_symlink_error(&open_no_follow(&link).unwrap_err()));
    }

    #[test]
    fn rename_no_replace_keeps_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let err = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        rename_no_replace(&a, &c).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"a");
    }
}
