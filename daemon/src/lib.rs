//! `meshd`: the per-user Mesh daemon, as a library.
//!
//! The binary is a thin `main` around [`run`]: it reads the environment
//! once into a [`Config`], sets up logging, hardens the process and hands
//! over a shutdown future. Tests call the same function.
//!
//! The shape (ARCHITECTURE.md has the map): `server` owns the sockets;
//! `frontend` serves the control socket, the SSH agent and gpg's agent;
//! `keystore` is the only place parsed private keys live; `account` is
//! this device's account, owned by one task that publishes what it holds;
//! `store` keeps replicas and secrets; `service_client` talks to the Mesh
//! service; `host` keeps gpg's configuration and keyring in step. Every
//! task is owned by [`run`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_ipc::paths::Paths;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

pub mod account;
pub mod frontend;
pub mod host;
mod hygiene;
pub mod keystore;
pub mod server;
pub mod service_client;
pub mod store;

use server::{Socket, activation, runtime_dir};

/// What the daemon needs to start: everything it would otherwise read
/// from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where everything lives.
    pub paths: Paths,
    /// How often to sync with the service.
    pub sync_interval: Duration,
    /// `MESH_APPROVAL_TIMEOUT_MS`: how long a device with nobody at it
    /// waits for another device to approve a use of a key.
    pub approval_timeout: Duration,
    /// `MESH_KEYRING`: force `file` or `secret-service`.
    pub keyring: Option<String>,
    /// Whether the session has a D-Bus bus (`DBUS_SESSION_BUS_ADDRESS`).
    pub session_bus: bool,
    /// `MESH_SERVICE_CA`: PEM certificates to trust for the service.
    pub service_ca: Option<PathBuf>,
    /// How long a call to the service may take (`MESH_SERVICE_TIMEOUT_MS`,
    /// default 30 s).
    pub service_timeout: Duration,
    /// Who to ask before a confirmed key signs.
    pub askpass: keystore::confirm::Askpass,
    /// gpg's files.
    pub gpg: host::gpg::Gpg,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A socket or the runtime directory could not be used.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The account state could not be loaded.
    #[error("cannot load the account: {0}")]
    Account(#[from] account::AccountError),
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
            return Err(e.into());
        }
    };
    // gpgconf says where gpg's socket is: two runs of a program, longer
    // than all else meshd does before its first answer. They run beside
    // the account's opening and the SSH agent's first answers; the control
    // socket answers once gpg's socket is bound too.
    let gpg = tokio::task::spawn_blocking(move || open_gpg(&mut activated));
    tracing::info!(control = %control.path.display(), ssh_agent = %ssh_agent.path.display(), "meshd listening");
    let mut ours: Vec<PathBuf> = [&control, &ssh_agent]
        .into_iter()
        .filter(|socket| socket.owned)
        .map(|socket| socket.path.clone())
        .collect();
    let settings = account::Settings {
        paths: paths.clone(),
        keyring: config.keyring.clone(),
        session_bus: config.session_bus,
        connector: service_client::Http::connector(
            config.service_ca.clone(),
            config.service_timeout,
        ),
    };
    let result = match account::Account::open(settings) {
        Ok(account) => {
            let sockets = Sockets {
                control,
                ssh_agent,
                gpg,
            };
            ours.extend(serve(account, sockets, &config, shutdown).await);
            Ok(())
        }
        Err(e) => {
            ours.extend(gpg.await.ok().flatten().filter(|s| s.owned).map(|s| s.path));
            Err(e.into())
        }
    };
    for path in ours {
        runtime_dir::remove_socket(&path);
    }
    result
}

