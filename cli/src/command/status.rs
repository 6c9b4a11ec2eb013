//! `mesh status`: is `meshd` running, and where does it listen.

use std::process::ExitCode;

use mesh_ipc::control::DaemonStatus;
use mesh_ipc::paths::Paths;
use mesh_shims::daemon;

pub(crate) fn run(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let status = daemon::status(paths).map_err(|err| match err {
        daemon::DaemonError::NotRunning(_) => {
            anyhow::anyhow!("{err}; start it with: mesh daemon start")
        }
        _ => err.into(),
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", describe(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as lines for a person.
pub(crate) fn describe(status: &DaemonStatus) -> String {
    let mut text = format!(
        "meshd {} is running (pid {}, up {}s)\n",
        status.version, status.pid, status.uptime_seconds
    );
    for listener in &status.listeners {
        text += &format!("  {:<10} {}\n", listener.frontend, listener.path.display());
    }
    text
}
