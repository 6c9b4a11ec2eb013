//! The agent's keys: the Mesh's SSH identities and those added with
//! `ssh-add` (keys, and keys with their OpenSSH certificates: certified
//! identities), ready to sign.
//!
//! Private keys live here and nowhere else in the agent. Each is parsed
//! and checked once into the form its algorithm signs with (an Ed25519
//! signing key with its public half, OpenSSL keys for ECDSA and RSA with
//! their precomputed values), so a signature costs one signature and
//! nothing more. ed25519-dalek wipes its keys when dropped; OpenSSL frees
//! its private numbers with `BN_clear_free`.
//!
//! # Copies of Mesh keys
//!
//! A key the Mesh serves may also be added with `ssh-add`; the added copy
//! then stands in for it, with the user's constraints. In OpenSSH's agent
//! removing a key, or its lifetime ending, only ever takes capability
//! away, and so it must here: once a copy with any constraint (`-c`,
//! `-h`, `-t`) has been added, the Mesh's own, unconstrained form of that
//! key is *masked*. It is neither listed nor used while the copy lives,
//! nor after the copy is removed (from any connection, forwarded ones
//! included) or expires: the key is then simply not served. The mask
//! lasts until the Mesh changes that key (a snapshot without it, or with
//! another name or confirmation setting: `mesh ssh delete`, then `create`
//! or `import`) or meshd restarts; a constrained copy still held when the
//! Mesh changes the key masks the new form too. A copy without
//! constraints masks nothing: removing it leaves exactly what was there
//! before. The masks are a subset of the Mesh's keys, so they are bounded
//! by them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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

/// The most `(host, key)` acceptances kept.
pub const MAX_ACCEPTED: usize = 4096;
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
    /// For a certified identity (`ssh-add` of a key with its
    /// `-cert.pub`), the certificate blob: listed, and asked for, in the
    /// key's stead. It and the plain key are two identities, as in
    /// OpenSSH's agent; the signature is the key's either way.
    pub cert: Option<Vec<u8>>,
    /// The comment `ssh-add -l` shows.
    pub comment: String,
    /// Ask through askpass before each signature.
    pub confirm: bool,
    /// When it is forgotten (`ssh-add -t`).
    pub expires: Option<Instant>,
    /// Where it may be used (`ssh-add -h`); empty means anywhere.
    pub destinations: Vec<DestinationConstraint>,
    /// The hosts a Mesh key is for (`mesh ssh create --host`): on a
    /// connection bound to a host, listed first to a host whose names
    /// match, not at all to another; empty means every host.
    pub hosts: Vec<String>,
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
            cert: None,
            comment,
            confirm: false,
            expires: None,
            destinations: Vec::new(),
            hosts: Vec::new(),
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

    /// What the agent lists it by: the certificate blob, or the public
    /// key's.
    pub fn blob(&self) -> Vec<u8> {
        match &self.cert {
            Some(cert) => cert.clone(),
            None => {
                let mut out = Vec::new();
                // (Encoding into a Vec cannot fail.)
                let _ = self.public.encode(&mut out);
                out
            }
        }
    }

    /// Whether it is the plain identity of `public`.
    fn is_key(&self, public: &KeyData) -> bool {
        self.cert.is_none() && &self.public == public
    }

    /// Whether it is the certified identity with this certificate blob.
    fn is_cert(&self, cert: &[u8]) -> bool {
        self.cert.as_deref() == Some(cert)
    }

    /// Whether it is the same identity as `other` (the same key, and the
    /// same certificate or none).
    fn same(&self, other: &Identity) -> bool {
        self.public == other.public && self.cert == other.cert
    }

    /// The OpenSSH fingerprint, `SHA256:...` (a certificate's is its
    /// key's, as OpenSSH prints it).
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint(HashAlg::Sha256).to_string()
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// Whether it carries any constraint (confirmation, lifetime,
    /// destinations): a copy that does masks the Mesh's form of the key.
    pub fn is_constrained(&self) -> bool {
        self.confirm || self.expires.is_some() || !self.destinations.is_empty()
    }

    /// Whether the Mesh changed this key between two snapshots (`self`
    /// the old form): another key, name or confirmation setting.
    fn changed_in(&self, new: &Identity) -> bool {
        self.public != new.public || self.comment != new.comment || self.confirm != new.confirm
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

/// OpenSSH's delay after a wrong unlock passphrase: 0.1 s for each
/// failure in a row, at most 10 s.
pub fn unlock_delay(failures: u32) -> Duration {
    /// OpenSSH stops counting at 100.
    const MAX_FAILURES: u32 = 100;
    Duration::from_millis(100) * failures.min(MAX_FAILURES)
}

/// What an unlock attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unlock {
    Unlocked,
    /// Not locked, or an empty passphrase: refused without a delay, as
    /// OpenSSH does.
    Refused,
    Wrong,
}

