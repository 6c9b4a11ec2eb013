//! Where a user's Mesh lives: sockets, data and configuration.
//!
//! [`Paths`] is resolved once, in a binary's `main`, from the environment
//! and passed down; nothing deeper looks a path up itself. That is what lets
//! a test put a whole Mesh in a temporary directory. Resolution follows the
//! XDG Base Directory specification, which says that a relative or empty
//! value is to be ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The name of the folder that holds our files inside each XDG directory.
const APP: &str = "mesh";

/// The file name of `meshd`'s control socket, in [`Paths::runtime_dir`].
pub const CONTROL_SOCKET: &str = "control.sock";

/// The file name of `meshd`'s SSH agent socket, in [`Paths::runtime_dir`].
pub const SSH_AGENT_SOCKET: &str = "ssh-agent.sock";

/// Every place the Mesh keeps something on this machine, for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The user's home directory.
    pub home: PathBuf,
    /// Sockets and other per-login state: `$XDG_RUNTIME_DIR/mesh`, or,
    /// where the session has no runtime directory (macOS, cron, ssh
    /// sessions without a login manager, containers), `run` in the user's
    /// XDG state directory: `$XDG_STATE_HOME/mesh/run`, by default
    /// `~/.local/state/mesh/run`. Never a name in the shared `/tmp`,
    /// which anyone could make first. `meshd` makes it (and the missing
    /// directories above it) mode 0700 and refuses one that others can
    /// enter; clients refuse to talk through one ([`crate::trust`]). A
    /// socket path in it over [`crate::trust::MAX_SOCKET_PATH`] bytes is
    /// refused by both, with a hint to set a shorter `XDG_RUNTIME_DIR`.
    pub runtime_dir: PathBuf,
    /// Catalog replicas and the daemon log: `$XDG_DATA_HOME/mesh`, by
    /// default `~/.local/share/mesh`.
    pub data_dir: PathBuf,
    /// Settings: `$XDG_CONFIG_HOME/mesh`, by default `~/.config/mesh`.
    pub config_dir: PathBuf,
}

/// Why the paths could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathsError {
    /// `HOME` is unset, empty or relative, and nothing else can stand in.
    #[error("HOME is not set to an absolute path")]
    NoHome,
}

impl Paths {
    /// Resolve the paths from environment variables, read through `env`
    /// (in a binary, `|name| std::env::var_os(name)`).
    pub fn resolve(env: impl Fn(&str) -> Option<OsString>) -> Result<Paths, PathsError> {
        let home = absolute(env("HOME")).ok_or(PathsError::NoHome)?;
        let under = |var: &str, default: &[&str]| {
            absolute(env(var))
                .unwrap_or_else(|| default.iter().fold(home.clone(), |p, part| p.join(part)))
                .join(APP)
        };
        let runtime_dir = match absolute(env("XDG_RUNTIME_DIR")) {
            Some(dir) => dir.join(APP),
            None => under("XDG_STATE_HOME", &[".local", "state"]).join("run"),
        };
        Ok(Paths {
            data_dir: under("XDG_DATA_HOME", &[".local", "share"]),
            config_dir: under("XDG_CONFIG_HOME", &[".config"]),
            runtime_dir,
            home,
        })
    }

    /// The control socket `mesh` and the shims use to reach `meshd`.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join(CONTROL_SOCKET)
    }

    /// The SSH agent socket, the value for `SSH_AUTH_SOCK`.
    pub fn ssh_agent_socket(&self) -> PathBuf {
        self.runtime_dir.join(SSH_AGENT_SOCKET)
    }

    /// Where a `meshd` started in the background writes its log.
    pub fn daemon_log(&self) -> PathBuf {
        self.data_dir.join("meshd.log")
    }
}

/// The value as a path, if it is set, non-empty and absolute.
fn absolute(value: Option<OsString>) -> Option<PathBuf> {
    let path = PathBuf::from(value?);
    Path::is_absolute(&path).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> Result<Paths, PathsError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        Paths::resolve(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let paths = resolve(&[("HOME", "/home/alice")]).expect("resolves");
        assert_eq!(paths.data_dir, Path::new("/home/alice/.local/share/mesh"));
        assert_eq!(paths.config_dir, Path::new("/home/alice/.config/mesh"));
        assert_eq!(
            paths.runtime_dir,
            Path::new("/home/alice/.local/state/mesh/run")
        );
        assert_eq!(
            paths.control_socket(),
            Path::new("/home/alice/.local/state/mesh/run/control.sock")
        );
    }

    #[test]
    fn xdg_values_win_when_absolute() {
        let paths = resolve(&[
            ("HOME", "/home/alice"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("XDG_DATA_HOME", "/data"),
            ("XDG_CONFIG_HOME", "/conf"),
        ])
        .expect("resolves");
        assert_eq!(paths.runtime_dir, Path::new("/run/user/1000/mesh"));
        assert_eq!(
            paths.ssh_agent_socket(),
            Path::new("/run/user/1000/mesh/ssh-agent.sock")
        );
        assert_eq!(paths.data_dir, Path::new("/data/mesh"));
        assert_eq!(paths.config_dir, Path::new("/conf/mesh"));
        assert_eq!(paths.daemon_log(), Path::new("/data/mesh/meshd.log"));
    }

    #[test]
    fn empty_or_relative_xdg_values_are_ignored() {
        let paths = resolve(&[
            ("HOME", "/home/alice"),
            ("XDG_RUNTIME_DIR", ""),
            ("XDG_DATA_HOME", "relative/data"),
            ("XDG_CONFIG_HOME", ""),
        ])
        .expect("resolves");
        assert_eq!(
            paths.runtime_dir,
            Path::new("/home/alice/.local/state/mesh/run")
        );
        assert_eq!(paths.data_dir, Path::new("/home/alice/.local/share/mesh"));
        assert_eq!(paths.config_dir, Path::new("/home/alice/.config/mesh"));
    }

    #[test]
    fn without_a_runtime_dir_the_sockets_go_in_the_state_dir_not_tmp() {
        let paths =
            resolve(&[("HOME", "/home/alice"), ("XDG_STATE_HOME", "/state")]).expect("resolves");
        assert_eq!(paths.runtime_dir, Path::new("/state/mesh/run"));
    }

    #[test]
    fn home_must_be_absolute() {
        assert_eq!(resolve(&[]), Err(PathsError::NoHome));
        assert_eq!(resolve(&[("HOME", "")]), Err(PathsError::NoHome));
        assert_eq!(resolve(&[("HOME", "home")]), Err(PathsError::NoHome));
    }
}
