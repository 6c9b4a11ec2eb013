//! The gpg-agent frontend: GnuPG's agent protocol (Assuan) on the socket
//! gpg looks for, with the OpenPGP keys of the Mesh.
//!
//! Where that socket is depends on GNUPGHOME and on whether
//! `/run/user/<uid>` exists; rather than re-derive gpg's rules, meshd asks
//! `gpgconf --list-dirs agent-socket` once at start-up, with its own
//! environment, and reports GETINFO version as the installed gpg's own
//! version (read on first use, not at start-up) so gpg prints no "server
//! is older than us" warning.

use std::path::PathBuf;
use std::process::Command;

pub mod keys;
pub mod server;

/// The version reported when gpg's own cannot be read.
const FALLBACK_VERSION: &str = "2.2.40";

/// The agent socket gpg will use, if gpgconf is installed.
pub fn socket_path() -> Option<PathBuf> {
    let path = list_agent_socket()?;
    if path.parent().is_some_and(|dir| !dir.exists()) {
        // gpg's per-home socket directory under /run/user: gpgconf makes
        // it as gpg would.
        let _ = Command::new("gpgconf")
            .arg("--create-socketdir")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Some(path)
}

fn list_agent_socket() -> Option<PathBuf> {
    let out = Command::new("gpgconf")
        .args(["--list-dirs", "agent-socket"])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let path = text.lines().next()?.trim();
    (out.status.success() && path.starts_with('/')).then(|| PathBuf::from(path))
}

/// The installed gpg's version (`gpg (GnuPG) 2.2.40` -> `2.2.40`).
pub fn gpg_version() -> String {
    Command::new("gpg")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| {
            let first = text.lines().next()?.to_owned();
            first.rsplit(' ').next().map(str::to_owned)
        })
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| FALLBACK_VERSION.to_owned())
}

/// Make gpg start meshd, never the real gpg-agent, when nothing listens on
/// its socket: `agent-program <mesh-gpg-agent>` in GNUPGHOME's gpg.conf.
/// Returns what was changed, if anything. An `agent-program` line the
/// user wrote is left alone (and reported).
pub fn ensure_agent_program() -> Result<Option<String>, String> {
    let home = std::env::var_os("GNUPGHOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".gnupg")))
        .ok_or("no GNUPGHOME or HOME")?;
    let shim = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("mesh-gpg-agent")))
        .filter(|p| p.is_file())
        .ok_or("mesh-gpg-agent is not installed beside meshd")?;
    let conf = home.join("gpg.conf");
    let text = match std::fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", conf.display())),
    };
    let wanted = shim.display().to_string();
    let ours = mesh_protocol::setup::gpg_agent_program(&wanted);
    for line in mesh_protocol::setup::remove_block(&text)
        .unwrap_or_else(|| text.clone())
        .lines()
    {
        let mut words = line.split_whitespace();
        if words.next() == Some("agent-program") {
            let current = words.collect::<Vec<_>>().join(" ");
            return Err(format!(
                "{} already names another agent-program ({current}); gpg may start it instead of meshd",
                conf.display()
            ));
        }
    }
    let Some(updated) = mesh_protocol::setup::add_block(&text, &ours) else {
        return Ok(None);
    };
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let tmp = home.join(".gpg.conf.mesh-tmp");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, updated.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &conf))
        .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    Ok(Some(format!(
        "gpg will start meshd as its agent: added `agent-program {wanted}` to {}",
        conf.display()
    )))
}
