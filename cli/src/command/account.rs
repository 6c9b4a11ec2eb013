//! `mesh account`, `mesh device` and `mesh catalog`: the account this
//! device belongs to, its devices, and its catalogs. Each asks `meshd`
//! (starting it if need be), which holds the keys and talks to the service.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use mesh_ipc::control::{Catalog, Request, Response, SecretText, Standing};
use mesh_ipc::paths::Paths;
use mesh_protocol::account::Role;
use mesh_protocol::udf::name::ConnectUri;
use mesh_shims::daemon::{self, DaemonError};

/// The service used when none is given.
const DEFAULT_SERVICE: &str = "http://127.0.0.1:8088";

#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Create an account, with this device as its first administrator.
    Create {
        /// The account's address, e.g. alice@example.com.
        address: String,
        /// The Mesh service's URL.
        #[arg(long, env = "MESH_SERVICE", default_value = DEFAULT_SERVICE)]
        service: String,
        /// This device's name in the account.
        #[arg(long, default_value = "first")]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The account, this device, and how the last sync went.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sync with the service now.
    Sync {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print recovery shares of the account seed: any quorum rebuilds it.
    /// meshd asks you to confirm first (through SSH_ASKPASS).
    Escrow {
        /// How many shares (2 to 15).
        #[arg(long)]
        shares: usize,
        /// How many recover the account (at least 2: with 1, each share
        /// would be the seed itself).
        #[arg(long)]
        quorum: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the account seed from recovery shares (and, with
    /// --address, join its service as a new administrator device). The
    /// shares are asked for on the terminal, or read from standard input,
    /// one a line.
    Recover {
        /// Refused: shares on the command line can be read by other
        /// programs and stay in the shell's history.
        #[arg(hide = true)]
        shares: Vec<String>,
        /// The account's address: rejoin its service with this device.
        #[arg(long)]
        address: Option<String>,
        /// The Mesh service's URL (with --address).
        #[arg(long, env = "MESH_SERVICE", default_value = DEFAULT_SERVICE)]
        service: String,
        /// This device's name (with --address).
        #[arg(long, default_value = "recovered")]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a PIN that lets one new device join without approval, once,
    /// within its lifetime.
    Pin {
        /// Rights the joining device gets (device, web; an administrator is
        /// accepted by its code, never by a PIN).
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
        /// How long the PIN is accepted, in seconds.
        #[arg(long, default_value_t = 600)]
        expires: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Ask to join an account: by address, or with an mcu:// URI from
    /// `mesh account pin` (it holds a PIN, so it is asked for on the
    /// terminal, or read from standard input, when no address is given).
    Connect {
        /// The account's address (none: read an mcu:// URI).
        account: Option<String>,
        /// Refused: a PIN on the command line can be read by other programs
        /// and stays in the shell's history.
        #[arg(long, hide = true)]
        pin: Option<String>,
        /// The Mesh service's URL.
        #[arg(long, env = "MESH_SERVICE", default_value = DEFAULT_SERVICE)]
        service: String,
        /// This device's name.
        #[arg(long, default_value = "device")]
        name: String,
        /// Return at once instead of waiting for the answer.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for an administrator, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Requests to join that wait for an administrator.
    Pending {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve the request that shows this code.
    Accept {
        /// The witness code both devices show.
        code: String,
        /// Rights to grant (admin, device, web).
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
        /// The device's name in the account.
        #[arg(long)]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refuse the request that shows this code.
    Reject {
        /// The witness code.
        code: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The account's devices.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: the service refuses it from then on.
    Revoke {
        /// The device's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
    /// Add or replace an entry. Its value is asked for on the terminal
    /// (without echo), or read from standard input.
    Put {
        /// application or credential.
        catalog: String,
        /// The entry's name.
        name: String,
        /// Refused: a value on the command line can be read by other
        /// programs and stays in the shell's history.
        #[arg(hide = true)]
        value: Option<String>,
    },
    /// Print one entry's value.
    Get {
        /// application or credential.
        catalog: String,
        /// The entry's name.
        name: String,
    },
    /// Add many entries from a JSON object file ({"name": "value", ...}).
    Import {
        /// application or credential.
        catalog: String,
        /// The file (- for standard input).
        file: String,
    },
    /// List a catalog's entries (for the credential catalog, meshd asks
    /// you to confirm first, through SSH_ASKPASS).
    List {
        /// application or credential.
        catalog: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an entry.
    Delete {
        /// application or credential.
        catalog: String,
        /// The entry's name.
        name: String,
    },
}

/// Ask meshd, starting it if it is not running.
pub(crate) fn ask(paths: &Paths, request: &Request) -> anyhow::Result<Response> {
    let response = match daemon::request(paths, request) {
        Err(DaemonError::NotRunning(_)) => {
            daemon::start(paths, &daemon::meshd_program())?;
            daemon::request(paths, request)
        }
        other => other,
    };
    match response {
        Ok(response) => Ok(response),
        Err(DaemonError::Refused { message, .. }) => anyhow::bail!("{message}"),
        Err(e) => Err(e.into()),
    }
}

/// Take the one answer a request may get, or fail.
macro_rules! answer {
    ($response:expr, $pattern:pat => $value:expr) => {
        match $response {
            $pattern => $value,
            _ => anyhow::bail!("meshd gave an unexpected answer"),
        }
    };
}
pub(crate) use answer;

/// Print `value` as JSON, or as `human` says.
pub(crate) fn show<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string(value).unwrap_or_else(|_| "null".into())
        );
    } else {
        print!("{}", human(value));
    }
}

/// Like [`show`], for a list: one `human` line (or block) per element.
pub(crate) fn show_each<T: serde::Serialize>(json: bool, list: &[T], human: impl Fn(&T) -> String) {
    show(json, &list, |l| l.iter().map(&human).collect());
}

/// Roles from the command line (`admin,web` or several values).
fn roles(rights: &[String]) -> anyhow::Result<Vec<Role>> {
    rights
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| {
            Role::parse(r.trim())
                .ok_or_else(|| anyhow::anyhow!("unknown right {r:?}: use admin, device or web"))
        })
        .collect()
}

/// A catalog's name from the command line.
fn catalog_name(name: &str) -> anyhow::Result<Catalog> {
    Catalog::parse(name)
        .ok_or_else(|| anyhow::anyhow!("unknown catalog {name:?}: use application or credential"))
}

fn or_dash(value: Option<&String>) -> &str {
    value.map_or("-", String::as_str)
}

pub(crate) fn account(paths: &Paths, command: AccountCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountCommand::Create {
            address,
            service,
            name,
            json,
        } => {
            let request = Request::AccountCreate {
                address,
                service,
                name,
            };
            let created = answer!(ask(paths, &request)?, Response::AccountCreated(c) => c);
            show(json, &created, |v| {
                format!(
                    "created {} (profile {})\nthis device: {}\nsecrets kept in {}\n",
                    v.address, v.profile, v.device, v.secrets
                )
            });
        }
        AccountCommand::Status { json } => {
            let status = answer!(ask(paths, &Request::AccountStatus)?, Response::Account(s) => s);
            show(json, &status, |v| {
                let mut out = format!("status:   {}\n", v.status.name());
                if v.status != Standing::None {
                    out += &format!(
                        "account:  {} (profile {})\nservice:  {}\ndevice:   {} ({})\n",
                        or_dash(v.address.as_ref()),
                        or_dash(v.profile.as_ref()),
                        or_dash(v.service.as_ref()),
                        or_dash(v.device_name.as_ref()),
                        or_dash(v.device.as_ref())
                    );
                }
                if !v.sync_errors.is_empty() {
                    out += "SYNC PROBLEMS (the service's data was not believed):\n";
                    for (store, error) in &v.sync_errors {
                        out += &format!("  {store}: {error}\n");
                    }
                }
                if !v.denied.is_empty() {
                    out += "ENTRIES NOT APPLIED (written by a device the account's rules do not allow):\n";
                    for line in &v.denied {
                        out += &format!("  {line}\n");
                    }
                }
                out + &format!("secrets:  {}\n", v.secrets)
            });
            if status.status == Standing::Revoked || !status.sync_errors.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        AccountCommand::Sync { json } => {
            let report = answer!(ask(paths, &Request::AccountSync)?, Response::Synced(r) => r);
            show(json, &report, |v| {
                if v.ok {
                    let updated: Vec<String> =
                        v.updated.iter().map(|(s, n)| format!("{s} +{n}")).collect();
                    format!("in sync; updated: {}\n", updated.join(", "))
                } else {
                    let errors: Vec<String> =
                        v.errors.iter().map(|(s, e)| format!("{s}: {e}")).collect();
                    format!("sync FAILED: {}\n", errors.join("; "))
                }
            });
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        AccountCommand::Escrow {
            shares,
            quorum,
            json,
        } => {
            let request = Request::AccountEscrow { shares, quorum };
            let escrow = answer!(ask(paths, &request)?, Response::Escrow(e) => e);
            show(json, &escrow, |v| {
                format!(
                    "{} recovery shares; any {} rebuild the account. Keep them apart and safe:\n{}\n",
                    v.shares.len(),
                    v.quorum,
                    v.shares.join("\n")
                )
            });
        }
        AccountCommand::Recover {
            shares,
            address,
            service,
            name,
            json,
        } => {
            super::input::refuse_on_command_line(
                !shares.is_empty(),
                "shares are",
                "run `mesh account recover` and type them, or give them on standard input, one a line",
            )?;
            let shares = super::input::read_secret_lines("share")?
                .into_iter()
                .map(SecretText::new)
                .collect();
            let rejoin = address.map(|address| (address, service, name));
            let request = Request::AccountRecover { shares, rejoin };
            let recovered = answer!(ask(paths, &request)?, Response::Recovered(r) => r);
            show(json, &recovered, |v| {
                format!(
                    "the shares hold the account seed of profile {} (not kept: give --address to rejoin)\n",
                    v.profile
                )
            });
        }
        AccountCommand::Pin {
            rights,
            expires,
            json,
        } => {
            let request = Request::AccountPin {
                roles: roles(&rights)?,
                expires_in_s: Some(expires),
            };
            let pin = answer!(ask(paths, &request)?, Response::Pin(p) => p);
            show(json, &pin, |v| {
                let qr = qrcode::QrCode::new(v.uri.as_bytes())
                    .map(|code| {
                        code.render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build()
                    })
                    .unwrap_or_default();
                format!(
                    "{qr}\n{}\nOn the new device: run `mesh device connect` and paste this URI (it holds the PIN: keep it off command lines)\n\
                     One device may use it, within {expires} s.\n",
                    v.uri
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn device(paths: &Paths, command: DeviceCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeviceCommand::Connect {
            account,
            pin,
            service,
            name,
            no_wait,
            timeout,
            json,
        } => {
            let instead = "run `mesh device connect` with no address and paste the mcu:// URI, or give it on standard input";
            super::input::refuse_on_command_line(pin.is_some(), "PINs are", instead)?;
            super::input::refuse_on_command_line(
                account.as_ref().is_some_and(|a| a.starts_with("mcu://")),
                "connect URIs (they hold a PIN) are",
                instead,
            )?;
            let account = match account {
                Some(address) => address,
                None => super::input::read_secret("account address or mcu:// URI: ")?.to_string(),
            };
            let (address, pin, profile, service) = if account.starts_with("mcu://") {
                let uri = ConnectUri::parse(&account)?;
                (
                    uri.account.clone(),
                    Some(uri.pin.to_string_bits(uri.pin.bits())),
                    uri.profile,
                    uri.service.unwrap_or(service),
                )
            } else {
                (account, None, None, service)
            };
            let request = Request::DeviceConnect {
                address,
                service,
                name,
                pin,
                profile,
            };
            let connection = answer!(ask(paths, &request)?, Response::Connection(c) => c);
            if !json {
                println!("witness code: {}", or_dash(connection.witness.as_ref()));
                println!(
                    "check that the administrator's `mesh device pending` shows the same code"
                );
            }
            if no_wait {
                show(json, &connection, |_| String::new());
                return Ok(ExitCode::SUCCESS);
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let mut dots = 0;
            loop {
                let state = answer!(
                    ask(paths, &Request::DeviceConnectStatus)?,
                    Response::Connection(c) => c
                );
                match state.status {
                    Standing::Connected => {
                        if !json && dots > 0 {
                            eprintln!();
                        }
                        show(json, &state, |_| {
                            "accepted: this device is now part of the account\n".into()
                        });
                        return Ok(ExitCode::SUCCESS);
                    }
                    Standing::Rejected => {
                        anyhow::bail!("the administrator rejected this device")
                    }
                    _ => {}
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no answer within {timeout} s; still pending (mesh account status)"
                );
                if !json {
                    eprint!(
                        "{}",
                        if dots == 0 {
                            "waiting for approval "
                        } else {
                            "."
                        }
                    );
                    dots += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        DeviceCommand::Pending { json } => {
            let requests = answer!(
                ask(paths, &Request::DevicePending)?,
                Response::Pending { requests } => requests
            );
            if requests.is_empty() && !json {
                println!("no pending requests");
            } else {
                show_each(json, &requests, |r| {
                    format!(
                        "{}  {}{}\n",
                        r.witness,
                        r.description,
                        if r.pin { " (PIN)" } else { "" }
                    )
                });
            }
        }
        DeviceCommand::Accept {
            code,
            rights,
            name,
            json,
        } => {
            let request = Request::DeviceAccept {
                code,
                roles: roles(&rights)?,
                name,
            };
            let answered = answer!(ask(paths, &request)?, Response::Answered(a) => a);
            show(json, &answered, |v| {
                format!("accepted {} ({})\n", or_dash(v.name.as_ref()), v.device)
            });
        }
        DeviceCommand::Reject { code, json } => {
            let answered = answer!(
                ask(paths, &Request::DeviceReject { code })?,
                Response::Answered(a) => a
            );
            show(json, &answered, |v| format!("rejected {}\n", v.device));
        }
        DeviceCommand::List { json } => {
            let devices = answer!(
                ask(paths, &Request::DeviceList)?,
                Response::Devices { devices } => devices
            );
            show_each(json, &devices, |d| {
                let roles: Vec<&str> = d.roles.iter().map(|r| r.name()).collect();
                format!(
                    "{} {:<12} {}  {}\n",
                    if d.this { "*" } else { " " },
                    d.name,
                    roles.join(","),
                    d.device
                )
            });
        }
        DeviceCommand::Revoke { name, json } => {
            let revoked = answer!(
                ask(paths, &Request::DeviceRevoke { name })?,
                Response::Revoked(r) => r
            );
            show(json, &revoked, |v| {
                format!(
                    "revoked {}: the service refuses it from now on\n",
                    v.revoked
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn catalog(paths: &Paths, command: CatalogCommand) -> anyhow::Result<ExitCode> {
    match command {
        CatalogCommand::Put {
            catalog,
            name,
            value,
        } => {
            super::input::refuse_on_command_line(
                value.is_some(),
                "values are",
                &format!(
                    "run `mesh catalog put {catalog} {name}` and type it, or give it on standard input"
                ),
            )?;
            let store = catalog_name(&catalog)?;
            let value = super::input::read_secret(&format!("value of {name}: "))?;
            let request = Request::CatalogPut {
                store,
                name,
                value: SecretText::new(value.to_string()),
            };
            answer!(ask(paths, &request)?, Response::CatalogChanged(_) => ());
        }
        CatalogCommand::Get { catalog, name } => {
            let request = Request::CatalogGet {
                store: catalog_name(&catalog)?,
                name,
            };
            let entry = answer!(ask(paths, &request)?, Response::CatalogEntry(e) => e);
            println!("{}", entry.value);
        }
        CatalogCommand::Import { catalog, file } => {
            let store = catalog_name(&catalog)?;
            let bytes = super::input::read_input(&file)?;
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("{file} is not a JSON object of names and values"))?;
            let entries: Vec<(String, String)> = map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            // Control frames are small: send a few hundred at a time.
            for chunk in entries.chunks(200) {
                let request = Request::CatalogImport {
                    store,
                    entries: chunk.to_vec(),
                };
                answer!(ask(paths, &request)?, Response::CatalogChanged(_) => ());
            }
            println!("imported {} entries", entries.len());
        }
        CatalogCommand::List { catalog, json } => {
            let request = Request::CatalogList {
                store: catalog_name(&catalog)?,
            };
            let entries = answer!(ask(paths, &request)?, Response::Catalog { entries } => entries);
            show(json, &entries, |v| {
                v.iter()
                    .map(|(name, value)| format!("{name}\t{value}\n"))
                    .collect()
            });
        }
        CatalogCommand::Delete { catalog, name } => {
            let request = Request::CatalogDelete {
                store: catalog_name(&catalog)?,
                name,
            };
            answer!(ask(paths, &request)?, Response::CatalogChanged(_) => ());
        }
    }
    Ok(ExitCode::SUCCESS)
}
