//! meshd's SSH agent against OpenSSH's `ssh-agent`, side by side in one
//! run, same keys, same client, same messages:
//!
//! ```text
//! cargo build --release --workspace --bins
//! MESH_BIN_DIR=$PWD/target/release cargo bench -p mesh-e2e --bench ssh_agent
//! ```
//!
//! The client is a plain blocking agent-protocol client on one connection
//! per thread. For request-identities (3 keys) and for signing 256 bytes
//! with Ed25519, ECDSA P-256 and RSA-3072 (rsa-sha2-512), at 1 and 8
//! concurrent clients, it prints operations per second, p50 and p99 for
//! each agent and meshd's throughput as a multiple of OpenSSH's; then
//! resident memory with 100 keys loaded (all of it, VmRSS, and the
//! process's own, RssAnon), and the time from starting the process to its
//! first answer. No assertion: this machine is shared and
//! noisy; the figures are read, not checked.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mesh_e2e::{TestEnv, bin, run_ok};

/// One agent under test.
struct Agent {
    name: &'static str,
    child: Child,
    socket: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start OpenSSH's agent or meshd in `env`; return it once it answers,
/// with the time that took.
fn start(env: &TestEnv, which: &str) -> (Agent, Duration) {
    let started = Instant::now();
    let (name, child, socket) = if which == "openssh" {
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
        ("ssh-agent", child, socket)
    } else {
        let child = env
            .command(bin("meshd"))
            .env("MESH_KEYRING", "file")
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("meshd starts");
        ("meshd", child, env.ssh_auth_sock())
    };
    loop {
        if let Ok(mut stream) = UnixStream::connect(&socket)
            && call(&mut stream, &[11]).first() == Some(&12)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} never answered"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed();
    (
        Agent {
            name,
            child,
            socket,
        },
        elapsed,
    )
}

/// Send one request body, return the answer body.
fn call(stream: &mut UnixStream, body: &[u8]) -> Vec<u8> {
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

/// SSH_AGENTC_SIGN_REQUEST for the key in a `.pub` file.
fn sign_request(public: &Path, flags: u32) -> Vec<u8> {
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

/// Figures for one workload on one agent.
struct Figures {
    ops_per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Run `per_client` requests from each of `clients` threads at once.
fn measure(socket: &Path, body: &[u8], expect: u8, clients: usize, per_client: usize) -> Figures {
    let barrier = Barrier::new(clients);
    let mut wall = Duration::ZERO;
    let mut latencies: Vec<Duration> = Vec::with_capacity(clients * per_client);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut stream = UnixStream::connect(socket).expect("connects");
                    for _ in 0..per_client.div_ceil(10) {
                        assert_eq!(call(&mut stream, body).first(), Some(&expect));
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut mine = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        let answer = call(&mut stream, body);
                        mine.push(t.elapsed());
                        assert_eq!(answer.first(), Some(&expect), "the agent refused");
                    }
                    (start, Instant::now(), mine)
                })
            })
            .collect();
        let mut first_start: Option<Instant> = None;
        let mut last_end: Option<Instant> = None;
        for thread in threads {
            let (start, end, mine) = thread.join().expect("client thread");
            first_start = Some(first_start.map_or(start, |f| f.min(start)));
            last_end = Some(last_end.map_or(end, |l| l.max(end)));
            latencies.extend(mine);
        }
        wall = last_end.expect("ran") - first_start.expect("ran");
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        ops_per_second: latencies.len() as f64 / wall.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn keygen(env: &TestEnv, name: &str, args: &[&str]) -> PathBuf {
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

fn add(env: &TestEnv, agent: &Agent, keys: &[PathBuf]) {
    for chunk in keys.chunks(50) {
        run_ok(
            env.command("ssh-add")
                .env("SSH_AUTH_SOCK", &agent.socket)
                .arg("-q")
                .args(chunk),
        );
    }
}

fn main() {
    let env = TestEnv::new();
    let ed = keygen(&env, "ed25519", &["-t", "ed25519"]);
    let ec = keygen(&env, "ecdsa", &["-t", "ecdsa", "-b", "256"]);
    let rsa = keygen(&env, "rsa", &["-t", "rsa", "-b", "3072"]);
    let keys = [ed.clone(), ec.clone(), rsa.clone()];
    let (openssh, _) = start(&env, "openssh");
    let (meshd, _) = start(&env, "meshd");
    for agent in [&openssh, &meshd] {
        add(&env, agent, &keys);
    }

    let pubkey = |p: &Path| p.with_extension("pub");
    let workloads: [(&str, Vec<u8>, u8, usize); 4] = [
        ("request-identities (3 keys)", vec![11], 12, 4000),
        ("sign ed25519", sign_request(&pubkey(&ed), 0), 14, 2000),
        ("sign ecdsa-p256", sign_request(&pubkey(&ec), 0), 14, 1000),
        (
            "sign rsa-3072 (sha2-512)",
            sign_request(&pubkey(&rsa), 4),
            14,
            100,
        ),
    ];
    println!(
        "{:<30} {:>7} {:>10} {:>12} {:>9} {:>9} {:>8}",
        "workload", "clients", "agent", "ops/s", "p50 us", "p99 us", "x OpenSSH"
    );
    for (label, body, expect, per_client) in &workloads {
        for clients in [1, 8] {
            let theirs = measure(&openssh.socket, body, *expect, clients, *per_client);
            let ours = measure(&meshd.socket, body, *expect, clients, *per_client);
            for (agent, f) in [(openssh.name, &theirs), (meshd.name, &ours)] {
                println!(
                    "{label:<30} {clients:>7} {agent:>10} {:>12.0} {:>9.1} {:>9.1} {:>8.2}",
                    f.ops_per_second,
                    us(f.p50),
                    us(f.p99),
                    f.ops_per_second / theirs.ops_per_second
                );
            }
        }
    }
    drop(openssh);
    drop(meshd);

    // Resident memory with 100 keys, in fresh agents.
    let many: Vec<PathBuf> = (0..100)
        .map(|i| keygen(&env, &format!("many-{i:03}"), &["-t", "ed25519"]))
        .collect();
    let memory_env = TestEnv::new();
    let (openssh, _) = start(&memory_env, "openssh");
    let (meshd, _) = start(&memory_env, "meshd");
    let mut rss = Vec::new();
    for agent in [&openssh, &meshd] {
        let before = mesh_e2e::Resident::of(agent.child.id());
        add(&env, agent, &many);
        let mut stream = UnixStream::connect(&agent.socket).expect("connects");
        for key in &many {
            assert_eq!(call(&mut stream, &sign_request(&pubkey(key), 0))[0], 14);
        }
        rss.push((agent.name, before, mesh_e2e::Resident::of(agent.child.id())));
    }
    println!();
    for (name, before, after) in &rss {
        println!(
            "resident memory {name:>10}: {} KiB at start, {} KiB with 100 keys ({:.2} x OpenSSH); private {} KiB at start, {} KiB with 100 keys ({:.2} x)",
            before.total,
            after.total,
            after.total as f64 / rss[0].2.total as f64,
            before.private,
            after.private,
            after.private as f64 / rss[0].2.private as f64,
        );
    }
    drop(openssh);
    drop(meshd);

    // Start to first answer, median of 7, each in a fresh home.
    println!();
    for which in ["openssh", "meshd"] {
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let home = TestEnv::new();
                let (agent, took) = start(&home, which);
                drop(agent);
                took
            })
            .collect();
        times.sort();
        println!(
            "start to first answer {which:>8}: median {:.1} ms (min {:.1}, max {:.1})",
            times[3].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[6].as_secs_f64() * 1e3
        );
    }
}
