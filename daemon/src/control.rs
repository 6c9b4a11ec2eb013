//! The control socket: how `mesh` and the shims talk to `meshd`.
//!
//! One task per connection, at most [`MAX_CONNECTIONS`] at once. A peer of
//! another uid is refused on accept. Frames are decoded with
//! [`mesh_protocol::control`]; a malformed frame gets an error answer and
//! closes that connection and nothing else.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mesh_protocol::control::{
    self, DaemonStatus, FrameError, Listener, MAX_FRAME, Request, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::mesh::{Mesh, MeshError};

/// How many control connections may be open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What the control frontend knows about the daemon.
#[derive(Debug)]
pub struct State {
    /// When the daemon started.
    pub started: Instant,
    /// The only uid whose clients are served.
    pub uid: u32,
    /// The directory that holds the sockets.
    pub runtime_dir: PathBuf,
    /// Every socket the daemon serves.
    pub listeners: Vec<Listener>,
    /// Notified when a client asks the daemon to stop.
    pub stop: Arc<Notify>,
    /// The account this device holds.
    pub mesh: Arc<tokio::sync::Mutex<Mesh>>,
}

/// Accept control connections until the future is dropped.
pub async fn serve(listener: UnixListener, state: Arc<State>) {
    let uid = state.uid;
    accept_loop(listener, "control", MAX_CONNECTIONS, uid, move |stream| {
        let state = Arc::clone(&state);
        async move { handle(stream, &state).await.map_err(|e| e.to_string()) }
    })
    .await;
}

/// Serve a socket: accept, refuse peers of another uid and connections
/// over `max`, and run `handle` for each in a task of its own.
///
/// The tasks live in a `JoinSet` owned here, so dropping this future (when
/// the daemon stops) aborts every connection with it. Every frontend
/// (control, SSH agent, gpg-agent) is served through this one loop.
pub(crate) async fn accept_loop<F, Fut>(
    listener: UnixListener,
    frontend: &'static str,
    max: usize,
    uid: u32,
    handle: F,
) where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, frontend, "accept failed");
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    tracing::warn!(frontend, "too many connections; refusing one");
                    continue;
                };
                let Some(span) = admit(&stream, uid, frontend) else { continue };
                let connection = handle(stream);
                connections.spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection closed");
                    }
                    drop(permit);
                }.instrument(span));
            }
            Some(_) = connections.join_next() => {}
        }
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

/// Serve one connection: read a request, answer it, until the peer leaves.
async fn handle(mut stream: UnixStream, state: &State) -> Result<(), FrameError> {
    // Requests may carry a private key: wipe what was read, spare
    // capacity included, when the connection ends.
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(256));
    loop {
        let request = match control::decode::<Request>(&buf) {
            Ok(Some((request, used))) => {
                buf.drain(..used);
                request
            }
            Ok(None) => {
                if buf.len() > MAX_FRAME + 4 {
                    return Err(FrameError::TooLong { len: buf.len() });
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(())
                    } else {
                        Err(FrameError::Truncated)
                    };
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                continue;
            }
            Err(err) => {
                let answer = Response::Error {
                    message: err.to_string(),
                };
                stream.write_all(&control::encode(&answer)?).await?;
                return Err(err);
            }
        };
        tracing::debug!(request = request_name(&request), "control request");
        let (response, stop) = respond(request, state).await;
        stream.write_all(&control::encode(&response)?).await?;
        if stop {
            state.stop.notify_one();
            return Ok(());
        }
    }
}

/// The request's kind, for logs (never its fields: some hold secrets).
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Status => "status",
        Request::Shutdown => "shutdown",
        Request::AccountCreate { .. } => "account-create",
        Request::AccountStatus => "account-status",
        Request::AccountSync => "account-sync",
        Request::AccountEscrow { .. } => "account-escrow",
        Request::AccountRecover { .. } => "account-recover",
        Request::AccountPin { .. } => "account-pin",
        Request::DeviceConnect { .. } => "device-connect",
        Request::DeviceConnectStatus => "device-connect-status",
        Request::DevicePending => "device-pending",
        Request::DeviceAccept { .. } => "device-accept",
        Request::DeviceReject { .. } => "device-reject",
        Request::DeviceList => "device-list",
        Request::DeviceRevoke { .. } => "device-revoke",
        Request::CatalogPut { .. } => "catalog-put",
        Request::CatalogList { .. } => "catalog-list",
        Request::CatalogImport { .. } => "catalog-import",
        Request::CatalogDelete { .. } => "catalog-delete",
        Request::SshCreate { .. } => "ssh-create",
        Request::SshImport { .. } => "ssh-import",
        Request::SshList => "ssh-list",
        Request::SshGet { .. } => "ssh-get",
        Request::SshDelete { .. } => "ssh-delete",
        Request::SshAuthorizedKeys => "ssh-authorized-keys",
        Request::SshAllowedSigners => "ssh-allowed-signers",
        Request::OpenpgpCreate { .. } => "openpgp-create",
        Request::OpenpgpImport { .. } => "openpgp-import",
        Request::OpenpgpList => "openpgp-list",
        Request::OpenpgpExport { .. } => "openpgp-export",
        Request::OpenpgpDelete { .. } => "openpgp-delete",
    }
}

