//! Sockets handed over by a service manager (systemd socket activation,
//! `LISTEN_FDS` / `LISTEN_FDNAMES`), so that the SSH agent, gpg-agent and
//! control sockets exist from login and start meshd on first use.
//!
//! Each socket unit names its descriptor (`FileDescriptorName=`):
//! `control`, `ssh-agent` or `gpg-agent`. A socket handed over is served
//! as it is (the manager made it and removes it); any other is bound by
//! meshd itself.

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;

/// The names of the sockets meshd takes over.
pub const NAMES: [&str; 3] = ["control", "ssh-agent", "gpg-agent"];

/// Listening sockets received from the service manager, by name.
#[derive(Debug, Default)]
pub struct Activated {
    by_name: BTreeMap<String, UnixListener>,
}

impl Activated {
    /// Take the sockets from the environment. Call it before any thread
    /// starts: it clears `LISTEN_PID` and `LISTEN_FDS`, as it must, so that
    /// children do not inherit them.
    pub fn from_env() -> Activated {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut by_name = BTreeMap::new();
        for index in 0..fds.len() {
            let name = names.get(index).cloned().unwrap_or_default();
            match fds.take_unix_listener(index) {
                Ok(Some(listener)) if NAMES.contains(&name.as_str()) => {
                    by_name.insert(name, listener);
                }
                Ok(_) => tracing::warn!(index, name, "ignoring a socket handed over"),
                Err(e) => tracing::warn!(index, error = %e, "unusable socket handed over"),
            }
        }
        Activated { by_name }
    }

    /// The socket named `name`, if the manager handed one over.
    pub fn take(&mut self, name: &str) -> Option<UnixListener> {
        self.by_name.remove(name)
    }
}
