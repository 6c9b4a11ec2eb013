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

pub mod control;
pub mod gpg;
pub mod mesh;
pub mod remote;
pub mod replica;
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

/// Run the daemon until `shutdown` completes or a client asks it to stop.
///
/// On return every socket it created has been removed.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let paths = &config.paths;
    runtime_dir::prepare(&paths.runtime_dir)?;
    let control_path = paths.control_socket();
    let listener = runtime_dir::bind(&control_path)?;
    let agent_path = paths.ssh_agent_socket();
    let agent_listener = match runtime_dir::bind(&agent_path) {
        Ok(listener) => listener,
        Err(e) => {
            runtime_dir::remove_socket(&control_path);
            return Err(e);
        }
    };
    tracing::info!(control = %control_path.display(), ssh_agent = %agent_path.display(), "meshd listening");

    let uid = rustix::process::getuid().as_raw();
    let gpg = bind_gpg();
    let keys = Arc::new(ssh::keys::Keyring::default());
    let agent = Arc::new(ssh::agent::Agent {
        keys: Arc::clone(&keys),
        askpass: ssh::confirm::Askpass::from_env(|name| std::env::var_os(name)),
        uid,
    });
    let gpg_keys = Arc::new(gpg::keys::GpgKeyring::default());
    let (gpg_listener, gpg_path) = match gpg {
        Some((listener, path)) => {
            let server = Arc::new(gpg::server::Server {
                keys: Arc::clone(&gpg_keys),
                version: gpg::gpg_version(),
                socket: path.clone(),
                uid,
            });
            (Some((listener, server)), Some(path))
        }
        None => (None, None),
    };
    let result = match mesh::Mesh::open(paths.clone(), Some(keys), Some(gpg_keys)) {
        Ok(mesh) => {
            serve(
                mesh,
                agent,
                gpg_listener,
                listener,
                agent_listener,
                &config,
                shutdown,
            )
            .await;
            Ok(())
        }
        Err(e) => Err(DaemonError::Account(e.0)),
    };
    runtime_dir::remove_socket(&agent_path);
    if let Some(path) = gpg_path {
        runtime_dir::remove_socket(&path);
    }
    runtime_dir::remove_socket(&control_path);
    result
}

/// Bind gpg's agent socket, if gpg is installed and no other agent holds
/// it. Without it meshd still runs; the reason is logged.
fn bind_gpg() -> Option<(tokio::net::UnixListener, PathBuf)> {
    let path = gpg::socket_path()?;
    let parent = path.parent()?;
    if let Err(e) = runtime_dir::prepare(parent) {
        tracing::warn!(error = %e, "no gpg-agent frontend");
        return None;
    }
    match runtime_dir::bind(&path) {
        Ok(listener) => Some((listener, path)),
        Err(e) => {
            tracing::warn!(error = %e, "no gpg-agent frontend");
            None
        }
    }
}

/// Serve every frontend until `shutdown` completes or a client asks the
/// daemon to stop.
async fn serve(
    mesh: mesh::Mesh,
    agent: Arc<ssh::agent::Agent>,
    gpg: Option<(tokio::net::UnixListener, Arc<gpg::server::Server>)>,
    control_listener: tokio::net::UnixListener,
    agent_listener: tokio::net::UnixListener,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let mesh = Arc::new(tokio::sync::Mutex::new(mesh));
    let stop = Arc::new(Notify::new());
    let state = Arc::new(control::State {
        started: Instant::now(),
        uid: agent.uid,
        runtime_dir: config.paths.runtime_dir.clone(),
        listeners: vec![
            mesh_protocol::control::Listener {
                frontend: "control".into(),
                path: config.paths.control_socket(),
            },
            mesh_protocol::control::Listener {
                frontend: "ssh-agent".into(),
                path: config.paths.ssh_agent_socket(),
            },
        ]
        .into_iter()
        .chain(
            gpg.as_ref()
                .map(|(_, server)| mesh_protocol::control::Listener {
                    frontend: "gpg-agent".into(),
                    path: server.socket.clone(),
                }),
        )
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
