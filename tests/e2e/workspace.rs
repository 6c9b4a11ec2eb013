//! The workspace's own invariants, read from cargo: which way our crates
//! depend on each other, and one copy of each RustCrypto trait crate in
//! what we link.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use mesh_e2e::run_ok;

/// Run cargo with `args` in the workspace, offline, and return its output.
fn cargo(args: &[&str]) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run_ok(
        Command::new(cargo)
            .args(args)
            .args(["--locked", "--offline"])
            .current_dir(root),
    )
    .stdout
}

#[test]
fn dependencies_point_one_way() {
    let meta: serde_json::Value =
        serde_json::from_slice(&cargo(&["metadata", "--format-version", "1", "--no-deps"]))
            .expect("cargo metadata prints JSON");
    let ours: BTreeMap<&str, BTreeSet<&str>> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["source"].is_null())
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["path"].is_string())
                .filter_map(|d| d["name"].as_str())
                .collect();
            (p["name"].as_str().expect("name"), deps)
        })
        .collect();
    let names: BTreeSet<&str> = ours.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "mesh",
            "mesh-daemon",
            "mesh-e2e",
            "mesh-protocol",
            "mesh-service",
            "mesh-shims"
        ])
    );
    assert!(
        ours["mesh-protocol"].is_empty(),
        "protocol depends on none of ours"
    );
    for crate_ in ["mesh", "mesh-shims"] {
        assert!(
            !ours[crate_].contains("mesh-daemon"),
            "{crate_} must not depend on the daemon"
        );
    }
    assert!(
        !ours["mesh-service"].contains("mesh-daemon"),
        "the service never sees the daemon"
    );
}

/// Two versions of a trait crate would mean that types from one do not fit
/// the traits of the other (an ed25519-dalek 3 key is no `Signer` for
/// ssh-key 0.6). Only linked code counts: build scripts and dev-only
/// helpers (lalrpop, proptest) may bring their own copies.
#[test]
fn one_copy_of_each_trait_crate() {
    let tree = cargo(&[
        "tree",
        "--workspace",
        "--edges",
        "normal",
        "--duplicates",
        "--depth",
        "0",
        "--prefix",
        "none",
    ]);
    let duplicated: BTreeSet<&str> = std::str::from_utf8(&tree)
        .expect("utf-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for name in [
        "signature",
        "rand_core",
        "digest",
        "crypto-common",
        "cipher",
        "sha2",
        "ed25519-dalek",
        "curve25519-dalek",
        "elliptic-curve",
    ] {
        assert!(
            !duplicated.contains(name),
            "{name} is linked twice:\n{}",
            String::from_utf8_lossy(&tree)
        );
    }
}
