//! The agent's keys: the Mesh's SSH identities and those added with
//! `ssh-add`, ready to sign.
//!
//! Private keys live here and nowhere else in the agent. Each is parsed
//! and checked once into the form its algorithm signs with (an Ed25519
//! signing key with its public half, OpenSSL keys for ECDSA and RSA with
//! their precomputed values), so a signature costs one signature and
//! nothing more. ed25519-dalek wipes its keys when dropped; OpenSSL frees
//! its private numbers with `BN_clear_free`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha512};
use signature::Signer as _;
use ssh_agent_lib::proto::extension::DestinationConstraint;
use ssh_agent_lib::ssh_encoding::Encode as _;
use ssh_key::private::KeypairData;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, Signature};
use subtle::ConstantTimeEq as _;

/// The sign-request flag asking for `rsa-sha2-256` (RFC 8332).
pub const RSA_SHA2_256: u32 = 2;
/// The sign-request flag asking for `rsa-sha2-512` (RFC 8332).
pub const RSA_SHA2_512: u32 = 4;

/// Why a key cannot be loaded or cannot sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// An algorithm the agent does not hold keys for (DSA, FIDO, ...).
    #[error("unsupported key type {0}")]
    Unsupported(String),
    /// The private and public halves do not belong together, or the key
    /// is not a valid key of its type.
    #[error("invalid {0} key")]
    Invalid(&'static str),
    /// A plain `ssh-rsa` (SHA-1) signature: refused, as OpenSSH's client
    /// has refused it since 8.8.
    #[error("refusing an ssh-rsa (SHA-1) signature")]
    Sha1,
    /// The signature primitive failed.
    #[error("signing failed")]
    Sign,
}

/// A private key in the form its algorithm signs with: Ed25519 with
/// ed25519-dalek; ECDSA and RSA with OpenSSL (already linked for OpenPGP),
/// whose P-256 and RSA code is both constant-time and several times
/// faster than the pure-Rust crates'.
enum Signer {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Ecdsa(EcdsaCurve, PKey<Private>),
    Rsa(PKey<Private>),
}

impl Signer {
    fn new(keypair: &KeypairData) -> Result<Signer, KeyError> {
        Ok(match keypair {
            KeypairData::Ed25519(pair) => {
                let key = ed25519_dalek::SigningKey::from(&pair.private);
                if key.verifying_key().as_bytes() != pair.public.as_ref() {
                    return Err(KeyError::Invalid("ed25519"));
                }
                Signer::Ed25519(Box::new(key))
            }
            KeypairData::Ecdsa(pair) => {
                let invalid = |_| KeyError::Invalid("ecdsa");
                let curve = pair.curve();
                let nid = match curve {
                    EcdsaCurve::NistP256 => Nid::X9_62_PRIME256V1,
                    EcdsaCurve::NistP384 => Nid::SECP384R1,
                    EcdsaCurve::NistP521 => Nid::SECP521R1,
                };
                let group = EcGroup::from_curve_name(nid).map_err(invalid)?;
                let mut ctx = BigNumContext::new_secure().map_err(invalid)?;
                let public = EcPoint::from_bytes(&group, pair.public_key_bytes(), &mut ctx)
                    .map_err(invalid)?;
                let private = BigNum::from_slice(pair.private_key_bytes()).map_err(invalid)?;
                // from_private_components checks the point is on the
                // curve; check_key that it is the private key's.
                let key =
                    EcKey::from_private_components(&group, &private, &public).map_err(invalid)?;
                key.check_key().map_err(invalid)?;
                Signer::Ecdsa(curve, PKey::from_ec_key(key).map_err(invalid)?)
            }
            KeypairData::Rsa(pair) => {
                fn int(m: &ssh_key::Mpint) -> Result<&[u8], KeyError> {
                    m.as_positive_bytes().ok_or(KeyError::Invalid("rsa"))
                }
                let key = super::rsa::from_parts(
                    int(&pair.public.n)?,
                    int(&pair.public.e)?,
                    int(&pair.private.d)?,
                    int(&pair.private.p)?,
                    int(&pair.private.q)?,
                    int(&pair.private.iqmp)?,
                )
                .ok_or(KeyError::Invalid("rsa"))?;
                if key.bits() < 2048 {
                    return Err(KeyError::Unsupported("RSA shorter than 2048 bits".into()));
                }
                Signer::Rsa(key)
            }
            other => {
                let name = other
                    .algorithm()
                    .map(|alg| alg.to_string())
                    .unwrap_or_else(|_| "unknown".into());
                return Err(KeyError::Unsupported(name));
            }
        })
    }

