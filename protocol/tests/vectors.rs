//! The test vectors under `tests/vectors/<area>/<case>.txt`, one case a
//! file (see `tests/vectors/README.md` for the format and where each case
//! comes from). Every file must be understood and must pass.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_protocol::envelope::{self, Envelope, OpenError};
use mesh_protocol::keys;
use mesh_protocol::merkle;
use mesh_protocol::sequence::{ContainerType, Sequence, SequenceError, Unverified};
use mesh_protocol::shamir::{self, ShamirError};
use mesh_protocol::udf::seed::{KeyAlg, Seed};
use mesh_protocol::udf::{DigestAlg, Kind, Udf, UdfError, digest, keyed};
use sha2::{Digest as _, Sha512};

/// One vector file: its header fields and its payload.
struct Case {
    path: PathBuf,
    fields: BTreeMap<String, String>,
    payload: Vec<u8>,
}

impl Case {
    fn read(path: &Path) -> Case {
        let bytes = fs::read(path).expect("readable");
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or_else(|| panic!("{}: no blank line after the header", path.display()));
        let header = std::str::from_utf8(&bytes[..split]).expect("the header is UTF-8");
        let fields = header
            .lines()
            .map(|line| {
                let (key, value) = line.split_once(": ").unwrap_or_else(|| {
                    panic!("{}: header line without ': ': {line}", path.display())
                });
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let mut payload = bytes[split + 2..].to_vec();
        if payload.last() == Some(&b'\n') {
            payload.pop();
        }
        Case {
            path: path.to_owned(),
            fields,
            payload,
        }
    }

    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("{}: no '{name}:' field", self.path.display()))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("the payload is UTF-8")
    }

    /// The payload's non-empty lines.
    fn lines(&self) -> Vec<&str> {
        self.text().lines().filter(|l| !l.is_empty()).collect()
    }

