//! The runtime directory that holds `meshd`'s sockets.
//!
//! Sockets are only as safe as the directory they are in, so the directory
//! must be ours and closed to everyone else (mode 0700), and is never a
//! symbolic link: a directory that fails either test is refused rather than
//! repaired, because someone else may already have put something in it.
//! Each socket is made 0600 as well. A socket file left by a daemon that was
//! killed is replaced; one that still answers means a daemon is running.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use super::ServerError;

/// Create `dir` (mode 0700, as are the directories above it that are
/// missing) if it is missing, then check that it is a real directory,
/// owned by us, that no one else can enter: the check the clients make
/// too ([`mesh_ipc::trust::check_dir`]).
pub fn prepare(dir: &Path) -> Result<(), ServerError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ServerError::Io {
            what: "cannot create",
            path: dir.to_owned(),
            source,
        })?;
    let uid = rustix::process::geteuid().as_raw();
    mesh_ipc::trust::check_dir(dir, uid)?;
    Ok(())
}

/// Listen on the socket `path`, mode 0600, replacing a stale socket file.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    mesh_ipc::trust::check_length(path)?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::AlreadyRunning(path.to_owned()));
            }
            tracing::info!(socket = %path.display(), "replacing a stale socket");
            fs::remove_file(path).map_err(|source| ServerError::Io {
                what: "cannot remove stale socket",
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ServerError::Io {
                what: "refusing to replace",
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "not a socket"),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ServerError::Io {
                what: "cannot inspect",
                path: path.to_owned(),
                source,
            });
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Io {
        what: "cannot listen on",
        path: path.to_owned(),
        source,
    })?;
    // The directory is 0700 already, so there is no window in which another
    // user could connect before this chmod.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServerError::Io {
            what: "cannot restrict",
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(listener)
}

/// Remove a socket file on the way out; a failure is logged, not fatal.
pub fn remove_socket(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %err, "cannot remove socket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_new_directory_is_made_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("mesh");
        prepare(&dir).expect("prepared");
        let mode = fs::metadata(&dir).expect("exists").mode() & 0o777;
        assert_eq!(mode, 0o700);
        prepare(&dir).expect("an existing private directory is fine");
    }

    #[test]
    fn an_open_directory_is_refused_not_repaired() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("mesh");
        DirBuilder::new().mode(0o755).create(&dir).expect("made");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = prepare(&dir).expect_err("refused").to_string();
        assert!(
            err.contains("mode 0755") && err.contains("chmod 700"),
            "{err}"
        );
        assert_eq!(fs::metadata(&dir).expect("exists").mode() & 0o777, 0o755);
    }

    #[test]
    fn a_symlink_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        DirBuilder::new().mode(0o700).create(&real).expect("made");
        let link = tmp.path().join("mesh");
        std::os::unix::fs::symlink(&real, &link).expect("linked");
        let err = prepare(&link).expect_err("refused").to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn missing_parents_are_made_private_too() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let dir = state.join("mesh/run");
        prepare(&dir).expect("prepared");
        for made in [&state, &state.join("mesh"), &dir] {
            let mode = fs::metadata(made).expect("exists").mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", made.display());
        }
    }

    #[test]
    fn a_socket_path_too_long_is_refused_with_a_hint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let long = tmp
            .path()
            .join("d".repeat(mesh_ipc::trust::MAX_SOCKET_PATH));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = runtime
            .block_on(async { bind(&long).map(drop) })
            .expect_err("refused")
            .to_string();
        assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    }

    #[test]
    fn a_file_in_the_sockets_place_is_not_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("control.sock");
        fs::write(&path, b"keep me").expect("written");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = runtime.block_on(async { bind(&path).map(drop) });
        assert!(err.is_err());
        assert_eq!(fs::read(&path).expect("still there"), b"keep me");
    }
}
