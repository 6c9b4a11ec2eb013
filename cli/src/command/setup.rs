//! `mesh setup` and `mesh setup --undo`: join this user's session to
//! meshd, and take it all back.
//!
//! What setup does, each step printed:
//! - installs the systemd user units (ExecStart: the meshd beside this
//!   `mesh`) and, when a user manager runs, enables their sockets;
//! - points `SSH_AUTH_SOCK` at meshd: `environment.d/50-mesh.conf` for the
//!   session, a marked block in `~/.profile` for login shells;
//! - makes gpg start meshd as its agent (a marked block in gpg.conf).
//!
//! Every change is recorded in `setup.json` beside the account's data with
//! what was there before, so running setup again changes nothing more and
//! `--undo` restores each file as it was (or, if the user has edited it
//! since, takes out only our block).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;
use mesh_ipc::paths::Paths;
use mesh_ipc::setup;
use serde::{Deserialize, Serialize};

/// The unit files, as shipped in `systemd/`.
const UNITS: [(&str, &str); 4] = [
    (
        "meshd.service",
        include_str!("../../../systemd/meshd.service"),
    ),
    (
        "meshd-control.socket",
        include_str!("../../../systemd/meshd-control.socket"),
    ),
    (
        "meshd-ssh-agent.socket",
        include_str!("../../../systemd/meshd-ssh-agent.socket"),
    ),
    (
        "meshd-gpg-agent.socket",
        include_str!("../../../systemd/meshd-gpg-agent.socket"),
    ),
];

/// The sockets setup enables (the service starts from them).
const SOCKETS: [&str; 3] = [
    "meshd-control.socket",
    "meshd-ssh-agent.socket",
    "meshd-gpg-agent.socket",
];

/// One change setup made, with what undoes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Change {
    /// A file written whole; `before` is what it held (None: absent).
    File {
        path: PathBuf,
        before: Option<String>,
        after: String,
    },
    /// Units enabled in the user manager.
    Enabled { units: Vec<String> },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    changes: Vec<Change>,
}

fn manifest_path(paths: &Paths) -> PathBuf {
    paths.data_dir.join("setup.json")
}

fn load(paths: &Paths) -> anyhow::Result<Manifest> {
    match std::fs::read(manifest_path(paths)) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("setup.json is damaged"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(e).context("cannot read setup.json"),
    }
}

fn save(paths: &Paths, manifest: &Manifest) -> anyhow::Result<()> {
    let path = manifest_path(paths);
    if manifest.changes.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).context("cannot remove setup.json")
            }
            _ => Ok(()),
        };
    }
    write_private(&path, &serde_json::to_string_pretty(manifest)?)
}

/// Write a file by rename, keeping its mode if it exists (else 0600; its
/// directory 0700 if made).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let mode = std::fs::metadata(path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
    let dir = path.parent().context("a file without a directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.mesh-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Where our other programs are: beside this `mesh`.
fn beside_us(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the mesh program")?;
    let path = exe.parent().context("mesh has no directory")?.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: install it beside mesh",
        path.display()
    );
    Ok(path)
}

fn config_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".config"))
}

fn gnupg_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GNUPGHOME") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".gnupg"))
}

/// The text a file should hold, given what it holds now (`None`: leave
/// it as it is).
type Make = Box<dyn Fn(&str) -> Option<String>>;

/// A file setup wants.
struct Want {
    path: PathBuf,
    make: Make,
    what: &'static str,
}

fn want(
    path: PathBuf,
    what: &'static str,
    make: impl Fn(&str) -> Option<String> + 'static,
) -> Want {
    Want {
        path,
        make: Box::new(make),
        what,
    }
}

