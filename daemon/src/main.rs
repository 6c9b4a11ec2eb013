//! `meshd`, the per-user Mesh daemon: parse arguments, set up logging,
//! harden the process, then run [`mesh_daemon::run`] until a signal.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

use mesh_daemon::Config;
use mesh_daemon::host::gpg::Gpg;
use mesh_daemon::keystore::confirm::Askpass;
use mesh_ipc::paths::Paths;
use tracing_subscriber::EnvFilter;

/// Every heap block is wiped when it is freed or moved by a reallocation.
/// Private keys pass through buffers meshd does not own (serde_json's
/// scratch space when a key's text has escapes, growing vectors, socket
/// reads); `Zeroizing` covers only the final copy of each.
#[global_allocator]
static ALLOCATOR: zalloc::ZeroizingAlloc<std::alloc::System> =
    zalloc::ZeroizingAlloc(std::alloc::System);

/// The Mesh daemon: keeps your Mesh in sync and serves its keys to ssh,
/// git and gpg. `mesh daemon start` runs it in the background; systemd or
/// launchd start it at login.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {}

fn main() -> ExitCode {
    let _args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match daemon() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meshd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon() -> anyhow::Result<()> {
    // Before any thread exists: this clears LISTEN_PID and LISTEN_FDS.
    let activated = mesh_daemon::server::activation::Activated::from_env();
    harden();
    let config = config()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(mesh_daemon::run(config, activated, signal()))?;
    Ok(())
}

/// Everything meshd takes from its environment, read here and nowhere
/// else.
fn config() -> anyhow::Result<Config> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let paths = Paths::resolve(|name| std::env::var_os(name))?;
    let sync_interval = var("MESH_SYNC_INTERVAL_MS")
        .and_then(|ms| ms.to_str()?.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    let gnupg_home = var("GNUPGHOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths.home.join(".gnupg"));
    let agent_shim = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("mesh-gpg-agent")))
        .filter(|p| p.is_file());
    Ok(Config {
        sync_interval,
        approval_timeout: var("MESH_APPROVAL_TIMEOUT_MS")
            .and_then(|ms| ms.to_str()?.parse().ok())
            .map_or(
                mesh_daemon::keystore::confirm::TIMEOUT,
                Duration::from_millis,
            ),
        keyring: var("MESH_KEYRING").map(|v| v.to_string_lossy().into_owned()),
        session_bus: var("DBUS_SESSION_BUS_ADDRESS").is_some(),
        service_ca: var("MESH_SERVICE_CA").map(PathBuf::from),
        service_timeout: var("MESH_SERVICE_TIMEOUT_MS")
            .and_then(|ms| ms.to_str()?.parse().ok())
            .map_or(Duration::from_secs(30), Duration::from_millis),
        askpass: Askpass::from_env(|name| std::env::var_os(name)),
        gpg: Gpg {
            home: gnupg_home,
            agent_shim,
        },
        paths,
    })
}

/// Keep secrets out of core files and away from same-uid debuggers.
fn harden() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(err) = setrlimit(Resource::Core, none) {
        tracing::warn!(error = %err, "cannot disable core dumps");
    }
    #[cfg(target_os = "linux")]
    if let Err(err) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %err, "cannot forbid ptrace");
    }
}

/// Completes on SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop meshd with `mesh daemon stop`");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
