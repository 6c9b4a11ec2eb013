//! meshd against the two programs it replaces, OpenSSH's `ssh-agent` and
//! GnuPG's `gpg-agent`, side by side in one run, with an account loaded:
//!
//! ```text
//! cargo build --release --workspace --bins
//! MESH_BIN_DIR=$PWD/target/release cargo bench -p mesh-e2e --bench agents
//! ```
//!
//! The same Ed25519 SSH key is in `ssh-agent` (`ssh-add`) and in the
//! Mesh account (`mesh ssh import`); the same Ed25519 OpenPGP key in the
//! real gpg-agent (made by gpg) and in the account (`mesh openpgp
//! import`). meshd runs as a user's would: an account on a real
//! `mesh-service`, syncing, both frontends in use. Printed, at one client
//! (what a person feels: an ssh login, a signed commit): request-identities
//! and Ed25519 signing against ssh-agent, PKSIGN against gpg-agent, each
//! with operations per second, p50, p99 and meshd's throughput as a
//! multiple of the peer's; then resident memory of meshd against
//! ssh-agent and gpg-agent together, total (VmRSS) and private (RssAnon).
//! No assertion: the figures are read, not checked.

use std::path::Path;

use mesh_e2e::bench::{
    Figures, gpg, gpg_agent_pid, gpg_key, gpg_socket, keygen, measure_pksign, measure_ssh,
    sign_request,
};
use mesh_e2e::{MeshService, OpensshAgent, Resident, TestEnv, run_ok};

fn row(label: &str, peer: &str, theirs: Figures, ours: Figures) {
    for (agent, f) in [(peer, theirs), ("meshd", ours)] {
        println!(
            "{label:<22} {agent:>10} {:>10.0} {:>9.1} {:>9.1} {:>8.2}",
            f.ops,
            Figures::us(f.p50),
            Figures::us(f.p99),
            f.ops / theirs.ops
        );
    }
}

fn main() {
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
    let mesh = TestEnv::device(&service);
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

    println!(
        "{:<22} {:>10} {:>10} {:>9} {:>9} {:>8}",
        "one client", "agent", "ops/s", "p50 us", "p99 us", "x peer"
    );
    let list = |socket: &Path| measure_ssh(socket, &[11], 12, 1, 4000);
    row(
        "request-identities",
        "ssh-agent",
        list(&ssh_socket),
        list(&mesh_ssh),
    );
    let body = sign_request(&key.with_extension("pub"), 0);
    let sign = |socket: &Path| measure_ssh(socket, &body, 14, 1, 2000);
    row(
        "sign ed25519",
        "ssh-agent",
        sign(&ssh_socket),
        sign(&mesh_ssh),
    );
    let pksign = |socket: &Path| measure_pksign(socket, &grip, 1, 2000);
    row(
        "gpg PKSIGN ed25519",
        "gpg-agent",
        pksign(&gpg_socket_peer),
        pksign(&mesh_gpg),
    );

    let (ssh, gpg_rss, ours) = (
        Resident::of(ssh_agent.pid()),
        Resident::of(gpg_agent),
        Resident::of(meshd),
    );
    println!();
    println!(
        "resident memory, KiB (total / private): ssh-agent {} / {}, gpg-agent {} / {}, \
         together {} / {}; meshd with the account and both frontends in use {} / {} \
         ({:.2} x / {:.2} x the two together)",
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
    );
    drop(ssh_agent);
    let _ = peer
        .command("gpgconf")
        .args(["--kill", "gpg-agent"])
        .status();
}