    fn sign(&self, data: &[u8], flags: u32) -> Result<Signature, KeyError> {
        fn failed<E>(_: E) -> KeyError {
            KeyError::Sign
        }
        match self {
            Signer::Ed25519(key) => {
                Signature::new(Algorithm::Ed25519, key.sign(data).to_bytes().to_vec())
                    .map_err(failed)
            }
            Signer::Ecdsa(curve, key) => {
                // RFC 5656 §6.2.1: the hash goes with the curve.
                let digest = match curve {
                    EcdsaCurve::NistP256 => MessageDigest::sha256(),
                    EcdsaCurve::NistP384 => MessageDigest::sha384(),
                    EcdsaCurve::NistP521 => MessageDigest::sha512(),
                };
                let der = openssl::sign::Signer::new(digest, key)
                    .and_then(|mut signer| signer.sign_oneshot_to_vec(data))
                    .map_err(failed)?;
                let sig = EcdsaSig::from_der(&der).map_err(failed)?;
                // The SSH form: mpint r, mpint s.
                let mut blob = Vec::with_capacity(der.len() + 8);
                for n in [sig.r(), sig.s()] {
                    ssh_key::Mpint::from_positive_bytes(&n.to_vec())
                        .map_err(failed)?
                        .encode(&mut blob)
                        .map_err(failed)?;
                }
                Signature::new(Algorithm::Ecdsa { curve: *curve }, blob).map_err(failed)
            }
            Signer::Rsa(key) => {
                let (hash, digest) = if flags & RSA_SHA2_512 != 0 {
                    (HashAlg::Sha512, MessageDigest::sha512())
                } else if flags & RSA_SHA2_256 != 0 {
                    (HashAlg::Sha256, MessageDigest::sha256())
                } else {
                    return Err(KeyError::Sha1);
                };
                // OpenSSL blinds RSA private-key operations by default.
                let bytes = openssl::sign::Signer::new(digest, key)
                    .and_then(|mut signer| signer.sign_oneshot_to_vec(data))
                    .map_err(failed)?;
                Signature::new(Algorithm::Rsa { hash: Some(hash) }, bytes).map_err(failed)
            }
        }
    }
}

/// A new RSA key pair of `bits` bits, made by OpenSSL.
pub fn generate_rsa(bits: u32) -> Result<KeypairData, KeyError> {
    let rsa = Rsa::generate(bits).map_err(|_| KeyError::Invalid("rsa"))?;
    let int = |n: &openssl::bn::BigNumRef| {
        ssh_key::Mpint::from_positive_bytes(&zeroize::Zeroizing::new(n.to_vec()))
            .map_err(|_| KeyError::Invalid("rsa"))
    };
    let (Some(p), Some(q), Some(iqmp)) = (rsa.p(), rsa.q(), rsa.iqmp()) else {
        return Err(KeyError::Invalid("rsa"));
    };
    Ok(KeypairData::Rsa(ssh_key::private::RsaKeypair {
        public: ssh_key::public::RsaPublicKey {
            e: int(rsa.e())?,
            n: int(rsa.n())?,
        },
        private: ssh_key::private::RsaPrivateKey {
            d: int(rsa.d())?,
            iqmp: int(iqmp)?,
            p: int(p)?,
            q: int(q)?,
        },
    }))
}

/// A key the agent can sign with, and the rules for using it.
pub struct Identity {
    /// The public key, as the agent protocol carries it.
    pub public: KeyData,
    /// The comment `ssh-add -l` shows.
    pub comment: String,
    /// Ask through askpass before each signature.
    pub confirm: bool,
    /// When it is forgotten (`ssh-add -t`).
    pub expires: Option<Instant>,
    /// Where it may be used (`ssh-add -h`); empty means anywhere.
    pub destinations: Vec<DestinationConstraint>,
    signer: Signer,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a private key, unconstrained.
    pub fn new(keypair: &KeypairData, comment: String) -> Result<Self, KeyError> {
        Ok(Identity {
            public: KeyData::try_from(keypair).map_err(|_| KeyError::Invalid("public"))?,
            signer: Signer::new(keypair)?,
            comment,
            confirm: false,
            expires: None,
            destinations: Vec::new(),
        })
    }

    /// Sign `data`. `flags` picks the RSA hash; other algorithms ignore it.
    pub fn sign(&self, data: &[u8], flags: u32) -> Result<Signature, KeyError> {
        self.signer.sign(data, flags)
    }

