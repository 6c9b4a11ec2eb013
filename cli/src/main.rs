//! `mesh`: the user's command line. It parses arguments, resolves
//! [`Paths`] and asks `meshd` over the control socket; it never keeps a key
//! longer than one command.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mesh_ipc::paths::Paths;

mod command;

/// Mesh: your SSH and OpenPGP keys on every device, through a service you
/// never have to trust.
#[derive(Debug, Parser)]
#[command(name = "mesh", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Say whether meshd is running, and where it listens.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Join this session to meshd: systemd units, SSH_AUTH_SOCK, gpg.
    Setup {
        /// Put back everything setup changed.
        #[arg(long)]
        undo: bool,
        #[command(subcommand)]
        what: Option<SetupCommand>,
    },
    /// Check meshd, the sockets, SSH_AUTH_SOCK, gpg and the account, and
    /// say how to fix what is wrong.
    Doctor {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start or stop the background daemon.
    #[command(subcommand)]
    Daemon(command::daemon::DaemonCommand),
    /// Your Mesh account: create, status, sync, escrow, recover, PIN.
    #[command(subcommand)]
    Account(command::account::AccountCommand),
    /// The account's devices: connect, approve, list, revoke.
    #[command(subcommand)]
    Device(command::account::DeviceCommand),
    /// The account's catalogs (application, credential).
    #[command(subcommand)]
    Catalog(command::account::CatalogCommand),
    /// SSH keys in the account, served by meshd's SSH agent.
    #[command(subcommand)]
    Ssh(command::ssh::SshCommand),
    /// OpenPGP keys in the account, served to gpg by meshd.
    #[command(subcommand)]
    Openpgp(command::openpgp::OpenpgpCommand),
    /// Where the account's keys were used: every signature and decryption,
    /// by every device (the latest 500).
    Log {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Answer other devices' requests to use a key (a device with nobody
    /// at it asks the others): each is shown, and a line of standard input
    /// answers it (`y` approves; anything else denies).
    Approve {
        /// Only show the requests waiting.
        #[arg(long)]
        list: bool,
        /// Print JSON for scripts (implies --list).
        #[arg(long)]
        json: bool,
    },
    /// Uniform Data Fingerprints: digests, authenticators, nonces.
    #[command(subcommand)]
    Udf(command::udf::UdfCommand),
    /// Seeds, keys derived from them, and Shamir shares.
    #[command(subcommand)]
    Key(command::key::KeyCommand),
    /// DARE envelopes and logs.
    #[command(subcommand)]
    Dare(command::dare::DareCommand),
}

#[derive(Debug, Subcommand)]
enum SetupCommand {
    /// Make git sign commits with a key of the account.
    Git {
        /// With an SSH key (gpg.format=ssh).
        #[arg(long, conflicts_with = "openpgp", required_unless_present = "openpgp")]
        ssh: bool,
        /// With an OpenPGP key (gpg.format=openpgp).
        #[arg(long)]
        openpgp: bool,
        /// The key's name (default: the account's first).
        #[arg(long)]
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mesh: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Status { json } => command::status::run(&paths()?, json),
        Command::Doctor { json } => command::doctor::run(&paths()?, json),
        Command::Setup { undo, what: None } => command::setup::run(&paths()?, undo),
        Command::Setup {
            what: Some(SetupCommand::Git { ssh, key, .. }),
            ..
        } => {
            let format = if ssh {
                command::setup::GitFormat::Ssh
            } else {
                command::setup::GitFormat::Openpgp
            };
            command::setup::git(&paths()?, format, key.as_deref())
        }
        Command::Daemon(command) => command::daemon::run(&paths()?, command),
        Command::Account(command) => command::account::account(&paths()?, command),
        Command::Device(command) => command::account::device(&paths()?, command),
        Command::Catalog(command) => command::account::catalog(&paths()?, command),
        Command::Ssh(command) => command::ssh::run(&paths()?, command),
        Command::Openpgp(command) => command::openpgp::run(&paths()?, command),
        Command::Log { json } => command::ssh::log(&paths()?, json),
        Command::Approve { list, json } => command::approve::run(&paths()?, list, json),
        Command::Udf(command) => command::udf::run(command),
        Command::Key(command) => command::key::run(command),
        Command::Dare(command) => command::dare::run(command),
    }
}

/// Where this user's Mesh lives, from the environment.
fn paths() -> anyhow::Result<Paths> {
    Paths::resolve(|name| std::env::var_os(name)).context("cannot find where the Mesh lives")
}
