//! Asking the user before a key signs (`ssh-add -c`, or a catalog entry
//! that says so), the way OpenSSH's agent asks: through an askpass
//! program run with `SSH_ASKPASS_PROMPT=confirm`. As in OpenSSH
//! (`ask_permission`), the answer is yes only when the program exits 0
//! *and* prints nothing or `yes` (in any case): an askpass that prints
//! `no`, or anything else, and exits 0 has not said yes.
//!
//! With nobody to ask (no display and no `SSH_ASKPASS_REQUIRE=force`, no
//! askpass program, or no answer within [`TIMEOUT`]) the answer is no:
//! the agent denies rather than hangs. Each question runs in its own
//! connection's task, so a pending question holds up no other client.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use zeroize::Zeroizing;

/// How long the user has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Where confirmation questions go.
#[derive(Debug, Clone)]
pub struct Askpass {
    program: Option<PathBuf>,
    /// Why there is nobody to ask, when there is not.
    headless: Option<&'static str>,
}

impl Askpass {
    /// Read the askpass settings from an environment, as `ssh-agent` does
    /// from its own: `SSH_ASKPASS` (else `ssh-askpass` on `PATH`),
    /// `SSH_ASKPASS_REQUIRE`, `DISPLAY` and `WAYLAND_DISPLAY`.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Askpass {
        let require = var("SSH_ASKPASS_REQUIRE").unwrap_or_default();
        let display = var("DISPLAY").is_some_and(|d| !d.is_empty())
            || var("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty());
        let program = var("SSH_ASKPASS")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| find_in_path(var("PATH")?, "ssh-askpass"));
        let headless = if require == "never" {
            Some("SSH_ASKPASS_REQUIRE=never")
        } else if program.is_none() {
            Some("no askpass program (set SSH_ASKPASS)")
        } else if !display && require != "force" {
            Some("no display to ask on (set SSH_ASKPASS_REQUIRE=force to ask anyway)")
        } else {
            None
        };
        Askpass { program, headless }
    }

    /// Whether there is nobody to ask here.
    pub fn is_headless(&self) -> bool {
        self.headless.is_some()
    }

    /// Ask; true only on a yes.
    pub async fn confirm(&self, prompt: &str) -> bool {
        if let Some(reason) = self.headless {
            tracing::warn!(reason, "confirmation denied: nobody to ask");
            return false;
        }
        let Some(program) = &self.program else {
            return false;
        };
        let child = tokio::process::Command::new(program)
            .arg(prompt)
            .env("SSH_ASKPASS_PROMPT", "confirm")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) => {
                tracing::warn!(program = %program.display(), error = %err, "cannot run askpass");
                return false;
            }
        };
        let answer = async {
            use tokio::io::AsyncReadExt as _;
            let mut said = Vec::new();
            if let Some(stdout) = child.stdout.take() {
                // Bounded: an answer is a word; more is not a yes.
                stdout.take(MAX_ANSWER).read_to_end(&mut said).await?;
            }
            Ok::<_, std::io::Error>((child.wait().await?, said))
        };
        match tokio::time::timeout(TIMEOUT, answer).await {
            Ok(Ok((status, said))) => status.success() && says_yes(&said),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "askpass failed");
                false
            }
            Err(_) => {
                tracing::warn!("askpass gave no answer in time; denied");
                false
            }
        }
    }
}

/// The most of an askpass's output read.
const MAX_ANSWER: u64 = 1024;

/// Whether an askpass's output is a yes: nothing, or `yes` in any case,
/// one line end allowed (OpenSSH's rule).
fn says_yes(said: &[u8]) -> bool {
    let line = said.strip_suffix(b"\n").unwrap_or(said);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.is_empty() || line.eq_ignore_ascii_case(b"yes")
}

impl Askpass {
    /// Ask for a passphrase (askpass run without `SSH_ASKPASS_PROMPT`, as
    /// ssh does, printing what was typed); `None` with nobody to ask, on
    /// a refusal or with no answer in time.
    pub async fn passphrase(&self, prompt: &str) -> Option<Zeroizing<String>> {
        if let Some(reason) = self.headless {
            tracing::warn!(reason, "passphrase not asked: nobody to ask");
            return None;
        }
        let program = self.program.as_ref()?;
        let mut child = tokio::process::Command::new(program)
            .arg(prompt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let answer = async {
            use tokio::io::AsyncReadExt as _;
            let mut said = Zeroizing::new(Vec::new());
            if let Some(stdout) = child.stdout.take() {
                stdout.take(MAX_PASSPHRASE).read_to_end(&mut said).await?;
            }
            Ok::<_, std::io::Error>((child.wait().await?, said))
        };
        let (status, said) = tokio::time::timeout(TIMEOUT, answer).await.ok()?.ok()?;
        if !status.success() {
            return None;
        }
        let text = std::str::from_utf8(&said).ok()?;
        let line = text.strip_suffix('\n').unwrap_or(text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        Some(Zeroizing::new(line.to_owned()))
    }
}

/// The longest passphrase read from askpass.
const MAX_PASSPHRASE: u64 = 4096;

fn find_in_path(path: OsString, name: &str) -> Option<PathBuf> {
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[tokio::test]
    async fn the_exit_status_is_the_answer() {
        let yes = Askpass::from_env(env(&[("SSH_ASKPASS", "/bin/true"), ("DISPLAY", ":0")]));
        assert!(yes.confirm("Allow?").await);
        let no = Askpass::from_env(env(&[
            ("SSH_ASKPASS", "/bin/false"),
            ("SSH_ASKPASS_REQUIRE", "force"),
        ]));
        assert!(!no.confirm("Allow?").await);
    }

    #[test]
    fn only_nothing_or_yes_is_a_yes() {
        for yes in [&b""[..], b"\n", b"yes", b"YES\n", b"Yes\r\n"] {
            assert!(says_yes(yes), "{yes:?}");
        }
        for no in [&b"no"[..], b"y", b"yes please", b"\n\n", b" yes", b"ok\n"] {
            assert!(!says_yes(no), "{no:?}");
        }
    }

    #[tokio::test]
    async fn an_askpass_that_exits_0_saying_no_has_not_said_yes() {
        // echo exits 0 and prints its argument, the question: what it
        // prints decides.
        let echo = Askpass::from_env(env(&[("SSH_ASKPASS", "/bin/echo"), ("DISPLAY", ":0")]));
        for (question, yes) in [
            ("yes", true),
            ("YES", true),
            ("no", false),
            ("Allow?", false),
        ] {
            assert_eq!(echo.confirm(question).await, yes, "{question:?}");
        }
    }

    #[tokio::test]
    async fn headless_means_no() {
        let headless = Askpass::from_env(env(&[("SSH_ASKPASS", "/bin/true")]));
        assert!(!headless.confirm("Allow?").await);
        let never = Askpass::from_env(env(&[
            ("SSH_ASKPASS", "/bin/true"),
            ("DISPLAY", ":0"),
            ("SSH_ASKPASS_REQUIRE", "never"),
        ]));
        assert!(!never.confirm("Allow?").await);
        let missing = Askpass::from_env(env(&[
            ("SSH_ASKPASS", "/nonexistent/askpass"),
            ("SSH_ASKPASS_REQUIRE", "force"),
        ]));
        assert!(!missing.confirm("Allow?").await);
    }
}