    fn expect_match(&self) -> bool {
        match self.field("expect") {
            "match" => true,
            "mismatch" => false,
            other => panic!(
                "{}: expect must be match or mismatch, not {other}",
                self.path.display()
            ),
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn alg(name: &str) -> DigestAlg {
    match name {
        "sha2" => DigestAlg::Sha2_512,
        "sha3" => DigestAlg::Sha3_512,
        other => panic!("unknown alg {other}"),
    }
}

/// A computed UDF matches the claimed one: at the claim's precision the
/// presentations agree, and the claim has enough bits to be trusted.
fn matches(computed: &Udf, claimed: &str) -> bool {
    match Udf::parse(claimed) {
        Ok(claim) => computed.matches(&claim),
        Err(_) => false,
    }
}

fn udf_error_name(err: &UdfError) -> &'static str {
    match err {
        UdfError::BadCharacter { .. } => "bad-character",
        UdfError::TooShort => "too-short",
        UdfError::TooLong => "too-long",
        UdfError::UnknownType(_) => "unknown-type",
        UdfError::WrongType(_) => "wrong-type",
        UdfError::BadLength => "bad-length",
        UdfError::BadPrecision(_) => "bad-precision",
        UdfError::NotCanonical => "not-canonical",
        _ => "other",
    }
}

fn shamir_error_name(err: &ShamirError) -> &'static str {
    match err {
        ShamirError::BadQuorum { .. } => "bad-quorum",
        ShamirError::BadSecret => "bad-secret",
        ShamirError::BadShare { .. } => "bad-share",
        ShamirError::Mismatched => "mismatched",
        ShamirError::TooFew { .. } => "too-few",
        ShamirError::NoFit => "no-fit",
        _ => "other",
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Authenticator(_) => "authenticator",
        Kind::EncryptionKey { .. } => "encryption-key",
        Kind::Digest { .. } => "digest",
        Kind::Nonce => "nonce",
        Kind::Oid => "oid",
        Kind::Share => "share",
        Kind::Seed => "seed",
    }
}

/// Run one case; return whether it was a negative one.
fn run(case: &Case) -> bool {
    let expect = case.field("expect");
    let negative = expect.starts_with("mismatch") || expect.starts_with("error");
    match case.field("kind") {
        "udf-digest" => {
            let computed = digest::content_digest(
                alg(case.field("alg")),
                &case.payload,
                case.field("content-type"),
            );
            let claimed = case.field("udf");
            assert_eq!(matches(&computed, claimed), case.expect_match());
            if case.expect_match() {
                let bits = Udf::parse(claimed).expect("valid").bits();
                assert_eq!(
                    computed.to_string_bits(bits),
                    claimed
                        .to_uppercase()
                        .replace('-', "")
                        .chars()
                        .collect::<Vec<_>>()
                        .chunks(4)
                        .map(|c| c.iter().collect::<String>())
                        .collect::<Vec<_>>()
                        .join("-")
                );
            }
        }
        "udf-keyed" => {
            let computed =
                keyed::authenticator(case.field("key"), &case.payload, case.field("content-type"));
            assert_eq!(matches(&computed, case.field("udf")), case.expect_match());
        }
        "udf-parse" => match (Udf::parse(case.text()), expect.split_once(' ')) {
            (Ok(udf), Some(("ok", kind))) => {
                assert_eq!(kind_name(udf.kind()), kind);
                assert_eq!(udf.to_string(), case.text(), "the presentation round-trips");
            }
            (Err(err), Some(("error", name))) => assert_eq!(udf_error_name(&err), name),
            (result, _) => panic!("got {result:?}, expected {expect}"),
        },
        "shamir-split" => {
            let secret = hex(case.field("secret"));
            let coefficients: Vec<Vec<u8>> = case
                .field("coefficients")
                .split_whitespace()
                .map(hex)
                .collect();
            let refs: Vec<&[u8]> = coefficients.iter().map(Vec::as_slice).collect();
            let count = case
                .fields
                .get("shares")
                .map_or(case.lines().len(), |n| n.parse().expect("a number"));
            match (
                shamir::split_with(&secret, &refs, count),
                expect.split_once(' '),
            ) {
                (Ok(shares), None) => {
                    let got: Vec<String> = shares.iter().map(|s| s.to_udf().to_string()).collect();
                    assert_eq!(got, case.lines());
                }
                (Err(err), Some(("error", name))) => assert_eq!(shamir_error_name(&err), name),
                (result, _) => panic!("got {:?}, expected {expect}", result.map(|s| s.len())),
            }
        }
        "shamir-recover" => {
            let parsed: Result<Vec<Udf>, ShamirError> = case
                .lines()
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    Udf::parse(line).map_err(|source| ShamirError::BadShare {
                        index: i + 1,
                        source,
                    })
                })
                .collect();
            match (
                parsed.and_then(|udfs| shamir::recover_udfs(&udfs)),
                expect.split_once(' '),
            ) {
                (Ok(secret), None) => assert_eq!(to_hex(&secret), expect),
                (Err(err), Some(("error", name))) => assert_eq!(shamir_error_name(&err), name),
                (Ok(_), _) => panic!("recovered a secret, expected {expect}"),
                (Err(err), _) => panic!("{err}, expected {expect}"),
            }
        }
        "seed-okm" => {
            let seed = Udf::parse(case.field("seed")).and_then(|udf| Seed::from_udf(&udf));
            match (seed, expect.split_once(' ')) {
                (Ok(seed), None) => {
                    let len = match seed.specifier().alg {
                        KeyAlg::X448 | KeyAlg::Ed448 => 56,
                        _ => 32,
                    };
                    let okm = match case.field("variant") {
                        "draft" => keys::derive_okm_draft(&seed, len),
                        "reference" => keys::derive_okm(&seed, "", len),
                        other => panic!("unknown variant {other}"),
                    };
                    let prefix = hex(case.field("prefix"));
                    assert_eq!(okm.starts_with(&prefix), case.expect_match());
                }
                (Err(err), Some(("error", name))) => assert_eq!(udf_error_name(&err), name),
                (Ok(_), _) => panic!("a seed, expected {expect}"),
                (Err(err), _) => panic!("{err}, expected {expect}"),
            }
        }
        "key-oid" => {
            let key: [u8; 32] = hex(case.field("key")).try_into().expect("32 bytes");
            assert_eq!(keys::oid_udf_ed25519(&key).to_string(), expect);
        }
        "dare-open" => {
            let recipient = keys::PrivateKey::from_okm(KeyAlg::X25519, &hex(case.field("key")))
                .expect("a recipient key");
            let signer = keys::PrivateKey::from_okm(KeyAlg::Ed25519, &hex(case.field("signer")))
                .expect("a signer key");
            let result = Envelope::from_json(&case.payload)
                .map_err(|_| "malformed")
                .and_then(|e| {
                    e.open(Some(&recipient), Some(&signer.public()))
                        .map_err(|err| match err {
                            OpenError::Encrypted => "encrypted",
                            OpenError::NotForThisKey => "not-for-this-key",
                            OpenError::NotSigned => "not-signed",
                            _ => "failed",
                        })
                });
            match (result, expect.split_once(' ')) {
                (Ok(opened), Some(("ok", text))) => {
                    assert_eq!(opened.payload.as_slice(), text.as_bytes());
                }
                (Err(got), Some(("error", name))) => assert_eq!(got, name),
                (Ok(_), _) => panic!("opened, expected {expect}"),
                (Err(got), _) => panic!("{got}, expected {expect}"),
            }
        }
        "seed-ecdsa" => {
            let seed =
                Seed::from_udf(&Udf::parse(case.field("seed")).expect("a UDF")).expect("a seed");
            assert_eq!(case.field("alg"), "p256");
            let okm = keys::derive_okm_draft(&seed, 40);
            let d = to_hex(&keys::ecdsa_scalar(KeyAlg::P256, &okm).expect("a scalar"));
            match expect.split_once(' ') {
                Some(("mismatch", other)) => assert_ne!(d, other),
                _ => assert_eq!(d, expect),
            }
        }
        "dare-payload" => {
            let (seed, salt) = (hex(case.field("base-seed")), hex(case.field("salt")));
            let (key, iv) = envelope::payload_keys(&seed, &salt);
            let body = b64(&envelope::encrypt_payload(&seed, &salt, &case.payload));
            let all = to_hex(key.as_ref()) == case.field("key")
                && to_hex(iv.as_ref()) == case.field("iv")
                && body == case.field("body");
            assert_eq!(all, case.expect_match());
        }
        "dare-kek" => {
            let kek = to_hex(envelope::kek(&hex(case.field("agreement"))).as_ref());
            assert_eq!(kek == case.field("kek"), case.expect_match());
        }
        "dare-digest" => {
            let digest = b64(&Sha512::digest(&case.payload));
            assert_eq!(digest == case.field("digest"), case.expect_match());
        }
        "sequence-chain" => {
            let len: usize = case.field("length").parse().expect("a length");
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut log = Sequence::new(ContainerType::Chain);
            log.append(Envelope::unsealed(payload, None));
            let trailer = log.frame(1).expect("a frame").trailer;
            let pd = b64(&trailer.payload_digest.expect("a digest"));
            let chain = b64(&trailer.chain_digest.expect("a chain digest"));
            let both = pd == case.field("payload-digest") && chain == case.field("chain-digest");
            assert_eq!(both, case.expect_match());
        }
        "sequence-verify" => {
            let result = Sequence::decode(&case.payload)
                .and_then(Unverified::verify)
                .map_err(|err| match err {
                    SequenceError::Truncated(_) => "truncated",
                    SequenceError::Malformed(_) => "malformed",
                    SequenceError::TooLarge(_) => "too-large",
                    SequenceError::BadFrameZero => "bad-frame-zero",
                    SequenceError::BadIndex(_) => "bad-index",
                    SequenceError::BadDigest(_) => "bad-digest",
                    _ => "other",
                })
                .and_then(|log| {
                    let Some(size) = case.fields.get("size") else {
                        return Ok(log);
                    };
                    let size: u64 = size.parse().expect("a size");
                    let apex: merkle::Hash = URL_SAFE_NO_PAD
                        .decode(case.field("apex"))
                        .expect("base64url")
                        .try_into()
                        .expect("64 bytes");
                    if size > log.len() {
                        return Err("rolled-back");
                    }
                    let proof = log.consistency_proof(size).expect("a proof");
                    if merkle::verify_consistency(size, &apex, log.len(), &log.apex(), &proof) {
                        Ok(log)
                    } else {
                        Err("forked")
                    }
                });
            match (result, expect.split_once(' ')) {
                (Ok(log), Some(("ok", n))) => assert_eq!(log.len().to_string(), n),
                (Err(got), Some(("error", name))) => assert_eq!(got, name),
                (Ok(_), _) => panic!("verified, expected {expect}"),
                (Err(got), _) => panic!("{got}, expected {expect}"),
            }
        }
        other => panic!("unknown kind {other}"),
    }
    negative
}

#[test]
fn every_vector_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut areas = BTreeMap::new();
    for area in fs::read_dir(&root).expect("the vectors directory") {
        let area = area.expect("an entry").path();
        if !area.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&area)
            .expect("an area")
            .map(|e| e.expect("an entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        let (mut positive, mut negative) = (0, 0);
        for path in files {
            let case = Case::read(&path);
            let result = std::panic::catch_unwind(|| run(&case));
            match result {
                Ok(true) => negative += 1,
                Ok(false) => positive += 1,
                Err(_) => panic!("vector {} failed", path.display()),
            }
        }
        areas.insert(
            area.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned(),
            (positive, negative),
        );
    }
    for (area, (positive, negative)) in &areas {
        println!("{area}: {positive} positive, {negative} negative");
        assert!(*positive > 0, "{area} has no positive case");
    }
    for area in ["udf", "shamir", "keys", "dare", "sequence"] {
        assert!(areas.contains_key(area), "no {area} vectors");
    }
}
