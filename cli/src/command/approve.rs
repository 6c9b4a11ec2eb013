//! `mesh approve`: answer other devices' requests to use a key (a device
//! with nobody at it asks the account's other devices), on a terminal.

use std::io::BufRead as _;
use std::process::ExitCode;

use mesh_ipc::control::{ApprovalRow, Request, Response};
use mesh_ipc::paths::Paths;

use super::account::{answer, ask, show_each};

/// The longest answer line read.
const MAX_LINE: usize = 64;

/// Show the waiting requests (`list`), or ask about each on the terminal
/// (a line from standard input: `y` or `yes` approves, anything else
/// denies) and send the answers.
pub(crate) fn run(paths: &Paths, list: bool, json: bool) -> anyhow::Result<ExitCode> {
    let waiting = answer!(
        ask(paths, &Request::ApprovalList)?,
        Response::Approvals { requests } => requests
    );
    if list || json {
        show_each(json, &waiting, |r| format!("{}\t{}\n", r.id, r.question()));
        return Ok(ExitCode::SUCCESS);
    }
    if waiting.is_empty() {
        println!("no requests are waiting");
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    for request in waiting {
        let approved = ask_person(&request, &mut lines)?;
        let response = ask(
            paths,
            &Request::Approve {
                id: request.id.clone(),
                approved,
            },
        );
        match response {
            Ok(Response::Lines { lines }) => lines.iter().for_each(|l| println!("{l}")),
            Ok(_) => anyhow::bail!("meshd gave an unexpected answer"),
            // (Answered meanwhile elsewhere, withdrawn, expired.)
            Err(err) => eprintln!("mesh approve: {err}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ask_person(request: &ApprovalRow, input: &mut impl std::io::BufRead) -> anyhow::Result<bool> {
    eprint!("{} [y/N] ", request.question());
    let mut line = Vec::new();
    std::io::Read::take(input, MAX_LINE as u64).read_until(b'\n', &mut line)?;
    let said = String::from_utf8_lossy(&line).trim().to_ascii_lowercase();
    Ok(said == "y" || said == "yes")
}