fn wanted(paths: &Paths) -> anyhow::Result<Vec<Want>> {
    let meshd = beside_us("meshd")?;
    let shim = beside_us("mesh-gpg-agent")?;
    let config = config_home()?;
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let mut out = Vec::new();
    for (name, text) in UNITS {
        let text = text.replace("%h/.local/bin/meshd", &meshd.display().to_string());
        out.push(want(
            config.join("systemd/user").join(name),
            "systemd user unit",
            move |now| (now != text).then(|| text.clone()),
        ));
    }
    let env_d = "# meshd's SSH agent for the session (written by mesh setup)\n\
                 SSH_AUTH_SOCK=${XDG_RUNTIME_DIR}/mesh/ssh-agent.sock\n"
        .to_owned();
    out.push(want(
        config.join("environment.d/50-mesh.conf"),
        "SSH_AUTH_SOCK for the desktop session",
        move |now| (now != env_d).then(|| env_d.clone()),
    ));
    let profile = setup::block(&[
        "# meshd's SSH agent for login shells (mesh setup --undo removes this)",
        &format!(
            "export SSH_AUTH_SOCK=\"{}\"",
            paths.ssh_agent_socket().display()
        ),
    ]);
    out.push(want(
        home.join(".profile"),
        "SSH_AUTH_SOCK for login shells",
        move |now| setup::add_block(now, &profile),
    ));
    let gpg = setup::gpg_agent_program(&shim.display().to_string());
    out.push(want(
        gnupg_home()?.join("gpg.conf"),
        "gpg starts meshd, never the real gpg-agent",
        move |now| setup::add_block(now, &gpg),
    ));
    Ok(out)
}

/// Whether a systemd user manager answers.
fn user_manager() -> bool {
    Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .status()
        .context("cannot run systemctl")?;
    anyhow::ensure!(
        status.success(),
        "systemctl --user {} failed",
        args.join(" ")
    );
    Ok(())
}

/// What `mesh setup git` signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitFormat {
    /// An SSH key of the account (gpg.format=ssh).
    Ssh,
    /// An OpenPGP key of the account (gpg.format=openpgp).
    Openpgp,
}

/// Record a whole-file change, keeping the oldest "before".
fn record(manifest: &mut Manifest, path: PathBuf, before: Option<String>, after: String) {
    match manifest
        .changes
        .iter_mut()
        .find(|c| matches!(c, Change::File { path: p, .. } if *p == path))
    {
        Some(Change::File { after: a, .. }) => *a = after,
        _ => manifest.changes.push(Change::File {
            path,
            before,
            after,
        }),
    }
}

/// The global git config file git writes to.
fn git_config_path() -> anyhow::Result<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let classic = home.join(".gitconfig");
    let xdg = config_home()?.join("git/config");
    Ok(if !classic.exists() && xdg.exists() {
        xdg
    } else {
        classic
    })
}

/// The item named `key` (else the first) of a list meshd answered.
fn choose<T>(
    list: Vec<T>,
    name: impl Fn(&T) -> &str,
    key: Option<&str>,
    make_one: &str,
) -> anyhow::Result<T> {
    list.into_iter()
        .find(|k| key.is_none_or(|wanted| name(k) == wanted))
        .with_context(|| format!("no such key in the account: make one with {make_one}"))
}

