//! gpg on this machine: where its agent socket is, its gpg.conf, and its
//! keyring of public certificates.
//!
//! Where the agent socket is depends on GNUPGHOME and on whether
//! `/run/user/<uid>` exists; rather than re-derive gpg's rules, meshd asks
//! `gpgconf --list-dirs agent-socket` once at start-up, with its own
//! environment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

use crate::account::Certificates;

/// How long one gpg run may take before it is killed.
const GPG_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// The agent socket gpg will use, if gpgconf is installed.
pub fn socket_path() -> Option<PathBuf> {
    let path = list_agent_socket()?;
    if path.parent().is_some_and(|dir| !dir.exists()) {
        // gpg's per-home socket directory under /run/user: gpgconf makes
        // it as gpg would.
        let _ = Command::new("gpgconf")
            .arg("--create-socketdir")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

/// Make gpg start meshd, never the real gpg-agent, when nothing listens on
/// its socket: `agent-program <mesh-gpg-agent>` in GNUPGHOME's gpg.conf.
/// Returns what was changed, if anything. An `agent-program` line the
/// user wrote is left alone (and reported).
pub fn ensure_agent_program(gpg: &Gpg) -> Result<Option<String>, GpgConfError> {
    let home = &gpg.home;
    let shim = gpg.agent_shim.as_ref().ok_or(GpgConfError::NoShim)?;
    let conf = home.join("gpg.conf");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| GpgConfError::Io { what, path, source }
    };
    let text = match std::fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read", &conf)(e)),
    };
    let wanted = shim.display().to_string();
    let ours = mesh_ipc::setup::gpg_agent_program(&wanted);
    for line in mesh_ipc::setup::remove_block(&text)
        .unwrap_or_else(|| text.clone())
        .lines()
    {
        let mut words = line.split_whitespace();
        if words.next() == Some("agent-program") {
            let current = words.collect::<Vec<_>>().join(" ");
            return Err(GpgConfError::OtherAgent { conf, current });
        }
    }
    let Some(updated) = mesh_ipc::setup::add_block(&text, &ours) else {
        return Ok(None);
    };
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .map_err(io("create", home))?;
    let tmp = home.join(".gpg.conf.mesh-tmp");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, updated.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &conf))
        .map_err(io("write", &conf))?;
    Ok(Some(format!(
        "gpg will start meshd as its agent: added `agent-program {wanted}` to {}",
        conf.display()
    )))
}

/// Why gpg.conf could not be made to name meshd's shim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpgConfError {
    /// The shim is not installed beside meshd.
    #[error("mesh-gpg-agent is not installed beside meshd")]
    NoShim,
    /// The user named another agent program; it is left alone.
    #[error("{} already names another agent-program ({current}); gpg may start it instead of meshd", conf.display())]
    OtherAgent {
        /// The gpg.conf.
        conf: PathBuf,
        /// The program it names.
        current: String,
    },
    /// A file could not be read or written.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// `read`, `create` or `write`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where gpg's files are, and the shim gpg should start as its agent.
#[derive(Debug, Clone)]
pub struct Gpg {
    /// GNUPGHOME, else `~/.gnupg`.
    pub home: PathBuf,
    /// `mesh-gpg-agent`, if installed beside meshd.
    pub agent_shim: Option<PathBuf>,
}

/// How far [`follow`] has got.
#[derive(Debug, Clone, Default)]
pub struct Followed {
    /// The certificates generation gpg's keyring is up to.
    pub generation: u64,
    /// The last thing done to gpg.conf, or the warning it gave, with the
    /// generation that needed it: a command that added a certificate
    /// reports it.
    pub configured: Option<(u64, String)>,
}

/// Keep gpg's keyring up to date with the account's certificates: each
/// certificate gpg does not know yet is imported (`gpg --import`,
/// ultimately trusted) and, once the account has one, gpg.conf names
/// meshd's shim as its agent program (this task is the only writer of
/// both). `followed` says up to which generation this is done, so a
/// command can return when gpg can use what it made. Ends when the
/// account's task does.
pub async fn follow(
    gpg: Gpg,
    mut snapshots: watch::Receiver<Arc<Certificates>>,
    followed: watch::Sender<Followed>,
) {
    // Each certificate imported, as it was: one that changes (a subkey
    // added, a user ID) is imported again.
    let mut known: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    // A failed import is tried again after this, doubling up to a minute
    // (gpg 2.4's keyboxd may not be running yet), or at the next change.
    let mut retry = RETRY_FIRST;
    loop {
        let snapshot = Arc::clone(&snapshots.borrow_and_update());
        let configured = if snapshot.openpgp.is_empty() {
            None
        } else {
            match ensure_agent_program(&gpg) {
                Ok(Some(change)) => {
                    tracing::info!("{change}");
                    Some(change)
                }
                Ok(None) => None,
                Err(warning) => {
                    tracing::warn!("{warning}");
                    Some(format!("warning: {warning}"))
                }
            }
        };
        let mut failed = false;
        for entry in &snapshot.openpgp {
            let version: [u8; 32] = sha2::Sha256::digest(entry.public.as_bytes()).into();
            if known.get(&entry.fingerprint) == Some(&version) {
                continue;
            }
            if import(&gpg.home, &entry.fingerprint, &entry.public).await {
                tracing::info!(name = %entry.name, "certificate imported into gpg's keyring");
                known.insert(entry.fingerprint.clone(), version);
            } else {
                failed = true;
            }
        }
        followed.send_modify(|f| {
            f.generation = snapshot.generation;
            if let Some(configured) = configured {
                f.configured = Some((snapshot.generation, configured));
            }
        });
        if failed {
            tracing::info!(after = ?retry, "a certificate import failed; trying again");
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    retry = RETRY_FIRST;
                }
                () = tokio::time::sleep(retry) => retry = (retry * 2).min(RETRY_MOST),
            }
        } else {
            retry = RETRY_FIRST;
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The first wait before a failed certificate import is tried again.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest wait between tries.
const RETRY_MOST: std::time::Duration = std::time::Duration::from_secs(60);

/// Every public certificate in gpg's keyring (`gpg --export`, binary),
/// or `None` if gpg cannot say.
pub async fn export(home: &Path) -> Option<Vec<u8>> {
    let child = tokio::process::Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-autostart", "--quiet", "--export"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    match tokio::time::timeout(GPG_TIME, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => Some(out.stdout),
        Ok(Ok(out)) => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "gpg --export failed");
            None
        }
        _ => None,
    }
}

/// `gpg --import` a public certificate and trust it ultimately. gpg asks
/// this very daemon's agent socket while it imports (`--no-autostart`:
/// never the real gpg-agent).
async fn import(home: &Path, fingerprint: &str, public: &str) -> bool {
    async fn run(home: &Path, args: &[&str], input: &str) -> bool {
        let child = tokio::process::Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--no-autostart", "--quiet"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = child else {
            tracing::warn!("cannot run gpg to import a certificate");
            return false;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        // A gpg that hangs (a keyring lock) must not stall the others:
        // killed on drop, after its time.
        match tokio::time::timeout(GPG_TIME, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => true,
            Ok(Ok(out)) => {
                tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "gpg failed");
                false
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!("gpg did not finish in time; killed");
                false
            }
        }
    }
    run(home, &["--import"], public).await
        && run(
            home,
            &["--import-ownertrust"],
            &format!("{fingerprint}:6:\n"),
        )
        .await
}
