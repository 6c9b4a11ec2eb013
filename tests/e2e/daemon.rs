//! `meshd`'s life: start, status, stop, and what it refuses.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;

use mesh_e2e::{TestEnv, run_err, run_ok, stderr, stdout, wait_until};
use mesh_ipc::control::{self, Request, Response};

#[test]
fn start_status_stop() {
    let env = TestEnv::new();
    let started = stdout(&env.mesh(&["daemon", "start"]));
    assert!(started.starts_with("started: meshd "), "{started}");

    let status: serde_json::Value =
        serde_json::from_slice(&env.mesh(&["status", "--json"]).stdout).expect("JSON");
    assert_eq!(status["protocol"], control::VERSION);
    assert_eq!(
        status["runtime_dir"],
        env.mesh_runtime_dir().to_str().expect("utf-8")
    );
    assert_eq!(status["listeners"][0]["frontend"], "control");
    assert_eq!(
        status["listeners"][0]["path"],
        env.control_socket().to_str().expect("utf-8")
    );
    let human = stdout(&env.mesh(&["status"]));
    assert!(
        human.contains("is running") && human.contains("control.sock"),
        "{human}"
    );

    let dir_mode = fs::metadata(env.mesh_runtime_dir()).expect("dir").mode() & 0o777;
    let sock_mode = fs::metadata(env.control_socket()).expect("socket").mode() & 0o777;
    assert_eq!((dir_mode, sock_mode), (0o700, 0o600));

    let again = stdout(&env.mesh(&["daemon", "start"]));
    assert!(again.starts_with("already running:"), "{again}");

    let stopped = stdout(&env.mesh(&["daemon", "stop"]));
    assert!(stopped.starts_with("stopped meshd"), "{stopped}");
    assert!(
        !env.control_socket().exists(),
        "the socket is removed on stop"
    );

    let err = stderr(&run_err(env.ours("mesh").arg("status")));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not running") && err.contains("mesh daemon start"),
        "{err}"
    );
    let again = stdout(&env.mesh(&["daemon", "stop"]));
    assert_eq!(again.trim(), "meshd was not running");
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let env = TestEnv::new();
    env.mesh(&["daemon", "start"]);
    let first = env.meshd_pid();
    run_ok(env.command("kill").args(["-KILL", &first.to_string()]));
    // The killed daemon could not clean up; wait until it is gone.
    wait_until("the killed daemon is gone", || {
        fs::metadata(format!("/proc/{first}")).is_err()
            || fs::read_to_string(format!("/proc/{first}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    });
    assert!(
        env.control_socket().exists(),
        "a killed daemon leaves its socket"
    );
    let err = stderr(&run_err(env.ours("mesh").arg("status")));
    assert!(err.contains("not running"), "{err}");

    env.mesh(&["daemon", "start"]);
    assert_ne!(env.meshd_pid(), first);
}

#[test]
fn a_runtime_dir_others_can_enter_is_refused() {
    let env = TestEnv::new();
    fs::create_dir(env.mesh_runtime_dir()).expect("made");
    fs::set_permissions(env.mesh_runtime_dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run_err(env.ours("mesh").args(["daemon", "start"]));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("mode 0755") && err.contains("chmod 700"),
        "{err}"
    );
    // meshd itself says the same and exits non-zero.
    let err = stderr(&run_err(&mut env.ours("meshd")));
    assert!(err.contains("refusing runtime directory"), "{err}");
}

#[test]
fn a_bad_frame_closes_only_its_own_connection() {
    let env = TestEnv::new();
    env.mesh(&["daemon", "start"]);

    // A body that is not a request: an error answer, then the close.
    let mut bad = UnixStream::connect(env.control_socket()).expect("connects");
    let body = b"{\"request\":\"steal-keys\"}";
    bad.write_all(&u32::try_from(body.len()).expect("fits").to_be_bytes())
        .expect("sent");
    bad.write_all(body).expect("sent");
    let answer: Option<Response> = control::read_frame(&mut bad).expect("a frame");
    match answer {
        Some(Response::Error { kind, message }) => {
            assert_eq!(kind, control::ErrorKind::Malformed, "{message}");
            assert!(
                !message.contains("steal"),
                "the input is not echoed: {message}"
            );
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
    assert_eq!(bad.read(&mut [0u8; 16]).expect("closed"), 0);

    // A length over the limit: closed without reading 4 GiB.
    let mut huge = UnixStream::connect(env.control_socket()).expect("connects");
    huge.write_all(&u32::MAX.to_be_bytes()).expect("sent");
    let mut rest = Vec::new();
    let _ = huge.read_to_end(&mut rest);

    // A client that sends half a frame and waits does not block others.
    let mut slow = UnixStream::connect(env.control_socket()).expect("connects");
    slow.write_all(&[0, 0]).expect("sent");

    // A well-behaved client on its own connection is still served, twice.
    let mut good = UnixStream::connect(env.control_socket()).expect("connects");
    for _ in 0..2 {
        control::write_frame(&mut good, &Request::Status).expect("sent");
        let answer: Option<Response> = control::read_frame(&mut good).expect("a frame");
        assert!(matches!(answer, Some(Response::Status(_))), "{answer:?}");
    }
    env.mesh(&["status"]);
}

#[test]
fn a_client_of_another_uid_is_refused() {
    // meshd runs as `nobody`; we connect as root, which the socket's mode
    // cannot stop (root passes every permission check), so only the
    // daemon's own peer-uid check stands in the way.
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs a daemon as another user and needs root (CI runs as root)"
    );
    mesh_e2e::require_tool("setpriv", "util-linux");
    let env = TestEnv::new();
    run_ok(
        env.command("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(env.root()),
    );
    let mut daemon = env
        .command("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(mesh_e2e::bin("meshd"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("meshd starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !env.control_socket().exists() {
        assert!(std::time::Instant::now() < deadline, "meshd did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut stream = UnixStream::connect(env.control_socket()).expect("connects");
    let sent = control::write_frame(&mut stream, &Request::Status);
    let answer = sent
        .map_err(|e| e.to_string())
        .and_then(|()| control::read_frame::<Response>(&mut stream).map_err(|e| e.to_string()));
    assert!(
        matches!(answer, Ok(None)) || answer.is_err(),
        "a root client got an answer from nobody's daemon: {answer:?}"
    );
    // The same on the SSH agent socket: no identities for root.
    let agent_socket = env.mesh_runtime_dir().join("ssh-agent.sock");
    let mut agent = UnixStream::connect(&agent_socket).expect("connects");
    use std::io::{Read as _, Write as _};
    let _ = agent.write_all(&[0, 0, 0, 1, 11]);
    let mut answer = Vec::new();
    let _ = agent.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "a root client got an answer from nobody's SSH agent"
    );
    daemon.kill().expect("killed");
    daemon.wait().expect("reaped");
}
