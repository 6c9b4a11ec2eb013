//! meshd's gpg-agent frontend against the real gpg-agent, side by side in
//! one run, with the same keys:
//!
//! ```text
//! cargo build --release --workspace --bins
//! MESH_BIN_DIR=$PWD/target/release cargo bench -p mesh-e2e --bench gpg_agent
//! ```
//!
//! Keys are made by gpg and its real agent (Ed25519 and RSA-3072, no
//! passphrase), then exported into a Mesh account, so both agents hold
//! the same secrets. The client speaks Assuan the way gpg signs (SIGKEY,
//! SETHASH, PKSIGN on one connection). Printed: PKSIGN operations per
//! second, p50 and p99 for Ed25519 at 1 and 4 clients and RSA-3072 at 1,
//! the wall time of `gpg --detach-sign`, and resident memory. No
//! assertion: the figures are read, not checked.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use mesh_e2e::{MeshService, TestEnv, run_ok, stdout};

fn gpg(env: &TestEnv, args: &[&str]) -> std::process::Output {
    run_ok(
        env.command("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args),
    )
}

/// Make a key with gpg; return (fingerprint, keygrip of the signing key).
fn make_key(env: &TestEnv, uid: &str, algo: &str) -> (String, String) {
    gpg(env, &["--quick-gen-key", uid, algo, "sign", "0"]);
    let listing = stdout(&gpg(env, &["--with-colons", "--with-keygrip", "-K", uid]));
    let fpr = listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .expect("fpr")
        .trim_end_matches(':')
        .to_owned();
    let grip = listing
        .lines()
        .find_map(|l| l.strip_prefix("grp:::::::::"))
        .expect("grp")
        .trim_end_matches(':')
        .to_owned();
    (fpr, grip)
}

fn socket(env: &TestEnv) -> PathBuf {
    PathBuf::from(
        stdout(&run_ok(
            env.command("gpgconf").args(["--list-dirs", "agent-socket"]),
        ))
        .trim(),
    )
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(socket: &Path) -> Client {
        let writer = UnixStream::connect(socket).expect("connects");
        let mut client = Client {
            reader: BufReader::new(writer.try_clone().expect("clone")),
            writer,
        };
        client.reply();
        client
    }

    /// Read up to OK (panics on ERR); return the D payload's first line.
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

    fn call(&mut self, line: &str) -> String {
        self.writer.write_all(line.as_bytes()).expect("writes");
        self.writer.write_all(b"\n").expect("writes");
        self.reply()
    }

    fn sign(&mut self, grip: &str, digest_hex: &str) {
        self.call(&format!("SIGKEY {grip}"));
        self.call(&format!("SETHASH 8 {digest_hex}"));
        let sig = self.call("PKSIGN");
        assert!(sig.contains("sig-val"));
    }
}

struct Figures {
    ops: f64,
    p50: Duration,
    p99: Duration,
}

fn measure(socket: &Path, grip: &str, clients: usize, per_client: usize) -> Figures {
    let barrier = Barrier::new(clients);
    let digest = "AB".repeat(32);
    let mut latencies = Vec::new();
    let mut wall = Duration::ZERO;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                let (barrier, digest) = (&barrier, &digest);
                scope.spawn(move || {
                    let mut client = Client::connect(socket);
                    for _ in 0..per_client.div_ceil(10) {
                        client.sign(grip, digest);
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let mut mine = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        client.sign(grip, digest);
                        mine.push(t.elapsed());
                    }
                    (start, Instant::now(), mine)
                })
            })
            .collect();
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for thread in threads {
            let (start, end, mine) = thread.join().expect("client");
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
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn median_sign_ms(env: &TestEnv, fpr: &str, runs: usize) -> f64 {
    let file = env.root().join("bench-message");
    std::fs::write(&file, vec![b'x'; 4096]).expect("message");
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            run_ok(
                env.command("gpg")
                    .args([
                        "--batch",
                        "--no-autostart",
                        "--yes",
                        "-u",
                        fpr,
                        "--detach-sign",
                    ])
                    .arg(&file),
            );
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    // The real agent, with keys gpg made.
    let real = TestEnv::new();
    let (ed_fpr, ed_grip) = make_key(&real, "Ed <ed@example.org>", "ed25519");
    let (rsa_fpr, rsa_grip) = make_key(&real, "Rsa <rsa@example.org>", "rsa3072");
    let real_socket = socket(&real);
    let real_pid: u32 = Client::connect(&real_socket)
        .call("GETINFO pid")
        .trim()
        .parse()
        .expect("pid");

    // meshd, with the same keys imported into a Mesh account.
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mesh = TestEnv::device(&service);
    mesh.mesh(&["account", "create", "alice@example.com", "--name", "bench"]);
    for fpr in [&ed_fpr, &rsa_fpr] {
        let exported = gpg(&real, &["--armor", "--export-secret-keys", fpr]);
        let file = mesh.root().join(format!("{fpr}.asc"));
        std::fs::write(&file, &exported.stdout).expect("export");
        mesh.mesh(&["openpgp", "import", file.to_str().expect("utf-8")]);
    }
    let mesh_socket = socket(&mesh);
    let mesh_pid: u32 = Client::connect(&mesh_socket)
        .call("GETINFO pid")
        .trim()
        .parse()
        .expect("pid");
    mesh_e2e::wait_until("gpg sees the imported keys", || {
        let out = mesh
            .command("gpg")
            .args(["--batch", "--no-autostart", "--with-colons", "-K"])
            .output()
            .expect("gpg");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&ed_fpr) && text.contains(&rsa_fpr)
    });

    println!(
        "{:<22} {:>7} {:>10} {:>10} {:>9} {:>9} {:>11}",
        "PKSIGN", "clients", "agent", "ops/s", "p50 us", "p99 us", "x gpg-agent"
    );
    for (label, grip, clients, per_client) in [
        ("ed25519", &ed_grip, 1, 2000),
        ("ed25519", &ed_grip, 4, 1000),
        ("rsa-3072", &rsa_grip, 1, 100),
    ] {
        let theirs = measure(&real_socket, grip, clients, per_client);
        let ours = measure(&mesh_socket, grip, clients, per_client);
        for (name, f) in [("gpg-agent", &theirs), ("meshd", &ours)] {
            println!(
                "{label:<22} {clients:>7} {name:>10} {:>10.0} {:>9.1} {:>9.1} {:>11.2}",
                f.ops,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.ops / theirs.ops
            );
        }
    }
    println!();
    let theirs = median_sign_ms(&real, &ed_fpr, 21);
    let ours = median_sign_ms(&mesh, &ed_fpr, 21);
    println!(
        "gpg --detach-sign (ed25519, 4 KiB), median of 21: gpg-agent {theirs:.1} ms, meshd {ours:.1} ms ({:.2} x)",
        theirs / ours
    );
    let (theirs, ours) = (
        mesh_e2e::Resident::of(real_pid),
        mesh_e2e::Resident::of(mesh_pid),
    );
    println!(
        "resident memory: gpg-agent {} KiB ({} private), meshd {} KiB ({} private; meshd also serves SSH and the Mesh)",
        theirs.total, theirs.private, ours.total, ours.private
    );
    let _ = real
        .command("gpgconf")
        .args(["--kill", "gpg-agent"])
        .status();
}
