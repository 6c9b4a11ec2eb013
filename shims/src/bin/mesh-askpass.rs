//! `mesh-askpass`: the askpass program meshd (and ssh) run to confirm a
//! key's use (`SSH_ASKPASS_PROMPT=confirm`, the question as the argument)
//! or, otherwise, to read a passphrase.
//!
//! It asks on the desktop (zenity or kdialog, when a display is there),
//! else on the controlling terminal, else refuses clearly: exit 1 and one
//! line on stderr. For a confirmation the exit status is the answer (0
//! yes); for a passphrase it prints what was typed.

use std::io::{BufRead as _, Write as _};
use std::process::{Command, ExitCode, Stdio};

fn main() -> ExitCode {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "Allow?".into());
    let confirm = std::env::var("SSH_ASKPASS_PROMPT").is_ok_and(|p| p == "confirm");
    if let Some(answer) = desktop(&prompt, confirm) {
        return answer;
    }
    if let Some(answer) = terminal(&prompt, confirm) {
        return answer;
    }
    eprintln!("mesh-askpass: no display and no terminal to ask on: denied");
    ExitCode::FAILURE
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Ask with a desktop dialog; `None` if there is none to use.
fn desktop(prompt: &str, confirm: bool) -> Option<ExitCode> {
    if !has_display() {
        return None;
    }
    let mut command = if on_path("zenity") {
        let mut c = Command::new("zenity");
        if confirm {
            c.args(["--question", "--title=Mesh", "--text", prompt]);
        } else {
            c.args(["--password", "--title", prompt]);
        }
        c
    } else if on_path("kdialog") {
        let mut c = Command::new("kdialog");
        if confirm {
            c.args(["--yesno", prompt]);
        } else {
            c.args(["--password", prompt]);
        }
        c
    } else {
        return None;
    };
    let out = command.stderr(Stdio::null()).output().ok()?;
    if !confirm && out.status.success() {
        let _ = std::io::stdout().write_all(&out.stdout);
    }
    Some(if out.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ask on the controlling terminal; `None` if there is none.
fn terminal(prompt: &str, confirm: bool) -> Option<ExitCode> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    let mut out = &tty;
    let question = if confirm {
        format!("{prompt} [y/N] ")
    } else {
        format!("{prompt} ")
    };
    out.write_all(question.as_bytes()).ok()?;
    // A passphrase is not echoed.
    let saved = rustix::termios::tcgetattr(&tty).ok();
    if let (false, Some(saved)) = (confirm, &saved) {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &quiet);
    }
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let (false, Some(saved)) = (confirm, &saved) {
        let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, saved);
        let _ = out.write_all(b"\n");
    }
    read.ok()?;
    let answer = line.trim_end_matches(['\n', '\r']);
    if confirm {
        let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
        Some(if yes {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    } else {
        println!("{answer}");
        Some(ExitCode::SUCCESS)
    }
}
