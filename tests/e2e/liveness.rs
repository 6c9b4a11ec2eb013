//! The daemon's shape, seen from outside: local answers never wait for the
//! service, and a command returns when what it did can be used.

use mesh_e2e::{MeshService, TestEnv, bench, run_ok, stdout, wait_until};

/// The account status, as JSON, whatever its exit status (it fails while
/// sync has problems).
fn account_status(env: &TestEnv) -> serde_json::Value {
    let out = env
        .ours("mesh")
        .args(["account", "status", "--json"])
        .output()
        .expect("mesh runs");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON from mesh account status: {}", stdout(&out)))
}

#[test]
fn local_answers_never_wait_for_a_hung_service() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut laptop = TestEnv::device(&service);
    // The daemon's calls wait 10 minutes for the service, so the one that
    // hangs below is still waiting when the test ends.
    laptop.set_var("MESH_SERVICE_TIMEOUT_MS", "600000");
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    laptop.mesh(&["ssh", "create", "work"]);
    let made = laptop.mesh_json(&["openpgp", "create", "Alice <alice@example.com>"]);
    let fingerprint = made["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();

    service.pause();
    // The next sync's call hangs; after a moment the status says so, and
    // when the call began.
    let mut since = None;
    wait_until(
        "the account status says the service does not answer",
        || {
            let status = account_status(&laptop);
            since = status["unanswered_since_ms"].as_u64();
            since.is_some()
        },
    );
    let status = account_status(&laptop);
    assert!(
        status["sync_errors"]["service"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{status}"
    );

    // Every local read answers while that call still hangs.
    let daemon = laptop.mesh_json(&["status"]);
    assert!(daemon["pid"].is_u64(), "{daemon}");
    let listed = stdout(&laptop.mesh(&["ssh", "list"]));
    assert!(listed.starts_with("work\t"), "{listed}");
    let keys = run_ok(
        laptop
            .command("ssh-add")
            .env("SSH_AUTH_SOCK", laptop.ssh_auth_sock())
            .arg("-l"),
    );
    assert!(stdout(&keys).contains("(ED25519)"), "{}", stdout(&keys));
    let secret =
        run_ok(
            laptop
                .command("gpg")
                .args(["--batch", "--no-autostart", "--with-colons", "-K"]),
        );
    assert!(
        stdout(&secret).contains(&fingerprint),
        "{}",
        stdout(&secret)
    );
    let status = account_status(&laptop);
    assert_eq!(status["status"], "connected", "{status}");
    assert_eq!(
        status["unanswered_since_ms"].as_u64(),
        since,
        "the same call to the service was still waiting throughout: {status}"
    );

    // Once the service answers again, so does sync.
    service.resume();
    wait_until("the account is in sync again", || {
        let status = account_status(&laptop);
        status["sync_errors"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
            && status["unanswered_since_ms"].is_null()
    });
}

#[test]
fn a_new_openpgp_key_signs_as_soon_as_mesh_returns() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let laptop = TestEnv::device(&service);
    laptop.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);
    let data = laptop.root().join("data.txt");
    std::fs::write(&data, b"signed at once\n").expect("data");
    for i in 0..20 {
        let user_id = format!("Alice {i} <alice{i}@example.com>");
        let made = laptop.mesh_json(&["openpgp", "create", &user_id]);
        let fingerprint = made["fingerprint"].as_str().expect("fingerprint");
        // No waiting: gpg must find the key the moment mesh returns.
        let signature = laptop.root().join(format!("data.{i}.sig"));
        run_ok(
            laptop
                .command("gpg")
                .args(["--batch", "--no-autostart", "--local-user", fingerprint])
                .arg("--output")
                .arg(&signature)
                .arg("--detach-sign")
                .arg(&data),
        );
        run_ok(
            laptop
                .command("gpg")
                .args(["--batch", "--no-autostart", "--verify"])
                .arg(&signature)
                .arg(&data),
        );
    }
}

/// How many clients connect at once in the load test.
const CLIENTS: usize = 1000;

#[test]
fn a_thousand_clients_at_once_are_each_answered_on_both_agent_sockets() {
    bench::allow_descriptors(CLIENTS as u64 * 2 + 256);
    let env = TestEnv::new();
    env.mesh(&["daemon", "start"]);
    // Every client is answered, those over meshd's connection cap once
    // they leave the listen backlog.
    let patience = std::time::Duration::from_secs(120);
    for (socket, request, answered) in [
        (
            env.ssh_auth_sock(),
            &[0u8, 0, 0, 1, 11][..],
            bench::identities_answered as fn(&mut dyn std::io::BufRead) -> bool,
        ),
        (
            bench::gpg_socket(&env),
            b"GETINFO version\n",
            bench::version_answered,
        ),
    ] {
        let count = bench::burst(&socket, CLIENTS, request, patience, answered);
        assert_eq!(count, CLIENTS, "{}", socket.display());
    }
}
