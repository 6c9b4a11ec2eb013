//! `mesh doctor`: each injected fault is reported with its fix.

use mesh_e2e::{MeshService, TestEnv, run_ok, stdout};
use serde_json::Value;

/// Run `mesh doctor --json` with `SSH_AUTH_SOCK` set to `sock`.
fn doctor(env: &TestEnv, sock: &std::path::Path) -> Value {
    let out = env
        .ours("mesh")
        .args(["doctor", "--json"])
        .env("SSH_AUTH_SOCK", sock)
        .output()
        .expect("mesh doctor runs");
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("no JSON: {}", stdout(&out)));
    assert_eq!(
        out.status.success(),
        report["ok"] == true,
        "exit status matches: {report}"
    );
    report
}

/// The finding of one check.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|f| f["check"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

fn fails_with(report: &Value, name: &str, message: &str, fix: &str) {
    let finding = check(report, name);
    assert_eq!(finding["ok"], false, "{finding}");
    assert!(
        finding["message"]
            .as_str()
            .is_some_and(|m| m.contains(message)),
        "{finding}"
    );
    assert!(
        finding["fix"].as_str().is_some_and(|f| f.contains(fix)),
        "{finding}"
    );
}

#[test]
fn doctor_names_each_fault_and_its_fix() {
    let host = TestEnv::new();
    let mut service = MeshService::start(&host);
    let env = TestEnv::device(&service);
    env.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let sock = env.ssh_auth_sock();

    // Healthy.
    let report = doctor(&env, &sock);
    assert_eq!(report["ok"], true, "{report}");

    // SSH_AUTH_SOCK elsewhere.
    let report = doctor(&env, &env.root().join("other-agent.sock"));
    fails_with(&report, "ssh-auth-sock", "not meshd", "mesh ssh env");

    // meshd stopped.
    env.mesh(&["daemon", "stop"]);
    let report = doctor(&env, &sock);
    fails_with(&report, "meshd", "not running", "mesh daemon start");

    // The real gpg-agent on gpg's socket, meshd running without it.
    // (--daemon forks: its child must not hold our output pipes.)
    let started = env
        .command("gpg-agent")
        .arg("--daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("gpg-agent runs");
    assert!(started.success());
    env.mesh(&["daemon", "start"]);
    let report = doctor(&env, &sock);
    fails_with(
        &report,
        "gpg-socket",
        "another agent",
        "gpgconf --kill gpg-agent",
    );
    run_ok(env.command("gpgconf").args(["--kill", "gpg-agent"]));
    env.mesh(&["daemon", "stop"]);
    env.mesh(&["daemon", "start"]);
    assert_eq!(check(&doctor(&env, &sock), "gpg-socket")["ok"], true);

    // The service down.
    service.kill();
    let report = doctor(&env, &sock);
    fails_with(&report, "service", "cannot be reached", "mesh account sync");
}
