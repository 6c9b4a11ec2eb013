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

pub mod bench;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A throwaway home for one device: a user's whole Mesh in a temporary
/// directory. Daemons started in it are stopped when it is dropped.
#[derive(Debug)]
pub struct TestEnv {
    root: tempfile::TempDir,
    extra: Vec<(String, String)>,
}

impl TestEnv {
    /// A fresh, empty home.
    pub fn new() -> TestEnv {
        // Socket paths are limited to about 100 bytes: keep the root short.
        let root = tempfile::Builder::new()
            .prefix("mesh-e2e.")
            .tempdir_in("/tmp")
            .expect("cannot make a temporary directory");
        let env = TestEnv {
            root,
            extra: Vec::new(),
        };
        for dir in [env.home(), env.runtime_dir(), env.gnupg_home()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .expect("cannot make a test directory");
        }
        env
    }

    /// A home whose commands also get `vars` (e.g. `MESH_SERVICE`).
    pub fn with(vars: &[(&str, &str)]) -> TestEnv {
        let mut env = TestEnv::new();
        env.extra = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env
    }

    /// Give this home's commands one more variable.
    pub fn set_var(&mut self, key: &str, value: impl AsRef<OsStr>) {
        self.extra.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
    }

    /// A device of an account served by `service`: syncing every 200 ms.
    pub fn device(service: &MeshService) -> TestEnv {
        let url = service.url();
        let mut vars = vec![
            ("MESH_SERVICE", url.as_str()),
            ("MESH_SYNC_INTERVAL_MS", "200"),
        ];
        let cert = service.cert().map(|c| c.to_string_lossy().into_owned());
        if let Some(cert) = &cert {
            vars.push(("MESH_SERVICE_CA", cert.as_str()));
        }
        TestEnv::with(&vars)
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
        for (key, value) in &self.extra {
            cmd.env(key, value);
        }
        cmd
    }

    /// Run `mesh ... --json` and return what it printed.
    pub fn mesh_json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.mesh(&args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("mesh {args:?} printed no JSON: {}", stdout(&out)))
    }

    /// Run `mesh` with `args` and require success.
    pub fn mesh(&self, args: &[&str]) -> Output {
        run_ok(self.ours("mesh").args(args))
    }

    /// `mesh catalog put CATALOG NAME`, the value on standard input;
    /// require success.
    pub fn catalog_put(&self, catalog: &str, name: &str, value: &str) -> Output {
        let out = with_input(
            self.ours("mesh").args(["catalog", "put", catalog, name]),
            value,
        );
        assert!(
            out.status.success(),
            "mesh catalog put {catalog} {name} failed: {}",
            stderr(&out)
        );
        out
    }

    /// Have this home's `meshd` ask for confirmations through a script
    /// that answers with the exit status in the file `confirm` of the root
    /// (see [`TestEnv::confirm`]; no at first) and logs each prompt to
    /// `askpass.log` there. Call it before the daemon starts.
    pub fn askpass_from_file(&mut self) {
        let script = self.root().join("confirm-askpass");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nd={}\necho \"$SSH_ASKPASS_PROMPT|$1\" >> \"$d/askpass.log\"\n\
                 exit \"$(cat \"$d/confirm\")\"\n",
                self.root().display()
            ),
        )
        .expect("askpass script");
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        self.set_var("SSH_ASKPASS", &script);
        self.set_var("SSH_ASKPASS_REQUIRE", "force");
        self.set_var("DISPLAY", ":0");
        self.confirm(false);
    }

    /// What the script of [`TestEnv::askpass_from_file`] answers.
    pub fn confirm(&self, yes: bool) {
        fs::write(self.root().join("confirm"), if yes { "0" } else { "1" }).expect("confirm");
    }

    /// The prompts the script of [`TestEnv::askpass_from_file`] was asked.
    pub fn askpass_log(&self) -> String {
        fs::read_to_string(self.root().join("askpass.log")).unwrap_or_default()
    }
}

