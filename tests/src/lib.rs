//! The end-to-end harness: a throwaway home for each test, and the real
//! binaries run as a person would run them.
//!
//! [`TestEnv`] makes a temporary directory with its own `HOME`, XDG
//! directories and `GNUPGHOME`, and builds commands whose environment holds
//! only those (and `PATH`), so no test can touch the real `~/.ssh`,
//! `~/.gnupg` or user session. Our binaries are found in `MESH_BIN_DIR` or
//! beside the test executable (`target/debug`), as `cargo build --workspace
//! --bins` leaves them; a missing one, or a missing system tool, fails the
//! test with a message saying what to install.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A throwaway home for one device: a user's whole Mesh in a temporary
/// directory. Daemons started in it are stopped when it is dropped.
#[derive(Debug)]
pub struct TestEnv {
    root: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh, empty home.
    pub fn new() -> TestEnv {
        // Socket paths are limited to about 100 bytes: keep the root short.
        let root = tempfile::Builder::new()
            .prefix("mesh-e2e.")
            .tempdir_in("/tmp")
            .expect("cannot make a temporary directory");
        let env = TestEnv { root };
        for dir in [env.home(), env.runtime_dir(), env.gnupg_home()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .expect("cannot make a test directory");
        }
        env
    }

    /// The temporary directory that holds everything.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `HOME`.
    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    /// `XDG_RUNTIME_DIR` (the daemon's sockets go in its `mesh/`).
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("run")
    }

    /// `GNUPGHOME`.
    pub fn gnupg_home(&self) -> PathBuf {
        self.home().join(".gnupg")
    }

    /// The directory `meshd` keeps its sockets in.
    pub fn mesh_runtime_dir(&self) -> PathBuf {
        self.runtime_dir().join("mesh")
    }

    /// `meshd`'s control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.mesh_runtime_dir().join("control.sock")
    }

    /// A command for one of our binaries (`mesh`, `meshd`, `mesh-service`)
    /// in this home.
    pub fn ours(&self, name: &str) -> Command {
        self.command(bin(name))
    }

    /// A command for any program, with this home's environment and nothing
    /// of the caller's but `PATH`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("HOME", self.home())
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_DATA_HOME", self.home().join(".local/share"))
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .env("GNUPGHOME", self.gnupg_home())
            .current_dir(self.home());
        cmd
    }

    /// Run `mesh` with `args` and require success.
    pub fn mesh(&self, args: &[&str]) -> Output {
        run_ok(self.ours("mesh").args(args))
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Stop a daemon left running; ignore the answer if there is none.
        if self.control_socket().exists() {
            let _ = self.ours("mesh").args(["daemon", "stop"]).output();
        }
    }
}

/// The path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("MESH_BIN_DIR").map_or_else(
        || {
            let exe = std::env::current_exe().expect("the test binary has a path");
            // target/debug/deps/e2e-<hash> -> target/debug
            exe.parent()
                .and_then(Path::parent)
                .expect("the test binary lives in target/<profile>/deps")
                .to_owned()
        },
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (or set MESH_BIN_DIR)",
        path.display()
    );
    path
}

/// Require a system program: fail with what to install when it is missing.
pub fn require_tool(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()));
    assert!(
        found,
        "{name} is not installed: apt-get install {package} (scripts/test does)"
    );
}

/// Run a command and require it to succeed; on failure show what it said.
pub fn run_ok(cmd: &mut Command) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Run a command and require it to fail; return what it said.
pub fn run_err(cmd: &mut Command) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    assert!(
        !output.status.success(),
        "{cmd:?} succeeded but should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// A process's standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A process's standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
