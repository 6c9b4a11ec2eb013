//! A session-bind's host key blob (a plain key, or an OpenSSH host
//! certificate the agent reads itself, since ssh-key refuses those valid
//! forever): reading it never panics, and whatever key comes out, plain
//! or from inside a certificate, reads back as itself from its own blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::agent::ssh_agent::read_host_key;
use ssh_agent_lib::ssh_encoding::Encode as _;

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    if let Some(key) = read_host_key(data, NOW) {
        let mut blob = Vec::new();
        if key.encode(&mut blob).is_ok() {
            assert_eq!(read_host_key(&blob, NOW).as_ref(), Some(&key));
        }
    }
});