#[derive(Default)]
struct State {
    /// From the Application catalog, replaced whole after each sync.
    mesh: Vec<Arc<Identity>>,
    /// From `ssh-add`, in the order added.
    added: Vec<Arc<Identity>>,
    /// Mesh keys a constrained copy masks (see the module's docs): never
    /// served in their Mesh form until the Mesh changes them. Each is a
    /// key of `mesh`.
    masked: Vec<KeyData>,
    lock: Option<Lock>,
}

impl State {
    fn is_masked(&self, public: &KeyData) -> bool {
        self.masked.iter().any(|m| m == public)
    }

    /// The copy `ssh-add` added of a key, if any (expired or not); not
    /// a certified identity of it.
    fn added(&self, public: &KeyData) -> Option<&Arc<Identity>> {
        self.added.iter().find(|id| id.is_key(public))
    }
}

/// Every key the agent holds. Lookups take a short lock; signing happens
/// outside it, so clients sign in parallel.
#[derive(Default)]
pub struct Keyring {
    state: Mutex<State>,
    /// Which keys which servers took: `(host key, key)` SHA-256
    /// fingerprints, learned here or by the account's other devices.
    accepted: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Failed unlocks in a row, for every connection together: the
    /// attempts take turns on it (see [`Keyring::unlock`]).
    unlock_failures: tokio::sync::Mutex<u32>,
    /// Told when a key with a lifetime is added, so that the reaper
    /// looks again (a permit waits if it is busy).
    lifetimes: tokio::sync::Notify,
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
    /// user's constraints, stands in for it; a masked Mesh key with no
    /// live copy is left out). Nothing when locked.
    pub fn identities(&self) -> Vec<Arc<Identity>> {
        let now = Instant::now();
        let state = self.state();
        if state.lock.is_some() {
            return Vec::new();
        }
        let live = |public: &KeyData| state.added(public).filter(|id| !id.expired(now));
        let mut out: Vec<Arc<Identity>> = state
            .mesh
            .iter()
            .filter_map(|id| match live(&id.public) {
                Some(copy) => Some(copy),
                None if state.is_masked(&id.public) => None,
                None => Some(id),
            })
            .cloned()
            .collect();
        for id in &state.added {
            let stands_in = id.cert.is_none() && state.mesh.iter().any(|m| m.public == id.public);
            if !id.expired(now) && !stands_in {
                out.push(Arc::clone(id));
            }
        }
        out
    }

    /// The identity for a public key, if the agent holds it, serves it
    /// (an added copy before the Mesh's, a masked Mesh key never) and is
    /// not locked.
    pub fn find(&self, public: &KeyData) -> Option<Arc<Identity>> {
        let now = Instant::now();
        let state = self.state();
        if state.lock.is_some() {
            return None;
        }
        state
            .added(public)
            .filter(|id| !id.expired(now))
            .or_else(|| {
                state
                    .mesh
                    .iter()
                    .find(|id| &id.public == public && !state.is_masked(public))
            })
            .cloned()
    }

    /// The certified identity with this certificate blob, if the agent
    /// holds it and is not locked.
    pub fn find_cert(&self, cert: &[u8]) -> Option<Arc<Identity>> {
        let now = Instant::now();
        let state = self.state();
        if state.lock.is_some() {
            return None;
        }
        state
            .added
            .iter()
            .find(|id| id.is_cert(cert) && !id.expired(now))
            .cloned()
    }

