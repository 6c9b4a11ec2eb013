//! `mesh`: the user's command line. It parses arguments, resolves
//! [`Paths`] and asks `meshd` over the control socket; it never keeps a key
//! longer than one command.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mesh_protocol::paths::Paths;

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
    /// Start or stop the background daemon.
    #[command(subcommand)]
    Daemon(command::daemon::DaemonCommand),
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
    let uid = rustix::process::getuid().as_raw();
    let paths = Paths::resolve(|name| std::env::var_os(name), uid)
        .context("cannot find where the Mesh lives")?;
    match cli.command {
        Command::Status { json } => command::status::run(&paths, json),
        Command::Daemon(command) => command::daemon::run(&paths, command),
    }
}
