//! The small programs that join existing tools to meshd.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Stdio;

use mesh_e2e::{TestEnv, bin, require_tool, stderr, with_input};

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
    // The desktop's meshd refuses every bulk export (its askpass says
    // no): the helper fills from the one entry it asks for by name.
    let mut desktop = TestEnv::device(&service);
    desktop.askpass_from_file();
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
    // (git asks the same askpass for a username while the entry has not
    // arrived yet; meshd's questions are the `confirm` ones.)
    assert!(
        !desktop.askpass_log().contains("confirm|"),
        "filling one credential asked nobody: the whole catalog was never requested: {}",
        desktop.askpass_log()
    );
    let err = stderr(&mesh_e2e::run_err(desktop.ours("mesh").args([
        "catalog",
        "list",
        "credential",
    ])));
    assert!(err.contains("not confirmed"), "{err}");
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

/// A listener squatting where meshd's control socket goes: it never
/// accepts on its own, so every connection a client makes waits in its
/// queue, and [`Squatter::received`] finds it afterwards.
struct Squatter(UnixListener);

impl Squatter {
    fn listen(socket: &Path) -> Squatter {
        let listener = UnixListener::bind(socket).expect("the squatter listens");
        listener.set_nonblocking(true).expect("nonblocking");
        Squatter(listener)
    }

    /// Listen as the user `uid`: one thread binds (as root, in our
    /// directory), takes that uid for itself alone, and listens, so that
    /// the socket's peer credentials are `uid`'s.
    fn listen_as(socket: &Path, uid: u32) -> Squatter {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        let listener = std::thread::scope(|scope| {
            scope
                .spawn(|| -> rustix::io::Result<UnixListener> {
                    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
                    rustix::net::bind(&fd, &SocketAddrUnix::new(socket)?)?;
                    rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(uid))?;
                    rustix::net::listen(&fd, 16)?;
                    Ok(UnixListener::from(fd))
                })
                .join()
                .expect("the thread ends")
        })
        .expect("the squatter listens as another uid");
        listener.set_nonblocking(true).expect("nonblocking");
        Squatter(listener)
    }

    /// How many connections were made to it, and how many bytes they sent.
    fn received(&self) -> (usize, usize) {
        let (mut connections, mut bytes) = (0, 0);
        loop {
            match self.0.accept() {
                Ok((mut stream, _)) => {
                    connections += 1;
                    stream.set_nonblocking(false).expect("blocking");
                    let mut got = Vec::new();
                    // The client has exited: this reads to its end.
                    stream.read_to_end(&mut got).expect("read");
                    bytes += got.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (connections, bytes),
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// Each client in turn asks the squatted control socket, with secrets in
/// hand; each must refuse with one line and send nothing. With `connects`
/// each may connect (to ask who listens) but must send no byte; without,
/// none may even connect.
fn every_client_refuses(env: &TestEnv, squatter: &Squatter, why: &str, connects: bool) {
    let mut attempts = vec![
        (
            "mesh status",
            env.ours("mesh").arg("status").output().expect("runs"),
        ),
        (
            "mesh catalog put",
            with_input(
                env.ours("mesh")
                    .args(["catalog", "put", "credential", "git:https://x.example"]),
                "s3cret-value",
            ),
        ),
        (
            "mesh account recover",
            with_input(
                env.ours("mesh").args(["account", "recover"]),
                "Sshare-one\nSshare-two\n",
            ),
        ),
    ];
    for action in ["store", "get"] {
        attempts.push((
            action,
            with_input(
                env.ours("git-credential-mesh").arg(action),
                "protocol=https\nhost=x.example\nusername=alice\npassword=s3cret-token\n\n",
            ),
        ));
    }
    let tries = attempts.len();
    for (what, out) in attempts {
        let err = stderr(&out);
        assert!(!out.status.success(), "{what} succeeded ({why})");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("refusing to talk to meshd") && err.contains(why),
            "{what}: {err}"
        );
    }
    let (connections, bytes) = squatter.received();
    assert_eq!(bytes, 0, "the squatter got not a byte ({why})");
    assert_eq!(
        connections,
        if connects { tries } else { 0 },
        "connections ({why})"
    );
}

#[test]
fn a_squatted_runtime_dir_gets_nothing_from_mesh_or_the_git_helper() {
    // A directory others may enter, as someone squatting a shared /tmp
    // name would leave it.
    let env = TestEnv::new();
    let dir = env.mesh_runtime_dir();
    fs::create_dir(&dir).expect("made");
    let squatter = Squatter::listen(&env.control_socket());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    every_client_refuses(&env, &squatter, "mode 0777", false);

    // A symbolic link to a directory elsewhere (private, even).
    let env = TestEnv::new();
    let elsewhere = env.root().join("elsewhere");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&elsewhere)
        .expect("made");
    let squatter = Squatter::listen(&elsewhere.join("control.sock"));
    std::os::unix::fs::symlink(&elsewhere, env.mesh_runtime_dir()).expect("linked");
    every_client_refuses(&env, &squatter, "not a directory", false);

    // A directory, or a listener, of another user: only root can make
    // them in a test.
    if rustix::process::geteuid().is_root() {
        let env = TestEnv::new();
        let dir = env.mesh_runtime_dir();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("made");
        let squatter = Squatter::listen(&env.control_socket());
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chown(&dir, Some(nobody), None).expect("chown");
        every_client_refuses(&env, &squatter, "belongs to uid 65534", false);

        // Our own private directory, but the process on the socket is
        // someone else's (SO_PEERCRED).
        let env = TestEnv::new();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(env.mesh_runtime_dir())
            .expect("made");
        let squatter = Squatter::listen_as(&env.control_socket(), 65534);
        every_client_refuses(&env, &squatter, "runs as uid 65534", true);
    }
}