    /// Whether this is an RSA key (slow enough to sign off the event loop).
    pub fn is_rsa(&self) -> bool {
        matches!(self.signer, Signer::Rsa(_))
    }

    /// The OpenSSH fingerprint, `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint(HashAlg::Sha256).to_string()
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// The passphrase an agent was locked with, salted and hashed.
struct Lock {
    salt: [u8; 16],
    hash: [u8; 64],
}

impl Lock {
    fn new(passphrase: &[u8]) -> Lock {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        Lock {
            hash: Lock::digest(&salt, passphrase),
            salt,
        }
    }

    fn digest(salt: &[u8; 16], passphrase: &[u8]) -> [u8; 64] {
        let mut hasher = Sha512::new();
        hasher.update(salt);
        hasher.update(passphrase);
        hasher.finalize().into()
    }

    fn matches(&self, passphrase: &[u8]) -> bool {
        Lock::digest(&self.salt, passphrase)
            .ct_eq(&self.hash)
            .into()
    }
}

#[derive(Default)]
struct State {
    /// From the Application catalog, replaced whole after each sync.
    mesh: Vec<Arc<Identity>>,
    /// From `ssh-add`, in the order added.
    added: Vec<Arc<Identity>>,
    lock: Option<Lock>,
}

/// Every key the agent holds. Lookups take a short lock; signing happens
/// outside it, so clients sign in parallel.
#[derive(Default)]
pub struct Keyring {
    state: Mutex<State>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").finish_non_exhaustive()
    }
}

impl Keyring {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the lists half
        // changed: every change is one assignment or one Vec operation.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop expired keys; say when the next one expires.
    pub fn reap(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.state();
        state.added.retain(|id| !id.expired(now));
        state.added.iter().filter_map(|id| id.expires).min()
    }

    /// Whether the agent is locked.
    pub fn is_locked(&self) -> bool {
        self.state().lock.is_some()
    }

    /// The identities a client may see, in order: the Mesh's first, then
    /// those added, each key once (an added copy of a Mesh key, with the
    /// user's constraints, stands in for it). Nothing when locked.
    pub fn identities(&self) -> Vec<Arc<Identity>> {
        let now = Instant::now();
        let state = self.state();
        if state.lock.is_some() {
            return Vec::new();
        }
        let added = |public: &KeyData| {
            state
                .added
                .iter()
                .find(|id| &id.public == public && !id.expired(now))
        };
        let mut out: Vec<Arc<Identity>> = state
            .mesh
            .iter()
            .map(|id| Arc::clone(added(&id.public).unwrap_or(id)))
            .collect();
        for id in &state.added {
            if !id.expired(now) && !state.mesh.iter().any(|m| m.public == id.public) {
                out.push(Arc::clone(id));
            }
        }
        out
    }

    /// The identity for a public key, if the agent holds it and is not
    /// locked.
    pub fn find(&self, public: &KeyData) -> Option<Arc<Identity>> {
        let now = Instant::now();
        let state = self.state();
        if state.lock.is_some() {
            return None;
        }
        state
            .added
            .iter()
            .find(|id| &id.public == public && !id.expired(now))
            .or_else(|| state.mesh.iter().find(|id| &id.public == public))
            .cloned()
    }

