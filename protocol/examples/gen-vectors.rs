//! Writes the generated vectors: `tests/vectors/dare/*.txt` (one sealed
//! envelope made with a deterministic generator, and cases made from it by
//! one change each) and `tests/vectors/sequence/log_*.txt` (a Merkle log,
//! and logs broken in one way each).
//! It need not run again; it records how the files were made.
//!
//! `cargo run -p mesh-protocol --example gen-vectors`

use std::fs;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_protocol::envelope::{ContentMeta, Envelope, Event, SealOptions};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::sequence::{ContainerType, Sequence, walk_backwards};
use mesh_protocol::udf::seed::KeyAlg;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};

/// SHA-512 in counter mode over a fixed label: reproducible, and only
/// for making vectors.
struct FixedRng {
    counter: u64,
    block: Vec<u8>,
}

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.block.is_empty() {
                self.counter += 1;
                let mut h = Sha512::new();
                h.update(b"mesh test vectors");
                h.update(self.counter.to_be_bytes());
                self.block = h.finalize().to_vec();
            }
            *byte = self.block.pop().unwrap_or_default();
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}

const PAYLOAD: &str = "This is a test long enough to require multiple blocks";
const RECIPIENT: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const OTHER: &str = "0303030303030303030303030303030303030303030303030303030303030303";
const SIGNER: &str = "0404040404040404040404040404040404040404040404040404040404040404";
const STRANGER: &str = "0505050505050505050505050505050505050505050505050505050505050505";

fn key(alg: KeyAlg, hex: &str) -> PrivateKey {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    PrivateKey::from_okm(alg, &bytes).expect("a key")
}

