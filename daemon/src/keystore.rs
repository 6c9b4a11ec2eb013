//! The keystore: the only place parsed private keys live. The SSH agent
//! and the gpg-agent frontends ask it to sign or decrypt and get results,
//! never keys.
//!
//! Its Mesh keys follow the account's [`KeySnapshot`]s ([`feed`]): each
//! snapshot is parsed once into what signs (ed25519-dalek; OpenSSL for
//! ECDSA and RSA) and replaces the previous keys whole. Keys added with
//! `ssh-add` live beside them, in memory only.

use std::sync::Arc;

use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::parse::Parse as _;
use sequoia_openpgp::policy::StandardPolicy;
use ssh_key::{Algorithm, EcdsaCurve, PrivateKey};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

use mesh_protocol::application::{OpenpgpEntry, SshIdentity};

use crate::account::KeySnapshot;

pub mod confirm;
pub mod gpg;
pub mod rsa;
pub mod ssh;
pub mod transfer;

/// RSA keys `mesh ssh create --alg rsa` makes.
const RSA_BITS: u32 = 3072;

/// Both frontends' keys.
#[derive(Debug, Default)]
pub struct Keystore {
    /// The SSH agent's identities.
    pub ssh: Arc<ssh::Keyring>,
    /// The gpg-agent frontend's keys.
    pub gpg: Arc<gpg::GpgKeyring>,
}

impl Keystore {
    /// Serve the keys of `snapshot` from now on, in place of the Mesh keys
    /// before (keys added with `ssh-add` stay; an application the snapshot
    /// could not read keeps its keys).
    pub fn apply(&self, snapshot: &KeySnapshot) {
        if let Some(ssh) = &snapshot.ssh {
            self.apply_ssh(ssh);
        }
        self.ssh.set_accepted(snapshot.accepted.clone());
        if let Some(openpgp) = &snapshot.openpgp {
            self.apply_openpgp(openpgp);
        }
    }

    fn apply_ssh(&self, entries: &[SshIdentity]) {
        let identities = crate::hygiene::then_wipe_stack(|| self.load_ssh(entries));
        self.ssh.set_mesh(identities);
    }

    /// Parse the SSH identities of a snapshot (their text goes through
    /// the PEM decoder's stack buffers: the caller wipes them).
    fn load_ssh(&self, entries: &[SshIdentity]) -> Vec<ssh::Identity> {
        let mut identities = Vec::with_capacity(entries.len());
        for entry in entries {
            let private = Zeroizing::new(entry.private.clone());
            let loaded = PrivateKey::from_openssh(private.as_str())
                .map_err(|e| e.to_string())
                .and_then(|key| {
                    ssh::Identity::new(key.key_data(), entry.name.clone())
                        .map_err(|e| e.to_string())
                });
            match loaded {
                Ok(mut identity) => {
                    identity.confirm = entry.confirm;
                    identity.hosts = entry.hosts.clone();
                    identities.push(identity);
                }
                Err(e) => {
                    tracing::warn!(name = %entry.name, error = %e, "skipping an SSH identity")
                }
            }
        }
        identities
    }

    fn apply_openpgp(&self, entries: &[OpenpgpEntry]) {
        if entries.is_empty() {
            // No certificate: no OpenPGP code to page in.
            self.gpg.set(Vec::new());
            return;
        }
        let policy = StandardPolicy::new();
        let mut keys = Vec::new();
        for entry in entries {
            let Ok(cert) = Cert::from_bytes(entry.secret.as_bytes()) else {
                tracing::warn!(name = %entry.name, "skipping a damaged OpenPGP key");
                continue;
            };
            for ka in cert.keys().with_policy(&policy, None).secret() {
                let key = ka.key();
                if let Some(secret) = key.optional_secret() {
                    match gpg::GpgKey::new(key.mpis(), secret, entry.name.clone()) {
                        Ok(mut k) => {
                            k.confirm = entry.confirm;
                            keys.push(k);
                        }
                        Err(e) => tracing::debug!(error = %e, "OpenPGP key not served"),
                    }
                }
            }
        }
        self.gpg.set(keys);
    }
}

/// Keep `keystore` on the account's key snapshots, each parsed and then
/// dropped (wiped); say in `applied` which generation it serves. Ends
/// when the account's task does.
pub async fn feed(
    keystore: Arc<Keystore>,
    mut snapshots: mpsc::UnboundedReceiver<KeySnapshot>,
    applied: watch::Sender<u64>,
) {
    while let Some(snapshot) = snapshots.recv().await {
        keystore.apply(&snapshot);
        applied.send_replace(snapshot.generation);
    }
}

/// Why a key could not be made or taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MakeError {
    /// The algorithm's name is not one we make.
    #[error("unknown algorithm {0:?}: {1}")]
    UnknownAlgorithm(String, &'static str),
    /// Generation failed.
    #[error("key generation failed")]
    Failed,
    /// The key given is not one we can use.
    #[error("{0}")]
    Unusable(String),
}