    /// Add a key, or replace the comment and constraints of one already
    /// added, keeping its place. Refused when locked.
    pub fn add(&self, identity: Identity) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        let identity = Arc::new(identity);
        match state
            .added
            .iter_mut()
            .find(|id| id.public == identity.public)
        {
            Some(slot) => *slot = identity,
            None => state.added.push(identity),
        }
        true
    }

    /// Forget an added key. A Mesh key stays: it leaves with `mesh ssh
    /// delete`.
    pub fn remove(&self, public: &KeyData) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        let before = state.added.len();
        state.added.retain(|id| &id.public != public);
        state.added.len() != before
    }

    /// Forget every added key.
    pub fn remove_all(&self) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        state.added.clear();
        true
    }

    /// Lock with a passphrase; false if already locked.
    pub fn lock(&self, passphrase: &[u8]) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        state.lock = Some(Lock::new(passphrase));
        true
    }

    /// Unlock; false if not locked or the passphrase is wrong.
    pub fn unlock(&self, passphrase: &[u8]) -> bool {
        let mut state = self.state();
        match &state.lock {
            Some(lock) if lock.matches(passphrase) => {
                state.lock = None;
                true
            }
            _ => false,
        }
    }

    /// Replace the Mesh's identities (after a sync changed them).
    pub fn set_mesh(&self, identities: Vec<Identity>) {
        let identities = identities.into_iter().map(Arc::new).collect();
        self.state().mesh = identities;
    }

    /// How many Mesh and added identities there are, locked or not.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.mesh.len(), state.added.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signature::Verifier as _;
    use ssh_key::PrivateKey;

    fn key(alg: Algorithm) -> PrivateKey {
        PrivateKey::random(&mut OsRng, alg).expect("key")
    }

    fn identity(private: &PrivateKey) -> Identity {
        Identity::new(private.key_data(), "test".into()).expect("identity")
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        for curve in [
            EcdsaCurve::NistP256,
            EcdsaCurve::NistP384,
            EcdsaCurve::NistP521,
        ] {
            let private = key(Algorithm::Ecdsa { curve });
            let sig = identity(&private).sign(b"data", 0).expect("sign");
            private
                .public_key()
                .key_data()
                .verify(b"data", &sig)
                .expect("verify");
        }
        let private = key(Algorithm::Ed25519);
        let sig = identity(&private).sign(b"data", 0).expect("sign");
        private
            .public_key()
            .key_data()
            .verify(b"data", &sig)
            .expect("verify");
    }

    #[test]
    fn rsa_honours_the_hash_flags_and_refuses_sha1() {
        let private = PrivateKey::new(generate_rsa(2048).expect("rsa"), "rsa").expect("key");
        let id = identity(&private);
        for (flags, hash) in [
            (RSA_SHA2_256, HashAlg::Sha256),
            (RSA_SHA2_512, HashAlg::Sha512),
        ] {
            let sig = id.sign(b"data", flags).expect("sign");
            assert_eq!(sig.algorithm(), Algorithm::Rsa { hash: Some(hash) });
            private
                .public_key()
                .key_data()
                .verify(b"data", &sig)
                .expect("verify");
        }
        assert_eq!(id.sign(b"data", 0).expect_err("SHA-1"), KeyError::Sha1);
    }

    #[test]
    fn a_mismatched_public_half_is_refused() {
        let a = key(Algorithm::Ed25519);
        let b = key(Algorithm::Ed25519);
        let (KeypairData::Ed25519(mut pair), KeypairData::Ed25519(other)) =
            (a.key_data().clone(), b.key_data().clone())
        else {
            unreachable!()
        };
        pair.public = other.public;
        assert_eq!(
            Identity::new(&KeypairData::Ed25519(pair), String::new()).expect_err("mismatch"),
            KeyError::Invalid("ed25519")
        );
    }

    #[test]
    fn locking_hides_everything_until_the_right_passphrase() {
        let ring = Keyring::default();
        assert!(ring.add(identity(&key(Algorithm::Ed25519))));
        let public = ring.identities()[0].public.clone();
        assert!(ring.lock(b"pw"));
        assert!(!ring.lock(b"pw"), "locking twice fails");
        assert!(ring.identities().is_empty());
        assert!(ring.find(&public).is_none());
        assert!(!ring.add(identity(&key(Algorithm::Ed25519))));
        assert!(!ring.unlock(b"wrong"));
        assert!(ring.unlock(b"pw"));
        assert!(!ring.unlock(b"pw"), "unlocking an unlocked agent fails");
        assert_eq!(ring.identities().len(), 1);
    }

    #[test]
    fn mesh_keys_list_first_and_survive_remove_all() {
        let ring = Keyring::default();
        let mesh = key(Algorithm::Ed25519);
        ring.set_mesh(vec![identity(&mesh)]);
        let added = key(Algorithm::Ed25519);
        ring.add(identity(&added));
        let listed: Vec<_> = ring
            .identities()
            .iter()
            .map(|id| id.public.clone())
            .collect();
        assert_eq!(
            listed,
            vec![
                mesh.public_key().key_data().clone(),
                added.public_key().key_data().clone()
            ]
        );
        assert!(!ring.remove(mesh.public_key().key_data()));
        assert!(ring.remove_all());
        assert_eq!(ring.identities().len(), 1);
        // An added copy of a Mesh key carries the user's constraints.
        let mut copy = identity(&mesh);
        copy.confirm = true;
        ring.add(copy);
        let ids = ring.identities();
        assert_eq!(ids.len(), 1);
        assert!(ids[0].confirm);
    }

    #[test]
    fn expired_keys_disappear() {
        let ring = Keyring::default();
        let mut id = identity(&key(Algorithm::Ed25519));
        id.expires = Some(Instant::now());
        ring.add(id);
        assert!(ring.identities().is_empty());
        assert_eq!(ring.reap(), None);
        assert_eq!(ring.counts(), (0, 0));
    }
}
