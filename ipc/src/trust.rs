//! Whether the local end of a socket can be trusted, checked before a
//! single byte is sent: the directory that holds `meshd`'s sockets, and the
//! process that listens on one.
//!
//! A socket is only as safe as its directory. If someone else made the
//! runtime directory, or can enter it, they can put a listener of their own
//! where `meshd`'s socket should be, and a client would hand it private
//! keys, recovery shares and passwords. So a client connects only when the
//! directory is a real directory (not a symbolic link), owned by the
//! client's user, with mode 0700 (nobody else may enter it); and, once
//! connected, only when the process at the other end runs as the same user
//! (`SO_PEERCRED`). Both checks, because the directory could be swapped
//! between the check and the connect by someone who can write its parent.
//! `meshd` applies [`check_dir`] to the directory before it binds (it
//! refuses a bad one rather than repair it), and `mesh`, the shims and the
//! git helper all reach it through [`connect`].
//!
//! Where the system offers no `SO_PEERCRED` (macOS, the BSDs: they have
//! `getpeereid`, which needs code this crate may not contain), the peer
//! check falls back to the owner of the socket file, inside the checked
//! directory.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The most bytes a socket path may have, its terminating NUL excluded:
/// `sun_path` is 108 bytes on Linux, 104 on macOS and the BSDs.
pub const MAX_SOCKET_PATH: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// Why a runtime directory cannot hold `meshd`'s sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeDir {
    /// It is a symbolic link or some other non-directory.
    #[error("{} is not a directory (a symbolic link?)", .dir.display())]
    NotADirectory {
        /// The directory.
        dir: PathBuf,
    },
    /// Another user owns it.
    #[error("{} belongs to uid {owner}, not to us ({uid})", .dir.display())]
    Owner {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// Ours.
        uid: u32,
    },
    /// Others may enter it.
    #[error("other users can reach {} (mode {mode:04o}); fix with: chmod 700 {}", .dir.display(), .dir.display())]
    Open {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It could not be inspected.
    #[error("cannot inspect {}: {source}", .dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error from the OS.
        source: io::Error,
    },
}

/// Why a client did not connect to, or did not keep, a socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The socket's directory is not private to us.
    #[error(transparent)]
    Dir(#[from] UnsafeDir),
    /// The socket has no directory to check (a bare relative name).
    #[error("{} is not in a directory that can be checked", .0.display())]
    NoDir(PathBuf),
    /// The socket's path does not fit in a Unix socket address.
    #[error(
        "the socket path {} is {len} bytes, over the limit of {MAX_SOCKET_PATH} for Unix sockets; \
         set XDG_RUNTIME_DIR to a shorter directory", .path.display()
    )]
    PathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The process listening on the socket is another user's.
    #[error("the process on {} runs as uid {peer}, not as us ({uid})", .socket.display())]
    Peer {
        /// The socket.
        socket: PathBuf,
        /// The peer's uid.
        peer: u32,
        /// Ours.
        uid: u32,
    },
    /// Connecting, or asking who listens, failed: `NotFound` and
    /// `ConnectionRefused` when nothing listens.
    #[error("{}: {source}", .socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The error from the OS.
        source: io::Error,
    },
}

