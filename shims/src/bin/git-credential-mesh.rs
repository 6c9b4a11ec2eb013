//! `git-credential-mesh`: a git credential helper backed by the Mesh
//! Credential catalog, so HTTPS passwords and tokens follow the user to
//! every device with the `web` right.
//!
//! git runs it as `git-credential-mesh get|store|erase` with
//! `key=value` lines on standard input (gitcredentials(7)). A credential
//! is the catalog entry `git:<protocol>://<host>[/<path>]`, its value
//! `username` and `password` as JSON. It asks meshd over the control
//! socket (starting it if need be) and never holds a key itself.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use mesh_protocol::control::{Request, Response};
use mesh_protocol::paths::Paths;
use mesh_shims::daemon::{self, DaemonError};

/// The most input git sends for one credential.
const MAX_INPUT: usize = 64 * 1024;

fn main() -> ExitCode {
    let Some(action) = std::env::args().nth(1) else {
        eprintln!("git-credential-mesh: use as a git credential helper (get, store or erase)");
        return ExitCode::FAILURE;
    };
    match run(&action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("git-credential-mesh: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(action: &str) -> Result<(), String> {
    let fields = read_fields()?;
    let name = entry_name(&fields)?;
    let uid = rustix::process::getuid().as_raw();
    let paths = Paths::resolve(|n| std::env::var_os(n), uid).map_err(|e| e.to_string())?;
    match action {
        "get" => {
            let entries = ask(
                &paths,
                &Request::CatalogList {
                    store: "credential".into(),
                },
            )?;
            let Some(value) = entries.get(&name).and_then(|v| v.as_str()) else {
                return Ok(()); // nothing known: git asks elsewhere
            };
            let stored: BTreeMap<String, String> =
                serde_json::from_str(value).map_err(|_| format!("damaged entry {name}"))?;
            if let Some(user) = fields.get("username")
                && stored.get("username") != Some(user)
            {
                return Ok(());
            }
            let mut out = std::io::stdout().lock();
            for key in ["username", "password"] {
                if let Some(value) = stored.get(key) {
                    writeln!(out, "{key}={value}").map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }
        "store" => {
            let (Some(username), Some(password)) = (fields.get("username"), fields.get("password"))
            else {
                return Ok(());
            };
            let value = serde_json::json!({"username": username, "password": password}).to_string();
            ask(
                &paths,
                &Request::CatalogPut {
                    store: "credential".into(),
                    name,
                    value,
                },
            )
            .map(drop)
        }
        "erase" => match ask(
            &paths,
            &Request::CatalogDelete {
                store: "credential".into(),
                name,
            },
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.starts_with("no entry") => Ok(()),
            Err(e) => Err(e),
        },
        // Unknown actions are ignored, as gitcredentials(7) asks.
        _ => Ok(()),
    }
}

/// The `key=value` lines git sends, up to an empty line or the end.
fn read_fields() -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    let mut total = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        total += line.len() + 1;
        if total > MAX_INPUT {
            return Err("credential input too long".into());
        }
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok(fields)
}

/// `git:<protocol>://<host>[/<path>]`.
fn entry_name(fields: &BTreeMap<String, String>) -> Result<String, String> {
    let (Some(protocol), Some(host)) = (fields.get("protocol"), fields.get("host")) else {
        return Err("git gave no protocol and host".into());
    };
    Ok(match fields.get("path") {
        Some(path) if !path.is_empty() => format!("git:{protocol}://{host}/{path}"),
        _ => format!("git:{protocol}://{host}"),
    })
}

/// Ask meshd, starting it if it is not running; the result, or its one
/// line of refusal.
fn ask(paths: &Paths, request: &Request) -> Result<serde_json::Value, String> {
    let response = match daemon::request(paths, request) {
        Err(DaemonError::NotRunning(_)) => {
            daemon::start(paths, &daemon::meshd_program()).map_err(|e| e.to_string())?;
            daemon::request(paths, request)
        }
        other => other,
    };
    match response {
        Ok(Response::Value { value }) => Ok(value),
        Ok(Response::Error { message }) => Err(message),
        Ok(_) => Err("meshd gave an unexpected answer".into()),
        Err(DaemonError::Refused(message)) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}