    /// Add a key (or a certified key), or replace the comment and constraints of one already
    /// added, keeping its place. Refused when locked, and, as OpenSSH
    /// does, when the copy it would replace is not `visible` on the
    /// asking connection. A constrained copy of a Mesh key masks it.
    pub fn add(&self, identity: Identity, visible: impl FnOnce(&Identity) -> bool) -> bool {
        let has_lifetime = identity.expires.is_some();
        {
            let mut state = self.state();
            if state.lock.is_some() {
                return false;
            }
            if state
                .added
                .iter()
                .find(|old| old.same(&identity))
                .is_some_and(|old| !visible(old))
            {
                return false;
            }
            // (A certified identity is not the Mesh's key: it masks
            // nothing.)
            if identity.is_constrained()
                && identity.cert.is_none()
                && !state.is_masked(&identity.public)
                && state.mesh.iter().any(|m| m.public == identity.public)
            {
                state.masked.push(identity.public.clone());
            }
            let identity = Arc::new(identity);
            match state.added.iter_mut().find(|id| id.same(&identity)) {
                Some(slot) => *slot = identity,
                None => state.added.push(identity),
            }
        }
        if has_lifetime {
            self.lifetimes.notify_one();
        }
        true
    }

    /// Forget an added key, if it is `visible` on the asking connection
    /// (OpenSSH: a key a connection cannot see, it cannot remove). A Mesh
    /// key stays: it leaves with `mesh ssh delete`; and a masked one stays
    /// masked.
    pub fn remove(&self, public: &KeyData, visible: impl FnOnce(&Identity) -> bool) -> bool {
        self.remove_where(|id| id.is_key(public), visible)
    }

    /// Forget a certified identity, as [`Keyring::remove`] does a key
    /// (the plain key, if added, stays, as in OpenSSH).
    pub fn remove_cert(&self, cert: &[u8], visible: impl FnOnce(&Identity) -> bool) -> bool {
        self.remove_where(|id| id.is_cert(cert), visible)
    }

