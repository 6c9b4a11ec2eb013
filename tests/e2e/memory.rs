//! What meshd's memory still holds after it has handled a private key.
//!
//! meshd parses imported keys from JSON, copies them through buffers it
//! does not own (serde's, the socket reader's, growing vectors) and keeps
//! only the parsed key. This test reads all of meshd's writable memory
//! through /proc (as root: meshd is not dumpable, so only CAP_SYS_PTRACE
//! may look) and requires that no line of the key's text is left in it.

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};

use mesh_e2e::{MeshService, TestEnv, run_ok};

/// Every writable mapping of `pid` (heap, stacks, thread arenas, data: where
/// anything meshd computed can be), read whole, with its line from
/// /proc/PID/maps.
fn address_space(pid: u32) -> Vec<(String, Vec<u8>)> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap_or_else(|e| {
        panic!("cannot read meshd's memory ({e}): this test needs CAP_SYS_PTRACE (run scripts/test as root)")
    });
    let mut regions = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').expect("a range");
        let start = u64::from_str_radix(start, 16).expect("hex");
        let end = u64::from_str_radix(end, 16).expect("hex");
        let mut bytes = vec![0u8; usize::try_from(end - start).expect("fits")];
        if mem.seek(SeekFrom::Start(start)).is_ok() && mem.read_exact(&mut bytes).is_ok() {
            regions.push((line.to_owned(), bytes));
        }
    }
    assert!(
        regions.iter().any(|(line, _)| line.ends_with("[heap]")),
        "meshd's heap was not readable: {maps}"
    );
    regions
}

/// The lines of `text` long enough to be unmistakable, and where in
/// meshd's memory any of them is found.
fn leftovers(pid: u32, text: &str) -> Vec<String> {
    let needles: Vec<&str> = text.lines().filter(|l| l.len() >= 40).collect();
    assert!(needles.len() >= 3, "a key with some body: {text}");
    let mut found = Vec::new();
    for (region, bytes) in address_space(pid) {
        for needle in &needles {
            if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                found.push(format!("{needle} in {region}"));
            }
        }
    }
    found
}

#[test]
fn an_imported_private_key_leaves_no_text_behind_in_meshd() {
    let host = TestEnv::new();
    let service = MeshService::start(&host);
    let env = TestEnv::device(&service);
    env.mesh(&["account", "create", "alice@example.com", "--name", "laptop"]);

    // An RSA key: its text is dozens of lines, each unique to this key.
    let key = env.root().join("id_rsa");
    run_ok(
        env.command("ssh-keygen")
            .args(["-q", "-N", "", "-t", "rsa", "-b", "3072", "-f"])
            .arg(&key),
    );
    let text = fs::read_to_string(&key).expect("the key");
    env.mesh(&[
        "ssh",
        "import",
        key.to_str().expect("utf-8"),
        "--name",
        "legacy",
    ]);
    let public = fs::read_to_string(key.with_extension("pub")).expect("public");
    let blob = public.split_whitespace().nth(1).expect("blob").to_owned();
    assert!(
        TestEnv::agent_keys(&env).contains(&blob),
        "the agent serves it"
    );

    // The key is in use, and nothing of its text is left.
    let found = leftovers(env.meshd_pid(), &text);
    assert!(
        found.is_empty(),
        "meshd still holds the key's text:\n{}",
        found.join("\n")
    );
}
