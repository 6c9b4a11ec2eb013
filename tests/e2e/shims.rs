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

/// `git credential <action>` with only our helper, in `env`.
fn git_credential(env: &TestEnv, action: &str, input: &str) -> std::process::Output {
    let mut child = env
        .command("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .arg("-c")
        .arg(format!(
            "credential.helper={}",
            bin("git-credential-mesh").display()
        ))
        .args(["credential", action])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("written");
    child.wait_with_output().expect("git ends")
}

#[test]
fn a_git_credential_stored_on_one_device_is_filled_on_another() {
    let host = TestEnv::new();
    let service = mesh_e2e::MeshService::start(&host);
    let laptop = TestEnv::device(&service);
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let desktop = TestEnv::device(&service);
    mesh_e2e::connect_device(&laptop, &desktop, "desktop", "device,web");

    let stored = git_credential(
        &laptop,
        "approve",
        "protocol=https\nhost=git.example.com\nusername=alice\npassword=s3cret-token\n\n",
    );
    assert!(stored.status.success(), "{}", stderr(&stored));

    let question = "protocol=https\nhost=git.example.com\n\n";
    mesh_e2e::wait_until("the desktop fills the credential", || {
        let filled = git_credential(&desktop, "fill", question);
        filled.status.success()
            && mesh_e2e::stdout(&filled).contains("username=alice\npassword=s3cret-token\n")
    });
    // Another host is not answered (git then fails: no prompting here).
    let other = git_credential(
        &desktop,
        "fill",
        "protocol=https\nhost=elsewhere.example\n\n",
    );
    assert!(!other.status.success());

    // Rejected (e.g. a revoked token): erased everywhere.
    let rejected = git_credential(
        &desktop,
        "reject",
        "protocol=https\nhost=git.example.com\nusername=alice\npassword=s3cret-token\n\n",
    );
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    mesh_e2e::wait_until("the laptop no longer fills it", || {
        !git_credential(&laptop, "fill", question).status.success()
    });
}