/// Make an SSH key (`ed25519`, `ecdsa`/`ecdsa-p256`, `ecdsa-p384`,
/// `ecdsa-p521`, `rsa`), on the blocking pool.
pub async fn generate_ssh(algorithm: &str) -> Result<PrivateKey, MakeError> {
    let alg = match algorithm {
        "ed25519" => Algorithm::Ed25519,
        "ecdsa" | "ecdsa-p256" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        "ecdsa-p384" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        "ecdsa-p521" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        "rsa" => Algorithm::Rsa { hash: None },
        other => {
            return Err(MakeError::UnknownAlgorithm(
                other.to_owned(),
                "use ed25519, ecdsa (ecdsa-p384, ecdsa-p521) or rsa",
            ));
        }
    };
    tokio::task::spawn_blocking(move || match alg {
        Algorithm::Rsa { .. } => ssh::generate_rsa(RSA_BITS)
            .ok()
            .and_then(|pair| PrivateKey::new(pair, "").ok()),
        alg => PrivateKey::random(&mut rand_core::OsRng, alg).ok(),
    })
    .await
    .ok()
    .flatten()
    .ok_or(MakeError::Failed)
}

/// Take an OpenSSH private key's text, decrypting it with `passphrase`,
/// and check that the agent can sign with it.
pub fn take_ssh(private: &str, passphrase: Option<&str>) -> Result<PrivateKey, MakeError> {
    crate::hygiene::then_wipe_stack(|| parse_ssh(private, passphrase))
}

fn parse_ssh(private: &str, passphrase: Option<&str>) -> Result<PrivateKey, MakeError> {
    let unusable = |why: &str| MakeError::Unusable(why.to_owned());
    // ssh-key reads only what ssh-keygen writes, lines of 70; other tools
    // (Python's cryptography, Go) wrap the same key at 64.
    // ssh-key also insists on an ECDSA scalar as long as its field, where
    // ssh-keygen writes a minimal mpint (one P-521 key in four).
    let mut key = PrivateKey::from_openssh(private)
        .or_else(|e| PrivateKey::from_openssh(rewrapped(private).ok_or(e)?.as_str()))
        .or_else(|e| PrivateKey::from_openssh(widened_ecdsa(private).ok_or(e)?.as_str()))
        .map_err(|_| {
            unusable("not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)")
        })?;
    if key.is_encrypted() {
        let passphrase =
            passphrase.ok_or_else(|| unusable("the key is encrypted: give its passphrase"))?;
        key = key
            .decrypt(passphrase)
            .map_err(|_| unusable("wrong passphrase for the key"))?;
    }
    ssh::Identity::new(key.key_data(), String::new())
        .map_err(|e| MakeError::Unusable(format!("cannot use this key: {e}")))?;
    Ok(key)
}

/// An OpenSSH private key's text with its base64 wrapped at 70 columns,
/// as ssh-keygen writes it; `None` if it is not one.
fn rewrapped(private: &str) -> Option<Zeroizing<String>> {
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &str = "-----END OPENSSH PRIVATE KEY-----";
    let inside = private.trim().strip_prefix(BEGIN)?.strip_suffix(END)?;
    let body: Zeroizing<String> = Zeroizing::new(
        inside
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let mut out = Zeroizing::new(String::with_capacity(body.len() + body.len() / 70 + 80));
    out.push_str(BEGIN);
    out.push('\n');
    for line in body.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(line).ok()?);
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    Some(out)
}

