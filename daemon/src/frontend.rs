//! The sockets programs talk to: the control socket (`mesh`, the shims),
//! the SSH agent and gpg's agent. Each serves its protocol over
//! [`crate::server::accept_loop`] and reaches only the keystore, the
//! account's handle and the host; no frontend uses another.

pub mod approval;
pub mod control;
pub mod gpg_agent;
pub mod ssh_agent;

use std::sync::atomic::{AtomicBool, Ordering};

use mesh_protocol::application::Usage;
use tokio::net::UnixStream;
use tokio::sync::mpsc::Sender;

/// The process at the other end of an agent connection, for the usage
/// log: its pid (SO_PEERCRED) and program (`/proc/<pid>/exe`).
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Its pid, if the kernel said.
    pub pid: Option<u32>,
    /// Its program's path, if it could be read.
    pub program: Option<String>,
}

impl Client {
    /// The process connected on `stream`.
    pub fn of(stream: &UnixStream) -> Client {
        let pid = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .and_then(|pid| u32::try_from(pid).ok());
        let program = pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|path| path.display().to_string());
        Client { pid, program }
    }
}

/// Where the agents report each use of a key (to the account, which
/// writes the usage log); `None` in tests. Bounded: when the account
/// cannot keep up (a service that does not answer), uses are dropped
/// rather than held without limit, and the drop is logged.
pub type UsageLog = Option<Sender<Usage>>;

/// Report a use of a key.
pub fn note_use(
    log: &UsageLog,
    client: &Client,
    operation: &str,
    key: &str,
    fingerprint: String,
    host: Option<String>,
    confirmed: bool,
) {
    let Some(log) = log else { return };
    let time_ms = crate::account::now_ms();
    let sent = log.try_send(Usage {
        time_ms,
        operation: operation.to_owned(),
        key: key.to_owned(),
        fingerprint,
        pid: client.pid,
        program: client.program.clone(),
        host,
        confirmed,
    });
    // Warned once a backlog, not once a use dropped: a line each would
    // add a write to every signature while the account catches up.
    if sent.is_err() {
        if !BEHIND.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the usage log is behind: key uses are not recorded until it catches up"
            );
        }
    } else if BEHIND.load(Ordering::Relaxed) {
        BEHIND.store(false, Ordering::Relaxed);
        tracing::warn!("the usage log has caught up; uses are recorded again");
    }
}

/// Whether uses are being dropped (the last [`note_use`] could not send).
static BEHIND: AtomicBool = AtomicBool::new(false);
