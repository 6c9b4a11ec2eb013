//! Asking the user before a key signs (`ssh-add -c`, or a catalog entry
//! that says so), the way OpenSSH's agent asks: through an askpass
//! program run with `SSH_ASKPASS_PROMPT=confirm`, whose exit status is
//! the answer.
//!
//! With nobody to ask (no display and no `SSH_ASKPASS_REQUIRE=force`, no
//! askpass program, or no answer within [`TIMEOUT`]) the answer is no:
//! the agent denies rather than hangs. Each question runs in its own
//! connection's task, so a pending question holds up no other client.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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
            .stdout(Stdio::null())
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
        match tokio::time::timeout(TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => status.success(),
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
