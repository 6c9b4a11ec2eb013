//! The README's quick start, run as the README says, in a throwaway HOME.

use mesh_e2e::{TestEnv, bin, run_ok, stdout};

#[test]
fn the_quick_start_gives_a_working_account_and_agent_and_is_idempotent() {
    let mut env = TestEnv::new();
    // Port 0: the script's service takes a free port and says which.
    env.set_var("MESH_SERVICE", "http://127.0.0.1:0");
    // The script builds with cargo; this test runs inside cargo, which
    // holds the build lock, so it hands over the binaries built already.
    let dir = bin("mesh").parent().expect("bin dir").to_owned();
    env.set_var("MESH_QUICKSTART_BIN", &dir);
    env.set_var("USER", "alice");
    let quickstart = mesh_e2e::repo_root().join("scripts/quickstart");

    let first = stdout(&run_ok(&mut env.command(&quickstart)));
    let line = format!(
        "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;",
        env.ssh_auth_sock().display()
    );
    assert!(first.contains(&line), "the line to paste: {first}");
    assert!(first.contains("starting the Mesh service"), "{first}");
    let status = env.mesh_json(&["account", "status"]);
    assert_eq!(status["status"], "connected", "{status}");
    let address = status["address"].as_str().expect("address").to_owned();
    assert!(address.ends_with("@localhost"), "{address}");

    // What it promises works: an SSH key through the agent, and doctor
    // finds nothing wrong with the line pasted.
    env.mesh(&["ssh", "create", "work"]);
    let listed = env.agent_keys();
    assert!(listed.starts_with("ssh-ed25519 "), "{listed}");
    let doctor = env
        .ours("mesh")
        .arg("doctor")
        .env("SSH_AUTH_SOCK", env.ssh_auth_sock())
        .output()
        .expect("doctor runs");
    assert!(doctor.status.success(), "{}", stdout(&doctor));

    // Again, with the service it started: the same account, nothing set
    // up twice.
    let service = status["service"].as_str().expect("service").to_owned();
    assert!(!service.ends_with(":0"), "{service}");
    env.set_var("MESH_SERVICE", &service);
    let second = stdout(&run_ok(&mut env.command(&quickstart)));
    assert!(
        second.contains("already set up: nothing changed"),
        "{second}"
    );
    assert!(!second.contains("starting the Mesh service"), "{second}");
    assert_eq!(
        env.mesh_json(&["account", "status"])["address"],
        address.as_str()
    );

    // Stop the service the script started.
    let pid = std::fs::read_to_string(env.home().join(".local/share/mesh/service.pid"))
        .expect("service.pid");
    let _ = std::process::Command::new("kill").arg(pid.trim()).status();
}
