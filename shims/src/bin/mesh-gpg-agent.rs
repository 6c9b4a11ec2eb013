//! `mesh-gpg-agent`: what gpg runs as its agent (gpg.conf's
//! `agent-program`) when nothing listens on the agent socket.
//!
//! gpg starts it as `mesh-gpg-agent --homedir DIR --use-standard-socket
//! --daemon` and waits for it to exit before it polls the socket; so this
//! makes sure `meshd` is running (starting it in the background if need
//! be), waits until it answers, and exits at once. It never starts the
//! real gpg-agent.

use std::process::ExitCode;

use mesh_ipc::paths::Paths;
use mesh_shims::daemon;

fn main() -> ExitCode {
    let paths = match Paths::resolve(|name| std::env::var_os(name)) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("mesh-gpg-agent: cannot find where the Mesh lives: {e}");
            return ExitCode::FAILURE;
        }
    };
    match daemon::start(&paths, &daemon::meshd_program()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-gpg-agent: cannot start meshd: {e}");
            ExitCode::FAILURE
        }
    }
}
