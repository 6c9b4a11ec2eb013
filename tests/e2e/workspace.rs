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
            "mesh-ipc",
            "mesh-protocol",
            "mesh-service",
            "mesh-shims"
        ])
    );
    assert!(ours["mesh-ipc"].is_empty(), "ipc depends on none of ours");
    assert_eq!(
        ours["mesh-protocol"],
        BTreeSet::from(["mesh-ipc"]),
        "protocol depends on ipc alone"
    );
    assert_eq!(
        ours["mesh-shims"],
        BTreeSet::from(["mesh-ipc"]),
        "the shims link the IPC crate and no crypto of ours"
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

/// The shims and the IPC crate they use link no cryptography at all.
#[test]
fn the_shims_link_no_crypto() {
    for package in ["mesh-ipc", "mesh-shims"] {
        let tree = String::from_utf8(cargo(&[
            "tree", "-p", package, "-e", "normal", "--prefix", "none",
        ]))
        .expect("utf-8");
        for crypto in [
            "ed25519",
            "curve25519",
            "sha2",
            "sha1",
            "aes",
            "openssl",
            "rsa",
            "ssh-key",
            "ring",
            "rustls",
            "sequoia",
        ] {
            assert!(
                !tree.lines().any(|l| l
                    .split_whitespace()
                    .next()
                    .is_some_and(|n| n.starts_with(crypto))),
                "{package} links {crypto}:\n{tree}"
            );
        }
    }
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

/// Every `.rs` file under `dir`, with its path relative to `dir`.
fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).expect("a source file");
                out.push((relative, text));
            }
        }
    }
    out.sort();
    out
}

/// A source file without its unit tests (`#[cfg(test)]` to the end: our
/// files keep their tests last).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Whether `code` has `pattern` where it starts a name or a path (not in
/// the middle of a longer identifier: `readable.contains(` is no
/// `e.contains(`).
fn names(code: &str, pattern: &str) -> bool {
    code.match_indices(pattern).any(|(at, _)| {
        !pattern.starts_with(|c: char| c.is_alphanumeric())
            || !code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The daemon's layers, and which of them each may not name: arrows
/// point from the frontends down to the keystore, the account's handle and
/// the host; from the account down to the store, the service client and
/// the protocol; news travels up only through the account's channels.
#[test]
fn the_daemon_arrows_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src");
    let forbidden: &[(&str, &[&str])] = &[
        ("account", &["frontend", "keystore", "host", "server"]),
        (
            "store",
            &[
                "account",
                "frontend",
                "keystore",
                "host",
                "server",
                "service_client",
            ],
        ),
        (
            "service_client",
            &["account", "frontend", "keystore", "host", "server", "store"],
        ),
        (
            "keystore",
            &["frontend", "host", "server", "store", "service_client"],
        ),
        (
            "host",
            &["frontend", "keystore", "server", "store", "service_client"],
        ),
        (
            "server",
            &[
                "account",
                "frontend",
                "keystore",
                "host",
                "store",
                "service_client",
            ],
        ),
    ];
    let mut checked = 0;
    for (file, text) in sources(&src) {
        let layer = file
            .split(['/', '.'])
            .next()
            .expect("a first component")
            .to_owned();
        let code = without_tests(&text);
        if let Some((_, banned)) = forbidden.iter().find(|(l, _)| *l == layer) {
            for other in *banned {
                assert!(
                    !code.contains(&format!("crate::{other}")),
                    "{file} ({layer}) must not use crate::{other}"
                );
            }
            checked += 1;
        }
        // Nothing below the crate root reaches up into it.
        if file != "lib.rs" && file != "main.rs" {
            for root in ["crate::DaemonError", "crate::Config", "crate::run"] {
                assert!(!code.contains(root), "{file} uses {root}");
            }
        }
        // No frontend uses another.
        if let Some(frontend) = file.strip_prefix("frontend/") {
            let me = frontend.trim_end_matches(".rs");
            for other in ["control", "ssh_agent", "gpg_agent"] {
                if other != me {
                    assert!(
                        !code.contains(&format!("frontend::{other}")),
                        "{file} must not use the {other} frontend"
                    );
                }
            }
        }
        // Only server/ binds or adopts a listening socket.
        if layer != "server" {
            for call in [
                "UnixListener::bind",
                "UnixListener::from_std",
                "runtime_dir::bind",
            ] {
                assert!(
                    !code.contains(call),
                    "{file} calls {call}: only server/ may"
                );
            }
        }
        // The environment is read once, in main (and the service
        // manager's LISTEN_* handover, which main runs first).
        if file != "main.rs" && file != "server/activation.rs" {
            for read in ["env::var", "var_os(", "current_exe("] {
                assert!(
                    !code.contains(read),
                    "{file} reads the environment ({read})"
                );
            }
        }
        // Errors are typed: no branching on their text, no JSON values.
        for pattern in [
            ".0.contains(",
            "err.contains(",
            "e.contains(",
            "error.contains(",
            "to_string().contains(",
            "message.contains(",
            "serde_json::Value",
            "json!(",
        ] {
            assert!(!names(code, pattern), "{file}: {pattern}");
        }
    }
    assert!(checked > 20, "the layers were found ({checked} files)");
    let control = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ipc/src/control.rs"),
    )
    .expect("control.rs");
    assert!(
        !without_tests(&control).contains("serde_json::Value"),
        "no free-form JSON crosses the control socket"
    );
}

/// Every dependency a crate of ours declares is used by it: its name
/// appears in the crate's code (`src`, `tests`, `benches`, `examples`,
/// `build.rs`), or in the list below with why it is needed anyway.
#[test]
fn every_declared_dependency_is_used() {
    // Declared for what they do to the build, not for their items.
    let linked_only: &[(&str, &str)] = &[];
    let meta: serde_json::Value =
        serde_json::from_slice(&cargo(&["metadata", "--format-version", "1", "--no-deps"]))
            .expect("cargo metadata prints JSON");
    let mut unused = Vec::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name");
        let manifest = Path::new(package["manifest_path"].as_str().expect("manifest"));
        let dir = manifest.parent().expect("the crate's directory");
        let mut code = String::new();
        for sub in ["src", "tests", "benches", "examples", "fuzz_targets", "e2e"] {
            if dir.join(sub).is_dir() {
                for (_, text) in sources(&dir.join(sub)) {
                    code.push_str(&text);
                }
            }
        }
        if let Ok(build) = std::fs::read_to_string(dir.join("build.rs")) {
            code.push_str(&build);
        }
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["rename"]
                .as_str()
                .or_else(|| dep["name"].as_str())
                .expect("a dependency's name");
            let ident = dep_name.replace('-', "_");
            let used = code.contains(&format!("{ident}::"))
                || code.contains(&format!("use {ident}"))
                || code.contains(&format!("{ident}!"))
                || code.contains(&format!("extern crate {ident}"));
            if !used && !linked_only.contains(&(name, dep_name)) {
                unused.push(format!("{name}: {dep_name}"));
            }
        }
    }
    assert!(unused.is_empty(), "declared but unused: {unused:?}");
}
