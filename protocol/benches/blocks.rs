//! Figures for the building blocks: `cargo bench -p mesh-protocol`.
//!
//! Prints UDF digest throughput, envelope seal and open, log append and
//! verify per entry, and how verifying a whole Merkle log grows from 1k to
//! 100k entries, normalised by n log n (a flat last column means the cost
//! grows no faster than n log n). No assertion: this machine is shared and
//! timings are noisy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mesh_protocol::envelope::{ContentMeta, Envelope, SealOptions};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::sequence::{ContainerType, Sequence};
use mesh_protocol::udf::seed::KeyAlg;
use mesh_protocol::udf::{DigestAlg, digest};

/// Run `f` `n` times; the mean time of one run.
fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

fn entry(i: usize) -> Envelope {
    let meta = ContentMeta::for_event(&format!("entry-{i}"), mesh_protocol::envelope::Event::New);
    Envelope::unsealed(vec![(i % 251) as u8; 128], Some(&meta))
}

fn log_of(n: usize) -> Vec<u8> {
    let mut sequence = Sequence::new(ContainerType::Merkle);
    for i in 0..n {
        sequence.append(entry(i));
    }
    sequence.encode()
}

fn main() {
    println!("mesh-protocol building blocks (release build, one core)\n");

    let data = vec![0x5Au8; 16 * 1024 * 1024];
    for alg in [DigestAlg::Sha2_512, DigestAlg::Sha3_512] {
        let t = per_op(4, || {
            black_box(digest::content_digest(
                alg,
                black_box(&data),
                "application/octet-stream",
            ));
        });
        let mib_s = 16.0 / t.as_secs_f64();
        println!("UDF digest {alg:?}: {mib_s:.0} MiB/s");
    }

    let mut rng = rand_core::OsRng;
    let reader = PrivateKey::from_okm(KeyAlg::X25519, &[1; 32]).expect("a key");
    let signer = PrivateKey::from_okm(KeyAlg::Ed25519, &[2; 32]).expect("a key");
    let payload = vec![7u8; 1024];
    let options = SealOptions {
        recipients: &[reader.public()],
        signer: Some(&signer),
        ..SealOptions::default()
    };
    let sealed = Envelope::seal(&mut rng, &payload, &options).expect("seals");
    let seal = per_op(500, || {
        black_box(Envelope::seal(&mut rng, black_box(&payload), &options).expect("seals"));
    });
    let public = signer.public();
    let open = per_op(500, || {
        black_box(sealed.open(Some(&reader), Some(&public)).expect("opens"));
    });
    println!(
        "envelope, 1 KiB, X25519 + Ed25519: seal {:.1} µs, open and verify {:.1} µs",
        seal.as_secs_f64() * 1e6,
        open.as_secs_f64() * 1e6
    );

    let mut sequence = Sequence::new(ContainerType::Merkle);
    let append = per_op(10_000, || {
        sequence.append(entry(sequence.len() as usize));
    });
    println!(
        "log append (Merkle, 128-byte entries): {:.2} µs per entry",
        append.as_secs_f64() * 1e6
    );

    println!("\nverify a whole Merkle log (decode + every digest + every apex):");
    println!(
        "{:>8} {:>12} {:>14} {:>22}",
        "entries", "total ms", "µs per entry", "ns per (n log2 n)"
    );
    for n in [1_000usize, 10_000, 100_000] {
        let bytes = log_of(n);
        let runs = (200_000 / n).max(1) as u32;
        let t = per_op(runs, || {
            black_box(
                Sequence::decode(black_box(&bytes))
                    .expect("decodes")
                    .verify()
                    .expect("verifies"),
            );
        });
        let nlogn = n as f64 * (n as f64).log2();
        println!(
            "{n:>8} {:>12.1} {:>14.2} {:>22.3}",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / n as f64,
            t.as_secs_f64() * 1e9 / nlogn
        );
    }
}