/// Run a command with `input` on its standard input; return its output,
/// whether it succeeded or not.
pub fn with_input(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
    // A program that refuses before reading closes its end: not an error.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes());
    child.wait_with_output().expect("the command ends")
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

/// A real `mesh-service` on a free loopback port, its store a file in a
/// test home; killed when dropped.
#[derive(Debug)]
pub struct MeshService {
    child: std::process::Child,
    addr: String,
    data: PathBuf,
    /// With `--self-signed`: where its certificate is.
    cert: Option<PathBuf>,
    /// Other arguments, kept for restarts.
    extra: Vec<String>,
}

impl MeshService {
    /// Start a service keeping its store under `env`'s root.
    pub fn start(env: &TestEnv) -> MeshService {
        MeshService::spawn(
            &env.root().join("service.redb"),
            "127.0.0.1:0",
            None,
            None,
            &[],
        )
    }

    /// Start a service with more arguments (e.g. `--max-entries`).
    pub fn start_with(env: &TestEnv, extra: &[&str]) -> MeshService {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        MeshService::spawn(
            &env.root().join("service.redb"),
            "127.0.0.1:0",
            None,
            None,
            &extra,
        )
    }

    /// Start one serving HTTPS with a self-signed certificate.
    pub fn start_tls(env: &TestEnv) -> MeshService {
        let cert = env.root().join("service-cert.pem");
        MeshService::spawn(
            &env.root().join("service.redb"),
            "127.0.0.1:0",
            None,
            Some(&cert),
            &[],
        )
    }

    fn spawn(
        data: &Path,
        listen: &str,
        hostile: Option<&str>,
        cert: Option<&Path>,
        extra: &[String],
    ) -> MeshService {
        use std::io::BufRead as _;
        let mut cmd = Command::new(bin("mesh-service"));
        cmd.args(["--listen", listen, "--data"])
            .arg(data)
            .stdout(std::process::Stdio::piped())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data.with_extension("log"))
                    .expect("the service's log"),
            );
        if let Some(mode) = hostile {
            cmd.args(["--hostile", mode]);
        }
        if let Some(cert) = cert {
            cmd.arg("--self-signed").arg(cert);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("mesh-service starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("a first line");
        let addr = line
            .trim()
            .strip_prefix("mesh-service listening on http")
            .map(|rest| rest.trim_start_matches('s'))
            .and_then(|rest| rest.strip_prefix("://"))
            .and_then(|rest| rest.strip_suffix("/.well-known/mmm/"))
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        MeshService {
            child,
            addr,
            data: data.to_owned(),
            cert: cert.map(Path::to_owned),
            extra: extra.to_vec(),
        }
    }

    /// The address, `127.0.0.1:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The base URL devices are given.
    pub fn url(&self) -> String {
        let scheme = if self.cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The self-signed certificate, for `MESH_SERVICE_CA`.
    pub fn cert(&self) -> Option<&Path> {
        self.cert.as_deref()
    }

    /// Kill the service with SIGKILL: nothing gets to flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kill it and start it again on the same port and store, optionally
    /// misbehaving. The killed process is reaped first, so its listening
    /// socket is closed, and the new one binds with SO_REUSEADDR (tokio's
    /// default): the port is free at once.
    pub fn restart(&mut self, hostile: Option<&str>) {
        self.kill();
        let (cert, extra) = (self.cert.clone(), self.extra.clone());
        *self = MeshService::spawn(&self.data, &self.addr, hostile, cert.as_deref(), &extra);
    }

    /// Stop the service's process (SIGSTOP): it keeps its sockets and
    /// answers nothing until [`MeshService::resume`].
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Let a paused service go on (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

impl Drop for MeshService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Send `signal` (`-STOP`, `-CONT` ...) to `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Ask, from `device`, to join `alice@example.com` and approve it on
/// `admin` by its witness code (the device connects at its next sync).
pub fn approve(admin: &TestEnv, device: &TestEnv, name: &str, rights: &str) {
    let asked = device.mesh_json(&[
        "device",
        "connect",
        "alice@example.com",
        "--name",
        name,
        "--no-wait",
    ]);
    let code = asked["witness"]
        .as_str()
        .expect("a witness code")
        .to_owned();
    wait_until("the request reaches the administrator", || {
        admin
            .mesh_json(&["device", "pending"])
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["witness"] == code))
    });
    admin.mesh(&["device", "accept", &code, "--rights", rights]);
}

/// [`approve`] `device` on `admin`, then wait until it is connected.
pub fn connect_device(admin: &TestEnv, device: &TestEnv, name: &str, rights: &str) {
    approve(admin, device, name, rights);
    wait_until("the device is accepted", || {
        device.mesh_json(&["account", "status"])["status"] == "connected"
    });
}

/// Poll `check` until it holds, for up to 20 seconds.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
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

/// A real OpenSSH `sshd` on a free loopback port, run by the test (as
/// root on CI), accepting the keys in its own `authorized_keys` file;
/// killed when dropped.
#[derive(Debug)]
pub struct Sshd {
    /// Stops the accept loop when set (and the loop is woken).
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    port: u16,
    /// Its sshd_config without the test's extra lines.
    config: String,
}

/// Names unique within this process: sockets and directories of helpers.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Sshd {
    /// Start one in `env`, with a fresh Ed25519 host key. The test holds
    /// the listening socket (bound to a port the kernel picks, so no race
    /// for it) and runs `sshd -i` (inetd mode) for each connection.
    pub fn start(env: &TestEnv) -> Sshd {
        Sshd::start_with(env, "")
    }

    /// [`Sshd::start`], with `extra` lines in its sshd_config.
    pub fn start_with(env: &TestEnv, extra: &str) -> Sshd {
        require_tool("ssh-keygen", "openssh-client");
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("sshd is not installed: apt-get install openssh-server (scripts/test does)");
        let dir = env.root().join(unique("sshd"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("sshd dir");
        run_ok(
            env.command("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "host", "-f"])
                .arg(dir.join("host_key")),
        );
        fs::write(dir.join("authorized_keys"), "").expect("authorized_keys");
        // sshd insists on its privilege-separation directory.
        if rustix::process::geteuid().is_root() {
            fs::create_dir_all("/run/sshd").expect("/run/sshd");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listening socket");
        let port = listener.local_addr().expect("its address").port();
        let config = format!(
            "HostKey {dir}/host_key\n\
             PidFile none\nAuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            dir = dir.display()
        );
        fs::write(dir.join("sshd_config"), format!("{config}{extra}")).expect("sshd_config");
        let log = fs::File::create(dir.join("sshd.log")).expect("log");
        let stop = Arc::new(AtomicBool::new(false));
        let mut command = env.command(sshd);
        command
            .args(["-i", "-e", "-f"])
            .arg(dir.join("sshd_config"));
        let acceptor = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sessions = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (Ok(stream), Ok(log)) = (stream, log.try_clone()) else {
                        continue;
                    };
                    let Ok(input) = stream.try_clone() else {
                        continue;
                    };
                    if let Ok(child) = command
                        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(input)))
                        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                            stream,
                        )))
                        .stderr(log)
                        .spawn()
                    {
                        sessions.push(child);
                    }
                }
                for mut child in sessions {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            })
        };
        let server = Sshd {
            stop,
            acceptor: Some(acceptor),
            dir,
            port,
            config,
        };
        let host = fs::read_to_string(server.dir.join("host_key.pub")).expect("host key");
        fs::write(
            server.known_hosts(),
            format!("127.0.0.1,[127.0.0.1]:{port} {host}"),
        )
        .expect("known_hosts");
        server
    }

    /// Set the `extra` lines of its sshd_config anew: each connection's
    /// sshd (inetd mode) reads it.
    pub fn reconfigure(&self, extra: &str) {
        fs::write(
            self.dir.join("sshd_config"),
            format!("{}{extra}", self.config),
        )
        .expect("sshd_config");
    }

    /// Give the server a host certificate for `127.0.0.1` from a CA of
    /// its own, and make its known_hosts trust that CA
    /// (`@cert-authority`) instead of naming the host key.
    pub fn certify_host(&self, env: &TestEnv) {
        run_ok(
            env.command("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "host-ca", "-f"])
                .arg(self.dir.join("host_ca")),
        );
        run_ok(
            env.command("ssh-keygen")
                .args(["-q", "-s"])
                .arg(self.dir.join("host_ca"))
                .args(["-I", "test-host", "-h", "-n", "127.0.0.1"])
                .arg(self.dir.join("host_key.pub")),
        );
        self.reconfigure(&format!(
            "HostCertificate {}\n",
            self.dir.join("host_key-cert.pub").display()
        ));
        let ca = fs::read_to_string(self.dir.join("host_ca.pub")).expect("CA key");
        fs::write(
            self.known_hosts(),
            format!("@cert-authority 127.0.0.1,[127.0.0.1]:{} {ca}", self.port),
        )
        .expect("known_hosts");
    }

    /// The user [`Sshd::login`] logs in as: the current one.
    pub fn user() -> String {
        std::env::var("USER").unwrap_or_else(|_| {
            if rustix::process::geteuid().is_root() {
                "root".into()
            } else {
                panic!("set USER")
            }
        })
    }

    /// Let these public keys (OpenSSH lines) log in.
    pub fn authorize(&self, lines: &str) {
        fs::write(self.dir.join("authorized_keys"), lines).expect("authorized_keys");
    }

    /// A `known_hosts` file naming this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `ssh` to this server as the current user, running `echo logged-in`,
    /// with keys only from `SSH_AUTH_SOCK` and nothing read from the
    /// user's own ~/.ssh.
    pub fn login(&self, env: &TestEnv, auth_sock: &Path) -> Command {
        let user = Sshd::user();
        let mut cmd = env.command("ssh");
        cmd.env("SSH_AUTH_SOCK", auth_sock)
            .args(["-F", "/dev/null", "-p", &self.port.to_string()])
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
            ])
            .arg(format!(
                "IdentityFile={}",
                self.dir.join("no-such-key").display()
            ))
            .arg(format!("{user}@127.0.0.1"))
            .args(["echo", "logged-in"]);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A process's resident memory, in KiB, for the benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct Resident {
    /// Everything resident (VmRSS), shared library and program pages
    /// included: how many of those are mapped depends on the page cache
    /// (whole large folios are mapped at once), so it varies by some
    /// hundreds of KiB between runs of the same binary.
    pub total: u64,
    /// Memory of this process alone (RssAnon: heap, stacks, written data).
    pub private: u64,
    /// Pages of the program's own file mapped (its code and read-only
    /// data): with `private`, what the process itself brings; the rest
    /// of `total` is shared libraries.
    pub program: u64,
}

impl Resident {
    /// Read `pid`'s figures from /proc.
    pub fn of(pid: u32) -> Resident {
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).expect("the process's status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("the process's program");
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("the process's maps");
        // A mapping's header line ends with its path; its Rss follows.
        let mut ours = false;
        let mut program = 0;
        for line in smaps.lines() {
            if let Some(kib) = line.strip_prefix("Rss:") {
                if ours {
                    program += kib
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0);
                }
            } else if line
                .split_whitespace()
                .next()
                .is_some_and(|f| f.contains('-'))
            {
                ours = line.ends_with(exe.to_string_lossy().as_ref());
            }
        }
        Resident {
            total: field("VmRSS:"),
            private: field("RssAnon:"),
            program,
        }
    }
}

/// The workspace's root directory (scripts, units).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_owned()
}

/// OpenSSH's own `ssh-agent`, for side-by-side runs; killed when dropped.
#[derive(Debug)]
pub struct OpensshAgent {
    child: std::process::Child,
    socket: PathBuf,
}

impl OpensshAgent {
    /// Start `ssh-agent -D` on a socket in `env`, with `env`'s environment
    /// (so it sees the same `SSH_ASKPASS` as `meshd`).
    pub fn start(env: &TestEnv) -> OpensshAgent {
        require_tool("ssh-agent", "openssh-client");
        let socket = env.root().join(format!("{}.sock", unique("openssh-agent")));
        let mut child = env
            .command("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        // It prints its SSH_AUTH_SOCK line once it listens (the socket's
        // file exists a moment earlier, between bind and listen).
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("ssh-agent's first line");
        assert!(
            line.starts_with("SSH_AUTH_SOCK="),
            "ssh-agent said {line:?}"
        );
        OpensshAgent { child, socket }
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for OpensshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// `meshd`'s SSH agent socket.
    pub fn ssh_auth_sock(&self) -> PathBuf {
        self.mesh_runtime_dir().join("ssh-agent.sock")
    }

    /// Whether gpg lists this certificate as a secret key (`gpg -K`),
    /// without ever starting an agent.
    pub fn gpg_has_secret_key(&self, fingerprint: &str) -> bool {
        let out = self
            .command("gpg")
            .args(["--batch", "--no-autostart", "--with-colons", "-K"])
            .output()
            .expect("gpg runs");
        stdout(&out).contains(fingerprint)
    }

    /// The pid of the running meshd, as `mesh status --json` reports it.
    pub fn meshd_pid(&self) -> u32 {
        let status = self.mesh_json(&["status"]);
        u32::try_from(status["pid"].as_u64().expect("a pid")).expect("a pid fits")
    }

    /// The public keys `meshd`'s agent serves (`ssh-add -L`), one a line.
    pub fn agent_keys(&self) -> String {
        let out = self
            .command("ssh-add")
            .env("SSH_AUTH_SOCK", self.ssh_auth_sock())
            .arg("-L")
            .output()
            .expect("ssh-add runs");
        stdout(&out)
    }
}
