//! `mesh daemon start|stop`: run `meshd` in the background by hand, where
//! no service manager starts it.

use std::process::ExitCode;

use clap::Subcommand;
use mesh_ipc::paths::Paths;
use mesh_shims::daemon::{self, Started};

use super::status::describe;

#[derive(Debug, Subcommand)]
pub(crate) enum DaemonCommand {
    /// Start meshd in the background unless it is running already.
    Start,
    /// Ask meshd to stop, and wait until it has.
    Stop,
}

pub(crate) fn run(paths: &Paths, command: DaemonCommand) -> anyhow::Result<ExitCode> {
    match command {
        DaemonCommand::Start => match daemon::start(paths, &daemon::meshd_program())? {
            Started::AlreadyRunning(status) => {
                print!("already running: {}", describe(&status));
                println!("{}", super::ssh::env_line(paths));
            }
            Started::Started(status) => {
                print!("started: {}", describe(&status));
                println!("  log        {}", paths.daemon_log().display());
                println!("{}", super::ssh::env_line(paths));
            }
        },
        DaemonCommand::Stop => match daemon::stop(paths)? {
            Some(status) => println!("stopped meshd (pid {})", status.pid),
            None => println!("meshd was not running"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
