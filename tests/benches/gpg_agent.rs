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

use std::time::Instant;

use mesh_e2e::bench::{Figures, gpg, gpg_agent_pid, gpg_key, gpg_socket, measure_pksign};
use mesh_e2e::{MeshService, TestEnv, run_ok};

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
    let (ed_fpr, ed_grip) = gpg_key(&real, "Ed <ed@example.org>", "ed25519");
    let (rsa_fpr, rsa_grip) = gpg_key(&real, "Rsa <rsa@example.org>", "rsa3072");
    let real_socket = gpg_socket(&real);
    let real_pid = gpg_agent_pid(&real_socket);

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
    let mesh_socket = gpg_socket(&mesh);
    let mesh_pid = gpg_agent_pid(&mesh_socket);
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
        "{:<22} {:>7} {:>10} {}",
        "PKSIGN",
        "clients",
        "agent",
        Figures::header("x gpg-agent")
    );
    for (label, grip, clients, per_client) in [
        ("ed25519", &ed_grip, 1, 2000),
        ("ed25519", &ed_grip, 4, 1000),
        ("rsa-3072", &rsa_grip, 1, 100),
    ] {
        let theirs = measure_pksign(&real_socket, grip, clients, per_client);
        let ours = measure_pksign(&mesh_socket, grip, clients, per_client);
        for (name, f) in [("gpg-agent", &theirs), ("meshd", &ours)] {
            println!("{label:<22} {clients:>7} {name:>10} {}", f.cells(&theirs));
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
