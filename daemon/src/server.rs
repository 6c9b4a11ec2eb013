//! The only code that touches a listening socket: the runtime directory,
//! sockets bound or handed over by the service manager, and the accept
//! loop every frontend is served through (peer uid checked, a connection
//! cap, a span per connection, every connection a task owned here).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

pub mod activation;
pub mod runtime_dir;
pub mod workers;

/// Why a socket or the runtime directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The runtime directory cannot be trusted with sockets: what is
    /// wrong with it, and how to fix it.
    #[error("refusing runtime directory: {0}")]
    UnsafeRuntimeDir(#[from] mesh_ipc::trust::UnsafeDir),
    /// A socket's path does not fit in a Unix socket address.
    #[error(transparent)]
    SocketPath(#[from] mesh_ipc::trust::TrustError),
    /// Another daemon answers on the socket already.
    #[error("meshd is already running (it answers on {0})")]
    AlreadyRunning(PathBuf),
    /// A file system or socket call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error from the OS.
        source: std::io::Error,
    },
}

/// A listening socket, and whether meshd made its file (and so removes it).
#[derive(Debug)]
pub struct Socket {
    /// The listener.
    pub listener: UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// Whether meshd bound it (rather than being handed it).
    pub owned: bool,
}

impl Socket {
    /// The socket the service manager handed over as `name`, else one
    /// bound at `path`.
    pub fn open(
        activated: &mut activation::Activated,
        name: &str,
        path: PathBuf,
    ) -> Result<Socket, ServerError> {
        let Some(std) = activated.take(name) else {
            return Ok(Socket {
                listener: runtime_dir::bind(&path)?,
                path,
                owned: true,
            });
        };
        let io = |source| ServerError::Io {
            what: "cannot use the socket handed over for",
            path: path.clone(),
            source,
        };
        std.set_nonblocking(true).map_err(io)?;
        let listener = UnixListener::from_std(std).map_err(io)?;
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(PathBuf::from))
            .unwrap_or(path);
        tracing::info!(socket = %path.display(), name, "using a socket handed over");
        Ok(Socket {
            listener,
            path,
            owned: false,
        })
    }
}

/// Serve a socket: accept, refuse peers of another uid, and run `handle`
/// for each connection in a task of its own, at most `max` at once. A
/// client over the cap is not closed: it waits in the socket's listen
/// backlog (the kernel's `somaxconn`, or systemd's `Backlog=`) and is
/// accepted as soon as a connection ends, so a burst of clients (a build
/// farm, a fan-out of ssh sessions) is answered in full, late rather than
/// never.
///
/// The tasks live in a `JoinSet` owned here, so dropping this future (when
/// the daemon stops) aborts every connection with it.
pub async fn accept_loop<F, Fut, E>(
    listener: UnixListener,
    frontend: &'static str,
    max: usize,
    uid: u32,
    handle: F,
) where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let limit = Arc::new(Semaphore::new(max));
    let mut connections = JoinSet::new();
    loop {
        // A free place first; finished connections are reaped meanwhile.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                // (Never closed: nothing calls `close`.)
                Err(_) => return,
            },
            Some(_) = connections.join_next() => continue,
        };
        let stream = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => break stream,
                    Err(err) => tracing::warn!(error = %err, frontend, "accept failed"),
                },
                Some(_) = connections.join_next() => {}
            }
        };
        let Some(span) = admit(&stream, uid, frontend) else {
            continue;
        };
        let connection = handle(stream);
        connections.spawn(
            async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "connection closed");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Check the peer's uid; return the connection's span if it is ours.
fn admit(stream: &UnixStream, uid: u32, frontend: &'static str) -> Option<tracing::Span> {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read peer credentials; refusing");
            return None;
        }
    };
    let span = tracing::info_span!(
        "connection",
        frontend,
        peer.pid = cred.pid(),
        peer.uid = cred.uid()
    );
    if cred.uid() != uid {
        span.in_scope(|| tracing::warn!("refusing a client of another uid"));
        return None;
    }
    Some(span)
}