fn write(dir: &Path, name: &str, key: &str, signer: &str, expect: &str, comment: &str, json: &str) {
    let text = format!(
        "kind: dare-open\nkey: {key}\nsigner: {signer}\nexpect: {expect}\ncomment: {comment}\n\n{json}\n"
    );
    fs::write(dir.join(format!("{name}.txt")), text).expect("written");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/dare");
    fs::create_dir_all(&dir).expect("the directory");
    let mut rng = FixedRng {
        counter: 0,
        block: Vec::new(),
    };
    let recipient = key(KeyAlg::X25519, RECIPIENT);
    let signer = key(KeyAlg::Ed25519, SIGNER);
    let meta = ContentMeta {
        content_type: Some("text/plain".into()),
        ..ContentMeta::default()
    };
    let options = SealOptions {
        recipients: &[recipient.public()],
        signer: Some(&signer),
        meta: Some(&meta),
        sequence_info: None,
    };
    let sealed = Envelope::seal(&mut rng, PAYLOAD.as_bytes(), &options).expect("seals");
    let ok = format!("ok {PAYLOAD}");
    let json = sealed.to_json();
    write(
        &dir,
        "signed_encrypted",
        RECIPIENT,
        SIGNER,
        &ok,
        "X25519 recipient, Ed25519 signer: opens and verifies",
        &json,
    );
    write(
        &dir,
        "neg_wrong_key",
        OTHER,
        SIGNER,
        "error not-for-this-key",
        "the envelope opened with a key it is not encrypted to",
        &json,
    );
    write(
        &dir,
        "neg_wrong_signer",
        RECIPIENT,
        STRANGER,
        "error not-signed",
        "the signature checked against another signer",
        &json,
    );

    let changed = |name: &str, comment: &str, expect: &str, change: &dyn Fn(&mut Envelope)| {
        let mut e = sealed.clone();
        change(&mut e);
        write(&dir, name, RECIPIENT, SIGNER, expect, comment, &e.to_json());
    };
    changed(
        "neg_tampered_body",
        "one bit of the ciphertext flipped",
        "error failed",
        &|e| e.tamper_body()[0] ^= 1,
    );
    changed(
        "neg_truncated_body",
        "the last ciphertext block cut",
        "error failed",
        &|e| {
            let body = e.tamper_body();
            body.truncate(body.len() - 16);
        },
    );
    changed(
        "neg_body_and_digest",
        "ciphertext changed and the PayloadDigest recomputed: the signature still fails",
        "error failed",
        &|e| {
            e.tamper_body()[0] ^= 1;
            e.trailer.payload_digest = Some(Sha512::digest(e.peek_unverified()).to_vec());
        },
    );
    changed(
        "neg_tampered_signature",
        "one bit of the signature flipped",
        "error failed",
        &|e| e.trailer.signatures[0].signature[0] ^= 1,
    );
    changed(
        "neg_no_witness",
        "the witness removed from the signature",
        "error failed",
        &|e| e.trailer.signatures[0].witness = None,
    );
    changed(
        "neg_tampered_wmk",
        "one bit of the wrapped key flipped",
        "error failed",
        &|e| e.header.recipients[0].wmk[8] ^= 1,
    );
    changed(
        "neg_tampered_salt",
        "the salt replaced",
        "error failed",
        &|e| e.header.salt = Some(vec![0; 16]),
    );
    changed(
        "neg_no_signature",
        "the signature removed",
        "error not-signed",
        &|e| e.trailer.signatures.clear(),
    );
    changed(
        "neg_wrong_curve",
        "the ephemeral key relabelled X448",
        "error failed",
        &|e| e.header.recipients[0].epk.public_key_ecdh.crv = "X448".into(),
    );
    write(
        &dir,
        "neg_truncated_json",
        RECIPIENT,
        SIGNER,
        "error malformed",
        "the JSON cut in half",
        &json[..json.len() / 2],
    );
    write(
        &dir,
        "neg_trailing_bytes",
        RECIPIENT,
        SIGNER,
        "error malformed",
        "bytes after the envelope",
        &format!("{json} x"),
    );
    write(
        &dir,
        "neg_not_an_array",
        RECIPIENT,
        SIGNER,
        "error malformed",
        "an object that is not a tagged envelope",
        "{\"Envelope\": []}",
    );
    write(
        &dir,
        "neg_two_elements_header_only",
        RECIPIENT,
        SIGNER,
        "error malformed",
        "a header alone",
        "[{}]",
    );
    println!("wrote {}", dir.display());
    sequences(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sequence"));
}

fn entry(id: &str, event: Event, body: &[u8]) -> Envelope {
    Envelope::unsealed(body.to_vec(), Some(&ContentMeta::for_event(id, event)))
}

fn log(entries: &[(&str, Event, &[u8])]) -> Sequence {
    let mut sequence = Sequence::new(ContainerType::Merkle);
    for (id, event, body) in entries {
        sequence.append(entry(id, *event, body));
    }
    sequence
}

fn write_log(dir: &Path, name: &str, fields: &str, expect: &str, comment: &str, bytes: &[u8]) {
    let mut text =
        format!("kind: sequence-verify\n{fields}expect: {expect}\ncomment: {comment}\n\n")
            .into_bytes();
    text.extend_from_slice(bytes);
    fs::write(dir.join(format!("{name}.txt")), text).expect("written");
}

fn sequences(dir: &Path) {
    fs::create_dir_all(dir).expect("the directory");
    let entries: [(&str, Event, &[u8]); 6] = [
        ("alpha", Event::New, b"one"),
        ("beta", Event::New, b"two"),
        ("alpha", Event::Update, b"three"),
        ("gamma", Event::New, b"four"),
        ("beta", Event::Delete, b""),
        ("delta", Event::New, b"five"),
    ];
    let honest = log(&entries);
    let bytes = honest.encode();
    let seen = log(&entries[..3]);
    let seen_fields = format!("size: 3\napex: {}\n", URL_SAFE_NO_PAD.encode(seen.apex()));
    write_log(
        dir,
        "log_merkle",
        "",
        "ok 6",
        "a Merkle log of six frames with New, Update and Delete events",
        &bytes,
    );
    write_log(
        dir,
        "log_extends_seen",
        &seen_fields,
        "ok 6",
        "the log extends the three-frame log whose apex a client remembers",
        &bytes,
    );

    let mut forked = entries;
    forked[1] = ("beta", Event::New, b"TWO");
    let forked = log(&forked).encode();
    write_log(
        dir,
        "neg_log_forked",
        &seen_fields,
        "error forked",
        "frame 2 rewritten and the log regrown: valid in itself, but not an extension of the apex seen",
        &forked,
    );
    write_log(
        dir,
        "neg_log_rolled_back",
        &seen_fields,
        "error rolled-back",
        "a two-frame log handed out after a three-frame one was seen",
        &log(&entries[..2]).encode(),
    );
    let starts = walk_backwards(&bytes).expect("walks");
    let mut tampered = bytes.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"four")
        .expect("found");
    tampered[at] = b'F';
    write_log(
        dir,
        "neg_log_tampered_payload",
        "",
        "error bad-digest",
        "one byte of frame 4's payload changed",
        &tampered,
    );
    let mut dropped = bytes[..starts[2]].to_vec();
    dropped.extend_from_slice(&bytes[starts[3]..]);
    write_log(
        dir,
        "neg_log_dropped_frame",
        "",
        "error bad-index",
        "frame 2 removed",
        &dropped,
    );
    let mut swapped = bytes[..starts[2]].to_vec();
    swapped.extend_from_slice(&bytes[starts[3]..starts[4]]);
    swapped.extend_from_slice(&bytes[starts[2]..starts[3]]);
    swapped.extend_from_slice(&bytes[starts[4]..]);
    write_log(
        dir,
        "neg_log_reordered",
        "",
        "error bad-index",
        "frames 2 and 3 swapped",
        &swapped,
    );
    write_log(
        dir,
        "neg_log_truncated",
        "",
        "error truncated",
        "the last frame cut short",
        &bytes[..bytes.len() - 4],
    );
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"\xF4");
    write_log(
        dir,
        "neg_log_trailing_byte",
        "",
        "error truncated",
        "a frame tag after the last frame",
        &trailing,
    );
    let mut garbage = bytes.clone();
    garbage.push(0x00);
    write_log(
        dir,
        "neg_log_trailing_garbage",
        "",
        "error malformed",
        "a byte that is no frame tag after the last frame",
        &garbage,
    );
    write_log(
        dir,
        "neg_log_no_frame_zero",
        "",
        "error bad-frame-zero",
        "the data frames without frame 0",
        &bytes[starts[1]..],
    );
    let mut bad_length = bytes.clone();
    let end = starts[2] - 2;
    bad_length[end] ^= 0x01;
    write_log(
        dir,
        "neg_log_bad_back_length",
        "",
        "error malformed",
        "frame 1's trailing (reversed) length does not match its leading one",
        &bad_length,
    );
    println!("wrote {}", dir.display());
}
