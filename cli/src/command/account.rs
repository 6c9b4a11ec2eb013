//! `mesh account`, `mesh device` and `mesh catalog`: the account this
//! device belongs to, its devices, and its catalogs. Each asks `meshd`
//! (starting it if need be), which holds the keys and talks to the service.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Subcommand;
use mesh_protocol::control::{Request, Response};
use mesh_protocol::paths::Paths;
use mesh_protocol::udf::name::ConnectUri;
use mesh_shims::daemon::{self, DaemonError};
use serde_json::Value;

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
    Escrow {
        /// How many shares (1 to 15).
        #[arg(long)]
        shares: usize,
        /// How many recover the account.
        #[arg(long)]
        quorum: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the account seed from recovery shares (and, with
    /// --address, join its service as a new administrator device).
    Recover {
        /// The shares.
        #[arg(required = true)]
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
    /// Make a PIN that lets a new device join without approval.
    Pin {
        /// Rights the joining device gets (admin, device, web).
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Ask to join an account (by address, or an mcu:// URI with its PIN).
    Connect {
        /// The account's address, or an mcu:// URI.
        account: String,
        /// A PIN from `mesh account pin`.
        #[arg(long)]
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
    /// Add or replace an entry.
    Put {
        /// application or credential.
        catalog: String,
        /// The entry's name.
        name: String,
        /// Its value.
        value: String,
    },
    /// Add many entries from a JSON object file ({"name": "value", ...}).
    Import {
        /// application or credential.
        catalog: String,
        /// The file (- for standard input).
        file: String,
    },
    /// List a catalog's entries.
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
pub(crate) fn ask(paths: &Paths, request: &Request) -> anyhow::Result<Value> {
    let response = match daemon::request(paths, request) {
        Err(DaemonError::NotRunning(_)) => {
            daemon::start(paths, &daemon::meshd_program())?;
            daemon::request(paths, request)
        }
        other => other,
    };
    match response {
        Ok(Response::Value { value }) => Ok(value),
        Ok(_) => anyhow::bail!("meshd gave an unexpected answer"),
        Err(DaemonError::Refused(message)) => anyhow::bail!("{message}"),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn show(json: bool, value: &Value, human: impl FnOnce(&Value) -> String) {
    if json {
        println!("{value}");
    } else {
        print!("{}", human(value));
    }
}

/// Like [`show`], for a list: one `human` line (or block) per element.
pub(crate) fn show_each(json: bool, value: &Value, human: impl Fn(&Value) -> String) {
    show(json, value, |v| {
        v.as_array().into_iter().flatten().map(human).collect()
    });
}

pub(crate) fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or("-").to_owned()
}

/// The strings in the array `value` (none if it is not an array).
pub(crate) fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

pub(crate) fn account(paths: &Paths, command: AccountCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountCommand::Create {
            address,
            service,
            name,
            json,
        } => {
            let value = ask(
                paths,
                &Request::AccountCreate {
                    address,
                    service,
                    name,
                },
            )?;
            show(json, &value, |v| {
                format!(
                    "created {} (profile {})\nthis device: {}\nsecrets kept in {}\n",
                    text(v, "address"),
                    text(v, "profile"),
                    text(v, "device"),
                    text(v, "secrets")
                )
            });
        }
        AccountCommand::Status { json } => {
            let value = ask(paths, &Request::AccountStatus)?;
            show(json, &value, |v| {
                let mut out = format!("status:   {}\n", text(v, "status"));
                if v["status"] != "none" {
                    out += &format!(
                        "account:  {} (profile {})\nservice:  {}\ndevice:   {} ({})\n",
                        text(v, "address"),
                        text(v, "profile"),
                        text(v, "service"),
                        text(v, "device_name"),
                        text(v, "device")
                    );
                }
                if let Some(errors) = v["sync_errors"].as_object().filter(|e| !e.is_empty()) {
                    out += "SYNC PROBLEMS (the service's data was not believed):\n";
                    for (store, error) in errors {
                        out += &format!("  {store}: {}\n", error.as_str().unwrap_or_default());
                    }
                }
                out + &format!("secrets:  {}\n", text(v, "secrets"))
            });
            if value["status"] == "revoked"
                || value["sync_errors"]
                    .as_object()
                    .is_some_and(|e| !e.is_empty())
            {
                return Ok(ExitCode::FAILURE);
            }
        }
        AccountCommand::Sync { json } => {
            let value = ask(paths, &Request::AccountSync)?;
            let ok = value["ok"] == true;
            show(json, &value, |v| {
                if ok {
                    format!("in sync; updated: {}\n", v["updated"])
                } else {
                    format!("sync FAILED: {}\n", v["errors"])
                }
            });
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        AccountCommand::Escrow {
            shares,
            quorum,
            json,
        } => {
            let value = ask(paths, &Request::AccountEscrow { shares, quorum })?;
            show(json, &value, |v| {
                let shares = strings(&v["shares"]);
                format!(
                    "{} recovery shares; any {} rebuild the account. Keep them apart and safe:\n{}\n",
                    shares.len(),
                    v["quorum"],
                    shares.join("\n")
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
            let rejoin = address.map(|address| (address, service, name));
            let value = ask(paths, &Request::AccountRecover { shares, rejoin })?;
            show(json, &value, |v| {
                format!(
                    "recovered the account seed of profile {}\n",
                    text(v, "profile")
                )
            });
        }
        AccountCommand::Pin { rights, json } => {
            let value = ask(paths, &Request::AccountPin { roles: rights })?;
            show(json, &value, |v| {
                let uri = text(v, "uri");
                let qr = qrcode::QrCode::new(uri.as_bytes())
                    .map(|code| {
                        code.render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build()
                    })
                    .unwrap_or_default();
                format!("{qr}\n{uri}\nOn the new device: mesh device connect {uri}\n")
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
            let (address, pin) = if account.starts_with("mcu://") {
                let uri = ConnectUri::parse(&account)?;
                (
                    uri.account.clone(),
                    Some(uri.pin.to_string_bits(uri.pin.bits())),
                )
            } else {
                (account, pin)
            };
            let value = ask(
                paths,
                &Request::DeviceConnect {
                    address,
                    service,
                    name,
                    pin,
                },
            )?;
            if !json {
                println!("witness code: {}", text(&value, "witness"));
                println!(
                    "check that the administrator's `mesh device pending` shows the same code"
                );
            }
            if no_wait {
                show(json, &value, |_| String::new());
                return Ok(ExitCode::SUCCESS);
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            let mut dots = 0;
            loop {
                let state = ask(paths, &Request::DeviceConnectStatus)?;
                match state["status"].as_str() {
                    Some("connected") => {
                        if !json && dots > 0 {
                            eprintln!();
                        }
                        show(json, &state, |_| {
                            "accepted: this device is now part of the account\n".into()
                        });
                        return Ok(ExitCode::SUCCESS);
                    }
                    Some("rejected") => anyhow::bail!("the administrator rejected this device"),
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
            let value = ask(paths, &Request::DevicePending)?;
            show(json, &value, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    return "no pending requests\n".into();
                }
                rows.iter()
                    .map(|r| {
                        format!(
                            "{}  {}{}\n",
                            text(r, "witness"),
                            text(r, "description"),
                            if r["pin"] == true { " (PIN)" } else { "" }
                        )
                    })
                    .collect()
            });
        }
        DeviceCommand::Accept {
            code,
            rights,
            name,
            json,
        } => {
            let value = ask(
                paths,
                &Request::DeviceAccept {
                    code,
                    roles: rights,
                    name,
                },
            )?;
            show(json, &value, |v| {
                format!("accepted {} ({})\n", text(v, "name"), text(v, "device"))
            });
        }
        DeviceCommand::Reject { code, json } => {
            let value = ask(paths, &Request::DeviceReject { code })?;
            show(json, &value, |v| {
                format!("rejected {}\n", text(v, "device"))
            });
        }
        DeviceCommand::List { json } => {
            let value = ask(paths, &Request::DeviceList)?;
            show(json, &value, |v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{} {:<12} {}  {}\n",
                            if d["this"] == true { "*" } else { " " },
                            text(d, "name"),
                            d["roles"],
                            text(d, "device")
                        )
                    })
                    .collect()
            });
        }
        DeviceCommand::Revoke { name, json } => {
            let value = ask(paths, &Request::DeviceRevoke { name })?;
            show(json, &value, |v| {
                format!(
                    "revoked {}: the service refuses it from now on\n",
                    text(v, "revoked")
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
            ask(
                paths,
                &Request::CatalogPut {
                    store: catalog,
                    name,
                    value,
                },
            )?;
        }
        CatalogCommand::Import { catalog, file } => {
            let bytes = super::input::read_input(&file)?;
            let map: serde_json::Map<String, Value> = serde_json::from_slice(&bytes)
                .map_err(|_| anyhow::anyhow!("{file} is not a JSON object of names and values"))?;
            let entries: Vec<(String, String)> = map
                .into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            // Control frames are small: send a few hundred at a time.
            for chunk in entries.chunks(200) {
                ask(
                    paths,
                    &Request::CatalogImport {
                        store: catalog.clone(),
                        entries: chunk.to_vec(),
                    },
                )?;
            }
            println!("imported {} entries", entries.len());
        }
        CatalogCommand::List { catalog, json } => {
            let value = ask(paths, &Request::CatalogList { store: catalog })?;
            show(json, &value, |v| {
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| {
                        format!("{name}\t{}\n", value.as_str().unwrap_or_default())
                    })
                    .collect()
            });
        }
        CatalogCommand::Delete { catalog, name } => {
            ask(
                paths,
                &Request::CatalogDelete {
                    store: catalog,
                    name,
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