/// `mesh setup git`: sign commits with a key of the account.
pub(crate) fn git(paths: &Paths, format: GitFormat, key: Option<&str>) -> anyhow::Result<ExitCode> {
    use super::account::{answer, ask};
    use mesh_ipc::control::{Request, Response};
    let mut manifest = load(paths)?;
    let mut settings: Vec<(&str, String)> = vec![("commit.gpgsign", "true".into())];
    match format {
        GitFormat::Ssh => {
            let identities = answer!(
                ask(paths, &Request::SshList)?,
                Response::SshIdentities { identities } => identities
            );
            let chosen = choose(identities, |i| &i.name, key, "mesh ssh create")?;
            let public = chosen.public;
            let signers = answer!(
                ask(paths, &Request::SshAllowedSigners)?,
                Response::Lines { lines } => lines
            );
            let text: String = signers.iter().map(|l| format!("{l}\n")).collect();
            let file = config_home()?.join("mesh/allowed_signers");
            let before = read_optional(&file)?;
            if before.as_deref() != Some(text.as_str()) {
                write_private(&file, &text)?;
                println!("wrote {} (git's allowed signers)", file.display());
                record(&mut manifest, file.clone(), before, text);
            }
            settings.push(("gpg.format", "ssh".into()));
            settings.push(("user.signingkey", format!("key::{public}")));
            settings.push(("gpg.ssh.allowedSignersFile", file.display().to_string()));
        }
        GitFormat::Openpgp => {
            let keys = answer!(
                ask(paths, &Request::OpenpgpList)?,
                Response::OpenpgpKeys { keys } => keys
            );
            let chosen = choose(keys, |k| &k.name, key, "mesh openpgp create")?;
            settings.push(("gpg.format", "openpgp".into()));
            settings.push(("user.signingkey", chosen.fingerprint));
        }
    }
    let config = git_config_path()?;
    let before = read_optional(&config)?;
    for (name, value) in &settings {
        let current = Command::new("git")
            .args(["config", "--global", "--get", name])
            .output()
            .context("cannot run git")?;
        if String::from_utf8_lossy(&current.stdout).trim_end() == value {
            continue;
        }
        let status = Command::new("git")
            .args(["config", "--global", name, value])
            .status()
            .context("cannot run git")?;
        anyhow::ensure!(status.success(), "git config --global {name} failed");
        println!("set git {name} = {value}");
    }
    let after = read_optional(&config)?.unwrap_or_default();
    if before.as_deref() != Some(after.as_str()) {
        record(&mut manifest, config, before, after);
    } else {
        println!("git already signs with this key: nothing changed");
    }
    save(paths, &manifest)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run(paths: &Paths, undo: bool) -> anyhow::Result<ExitCode> {
    if undo {
        return self::undo(paths);
    }
    let mut manifest = load(paths)?;
    let mut changed = 0;
    for Want { path, make, what } in wanted(paths)? {
        let now = read_optional(&path)?;
        let Some(after) = make(now.as_deref().unwrap_or_default()) else {
            continue;
        };
        write_private(&path, &after)?;
        println!("wrote {} ({what})", path.display());
        changed += 1;
        // Keep the oldest "before": what undo must put back.
        match manifest
            .changes
            .iter_mut()
            .find(|c| matches!(c, Change::File { path: p, .. } if *p == path))
        {
            Some(Change::File { after: a, .. }) => *a = after,
            _ => manifest.changes.push(Change::File {
                path,
                before: now,
                after,
            }),
        }
    }
    let enabled = manifest
        .changes
        .iter()
        .any(|c| matches!(c, Change::Enabled { .. }));
    if user_manager() {
        if !enabled {
            systemctl(&["daemon-reload"])?;
            let mut args = vec!["enable", "--now"];
            args.extend(SOCKETS);
            systemctl(&args)?;
            println!("enabled {} (meshd starts on first use)", SOCKETS.join(", "));
            manifest.changes.push(Change::Enabled {
                units: SOCKETS.iter().map(|s| (*s).to_owned()).collect(),
            });
            changed += 1;
        }
    } else if changed > 0 {
        println!("no systemd user manager here: start meshd with `mesh daemon start`");
    }
    save(paths, &manifest)?;
    if changed == 0 {
        println!("already set up: nothing changed");
    } else {
        println!("for this shell: {}", super::ssh::env_line(paths));
    }
    Ok(ExitCode::SUCCESS)
}

fn undo(paths: &Paths) -> anyhow::Result<ExitCode> {
    let manifest = load(paths)?;
    if manifest.changes.is_empty() {
        println!("nothing to undo");
        return Ok(ExitCode::SUCCESS);
    }
    for change in manifest.changes.iter().rev() {
        match change {
            Change::Enabled { units } => {
                let mut args = vec!["disable", "--now"];
                args.extend(units.iter().map(String::as_str));
                if user_manager() {
                    systemctl(&args)?;
                    println!("disabled {}", units.join(", "));
                }
            }
            Change::File {
                path,
                before,
                after,
            } => {
                let now = read_optional(path)?;
                let restored = if now.as_deref() == Some(after.as_str()) {
                    before.clone()
                } else {
                    // Edited since: take out only our block.
                    now.as_deref()
                        .map(|n| setup::remove_block(n).unwrap_or_else(|| n.to_owned()))
                };
                match restored {
                    Some(text) => {
                        write_private(path, &text)?;
                        println!("restored {}", path.display());
                    }
                    None => {
                        if now.is_some() {
                            std::fs::remove_file(path)
                                .with_context(|| format!("cannot remove {}", path.display()))?;
                        }
                        println!("removed {}", path.display());
                    }
                }
            }
        }
    }
    save(paths, &Manifest::default())?;
    Ok(ExitCode::SUCCESS)
}
