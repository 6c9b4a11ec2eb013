//! meshd against the two programs it replaces, OpenSSH's `ssh-agent` and
//! GnuPG's `gpg-agent`, side by side, five runs back to back; each run
//! says which of the release's targets it meets, and the last lines which
//! targets every run met:
//!
//! ```text
//! cargo build --release --workspace --bins
//! MESH_BIN_DIR=$PWD/target/release cargo bench -p mesh-e2e --bench peers
//! ```
//!
//! The same Ed25519 SSH key is in `ssh-agent` and in the Mesh account, the
//! same Ed25519 OpenPGP key in the real gpg-agent and in the account;
//! meshd runs as a user's would (an account on a real `mesh-service`,
//! syncing, both frontends in use). The targets:
//!
//! - at one client, `request-identities` p50 no slower than ssh-agent's,
//!   Ed25519 signing at least 10 times ssh-agent's throughput, gpg's
//!   PKSIGN (Ed25519) at least 5 times gpg-agent's, and p99 no worse than
//!   ssh-agent's (request-identities and signing);
//! - at 8 clients, signing at least 1.8 times meshd's own one-client
//!   throughput;
//! - start to first answer (median of 7, fresh homes) no slower than
//!   ssh-agent's;
//! - resident memory of meshd no more than ssh-agent's and gpg-agent's
//!   together (private memory printed too);
//! - 1,000 clients connected at once, each with a request, all answered,
//!   on meshd's SSH and gpg sockets (the peers' counts printed beside).
//!
//! No assertion: the machine is shared and noisy; the figures are read.

use std::path::Path;
use std::time::Duration;

use mesh_e2e::bench::{
    Figures, allow_descriptors, burst, gpg, gpg_agent_pid, gpg_key, gpg_socket,
    identities_answered, keygen, measure_pksign, measure_ssh, sign_request, start_agent,
    version_answered,
};
use mesh_e2e::{MeshService, OpensshAgent, Resident, TestEnv, run_ok};

/// Runs, back to back.
const RUNS: usize = 5;

/// Clients at once in the burst.
const BURST: usize = 1000;

/// The targets, in the order each run checks them.
const TARGETS: [&str; 9] = [
    "request-identities p50 <= ssh-agent's",
    "sign ed25519 >= 10 x ssh-agent",
    "gpg PKSIGN ed25519 >= 5 x gpg-agent",
    "p99 at one client <= ssh-agent's",
    "sign at 8 clients >= 1.8 x one client",
    "start to first answer <= ssh-agent's",
    "resident memory <= ssh-agent + gpg-agent",
    "1,000 clients answered (SSH)",
    "1,000 clients answered (gpg)",
];

fn row(label: &str, peer: &str, theirs: Figures, ours: Figures) {
    for (agent, f) in [(peer, theirs), ("meshd", ours)] {
        println!("{label:<24} {agent:>10} {}", f.cells(&theirs));
    }
}

/// Median start to first answer of 7 starts, each in a fresh home.
fn start_median(which: &str) -> Duration {
    let mut times: Vec<Duration> = (0..7)
        .map(|_| {
            let home = TestEnv::new();
            let (mut child, _, took) = start_agent(&home, which);
            let _ = child.kill();
            let _ = child.wait();
            took
        })
        .collect();
    times.sort();
    times[3]
}

