//! Reading the files commands work on, and the secrets they take: never
//! from the command line (any program of the user's can read it in
//! `/proc`, and it stays in the shell's history), but from the terminal
//! without echo, or from standard input.

use std::io::{IsTerminal as _, Read as _};

use anyhow::Context as _;

/// The most a command reads from one file or standard input.
pub(crate) const MAX_INPUT: u64 = 256 * 1024 * 1024;

/// Read a file, or standard input for `-`.
pub(crate) fn read_input(path: &str) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    if path == "-" {
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open {path}"))?
            .take(MAX_INPUT + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {path}"))?;
    }
    anyhow::ensure!(
        data.len() as u64 <= MAX_INPUT,
        "{path} is larger than {MAX_INPUT} bytes"
    );
    Ok(data)
}

/// Write a file, or standard output for `-`.
pub(crate) fn write_output(path: &str, data: &[u8]) -> anyhow::Result<()> {
    if path == "-" {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        out.write_all(data)
            .context("cannot write standard output")?;
        out.flush().context("cannot write standard output")
    } else {
        std::fs::write(path, data).with_context(|| format!("cannot write {path}"))
    }
}

/// Ask for a passphrase on the terminal, without echo.
pub(crate) fn read_passphrase(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{self, LocalModes, OptionalActions};
    use std::io::{BufRead as _, Write as _};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the passphrase on")?;
    let saved = termios::tcgetattr(&tty).context("no terminal to ask for the passphrase on")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    termios::tcsetattr(&tty, OptionalActions::Now, &quiet).context("cannot turn echo off")?;
    let mut out = &tty;
    let mut line = String::new();
    let read = out
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    let _ = termios::tcsetattr(&tty, OptionalActions::Now, &saved);
    let _ = out.write_all(b"\n");
    read.context("cannot read the passphrase")?;
    let passphrase = line.trim_end_matches(['\n', '\r']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    Ok(passphrase)
}

/// Read one secret: asked for on the terminal without echo when standard
/// input is one, else the whole of standard input (one trailing line end
/// removed). An empty secret is refused.
pub(crate) fn read_secret(prompt: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let secret = if std::io::stdin().is_terminal() {
        zeroize::Zeroizing::new(read_passphrase(prompt)?)
    } else {
        let mut text = read_stdin()?;
        let end = text.trim_end_matches(['\n', '\r']).len();
        text.truncate(end);
        text
    };
    anyhow::ensure!(!secret.is_empty(), "nothing was given");
    Ok(secret)
}

/// All of standard input, up to [`MAX_SECRET`] bytes.
fn read_stdin() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(MAX_SECRET + 1)
        .read_to_string(&mut text)
        .context("cannot read standard input")?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_SECRET,
        "standard input is longer than {MAX_SECRET} bytes"
    );
    Ok(text)
}

/// Read secrets one a line: on the terminal, asked for one by one without
/// echo until an empty answer; else every non-empty line of standard input.
pub(crate) fn read_secret_lines(what: &str) -> anyhow::Result<Vec<String>> {
    let mut secrets = Vec::new();
    if std::io::stdin().is_terminal() {
        loop {
            let prompt = format!("{what} {} (empty to end): ", secrets.len() + 1);
            let line = read_passphrase(&prompt)?;
            if line.trim().is_empty() {
                break;
            }
            secrets.push(line.trim().to_owned());
        }
    } else {
        let text = read_stdin()?;
        secrets.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned),
        );
    }
    anyhow::ensure!(!secrets.is_empty(), "no {what}s were given");
    Ok(secrets)
}

/// The most a secret read from standard input may be: a control frame.
const MAX_SECRET: u64 = 64 * 1024;

/// Refuse a secret that came on the command line, in one line that says
/// how to give it instead (and never repeats it).
pub(crate) fn refuse_on_command_line(given: bool, what: &str, instead: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !given,
        "{what} not taken on the command line (other programs and the shell history can read it there): {instead}"
    );
    Ok(())
}

/// Read a secret kept in a file (or standard input for `-`): its text,
/// surrounding white space removed.
pub(crate) fn read_secret_file(path: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let bytes = zeroize::Zeroizing::new(read_input(path)?);
    let text = std::str::from_utf8(&bytes).with_context(|| format!("{path} is not text"))?;
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}