    fn remove_where(
        &self,
        which: impl Fn(&Identity) -> bool,
        visible: impl FnOnce(&Identity) -> bool,
    ) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        let Some(at) = state.added.iter().position(|id| which(id)) else {
            return false;
        };
        if !state.added.get(at).is_some_and(|id| visible(id)) {
            return false;
        }
        state.added.remove(at);
        true
    }

    /// Forget every added key (masked Mesh keys stay masked).
    pub fn remove_all(&self) -> bool {
        let mut state = self.state();
        if state.lock.is_some() {
            return false;
        }
        state.added.clear();
        true
    }

    /// Lock with a passphrase; false if already locked or the passphrase
    /// is empty (OpenSSH: "empty password not supported").
    pub fn lock(&self, passphrase: &[u8]) -> bool {
        let mut state = self.state();
        if state.lock.is_some() || passphrase.is_empty() {
            return false;
        }
        state.lock = Some(Lock::new(passphrase));
        true
    }

    /// Unlock; false if not locked or the passphrase is wrong or empty.
    ///
    /// A wrong passphrase costs [`unlock_delay`] of the failures in a row
    /// so far, counted for the whole agent, as OpenSSH's agent does; and
    /// the attempts, from every connection, take turns (the counter's
    /// lock is held across the delay on purpose: OpenSSH's agent, one
    /// thread, sleeps in its event loop). Parallel connections therefore
    /// gain a guesser nothing.
    pub async fn unlock(&self, passphrase: &[u8]) -> bool {
        let mut failures = self.unlock_failures.lock().await;
        match self.try_unlock(passphrase) {
            Unlock::Unlocked => {
                *failures = 0;
                true
            }
            Unlock::Refused => false,
            Unlock::Wrong => {
                *failures = failures.saturating_add(1);
                let delay = unlock_delay(*failures);
                tracing::info!(failures = *failures, ?delay, "unlock failed");
                tokio::time::sleep(delay).await;
                false
            }
        }
    }

    fn try_unlock(&self, passphrase: &[u8]) -> Unlock {
        let mut state = self.state();
        match &state.lock {
            None => Unlock::Refused,
            Some(_) if passphrase.is_empty() => Unlock::Refused,
            Some(lock) if lock.matches(passphrase) => {
                state.lock = None;
                Unlock::Unlocked
            }
            Some(_) => Unlock::Wrong,
        }
    }

    /// Replace the Mesh's identities (after a sync changed them). A mask
    /// stays on a key the Mesh did not change, and a key a constrained
    /// copy is held of is masked whatever the Mesh did.
    pub fn set_mesh(&self, identities: Vec<Identity>) {
        let mut state = self.state();
        let masked = identities
            .iter()
            .filter(|new| {
                let kept = state.is_masked(&new.public)
                    && state
                        .mesh
                        .iter()
                        .any(|old| old.public == new.public && !old.changed_in(new));
                kept || state
                    .added(&new.public)
                    .is_some_and(|copy| copy.is_constrained())
            })
            .map(|id| id.public.clone())
            .collect();
        state.masked = masked;
        state.mesh = identities.into_iter().map(Arc::new).collect();
    }

    /// Note that the server with host key `host` took `key`; true if
    /// that is news (at most [`MAX_ACCEPTED`] are kept).
    pub fn learn(&self, host: &KeyData, key: &KeyData) -> bool {
        let pair = (
            host.fingerprint(HashAlg::Sha256).to_string(),
            key.fingerprint(HashAlg::Sha256).to_string(),
        );
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted.len() < MAX_ACCEPTED && accepted.insert(pair)
    }

    /// Take what the account's devices learned (added to what this one
    /// knows).
    pub fn set_accepted(&self, pairs: Vec<(String, String)>) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        for pair in pairs {
            if accepted.len() >= MAX_ACCEPTED {
                break;
            }
            accepted.insert(pair);
        }
    }

    /// The fingerprints of the keys the server with host key `host` took.
    pub fn accepted_by(&self, host: &KeyData) -> Vec<String> {
        let host = host.fingerprint(HashAlg::Sha256).to_string();
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Wait until a key with a lifetime is added (at once if one was
    /// added since the last wait).
    pub async fn lifetime_added(&self) {
        self.lifetimes.notified().await;
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

    /// Every connection sees every key: an unbound, local one.
    fn anywhere(_: &Identity) -> bool {
        true
    }

    fn listed(ring: &Keyring) -> Vec<KeyData> {
        ring.identities()
            .iter()
            .map(|id| id.public.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn locking_hides_everything_until_the_right_passphrase() {
        let ring = Keyring::default();
        assert!(ring.add(identity(&key(Algorithm::Ed25519)), anywhere));
        let public = ring.identities()[0].public.clone();
        assert!(!ring.lock(b""), "no empty passphrase, as in OpenSSH");
        assert!(ring.lock(b"pw"));
        assert!(!ring.lock(b"pw"), "locking twice fails");
        assert!(ring.identities().is_empty());
        assert!(ring.find(&public).is_none());
        assert!(!ring.add(identity(&key(Algorithm::Ed25519)), anywhere));
        assert!(!ring.unlock(b"wrong").await);
        assert!(!ring.unlock(b"").await);
        assert!(ring.unlock(b"pw").await);
        assert!(
            !ring.unlock(b"pw").await,
            "unlocking an unlocked agent fails"
        );
        assert_eq!(ring.identities().len(), 1);
    }

    #[test]
    fn the_unlock_delay_grows_by_a_tenth_of_a_second_to_ten_seconds() {
        assert_eq!(unlock_delay(0), Duration::ZERO);
        assert_eq!(unlock_delay(1), Duration::from_millis(100));
        assert_eq!(unlock_delay(7), Duration::from_millis(700));
        assert_eq!(unlock_delay(100), Duration::from_secs(10));
        assert_eq!(unlock_delay(u32::MAX), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_unlocks_are_counted_for_the_whole_agent_until_one_succeeds() {
        let ring = Arc::new(Keyring::default());
        assert!(ring.lock(b"pw"));
        // Guesses from several connections at once take turns and add up.
        let guesses: Vec<_> = (0..3)
            .map(|_| {
                let ring = Arc::clone(&ring);
                tokio::spawn(async move { ring.unlock(b"guess").await })
            })
            .collect();
        for guess in guesses {
            assert!(!guess.await.expect("a guess"));
        }
        assert_eq!(*ring.unlock_failures.lock().await, 3);
        // Nothing to unlock, or nothing given: no failure counted.
        assert!(!ring.unlock(b"").await);
        assert_eq!(*ring.unlock_failures.lock().await, 3);
        assert!(ring.unlock(b"pw").await);
        assert_eq!(*ring.unlock_failures.lock().await, 0);
        assert!(!ring.unlock(b"guess").await);
        assert_eq!(*ring.unlock_failures.lock().await, 0);
    }

    #[test]
    fn mesh_keys_list_first_and_survive_remove_all() {
        let ring = Keyring::default();
        let mesh = key(Algorithm::Ed25519);
        ring.set_mesh(vec![identity(&mesh)]);
        let added = key(Algorithm::Ed25519);
        ring.add(identity(&added), anywhere);
        assert_eq!(
            listed(&ring),
            vec![
                mesh.public_key().key_data().clone(),
                added.public_key().key_data().clone()
            ]
        );
        assert!(!ring.remove(mesh.public_key().key_data(), anywhere));
        assert!(ring.remove_all());
        assert_eq!(ring.identities().len(), 1);
        // An added copy of a Mesh key carries the user's constraints.
        let mut copy = identity(&mesh);
        copy.confirm = true;
        ring.add(copy, anywhere);
        let ids = ring.identities();
        assert_eq!(ids.len(), 1);
        assert!(ids[0].confirm);
    }

    /// The three kinds of constrained copy, each as `ssh-add` sends it.
    fn constrained_copies(mesh: &PrivateKey) -> Vec<(&'static str, Identity)> {
        use ssh_agent_lib::proto::extension::HostTuple;
        let mut confirm = identity(mesh);
        confirm.confirm = true;
        let mut lifetime = identity(mesh);
        lifetime.expires = Some(Instant::now() + Duration::from_secs(3600));
        let mut destination = identity(mesh);
        destination.destinations.push(DestinationConstraint {
            from: HostTuple {
                username: String::new(),
                hostname: String::new(),
                keys: Vec::new(),
            },
            to: HostTuple {
                username: String::new(),
                hostname: "a.example".into(),
                keys: Vec::new(),
            },
        });
        vec![("-c", confirm), ("-t", lifetime), ("-h", destination)]
    }

    #[test]
    fn a_constrained_copy_masks_the_mesh_key_after_it_is_gone() {
        let mesh = key(Algorithm::Ed25519);
        let public = mesh.public_key().key_data().clone();
        for gone in ["removed", "all removed"] {
            for (how, copy) in constrained_copies(&mesh) {
                let ring = Keyring::default();
                ring.set_mesh(vec![identity(&mesh)]);
                assert!(ring.add(copy, anywhere));
                let served = ring.find(&public).expect("the copy is served");
                assert!(served.is_constrained(), "{how}: the copy stands in");
                assert_eq!(ring.identities().len(), 1);
                match gone {
                    "removed" => assert!(ring.remove(&public, anywhere)),
                    _ => assert!(ring.remove_all()),
                }
                assert!(ring.identities().is_empty(), "{how} {gone}: listed");
                assert!(ring.find(&public).is_none(), "{how} {gone}: usable");
                assert_eq!(ring.counts(), (1, 0));
            }
        }
        // Nor when the copy's lifetime ends, before or after the reaper.
        let ring = Keyring::default();
        ring.set_mesh(vec![identity(&mesh)]);
        let mut copy = identity(&mesh);
        copy.expires = Some(Instant::now());
        assert!(ring.add(copy, anywhere));
        assert!(ring.identities().is_empty());
        assert!(ring.find(&public).is_none());
        assert_eq!(ring.reap(), None);
        assert!(ring.identities().is_empty());
        assert!(ring.find(&public).is_none());
        // A copy without constraints masks nothing: removing it leaves
        // what was there before.
        let ring = Keyring::default();
        ring.set_mesh(vec![identity(&mesh)]);
        assert!(ring.add(identity(&mesh), anywhere));
        assert!(ring.remove(&public, anywhere));
        assert_eq!(listed(&ring), vec![public.clone()]);
        assert!(ring.find(&public).is_some());
    }

    #[test]
    fn the_mask_lasts_until_the_mesh_changes_the_key() {
        let mesh = key(Algorithm::Ed25519);
        let other = key(Algorithm::Ed25519);
        let public = mesh.public_key().key_data().clone();
        let masked = |ring: &Keyring| {
            let mut copy = identity(&mesh);
            copy.confirm = true;
            assert!(ring.add(copy, anywhere));
            assert!(ring.remove(&public, anywhere));
            assert!(ring.find(&public).is_none());
        };
        let ring = Keyring::default();
        ring.set_mesh(vec![identity(&mesh)]);
        masked(&ring);
        // A sync that leaves the key as it was (another key came) keeps
        // the mask.
        ring.set_mesh(vec![identity(&mesh), identity(&other)]);
        assert_eq!(listed(&ring), vec![other.public_key().key_data().clone()]);
        // `mesh ssh delete`, then `import`: served again.
        ring.set_mesh(vec![identity(&other)]);
        ring.set_mesh(vec![identity(&mesh), identity(&other)]);
        assert!(ring.find(&public).is_some());
        // The Mesh changing its confirmation setting, or its name, is a
        // change too.
        for change in ["confirm", "name"] {
            masked(&ring);
            let mut changed = identity(&mesh);
            match change {
                "confirm" => changed.confirm = true,
                _ => changed.comment = "renamed".into(),
            }
            ring.set_mesh(vec![changed]);
            assert!(ring.find(&public).is_some(), "after a {change} change");
            ring.set_mesh(vec![identity(&mesh)]);
        }
        // A constrained copy still held when the Mesh changes the key
        // masks the new form; so does one added before the key came from
        // the Mesh.
        let ring = Keyring::default();
        let mut copy = identity(&mesh);
        copy.confirm = true;
        assert!(ring.add(copy, anywhere));
        ring.set_mesh(vec![identity(&mesh)]);
        assert!(ring.remove(&public, anywhere));
        assert!(ring.find(&public).is_none());
        assert!(ring.identities().is_empty());
    }

    #[test]
    fn a_copy_a_connection_cannot_see_it_cannot_remove_or_replace() {
        let ring = Keyring::default();
        let private = key(Algorithm::Ed25519);
        let public = private.public_key().key_data().clone();
        assert!(ring.add(identity(&private), anywhere));
        assert!(!ring.remove(&public, |_| false));
        assert!(!ring.add(identity(&private), |_| false));
        assert_eq!(listed(&ring), vec![public.clone()]);
        // A new key has no old copy to be seen.
        assert!(ring.add(identity(&key(Algorithm::Ed25519)), |_| false));
        assert!(ring.remove(&public, anywhere));
    }

    #[test]
    fn a_certified_identity_stands_beside_the_key_and_masks_nothing() {
        let mesh = key(Algorithm::Ed25519);
        let public = mesh.public_key().key_data().clone();
        let ring = Keyring::default();
        ring.set_mesh(vec![identity(&mesh)]);
        let mut certified = identity(&mesh);
        certified.cert = Some(b"a certificate".to_vec());
        certified.confirm = true;
        assert!(ring.add(certified, anywhere));
        // Both served: the Mesh's key as it was, and the certificate.
        let ids = ring.identities();
        assert_eq!(ids.len(), 2);
        assert!(ids[0].cert.is_none() && !ids[0].confirm);
        assert_eq!(ids[1].blob(), b"a certificate");
        assert!(ring.find(&public).is_some_and(|id| id.cert.is_none()));
        assert!(ring.find_cert(b"a certificate").is_some());
        assert!(ring.find_cert(b"another").is_none());
        // Removing the key by its public half leaves the certificate;
        // removing the certificate leaves the Mesh key unmasked.
        assert!(!ring.remove(&public, anywhere));
        assert!(ring.remove_cert(b"a certificate", anywhere));
        assert!(!ring.remove_cert(b"a certificate", anywhere));
        assert_eq!(listed(&ring), vec![public.clone()]);
        assert!(ring.find(&public).is_some());
        // A plain copy and a certified one are two identities.
        let mut certified = identity(&mesh);
        certified.cert = Some(b"a certificate".to_vec());
        assert!(ring.add(certified, anywhere));
        assert!(ring.add(identity(&mesh), anywhere));
        assert_eq!(ring.counts(), (1, 2));
        assert!(ring.remove(&public, anywhere));
        assert_eq!(ring.counts(), (1, 1));
        assert!(ring.find_cert(b"a certificate").is_some());
    }

    #[test]
    fn expired_keys_disappear() {
        let ring = Keyring::default();
        let mut id = identity(&key(Algorithm::Ed25519));
        id.expires = Some(Instant::now());
        ring.add(id, anywhere);
        assert!(ring.identities().is_empty());
        assert_eq!(ring.reap(), None);
        assert_eq!(ring.counts(), (0, 0));
    }

    #[tokio::test]
    async fn adding_a_key_with_a_lifetime_tells_the_reaper() {
        let ring = Keyring::default();
        let waiting = |ring: &Keyring| {
            use std::future::Future as _;
            let mut wait = std::pin::pin!(ring.lifetime_added());
            let waker = std::task::Waker::noop();
            wait.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_pending()
        };
        ring.add(identity(&key(Algorithm::Ed25519)), anywhere);
        assert!(waiting(&ring), "no lifetime, no news");
        let mut id = identity(&key(Algorithm::Ed25519));
        id.expires = Some(Instant::now() + Duration::from_secs(60));
        ring.add(id, anywhere);
        assert!(!waiting(&ring), "the reaper hears of it");
        assert!(waiting(&ring), "once");
    }
}
