//! What the benchmarks share: agent-protocol and Assuan clients, the
//! timing loop, and making keys with the real tools. Benchmarks print
//! figures; nothing here asserts on time.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::{TestEnv, run_ok, stdout};

/// Send one SSH agent request body, return the answer body.
pub fn ssh_call(stream: &mut UnixStream, body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).expect("request written");
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("answer length");
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).expect("answer");
    answer
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// SSH_AGENTC_SIGN_REQUEST of 256 bytes for the key in a `.pub` file.
pub fn sign_request(public: &Path, flags: u32) -> Vec<u8> {
    let line = std::fs::read_to_string(public).expect("public key");
    let blob = decode_base64(line.split_whitespace().nth(1).expect("key blob"));
    let mut body = vec![13];
    string(&mut body, &blob);
    let data: Vec<u8> = (0..=255u8).collect();
    string(&mut body, &data);
    body.extend_from_slice(&flags.to_be_bytes());
    body
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// An Assuan client speaking to a gpg agent.
#[derive(Debug)]
pub struct Assuan {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Assuan {
    /// Connect and read the greeting.
    pub fn connect(socket: &Path) -> Assuan {
        let writer = UnixStream::connect(socket).expect("connects");
        let mut client = Assuan {
            reader: BufReader::new(writer.try_clone().expect("clone")),
            writer,
        };
        client.reply();
        client
    }

    /// Read up to OK (panics on ERR); return the D payload.
    fn reply(&mut self) -> String {
        let mut data = String::new();
        loop {
            let mut line = Vec::new();
            self.reader.read_until(b'\n', &mut line).expect("reads");
            let text = String::from_utf8_lossy(&line).into_owned();
            if text.starts_with("OK") {
                return data;
            }
            assert!(!text.starts_with("ERR"), "agent said {text}");
            if let Some(d) = text.strip_prefix("D ") {
                data.push_str(d.trim_end());
            }
        }
    }

    /// Send one command line and read its answer.
    pub fn call(&mut self, line: &str) -> String {
        self.writer.write_all(line.as_bytes()).expect("writes");
        self.writer.write_all(b"\n").expect("writes");
        self.reply()
    }

    /// Sign a SHA-256 digest as gpg does: SIGKEY, SETHASH, PKSIGN.
    pub fn sign(&mut self, grip: &str, digest_hex: &str) {
        self.call(&format!("SIGKEY {grip}"));
        self.call(&format!("SETHASH 8 {digest_hex}"));
        let sig = self.call("PKSIGN");
        assert!(sig.contains("sig-val"));
    }
}

/// Throughput and latency of one workload on one agent.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Operations per second, all clients together.
    pub ops: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Figures {
    /// Microseconds, for printing.
    pub fn us(d: Duration) -> f64 {
        d.as_secs_f64() * 1e6
    }

    /// Throughput, p50 and p99 in µs, and the multiple of `base`'s
    /// throughput: the columns under [`Figures::header`].
    pub fn cells(&self, base: &Figures) -> String {
        format!(
            "{:>12.0} {:>9.1} {:>9.1} {:>11.2}",
            self.ops,
            Self::us(self.p50),
            Self::us(self.p99),
            self.ops / base.ops
        )
    }

    /// The headings of [`Figures::cells`], the multiple's last.
    pub fn header(multiple: &str) -> String {
        format!(
            "{:>12} {:>9} {:>9} {multiple:>11}",
            "ops/s", "p50 us", "p99 us"
        )
    }
}

/// Run `per_client` operations from each of `clients` threads at once
/// (after a tenth as many to warm up), each thread on a connection of its
/// own made by `connect`.
pub fn measure<C>(
    clients: usize,
    per_client: usize,
    connect: impl Fn() -> C + Sync,
    op: impl Fn(&mut C) + Sync,
) -> Figures {
    let barrier = Barrier::new(clients);
    let mut latencies: Vec<Duration> = Vec::with_capacity(clients * per_client);
    let mut wall = Duration::ZERO;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, connect, op) = (&barrier, &connect, &op);
                scope.spawn(move || {
                    let mut connection = connect();
                    for _ in 0..per_client.div_ceil(10) {
                        op(&mut connection);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut mine = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        op(&mut connection);
                        mine.push(t.elapsed());
                    }
                    (start, Instant::now(), mine)
                })
            })
            .collect();
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for thread in threads {
            let (start, end, mine) = thread.join().expect("client thread");
            first = Some(first.map_or(start, |f| f.min(start)));
            last = Some(last.map_or(end, |l| l.max(end)));
            latencies.extend(mine);
        }
        wall = last.expect("ran") - first.expect("ran");
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        ops: latencies.len() as f64 / wall.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// SSH agent requests of `body` on `socket`, each answered with `expect`.
pub fn measure_ssh(
    socket: &Path,
    body: &[u8],
    expect: u8,
    clients: usize,
    per_client: usize,
) -> Figures {
    measure(
        clients,
        per_client,
        || UnixStream::connect(socket).expect("connects"),
        |stream| assert_eq!(ssh_call(stream, body).first(), Some(&expect), "refused"),
    )
}