/// The answer to one request, and whether the daemon should stop after it.
async fn respond(request: Request, state: &State) -> (Response, bool) {
    let result = match request {
        Request::Status => {
            let status = DaemonStatus {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol: control::VERSION,
                pid: std::process::id(),
                uptime_seconds: state.started.elapsed().as_secs(),
                runtime_dir: state.runtime_dir.clone(),
                listeners: state.listeners.clone(),
            };
            return (Response::Status(status), false);
        }
        Request::Shutdown => return (Response::ShuttingDown, true),
        request => {
            let mut mesh = state.mesh.lock().await;
            account_request(&mut mesh, request).await
        }
    };
    let response = match result {
        Ok(value) => Response::Value { value },
        Err(e) => Response::Error { message: e.0 },
    };
    (response, false)
}

async fn account_request(
    mesh: &mut Mesh,
    request: Request,
) -> Result<serde_json::Value, MeshError> {
    match request {
        Request::AccountCreate {
            address,
            service,
            name,
        } => mesh.create(&address, &service, &name).await,
        Request::AccountStatus => Ok(mesh.account_status()),
        Request::AccountSync => Ok(mesh.sync().await),
        Request::AccountEscrow { shares, quorum } => mesh.escrow(shares, quorum),
        Request::AccountRecover { shares, rejoin } => mesh.recover(&shares, rejoin).await,
        Request::AccountPin { roles } => mesh.pin(&roles).await,
        Request::DeviceConnect {
            address,
            service,
            name,
            pin,
        } => {
            mesh.connect(&address, &service, &name, pin.as_deref())
                .await
        }
        Request::DeviceConnectStatus => mesh.poll_connection().await,
        Request::DevicePending => mesh.pending(),
        Request::DeviceAccept { code, roles, name } => {
            let roles = crate::mesh::parse_roles(&roles, mesh_protocol::account::Role::Device)?;
            mesh.answer(&code, Some((roles, name))).await
        }
        Request::DeviceReject { code } => mesh.answer(&code, None).await,
        Request::DeviceList => mesh.list(),
        Request::DeviceRevoke { name } => mesh.revoke(&name).await,
        Request::CatalogPut { store, name, value } => mesh.catalog_put(&store, &name, &value).await,
        Request::CatalogList { store } => mesh.catalog_list(&store),
        Request::CatalogImport { store, entries } => mesh.catalog_import(&store, &entries).await,
        Request::CatalogDelete { store, name } => mesh.catalog_delete(&store, &name).await,
        Request::SshCreate {
            name,
            algorithm,
            confirm,
        } => mesh.ssh_create(&name, &algorithm, confirm).await,
        Request::SshImport {
            name,
            private,
            passphrase,
            confirm,
        } => {
            let passphrase = passphrase.as_ref().map(|p| p.0.as_str());
            mesh.ssh_import(&name, &private.0, passphrase, confirm)
                .await
        }
        Request::SshList => mesh.ssh_list(),
        Request::SshGet { name } => mesh.ssh_get(&name),
        Request::SshDelete { name } => mesh.ssh_delete(&name).await,
        Request::SshAuthorizedKeys => mesh.ssh_lines(false),
        Request::SshAllowedSigners => mesh.ssh_lines(true),
        Request::OpenpgpCreate {
            user_id,
            algorithm,
            name,
        } => {
            mesh.openpgp_create(&user_id, &algorithm, name.as_deref())
                .await
        }
        Request::OpenpgpImport { secret, name } => {
            mesh.openpgp_import(&secret.0, name.as_deref()).await
        }
        Request::OpenpgpList => mesh.openpgp_list(),
        Request::OpenpgpExport { name } => mesh.openpgp_export(&name),
        Request::OpenpgpDelete { name } => mesh.openpgp_delete(&name).await,
        Request::Status | Request::Shutdown => Err(MeshError("not an account request".into())),
    }
}
