//! `mesh openpgp`: the account's OpenPGP certificates, served to gpg by
//! meshd in place of gpg-agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use mesh_ipc::control::{OpenpgpAdded, OpenpgpRow, Request, Response, SecretText};
use mesh_ipc::paths::Paths;
use zeroize::Zeroizing;

use super::account::{answer, ask, show, show_each};

#[derive(Debug, Subcommand)]
pub(crate) enum OpenpgpCommand {
    /// Make an OpenPGP key: certification key kept by administrators,
    /// signing and encryption subkeys on every device with the right.
    Create {
        /// "Name <email>".
        user_id: String,
        /// ed25519 (with cv25519 encryption), rsa3072 or nistp256.
        #[arg(long, default_value = "ed25519")]
        alg: String,
        /// Its name in the account (default: the email address).
        #[arg(long)]
        name: Option<String>,
        /// Ask before each signature or decryption (askpass, or the
        /// account's other devices when nobody is at this one).
        #[arg(long)]
        confirm: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Put an existing secret key in the account (gpg --export-secret-keys).
    Import {
        /// The exported secret key, armored or binary; - for standard input.
        file: PathBuf,
        /// Its name in the account (default: the email address).
        #[arg(long)]
        name: Option<String>,
        /// Ask before each signature or decryption (without it, a key the
        /// account has keeps its setting).
        #[arg(long)]
        confirm: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Switch a key's confirmation on or off (administrators only).
    #[command(group(clap::ArgGroup::new("setting").required(true).args(["confirm", "no_confirm"])))]
    Set {
        /// Its name.
        name: String,
        /// Ask before each signature or decryption.
        #[arg(long)]
        confirm: bool,
        /// Use it without asking.
        #[arg(long)]
        no_confirm: bool,
    },
    /// The account's OpenPGP keys.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print a key's public certificate, armored.
    Export {
        /// Its name.
        name: String,
    },
    /// Delete a key from the account (and so from every device).
    Delete {
        /// Its name.
        name: String,
    },
}

/// What meshd changed in gpg's configuration, as a line (or nothing).
fn configured(v: &OpenpgpAdded) -> String {
    v.configured
        .as_ref()
        .map(|change| format!("{change}\n"))
        .unwrap_or_default()
}

fn describe(v: &OpenpgpRow) -> String {
    let confirm = if v.confirm { "\tconfirm" } else { "" };
    format!(
        "{}\t{}\t{}{confirm}\n",
        v.name,
        v.fingerprint,
        v.user_ids.join(", ")
    )
}

pub(crate) fn run(paths: &Paths, command: OpenpgpCommand) -> anyhow::Result<ExitCode> {
    match command {
        OpenpgpCommand::Create {
            user_id,
            alg,
            name,
            confirm,
            json,
        } => {
            let request = Request::OpenpgpCreate {
                user_id,
                algorithm: alg,
                name,
                confirm,
            };
            let added = answer!(ask(paths, &request)?, Response::OpenpgpAdded(a) => a);
            show(json, &added, |v| {
                format!("created {}\t{}\n{}", v.name, v.fingerprint, configured(v))
            });
        }
        OpenpgpCommand::Import {
            file,
            name,
            confirm,
            json,
        } => {
            let path = file.to_string_lossy();
            let bytes = Zeroizing::new(super::input::read_input(&path)?);
            let secret = String::from_utf8(bytes.to_vec())
                .map(Zeroizing::new)
                .context("give the key armored: gpg --export-secret-keys --armor")?;
            let request = Request::OpenpgpImport {
                secret: SecretText::new(secret.to_string()),
                name,
                confirm,
            };
            let added = answer!(ask(paths, &request)?, Response::OpenpgpAdded(a) => a);
            show(json, &added, |v| {
                format!("imported {}\t{}\n{}", v.name, v.fingerprint, configured(v))
            });
        }
        OpenpgpCommand::Set { name, confirm, .. } => {
            let request = Request::OpenpgpSet { name, confirm };
            let added = answer!(ask(paths, &request)?, Response::OpenpgpAdded(a) => a);
            let said = if confirm {
                "asks before each use"
            } else {
                "is used without asking"
            };
            println!("{}\t{}\t{said}", added.name, added.fingerprint);
        }
        OpenpgpCommand::List { json } => {
            let keys =
                answer!(ask(paths, &Request::OpenpgpList)?, Response::OpenpgpKeys { keys } => keys);
            show_each(json, &keys, describe);
        }
        OpenpgpCommand::Export { name } => {
            let cert = answer!(
                ask(paths, &Request::OpenpgpExport { name })?,
                Response::OpenpgpCertificate(c) => c
            );
            print!("{}", cert.public);
        }
        OpenpgpCommand::Delete { name } => {
            let request = Request::OpenpgpDelete { name: name.clone() };
            answer!(ask(paths, &request)?, Response::Deleted { .. } => ());
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
