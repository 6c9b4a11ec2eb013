//! `git-credential-mesh`: a git credential helper backed by the Mesh
//! Credential catalog, so HTTPS passwords and tokens follow the user to
//! every device with the `web` right.
//!
//! git runs it as `git-credential-mesh get|store|erase` with
//! `key=value` lines on standard input (gitcredentials(7)). A credential
//! is the catalog entry `git:<protocol>://<host>[/<path>]`, its value
//! `username` and `password` as JSON. It asks meshd over the control
//! socket (starting it if need be) for that one entry (`CatalogGet`),
//! never for the whole catalog, and never holds a key itself.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use mesh_ipc::control::{Catalog, ErrorKind, Request, Response, SecretText};
use mesh_ipc::paths::Paths;
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
    let paths = Paths::resolve(|n| std::env::var_os(n)).map_err(|e| e.to_string())?;
    match action {
        "get" => {
            let request = Request::CatalogGet {
                store: Catalog::Credential,
                name,
            };
            let value = match ask(&paths, &request) {
                Ok(Response::CatalogEntry(entry)) => entry.value,
                Ok(_) => return Err("meshd gave an unexpected answer".into()),
                // Nothing known: git asks elsewhere.
                Err((Some(ErrorKind::NotFound), _)) => return Ok(()),
                Err((_, message)) => return Err(message),
            };
            let stored: BTreeMap<String, String> =
                serde_json::from_str(&value).map_err(|_| "damaged credential entry".to_owned())?;
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
            let value = SecretText::new(
                serde_json::json!({"username": username, "password": password}).to_string(),
            );
            ask(
                &paths,
                &Request::CatalogPut {
                    store: Catalog::Credential,
                    name,
                    value,
                },
            )
            .map(drop)
            .map_err(|(_, message)| message)
        }
        "erase" => match ask(
            &paths,
            &Request::CatalogDelete {
                store: Catalog::Credential,
                name,
            },
        ) {
            Ok(_) | Err((Some(ErrorKind::NotFound), _)) => Ok(()),
            Err((_, message)) => Err(message),
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

/// Ask meshd, starting it if it is not running; the answer, or the kind
/// (if meshd refused) and one line of what went wrong.
fn ask(paths: &Paths, request: &Request) -> Result<Response, (Option<ErrorKind>, String)> {
    let response = match daemon::request(paths, request) {
        Err(DaemonError::NotRunning(_)) => {
            daemon::start(paths, &daemon::meshd_program()).map_err(|e| (None, e.to_string()))?;
            daemon::request(paths, request)
        }
        other => other,
    };
    match response {
        Ok(Response::Error { kind, message }) | Err(DaemonError::Refused { kind, message }) => {
            Err((Some(kind), message))
        }
        Ok(response) => Ok(response),
        Err(e) => Err((None, e.to_string())),
    }
}
