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

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use mesh_e2e::bench::{Figures, keygen, measure_ssh, sign_request, ssh_call as call};
use mesh_e2e::{TestEnv, run_ok};

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
    let (child, socket, took) = mesh_e2e::bench::start_agent(env, which);
    let name = if which == "openssh" {
        "ssh-agent"
    } else {
        "meshd"
    };
    (
        Agent {
            name,
            child,
            socket,
        },
        took,
    )
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
        "{:<30} {:>7} {:>10} {}",
        "workload",
        "clients",
        "agent",
        Figures::header("x OpenSSH")
    );
    for (label, body, expect, per_client) in &workloads {
        for clients in [1, 8] {
            let theirs = measure_ssh(&openssh.socket, body, *expect, clients, *per_client);
            let ours = measure_ssh(&meshd.socket, body, *expect, clients, *per_client);
            for (agent, f) in [(openssh.name, &theirs), (meshd.name, &ours)] {
                println!("{label:<30} {clients:>7} {agent:>10} {}", f.cells(&theirs));
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