/// An unencrypted OpenSSH ECDSA private key's text with its scalar
/// widened to its field's length (zeros in front), and its private
/// section padded again; `None` for any other key.
fn widened_ecdsa(private: &str) -> Option<Zeroizing<String>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    const MAGIC: &[u8] = b"openssh-key-v1\0";
    fn string(at: &[u8]) -> Option<(&[u8], &[u8])> {
        let (len, rest) = at.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let text = rewrapped(private)?;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = Zeroizing::new(STANDARD.decode(body.as_bytes()).ok()?);
    let rest = blob.strip_prefix(MAGIC)?;
    let (cipher, rest) = string(rest)?;
    let (kdf, rest) = string(rest)?;
    let (kdf_options, rest) = string(rest)?;
    let (count, rest) = rest.split_first_chunk::<4>()?;
    let (public, rest) = string(rest)?;
    let (section, _) = string(rest)?;
    if cipher != b"none" || u32::from_be_bytes(*count) != 1 {
        return None;
    }
    let (checks, inner) = section.split_at_checked(8)?;
    // An agent add-identity message has the same fields from the key type
    // on: widen them there.
    let mut message = Zeroizing::new(vec![17u8]);
    message.extend_from_slice(inner);
    let widened = mesh_protocol::agent::ssh_agent::widen_ecdsa_scalar(&message)?;
    let fields = widened.get(1..)?;
    // Key type, curve, point and scalar, then the comment.
    let mut at = fields;
    for _ in 0..4 {
        at = string(at)?.1;
    }
    let (comment, _) = string(at)?;
    let key_len = fields.len() - at.len();
    let mut section = Zeroizing::new(Vec::with_capacity(section.len() + 80));
    section.extend_from_slice(checks);
    section.extend_from_slice(fields.get(..key_len)?);
    put(&mut section, comment);
    let mut pad = 1u8;
    while section.len() % 8 != 0 {
        section.push(pad);
        pad += 1;
    }
    let mut out = Zeroizing::new(MAGIC.to_vec());
    put(&mut out, cipher);
    put(&mut out, kdf);
    put(&mut out, kdf_options);
    out.extend_from_slice(count);
    put(&mut out, public);
    put(&mut out, &section);
    let encoded = Zeroizing::new(STANDARD.encode(out.as_slice()));
    let mut pem = Zeroizing::new(String::new());
    pem.push_str("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(line).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    Some(pem)
}

/// Make an OpenPGP certificate (`ed25519`/`cv25519`, `rsa3072`/`rsa`,
/// `nistp256`/`p256`) for `user_id`, with signing and encryption subkeys,
/// on the blocking pool.
pub async fn generate_openpgp(user_id: &str, algorithm: &str) -> Result<Cert, MakeError> {
    let suite = match algorithm {
        "ed25519" | "cv25519" => CipherSuite::Cv25519,
        "rsa3072" | "rsa" => CipherSuite::RSA3k,
        "nistp256" | "p256" => CipherSuite::P256,
        other => {
            return Err(MakeError::UnknownAlgorithm(
                other.to_owned(),
                "use ed25519, rsa3072 or nistp256",
            ));
        }
    };
    let user_id = user_id.to_owned();
    tokio::task::spawn_blocking(move || {
        CertBuilder::new()
            .set_cipher_suite(suite)
            .add_userid(user_id)
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .add_storage_encryption_subkey()
            .generate()
            .ok()
    })
    .await
    .ok()
    .flatten()
    .map(|(cert, _)| cert)
    .ok_or(MakeError::Failed)
}

/// Take an OpenPGP secret key (armored or binary) whose secrets are not
/// passphrase-protected.
pub fn take_openpgp(bytes: &[u8]) -> Result<Cert, MakeError> {
    let unusable = |why: &str| MakeError::Unusable(why.to_owned());
    let cert = Cert::from_bytes(bytes).map_err(|_| unusable("not an OpenPGP secret key"))?;
    if !cert.is_tsk() {
        return Err(unusable(
            "no secret keys in it: export with gpg --export-secret-keys",
        ));
    }
    if cert
        .keys()
        .secret()
        .any(|k| !k.key().has_unencrypted_secret())
    {
        return Err(unusable(
            "the secret keys are protected by a passphrase: export them without one \
             (gpg --pinentry-mode loopback --passphrase '' --export-secret-keys)",
        ));
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_wrapped_at_64_columns_is_taken() {
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).expect("a key");
        let text = key.to_openssh(ssh_key::LineEnding::LF).expect("text");
        let lines: Vec<&str> = text.lines().collect();
        let body: String = lines[1..lines.len() - 1].concat();
        let wrapped64: Vec<String> = body
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8(c.to_vec()).expect("base64"))
            .collect();
        for ending in ["\n", "\r\n"] {
            let other = format!(
                "{}{ending}{}{ending}{}{ending}",
                lines[0],
                wrapped64.join(ending),
                lines[lines.len() - 1]
            );
            // (ssh-key alone refuses it.)
            assert!(PrivateKey::from_openssh(&other).is_err());
            let taken = take_ssh(&other, None).expect("taken");
            assert_eq!(taken.public_key(), key.public_key());
        }
        assert!(take_ssh("-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64\n", None).is_err());
    }

    #[test]
    fn ecdsa_keys_with_a_short_scalar_are_taken() {
        for (text, public) in [
            (
                include_str!("../../tests/data/ecdsa-256-short"),
                include_str!("../../tests/data/ecdsa-256-short.pub"),
            ),
            (
                include_str!("../../tests/data/ecdsa-384-short"),
                include_str!("../../tests/data/ecdsa-384-short.pub"),
            ),
            (
                include_str!("../../tests/data/ecdsa-521-short"),
                include_str!("../../tests/data/ecdsa-521-short.pub"),
            ),
        ] {
            // (ssh-key alone refuses them.)
            assert!(PrivateKey::from_openssh(text).is_err());
            let taken = take_ssh(text, None).expect("taken");
            let expected = ssh_key::PublicKey::from_openssh(public).expect("public");
            assert_eq!(taken.public_key().key_data(), expected.key_data());
            ssh::Identity::new(taken.key_data(), String::new())
                .expect("the agent can sign with it");
        }
    }
}
