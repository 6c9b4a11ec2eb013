//! The small programs that join existing tools to meshd.

use std::io::Write as _;
use std::process::Stdio;

use mesh_e2e::{TestEnv, bin, require_tool, stderr};

/// Run mesh-askpass for a confirmation on a pty (util-linux `script`),
/// typing `answer`; return whether it said yes.
fn confirm_on_terminal(env: &TestEnv, answer: &str) -> bool {
    require_tool("script", "util-linux");
    let command = format!("{} 'Allow use of key work?'", bin("mesh-askpass").display());
    let mut child = env
        .command("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SSH_ASKPASS_PROMPT", "confirm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(answer.as_bytes())
        .expect("typed");
    child.wait_with_output().expect("ends").status.success()
}

#[test]
fn askpass_asks_on_the_terminal_and_refuses_headless() {
    let env = TestEnv::new();
    assert!(confirm_on_terminal(&env, "y\n"));
    assert!(!confirm_on_terminal(&env, "n\n"));
    assert!(!confirm_on_terminal(&env, "\n"), "the default is no");

    // No display and no controlling terminal (a new session): a clear no.
    require_tool("setsid", "util-linux");
    let out = env
        .command("setsid")
        .arg(bin("mesh-askpass"))
        .arg("Allow use of key work?")
        .env("SSH_ASKPASS_PROMPT", "confirm")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "mesh-askpass: no display and no terminal to ask on: denied"
    );
}
