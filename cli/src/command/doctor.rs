//! `mesh doctor`: check the chain a user depends on, and say in one line
//! each what is wrong and the command that fixes it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use mesh_ipc::control::{DaemonStatus, Request, Response, Standing};
use mesh_ipc::paths::Paths;
use mesh_ipc::trust::{self, UnsafeDir};
use mesh_shims::daemon;
use serde_json::{Value, json};

/// One check's finding.
struct Finding {
    check: &'static str,
    ok: bool,
    message: String,
    fix: Option<String>,
}

fn ok(check: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: true,
        message: message.into(),
        fix: None,
    }
}

fn problem(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check,
        ok: false,
        message: message.into(),
        fix: Some(fix.into()),
    }
}

pub(crate) fn run(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let mut findings = Vec::new();
    let status = daemon::status(paths).ok();
    findings.push(match &status {
        Some(s) => ok(
            "meshd",
            format!("meshd {} is running (pid {})", s.version, s.pid),
        ),
        None => problem("meshd", "meshd is not running", "mesh daemon start"),
    });
    findings.push(runtime_dir(&paths.runtime_dir));
    findings.push(ssh_auth_sock(paths));
    findings.push(gpg_socket(status.as_ref()));
    if status.is_some() {
        findings.extend(account(paths));
    }

    let healthy = findings.iter().all(|f| f.ok);
    if json {
        let rows: Vec<Value> = findings
            .iter()
            .map(|f| json!({"check": f.check, "ok": f.ok, "message": f.message, "fix": f.fix}))
            .collect();
        println!("{}", json!({"ok": healthy, "checks": rows}));
    } else {
        for f in &findings {
            match &f.fix {
                None => println!("ok       {}", f.message),
                Some(fix) => println!("PROBLEM  {}: fix with `{fix}`", f.message),
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The runtime directory, judged as every client judges it before it
/// connects ([`mesh_ipc::trust::check_dir`]).
fn runtime_dir(dir: &Path) -> Finding {
    let uid = rustix::process::geteuid().as_raw();
    match trust::check_dir(dir, uid) {
        Ok(()) => ok(
            "runtime-dir",
            format!("{} is private (0700)", dir.display()),
        ),
        Err(UnsafeDir::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            problem(
                "runtime-dir",
                format!("{} does not exist", dir.display()),
                "mesh daemon start",
            )
        }
        Err(unsafe_dir @ UnsafeDir::Open { .. }) => problem(
            "runtime-dir",
            unsafe_dir.to_string(),
            format!("chmod 700 {}", dir.display()),
        ),
        Err(unsafe_dir) => problem(
            "runtime-dir",
            unsafe_dir.to_string(),
            format!("rm -rf {} && mesh daemon start", dir.display()),
        ),
    }
}

fn ssh_auth_sock(paths: &Paths) -> Finding {
    let ours = paths.ssh_agent_socket();
    match std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from) {
        Some(sock) if sock == ours => ok("ssh-auth-sock", "SSH_AUTH_SOCK points at meshd"),
        Some(sock) => problem(
            "ssh-auth-sock",
            format!("SSH_AUTH_SOCK points at {}, not meshd", sock.display()),
            "eval \"$(mesh ssh env)\"",
        ),
        None => problem(
            "ssh-auth-sock",
            "SSH_AUTH_SOCK is not set",
            "eval \"$(mesh ssh env)\"",
        ),
    }
}

/// Who answers on gpg's agent socket: meshd, another agent, or nobody.
fn gpg_socket(status: Option<&DaemonStatus>) -> Finding {
    let Some(socket) = Command::new("gpgconf")
        .args(["--list-dirs", "agent-socket"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| PathBuf::from(text.trim()))
        .filter(|p| p.is_absolute())
    else {
        return ok("gpg-socket", "gpg is not installed: nothing to check");
    };
    let restart = "mesh daemon stop; mesh daemon start";
    match agent_pid(&socket) {
        None => problem(
            "gpg-socket",
            format!("nothing answers on gpg's socket {}", socket.display()),
            restart,
        ),
        Some(pid) if status.is_some_and(|s| s.pid == pid) => {
            ok("gpg-socket", "gpg's socket is served by meshd")
        }
        Some(pid) => problem(
            "gpg-socket",
            format!(
                "another agent (pid {pid}) holds gpg's socket {}",
                socket.display()
            ),
            format!("gpgconf --kill gpg-agent; {restart}"),
        ),
    }
}

/// The pid of the agent on an Assuan socket (GETINFO pid).
fn agent_pid(socket: &Path) -> Option<u32> {
    let stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    (&stream).write_all(b"GETINFO pid\nBYE\n").ok()?;
    let mut pid = None;
    for line in reader.lines() {
        let line = line.ok()?;
        if let Some(value) = line.strip_prefix("D ") {
            pid = value.trim().parse().ok();
        }
        if line.starts_with("OK") || line.starts_with("ERR") {
            break;
        }
    }
    pid
}

/// The account: there is one, the service answers, the catalogs agree.
fn account(paths: &Paths) -> Vec<Finding> {
    let status = match daemon::request(paths, &Request::AccountStatus) {
        Ok(Response::Account(status)) => Some(status),
        _ => None,
    };
    let Some(status) = status else {
        return vec![problem(
            "account",
            "meshd does not answer",
            "mesh daemon stop; mesh daemon start",
        )];
    };
    match status.status {
        Standing::Connected => {}
        Standing::None => {
            return vec![problem(
                "account",
                "this device has no Mesh account",
                "mesh account create ADDRESS (or mesh device connect ADDRESS)",
            )];
        }
        Standing::Pending => {
            return vec![problem(
                "account",
                "this device waits for an administrator's approval",
                "mesh device accept CODE (on an administrator device)",
            )];
        }
        other => {
            return vec![problem(
                "account",
                format!("this device is {}", other.name()),
                "mesh device connect ADDRESS",
            )];
        }
    }
    let service = status.service.unwrap_or_else(|| "the service".into());
    let sync = match daemon::request(paths, &Request::AccountSync) {
        Ok(Response::Synced(report)) => Some(report),
        _ => None,
    };
    let Some(sync) = sync else {
        return vec![problem(
            "account",
            "meshd does not answer",
            "mesh daemon stop; mesh daemon start",
        )];
    };
    let errors = sync.errors;
    let mut findings = Vec::new();
    match errors.get("service") {
        Some(reason) => findings.push(problem(
            "service",
            format!("the Mesh service {service} cannot be reached ({reason})"),
            "check the network, then mesh account sync",
        )),
        None => findings.push(ok("service", format!("the Mesh service {service} answers"))),
    }
    let stores: Vec<&String> = errors.keys().filter(|k| *k != "service").collect();
    if stores.is_empty() {
        if errors.is_empty() {
            findings.push(ok("sync", "the account is in sync"));
        }
    } else {
        findings.push(problem(
            "sync",
            format!("the account is out of sync in {stores:?} (mesh account status says why)"),
            "mesh account sync",
        ));
    }
    findings
}