fn main() {
    allow_descriptors(BURST as u64 * 2 + 256);
    // The peers, with keys the real tools made.
    let peer = TestEnv::new();
    let key = keygen(&peer, "id_ed25519", &["-t", "ed25519"]);
    let ssh_agent = OpensshAgent::start(&peer);
    let ssh_socket = ssh_agent.socket().to_owned();
    run_ok(
        peer.command("ssh-add")
            .env("SSH_AUTH_SOCK", &ssh_socket)
            .arg("-q")
            .arg(&key),
    );
    let (fpr, grip) = gpg_key(&peer, "Ed <ed@example.org>", "ed25519");
    let gpg_socket_peer = gpg_socket(&peer);
    let gpg_agent = gpg_agent_pid(&gpg_socket_peer);

    // meshd with an account holding the same keys.
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let mut mesh = TestEnv::device(&service);
    // A user's sync interval (the tests' 200 ms would be five syncs a
    // second beside every figure).
    mesh.set_var("MESH_SYNC_INTERVAL_MS", "2000");
    mesh.mesh(&["account", "create", "alice@example.com", "--name", "bench"]);
    mesh.mesh(&[
        "ssh",
        "import",
        key.to_str().expect("utf-8"),
        "--name",
        "bench",
    ]);
    let exported = gpg(&peer, &["--armor", "--export-secret-keys", &fpr]);
    let file = mesh.root().join("key.asc");
    std::fs::write(&file, &exported.stdout).expect("export");
    mesh.mesh(&["openpgp", "import", file.to_str().expect("utf-8")]);
    let meshd = mesh.meshd_pid();
    let mesh_ssh = mesh.ssh_auth_sock();
    let mesh_gpg = gpg_socket(&mesh);
    let body = sign_request(&key.with_extension("pub"), 0);

    let mut met: Vec<[bool; TARGETS.len()]> = Vec::with_capacity(RUNS);
    for run in 0..RUNS {
        println!("\n== run {} of {RUNS}", run + 1);
        println!("{:<24} {:>10} {}", "", "agent", Figures::header("x peer"));
        let list = |socket: &Path| measure_ssh(socket, &[11], 12, 1, 4000);
        let (list_theirs, list_ours) = (list(&ssh_socket), list(&mesh_ssh));
        row("request-identities", "ssh-agent", list_theirs, list_ours);
        let sign = |socket: &Path, clients| measure_ssh(socket, &body, 14, clients, 2000);
        let (sign_theirs, sign_ours) = (sign(&ssh_socket, 1), sign(&mesh_ssh, 1));
        row("sign ed25519", "ssh-agent", sign_theirs, sign_ours);
        let pksign = |socket: &Path| measure_pksign(socket, &grip, 1, 2000);
        let (pk_theirs, pk_ours) = (pksign(&gpg_socket_peer), pksign(&mesh_gpg));
        row("gpg PKSIGN ed25519", "gpg-agent", pk_theirs, pk_ours);
        let eight = sign(&mesh_ssh, 8);
        println!(
            "{:<24} {:>10} {} x its one client",
            "sign ed25519, 8 clients",
            "meshd",
            eight.cells(&sign_ours)
        );

        let (start_theirs, start_ours) = (start_median("openssh"), start_median("meshd"));
        println!(
            "start to first answer: ssh-agent {:.1} ms, meshd {:.1} ms (median of 7)",
            start_theirs.as_secs_f64() * 1e3,
            start_ours.as_secs_f64() * 1e3
        );

        let (ssh, gpg_rss, ours) = (
            Resident::of(ssh_agent.pid()),
            Resident::of(gpg_agent),
            Resident::of(meshd),
        );
        println!(
            "resident memory, KiB (total / private): ssh-agent {} / {}, gpg-agent {} / {}, \
             together {} / {}; meshd {} / {} ({:.2} x / {:.2} x the two together), \
             of which its own program's pages {} (ssh-agent's {}, gpg-agent's {})",
            ssh.total,
            ssh.private,
            gpg_rss.total,
            gpg_rss.private,
            ssh.total + gpg_rss.total,
            ssh.private + gpg_rss.private,
            ours.total,
            ours.private,
            ours.total as f64 / (ssh.total + gpg_rss.total) as f64,
            ours.private as f64 / (ssh.private + gpg_rss.private) as f64,
            ours.program,
            ssh.program,
            gpg_rss.program,
        );

        let patience = Duration::from_secs(30);
        let identities = &[0u8, 0, 0, 1, 11][..];
        let version = b"GETINFO version\n";
        let answered = [
            burst(
                &ssh_socket,
                BURST,
                identities,
                patience,
                identities_answered,
            ),
            burst(&mesh_ssh, BURST, identities, patience, identities_answered),
            burst(&gpg_socket_peer, BURST, version, patience, version_answered),
            burst(&mesh_gpg, BURST, version, patience, version_answered),
        ];
        println!(
            "{BURST} clients at once, answered: ssh-agent {}, meshd (SSH) {}, gpg-agent {}, meshd (gpg) {}",
            answered[0], answered[1], answered[2], answered[3]
        );

        let verdicts = [
            list_ours.p50 <= list_theirs.p50,
            sign_ours.ops >= 10.0 * sign_theirs.ops,
            pk_ours.ops >= 5.0 * pk_theirs.ops,
            list_ours.p99 <= list_theirs.p99 && sign_ours.p99 <= sign_theirs.p99,
            eight.ops >= 1.8 * sign_ours.ops,
            start_ours <= start_theirs,
            ours.total <= ssh.total + gpg_rss.total,
            answered[1] == BURST,
            answered[3] == BURST,
        ];
        for (ok, target) in verdicts.iter().zip(TARGETS) {
            println!("  {:<8} {target}", if *ok { "met" } else { "NOT met" });
        }
        met.push(verdicts);
    }

    println!("\n== every run");
    for (i, target) in TARGETS.iter().enumerate() {
        let count = met.iter().filter(|run| run[i]).count();
        println!("  {count} of {RUNS} runs met: {target}");
    }
    drop(ssh_agent);
    let _ = peer
        .command("gpgconf")
        .args(["--kill", "gpg-agent"])
        .status();
    drop(service);
}
