//! The gpg-agent frontend: GnuPG's agent protocol (Assuan) on the socket
//! gpg looks for, with the OpenPGP keys of the Mesh.
//!
//! Where that socket is depends on GNUPGHOME and on whether
//! `/run/user/<uid>` exists; rather than re-derive gpg's rules, meshd asks
//! `gpgconf --list-dirs agent-socket` once at start-up, with its own
//! environment, and reports GETINFO version as the installed gpg's own
//! version so gpg prints no "server is older than us" warning.

use std::path::PathBuf;
use std::process::Command;

pub mod keys;
pub mod server;

/// The version reported when gpg's own cannot be read.
const FALLBACK_VERSION: &str = "2.2.40";

/// The agent socket gpg will use, if gpgconf is installed.
pub fn socket_path() -> Option<PathBuf> {
    // Make gpg's per-home socket directory under /run/user, where it
    // would be used; nothing happens where it would not.
    let _ = Command::new("gpgconf")
        .arg("--create-socketdir")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
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