/// gpg's agent socket: handed over, or bound if gpg is installed and no
/// other agent holds it. Without it meshd still runs; the reason is logged.
fn open_gpg(activated: &mut activation::Activated) -> Option<Socket> {
    let path = host::gpg::socket_path()?;
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

/// How long the usage log gathers key uses into one entry.
const USAGE_WINDOW: Duration = Duration::from_secs(2);

/// The sockets `serve` runs the frontends on.
struct Sockets {
    control: Socket,
    ssh_agent: Socket,
    /// gpg's, once gpgconf has said where it is.
    gpg: tokio::task::JoinHandle<Option<Socket>>,
}

/// Serve every frontend until `shutdown` completes or a client asks the
/// daemon to stop. Every task is in one `JoinSet`, dropped (and so
/// aborted) on return. Returns the path of gpg's socket if meshd bound it.
async fn serve(
    account: account::Account,
    sockets: Sockets,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Option<PathBuf> {
    let uid = rustix::process::getuid().as_raw();
    let mut listeners = vec![
        listener("control", &sockets.control),
        listener("ssh-agent", &sockets.ssh_agent),
    ];

    let mut tasks = JoinSet::new();
    let (handle, mut snapshots, account_task) = account::spawn(account, config.sync_interval);
    tasks.spawn(account_task);

    // The keys there are at start are served from the first connection on.
    let keystore = Arc::new(keystore::Keystore::default());
    let first = snapshots.try_recv().map_or(0, |snapshot| {
        keystore.apply(&snapshot);
        snapshot.generation
    });
    let (applied_tx, applied) = watch::channel(first);
    tasks.spawn(keystore::feed(Arc::clone(&keystore), snapshots, applied_tx));
    let (followed_tx, followed) = watch::channel(host::gpg::Followed::default());
    tasks.spawn(host::gpg::follow(
        config.gpg.clone(),
        handle.certificates(),
        followed_tx,
    ));

    // What the SSH agent learns (which key a server took) goes to the
    // account, which shares it with the other devices.
    let (learned, mut learning) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let learner = handle.clone();
    tasks.spawn(async move {
        while let Some((host, key)) = learning.recv().await {
            if let Err(e) = learner
                .run(account::Command::SshAccepted { host, key })
                .await
            {
                tracing::warn!(error = %e, "cannot share what a server took");
            }
        }
    });
    // Every use of a key goes to the account's usage log, in batches: what
    // comes in within USAGE_WINDOW of the first, so that a burst of
    // signatures (a rebase signing each commit) is one entry, not many.
    // The task sleeps out the window and then takes what has queued,
    // rather than receiving each use as it comes: a receiver that is not
    // waiting is not woken, so a signature costs the agent a push on the
    // queue, not a wake-up of this task on another thread.
    let (usage, mut uses) =
        tokio::sync::mpsc::channel(mesh_protocol::application::MAX_USAGE_BATCH * 4);
    let logger = handle.clone();
    tasks.spawn(async move {
        while let Some(first) = uses.recv().await {
            tokio::time::sleep(USAGE_WINDOW).await;
            // All that queued (the queue is bounded); the account writes
            // it in as many entries as it takes.
            let mut batch = vec![first];
            while let Ok(more) = uses.try_recv() {
                batch.push(more);
            }
            if let Err(e) = logger.run(account::Command::Usage(batch)).await {
                tracing::warn!(error = %e, "cannot write the usage log");
            }
        }
    });
    let agent = Arc::new(frontend::ssh_agent::Agent {
        keys: Arc::clone(&keystore.ssh),
        askpass: config.askpass.clone(),
        uid,
        // OpenSSH's default UserKnownHostsFile and GlobalKnownHostsFile.
        known_hosts: frontend::ssh_agent::KnownHosts {
            files: vec![
                config.paths.home.join(".ssh/known_hosts"),
                config.paths.home.join(".ssh/known_hosts2"),
                PathBuf::from("/etc/ssh/ssh_known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts2"),
            ],
            account: Some(handle.clone()),
        },
        learned: Some(learned),
        usage: Some(usage.clone()),
        approvals: Some(frontend::approval::Remote {
            account: handle.clone(),
            timeout: config.approval_timeout,
        }),
    });
    // With somebody here, other devices' approval requests are shown to
    // them as they come.
    if !config.askpass.is_headless() {
        tasks.spawn(frontend::approval::answer_through(
            config.askpass.clone(),
            handle.clone(),
        ));
    }
    // Agent connections are served on threads of their own (see
    // `server::workers`); dropped with the other tasks, they stop.
    let workers = Arc::new(server::workers::Workers::start());
    tasks.spawn(frontend::ssh_agent::serve(
        sockets.ssh_agent.listener,
        agent,
        Arc::clone(&workers),
    ));
    // The SSH agent answers from here on; gpg's socket may still be coming.
    let gpg = sockets.gpg.await.ok().flatten();
    let gpg_socket = gpg.as_ref().filter(|s| s.owned).map(|s| s.path.clone());
    listeners.extend(gpg.as_ref().map(|s| listener("gpg-agent", s)));
    if let Some(gpg) = gpg {
        // Keys gpg makes or imports go to the account once gpg has
        // written their certificates.
        let (settle, wake) = tokio::sync::mpsc::unbounded_channel();
        tasks.spawn(frontend::gpg_agent::settle(
            Arc::clone(&keystore.gpg),
            handle.clone(),
            config.gpg.home.clone(),
            wake,
        ));
        let viewer = handle.clone();
        let server = Arc::new(frontend::gpg_agent::Server {
            keys: Arc::clone(&keystore.gpg),
            s2k_count: std::sync::OnceLock::new(),
            socket: gpg.path,
            uid,
            askpass: config.askpass.clone(),
            usage: Some(usage),
            approvals: Some(frontend::approval::Remote {
                account: handle.clone(),
                timeout: config.approval_timeout,
            }),
            adds: Some(frontend::gpg_agent::Adds {
                refusal: Box::new(move || {
                    (!viewer.view().status.admin).then_some(
                        "only an administrator device of a Mesh account adds OpenPGP keys",
                    )
                }),
                settle,
            }),
        });
        tasks.spawn(frontend::gpg_agent::serve(gpg.listener, server, workers));
    }
    let stop = Arc::new(Notify::new());
    let state = Arc::new(frontend::control::State {
        started: Instant::now(),
        uid,
        runtime_dir: config.paths.runtime_dir.clone(),
        listeners,
        stop: Arc::clone(&stop),
        account: handle,
        keystore_applied: applied,
        gpg_followed: followed,
        askpass: config.askpass.clone(),
    });
    tasks.spawn(frontend::control::serve(sockets.control.listener, state));
    tokio::select! {
        () = shutdown => tracing::info!("meshd stopping on signal"),
        () = stop.notified() => tracing::info!("meshd stopping on request"),
        Some(ended) = tasks.join_next() => {
            tracing::error!(?ended, "a task of meshd ended; stopping");
        }
    }
    gpg_socket
}

fn listener(frontend: &str, socket: &Socket) -> mesh_ipc::control::Listener {
    mesh_ipc::control::Listener {
        frontend: frontend.into(),
        path: socket.path.clone(),
    }
}
