//! `meshd`: the per-user Mesh daemon, as a library.
//!
//! The binary is a thin `main` around [`run`]: it resolves [`Paths`], sets
//! up logging, hardens the process and hands over a shutdown future. Tests
//! call the same function.
//!
//! Today the daemon owns its runtime directory and serves the control
//! socket ([`control`]). The SSH agent, the gpg-agent (Assuan) server, the
//! keystore and the sync client join it here; decrypted private keys will
//! live in this crate and nowhere else.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mesh_protocol::paths::Paths;
use tokio::sync::Notify;

pub mod activation;
pub mod control;
pub mod gpg;
pub mod mesh;
pub mod remote;
pub mod replica;
pub mod rsa_key;
pub mod runtime_dir;
pub mod secrets;
pub mod ssh;

/// What the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where everything lives.
    pub paths: Paths,
    /// How often to sync with the service.
    pub sync_interval: std::time::Duration,
}

/// Sync the account every `interval`, for as long as the daemon runs.
async fn sync_loop(mesh: Arc<tokio::sync::Mutex<mesh::Mesh>>, interval: std::time::Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut mesh = mesh.lock().await;
        if mesh.should_sync() {
            let report = mesh.sync().await;
            if report["ok"] != true {
                tracing::warn!(errors = %report["errors"], "sync found problems");
            }
        }
    }
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The runtime directory cannot be trusted with sockets.
    #[error("refusing runtime directory {dir}: {reason}")]
    UnsafeRuntimeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it, and how to fix it.
        reason: String,
    },
    /// The account state could not be loaded.
    #[error("cannot load the account: {0}")]
    Account(String),
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
struct Socket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    owned: bool,
}

impl Socket {
    /// The socket the service manager handed over as `name`, else one
    /// bound at `path`.
    fn open(
        activated: &mut activation::Activated,
        name: &str,
        path: PathBuf,
    ) -> Result<Socket, DaemonError> {
        let Some(std) = activated.take(name) else {
            return Ok(Socket {
                listener: runtime_dir::bind(&path)?,
                path,
                owned: true,
            });
        };
        let io = |source| DaemonError::Io {
            what: "cannot use the socket handed over for",
            path: path.clone(),
            source,
        };
        std.set_nonblocking(true).map_err(io)?;
        let listener = tokio::net::UnixListener::from_std(std).map_err(io)?;
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

/// Run the daemon until `shutdown` completes or a client asks it to stop.
/// Sockets in `activated` (from systemd) are served instead of binding.
///
/// On return every socket it created has been removed.
pub async fn run(
    config: Config,
    mut activated: activation::Activated,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let paths = &config.paths;
    runtime_dir::prepare(&paths.runtime_dir)?;
    let control = Socket::open(&mut activated, "control", paths.control_socket())?;
    let ssh_agent = match Socket::open(&mut activated, "ssh-agent", paths.ssh_agent_socket()) {
        Ok(socket) => socket,
        Err(e) => {
            if control.owned {
                runtime_dir::remove_socket(&control.path);
            }
            return Err(e);
        }
    };
    let gpg = open_gpg(&mut activated);
    tracing::info!(control = %control.path.display(), ssh_agent = %ssh_agent.path.display(), "meshd listening");

    let uid = rustix::process::getuid().as_raw();
    let keys = Arc::new(ssh::keys::Keyring::default());
    let agent = Arc::new(ssh::agent::Agent {
        keys: Arc::clone(&keys),
        askpass: ssh::confirm::Askpass::from_env(|name| std::env::var_os(name)),
        uid,
    });
    let gpg_keys = Arc::new(gpg::keys::GpgKeyring::default());
    let gpg_server = gpg.as_ref().map(|socket| {
        Arc::new(gpg::server::Server {
            keys: Arc::clone(&gpg_keys),
            version: std::sync::OnceLock::new(),
            socket: socket.path.clone(),
            uid,
        })
    });
    let named: Vec<(&'static str, &Socket)> = [("control", &control), ("ssh-agent", &ssh_agent)]
        .into_iter()
        .chain(gpg.as_ref().map(|s| ("gpg-agent", s)))
        .collect();
    let sockets = named
        .iter()
        .map(|(name, socket)| (*name, socket.path.clone()))
        .collect();
    let ours: Vec<PathBuf> = named
        .iter()
        .filter(|(_, socket)| socket.owned)
        .map(|(_, socket)| socket.path.clone())
        .collect();
    let result = match mesh::Mesh::open(paths.clone(), Some(keys), Some(gpg_keys)) {
        Ok(mesh) => {
            let frontends = Frontends {
                control: control.listener,
                ssh_agent: (ssh_agent.listener, agent),
                gpg: gpg.map(|s| s.listener).zip(gpg_server),
                sockets,
            };
            serve(mesh, frontends, &config, shutdown).await;
            Ok(())
        }
        Err(e) => Err(DaemonError::Account(e.0)),
    };
    for path in ours {
        runtime_dir::remove_socket(&path);
    }
    result
}

/// gpg's agent socket: handed over, or bound if gpg is installed and no
/// other agent holds it. Without it meshd still runs; the reason is logged.
fn open_gpg(activated: &mut activation::Activated) -> Option<Socket> {
    let path = gpg::socket_path()?;
    if let Some(parent) = path.parent()
        && let Err(e) = runtime_dir::prepare(parent)
    {
        tracing::warn!(error = %e, "no gpg-agent frontend");
        return None;
    }
    match Socket::open(activated, "gpg-agent", path) {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::warn!(error = %e, "no gpg-agent frontend");
            None
        }
    }
}

/// The listeners `serve` runs, and the sockets they are on.
struct Frontends {
    control: tokio::net::UnixListener,
    ssh_agent: (tokio::net::UnixListener, Arc<ssh::agent::Agent>),
    gpg: Option<(tokio::net::UnixListener, Arc<gpg::server::Server>)>,
    sockets: Vec<(&'static str, PathBuf)>,
}

/// Serve every frontend until `shutdown` completes or a client asks the
/// daemon to stop.
async fn serve(
    mesh: mesh::Mesh,
    frontends: Frontends,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let Frontends {
        control: control_listener,
        ssh_agent: (agent_listener, agent),
        gpg,
        sockets,
    } = frontends;
    let mesh = Arc::new(tokio::sync::Mutex::new(mesh));
    let stop = Arc::new(Notify::new());
    let state = Arc::new(control::State {
        started: Instant::now(),
        uid: agent.uid,
        runtime_dir: config.paths.runtime_dir.clone(),
        listeners: sockets
            .into_iter()
            .map(|(frontend, path)| mesh_protocol::control::Listener {
                frontend: frontend.into(),
                path,
            })
            .collect(),
        stop: Arc::clone(&stop),
        mesh: Arc::clone(&mesh),
    });
    tokio::select! {
        () = shutdown => tracing::info!("meshd stopping on signal"),
        () = stop.notified() => tracing::info!("meshd stopping on request"),
        () = control::serve(control_listener, state) => {}
        () = ssh::agent::serve(agent_listener, agent) => {}
        () = async {
            match gpg {
                Some((listener, server)) => gpg::server::serve(listener, server).await,
                None => std::future::pending().await,
            }
        } => {}
        () = sync_loop(mesh, config.sync_interval) => {}
    }
}
