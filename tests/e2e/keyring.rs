//! The device seed in a real Secret Service: gnome-keyring in a D-Bus
//! session of the test's own.

use mesh_e2e::{MeshService, TestEnv, bin, require_tool, run_ok, stdout};

#[test]
fn the_device_seed_lives_in_the_secret_service_and_survives_a_restart() {
    require_tool("dbus-run-session", "dbus");
    require_tool("gnome-keyring-daemon", "gnome-keyring");
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let device = TestEnv::device(&service);
    let mesh = bin("mesh");
    let mesh = mesh.to_str().expect("utf-8");
    // In one session: unlock a fresh login keyring, create the account,
    // restart meshd (it must find its seed again), report, stop.
    let script = format!(
        "printf %s test-pass | gnome-keyring-daemon --unlock --components=secrets >/dev/null && \\
         {mesh} account create kr@example.com --json && \\
         {mesh} daemon stop >/dev/null && \\
         {mesh} account status --json; status=$?; {mesh} daemon stop >/dev/null; exit $status"
    );
    let out = run_ok(
        device
            .command("dbus-run-session")
            .args(["--", "sh", "-c", &script]),
    );
    let text = stdout(&out);
    let mut lines = text.lines().filter(|l| l.starts_with('{'));
    let created: serde_json::Value =
        serde_json::from_str(lines.next().expect("create's JSON")).expect("JSON");
    let status: serde_json::Value =
        serde_json::from_str(lines.next().expect("status's JSON")).expect("JSON");
    assert_eq!(
        created["secrets"], "the Secret Service (OS keyring)",
        "{text}"
    );
    assert_eq!(status["status"], "connected", "{text}");
    assert_eq!(
        status["device"], created["device"],
        "the seed came back from the keyring"
    );
    assert_eq!(status["admin"], true);
    assert!(
        !device.home().join(".local/share/mesh/secrets").exists(),
        "no file fallback was used"
    );
    assert!(
        device
            .home()
            .join(".local/share/keyrings")
            .read_dir()
            .expect("a keyring")
            .next()
            .is_some()
    );

    // Outside that session (an ssh login, say) the seed is where it was
    // recorded to be: meshd says the Secret Service does not answer, and
    // neither guesses files nor makes a new seed there.
    let out = device
        .ours("mesh")
        .args(["account", "status"])
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .expect("mesh runs");
    let said = format!("{}{}", stdout(&out), mesh_e2e::stderr(&out));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("Secret Service"), "{said}");
    assert!(!said.contains("seed is missing"), "{said}");
    assert!(
        !device.home().join(".local/share/mesh/secrets").exists(),
        "no file fallback was used"
    );
}