/// Check that `dir` is a real directory (not a symbolic link), owned by
/// `uid`, that no one else may enter. A missing directory is an
/// [`UnsafeDir::Io`] with `NotFound`.
pub fn check_dir(dir: &Path, uid: u32) -> Result<(), UnsafeDir> {
    let meta = fs::symlink_metadata(dir).map_err(|source| UnsafeDir::Io {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(UnsafeDir::NotADirectory {
            dir: dir.to_owned(),
        });
    }
    if meta.uid() != uid {
        return Err(UnsafeDir::Owner {
            dir: dir.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(UnsafeDir::Open {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Check that `socket` fits in a Unix socket address.
pub fn check_length(socket: &Path) -> Result<(), TrustError> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(TrustError::PathTooLong {
            path: socket.to_owned(),
            len,
        });
    }
    Ok(())
}

/// Connect to `socket` as the user `uid`: only if its directory passes
/// [`check_dir`], and only keeping the connection if the listener runs as
/// `uid`. Nothing is sent here, so a refused peer has received nothing.
///
/// A missing directory or socket is a [`TrustError::Io`] with `NotFound`,
/// as when nothing listens: the daemon is not running.
pub fn connect(socket: &Path, uid: u32) -> Result<UnixStream, TrustError> {
    check_length(socket)?;
    let dir = socket
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .ok_or_else(|| TrustError::NoDir(socket.to_owned()))?;
    match check_dir(dir, uid) {
        Ok(()) => {}
        Err(UnsafeDir::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(TrustError::Io {
                socket: socket.to_owned(),
                source,
            });
        }
        Err(unsafe_dir) => return Err(unsafe_dir.into()),
    }
    let stream = UnixStream::connect(socket).map_err(|source| TrustError::Io {
        socket: socket.to_owned(),
        source,
    })?;
    check_peer(&stream, socket, uid)?;
    Ok(stream)
}

/// Check that the process at the other end of `stream` (connected to
/// `socket`) runs as `uid`.
pub fn check_peer(stream: &UnixStream, socket: &Path, uid: u32) -> Result<(), TrustError> {
    let peer = peer_uid(stream, socket)?;
    if peer != uid {
        return Err(TrustError::Peer {
            socket: socket.to_owned(),
            peer,
            uid,
        });
    }
    Ok(())
}

/// The uid of the process at the other end: `SO_PEERCRED`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_uid(stream: &UnixStream, socket: &Path) -> Result<u32, TrustError> {
    rustix::net::sockopt::socket_peercred(stream)
        .map(|cred| cred.uid.as_raw())
        .map_err(|errno| TrustError::Io {
            socket: socket.to_owned(),
            source: errno.into(),
        })
}

/// The owner of the socket file, standing in for the peer's uid where
/// there is no `SO_PEERCRED` (see the module's docs).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_uid(_stream: &UnixStream, socket: &Path) -> Result<u32, TrustError> {
    fs::symlink_metadata(socket)
        .map(|meta| meta.uid())
        .map_err(|source| TrustError::Io {
            socket: socket.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    use std::os::unix::net::UnixListener;

    fn uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    /// A private directory in a temporary one, with a listener in it.
    fn listening(mode: u32) -> (tempfile::TempDir, PathBuf, UnixListener) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("mesh");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("made");
        let socket = dir.join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bound");
        listener.set_nonblocking(true).expect("nonblocking");
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        (tmp, socket, listener)
    }

    /// No client ever reached the listener.
    fn untouched(listener: &UnixListener) {
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "a client connected: {accepted:?}"
        );
    }

    #[test]
    fn a_private_directory_with_our_listener_is_trusted() {
        let (_tmp, socket, listener) = listening(0o700);
        connect(&socket, uid()).expect("trusted");
        let (_stream, _) = listener.accept().expect("the client connected");
    }

    #[test]
    fn an_open_directory_is_refused_before_connecting() {
        let (_tmp, socket, listener) = listening(0o755);
        let err = connect(&socket, uid()).expect_err("refused");
        assert!(
            matches!(err, TrustError::Dir(UnsafeDir::Open { mode: 0o755, .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"), "{err}");
        untouched(&listener);
    }

    #[test]
    fn a_directory_of_another_owner_is_refused_before_connecting() {
        let (_tmp, socket, listener) = listening(0o700);
        let other = uid().wrapping_add(1);
        let err = connect(&socket, other).expect_err("refused");
        assert!(
            matches!(err, TrustError::Dir(UnsafeDir::Owner { owner, uid: u, .. }) if owner == uid() && u == other),
            "{err}"
        );
        untouched(&listener);
    }

    #[test]
    fn a_symlinked_directory_is_refused_before_connecting() {
        let (tmp, socket, listener) = listening(0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(socket.parent().expect("a dir"), &link).expect("linked");
        let err = connect(&link.join("control.sock"), uid()).expect_err("refused");
        assert!(
            matches!(err, TrustError::Dir(UnsafeDir::NotADirectory { .. })),
            "{err}"
        );
        untouched(&listener);
    }

    #[test]
    fn a_missing_directory_is_nothing_listening() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = connect(&tmp.path().join("gone/control.sock"), uid()).expect_err("none");
        assert!(
            matches!(&err, TrustError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
    }

    #[test]
    fn a_peer_of_another_uid_is_refused() {
        let (a, _b) = UnixStream::pair().expect("a pair");
        check_peer(&a, Path::new("pair"), uid()).expect("our own process");
        let err = check_peer(&a, Path::new("pair"), uid().wrapping_add(1)).expect_err("refused");
        assert!(
            matches!(err, TrustError::Peer { peer, .. } if peer == uid()),
            "{err}"
        );
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_refused() {
        let long = PathBuf::from(format!("/{}", "d".repeat(MAX_SOCKET_PATH)));
        let err = connect(&long, uid()).expect_err("refused");
        assert!(matches!(err, TrustError::PathTooLong { .. }), "{err}");
        assert!(err.to_string().contains("XDG_RUNTIME_DIR"), "{err}");
        let fits = PathBuf::from(format!("/{}", "d".repeat(MAX_SOCKET_PATH - 1)));
        check_length(&fits).expect("fits");
    }
}