/// gpg's signing round trips with the key `grip` on `socket`.
pub fn measure_pksign(socket: &Path, grip: &str, clients: usize, per_client: usize) -> Figures {
    let digest = "AB".repeat(32);
    measure(
        clients,
        per_client,
        || Assuan::connect(socket),
        |client| client.sign(grip, &digest),
    )
}

/// Make an SSH key with ssh-keygen in `env`'s root; its path.
pub fn keygen(env: &TestEnv, name: &str, args: &[&str]) -> PathBuf {
    let path = env.root().join(name);
    run_ok(
        env.command("ssh-keygen")
            .args(["-q", "-N", "", "-C", name])
            .args(args)
            .arg("-f")
            .arg(&path),
    );
    path
}

/// gpg in `env`, no passphrase asked.
pub fn gpg(env: &TestEnv, args: &[&str]) -> std::process::Output {
    run_ok(
        env.command("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args),
    )
}

/// Make a key with gpg (and its real agent); return (fingerprint,
/// keygrip of the signing key).
pub fn gpg_key(env: &TestEnv, uid: &str, algo: &str) -> (String, String) {
    gpg(env, &["--quick-gen-key", uid, algo, "sign", "0"]);
    let listing = stdout(&gpg(env, &["--with-colons", "--with-keygrip", "-K", uid]));
    let field = |prefix: &str| {
        listing
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("a field")
            .trim_end_matches(':')
            .to_owned()
    };
    (field("fpr:::::::::"), field("grp:::::::::"))
}

/// The agent socket gpg uses in `env`.
pub fn gpg_socket(env: &TestEnv) -> PathBuf {
    PathBuf::from(
        stdout(&run_ok(
            env.command("gpgconf").args(["--list-dirs", "agent-socket"]),
        ))
        .trim(),
    )
}

/// The pid an agent on `socket` reports (`GETINFO pid`).
pub fn gpg_agent_pid(socket: &Path) -> u32 {
    Assuan::connect(socket)
        .call("GETINFO pid")
        .trim()
        .parse()
        .expect("a pid")
}

/// The SSH agent's answer to request-identities was read from `reader`.
pub fn identities_answered(reader: &mut dyn BufRead) -> bool {
    let mut len = [0u8; 4];
    let mut kind = [0u8; 1];
    reader.read_exact(&mut len).is_ok()
        && u32::from_be_bytes(len) >= 1
        && reader.read_exact(&mut kind).is_ok()
        && kind[0] == 12
}

/// A gpg agent's greeting and its answer to `GETINFO version` (data, then
/// OK) were read from `reader`.
pub fn version_answered(reader: &mut dyn BufRead) -> bool {
    let mut oks = 0;
    let mut data = false;
    let mut line = String::new();
    while oks < 2 {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        oks += usize::from(line.starts_with("OK"));
        data |= line.starts_with("D ");
    }
    data
}

/// Connect `clients` clients to `socket` at once, each sending
/// `request`, then read each one's answer with `answered`, in order,
/// closing each once answered (as a client does). A connect the agent
/// refuses (its backlog full) and an answer not read within `patience`
/// of the last connect count as unanswered. How many were answered.
pub fn burst(
    socket: &Path,
    clients: usize,
    request: &[u8],
    patience: Duration,
    answered: impl Fn(&mut dyn BufRead) -> bool,
) -> usize {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let address = SocketAddrUnix::new(socket).expect("a socket path");
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .expect("a socket");
        // Non-blocking: a full backlog is a refusal, not a wait.
        if rustix::net::connect(&fd, &address).is_err() {
            continue;
        }
        let mut stream = UnixStream::from(fd);
        if stream.set_nonblocking(false).is_ok() && stream.write_all(request).is_ok() {
            streams.push(stream);
        }
    }
    let deadline = Instant::now() + patience;
    streams
        .into_iter()
        .filter(|stream| {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            stream.set_read_timeout(Some(left)).is_ok() && answered(&mut BufReader::new(stream))
        })
        .count()
}

/// Let this process hold `fds` descriptors (up to the hard limit).
pub fn allow_descriptors(fds: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if limit.current.is_some_and(|soft| soft < fds) {
        assert!(
            hard >= fds,
            "the hard descriptor limit {hard} is under {fds}"
        );
        limit.current = Some(fds);
        setrlimit(Resource::Nofile, limit).expect("raise the descriptor limit");
    }
}

/// Start OpenSSH's agent (`openssh`) or meshd in `env`, as a user's
/// login would; return the process and its SSH agent socket once it has
/// answered a first request, with the time from the start to that answer.
pub fn start_agent(env: &TestEnv, which: &str) -> (std::process::Child, PathBuf, Duration) {
    use std::process::Stdio;
    let started = Instant::now();
    let (child, socket) = if which == "openssh" {
        let socket = env
            .root()
            .join(format!("openssh-{}.sock", std::process::id()));
        let child = env
            .command("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent starts");
        (child, socket)
    } else {
        let child = env
            .command(crate::bin("meshd"))
            .env("MESH_KEYRING", "file")
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("meshd starts");
        (child, env.ssh_auth_sock())
    };
    loop {
        if let Ok(mut stream) = UnixStream::connect(&socket)
            && ssh_call(&mut stream, &[11]).first() == Some(&12)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{which} never answered"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    (child, socket, started.elapsed())
}
