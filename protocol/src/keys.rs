//! Keys from seeds, key co-generation and key fingerprints (mesh-udf-13
//! §4.4, mesh-architecture §6; research digest §1.6 and §4.2).
//!
//! Every Mesh key derives from a seed ([`Seed`]) and a key name, exactly as
//! the reference code does (the digest's variant (a)):
//!
//! ```text
//! okm = HKDF-SHA512(salt = none, ikm = specifier || secret,
//!                   info = specifier || UTF8(key name), L)
//! ```
//!
//! with L = 32 bytes for Ed25519 and X25519, 56 for Ed448 and X448. The
//! OKM is the RFC 8032 secret of an Ed key (Ed448's is 56 bytes where the
//! RFC has 57: SHAKE256 takes it as it is) and the RFC 7748 private scalar
//! of an X key. Names are concatenated with no separator
//! (`CompleteAccountProfile`, `BaseDeviceEncrypt`, `ActivationDeviceSign`,
//! per-store `CompleteAccountEncrypt` + store name).
//!
//! **Co-generation**: a device's key in an account is the sum of its base
//! key and an activation key: private scalars add modulo the group order,
//! public points add. So an administrator can compute the device's public
//! key while only the device knows the private one. Keys are therefore
//! kept as scalars and Edwards points, not as RFC byte strings:
//!
//! * an Ed key signs with its scalar and a 32- or 57-byte nonce prefix; a
//!   combined key's prefix is `SHA-512("mesh-cogeneration" || prefixes)`
//!   (ours: signatures need only verify, not repeat the reference's bytes);
//! * an X25519 public key is carried as its Edwards point, from which the
//!   RFC 7748 u-coordinate follows, because u alone cannot be added; the
//!   reference solves the same problem for X448 with a 57th byte.
//!
//! X448 keys derive and agree as RFC 7748 says, but are not co-generated
//! yet: with ed448-goldilocks-plus 0.16, multiplying the base point by a
//! scalar reduced modulo q does not always give the same point as the
//! unreduced RFC 7748 scalar (RFC 7748's own Alice key shows it), so sums
//! of X448 scalars cannot be trusted until that is understood.
//!
//! Fingerprints are SHA-2-512 UDFs of the key's RFC 8410
//! SubjectPublicKeyInfo with content type `application/pkix-keyinfo`
//! (the reference's own bytes could not be reproduced; see the digest).

#![allow(
    clippy::indexing_slicing,
    reason = "fixed-size key buffers, indexed by constants; nothing here parses untrusted input"
)]

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use ed448_goldilocks_plus as ed448;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use hkdf::Hkdf;
use sha2::{Digest as _, Sha512};
use sha3::Shake256;
use sha3::digest::{ExtendableOutput, Update, XofReader};
use zeroize::{Zeroize, Zeroizing};

use crate::udf::seed::{KeyAlg, Seed};
use crate::udf::{DigestAlg, Udf, code, digest};

/// Why a key operation failed. Deliberately without detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm cannot be used here (or is not supported).
    #[error("unsupported key algorithm")]
    Unsupported,
    /// Two keys of different algorithms were combined.
    #[error("the keys are of different algorithms")]
    Mismatch,
    /// Key bytes that are not a valid key.
    #[error("invalid key")]
    Invalid,
    /// A signature did not verify, or an agreement failed.
    #[error("failed")]
    Failed,
}

/// The key-name parts of mesh-architecture: `<Type><Actor><Operation>`.
pub mod name {
    /// Keys from the account seed.
    pub const COMPLETE: &str = "Complete";
    /// A device's base keys, from its device seed.
    pub const BASE: &str = "Base";
    /// Activation keys, from an activation seed.
    pub const ACTIVATION: &str = "Activation";
    /// The account.
    pub const ACCOUNT: &str = "Account";
    /// A device.
    pub const DEVICE: &str = "Device";
    /// A service.
    pub const SERVICE: &str = "Service";
    /// Encryption.
    pub const ENCRYPT: &str = "Encrypt";
    /// Signature.
    pub const SIGN: &str = "Sign";
    /// Authentication.
    pub const AUTHENTICATE: &str = "Authenticate";
    /// The profile's own signature key.
    pub const PROFILE: &str = "Profile";
    /// An administrator's signature.
    pub const ADMIN_SIGN: &str = "AdminSign";
    /// An administrator's encryption.
    pub const ADMIN_ENCRYPT: &str = "AdminEncrypt";
    /// Escrow.
    pub const ESCROW: &str = "Escrow";

    /// `CompleteAccountProfile`, `BaseDeviceEncrypt`, ...: the parts
    /// concatenated with no separator, then the store name if any.
    pub fn key_name(kind: &str, actor: &str, operation: &str, store: Option<&str>) -> String {
        format!("{kind}{actor}{operation}{}", store.unwrap_or_default())
    }
}

/// Which pair of curves a suite of Mesh keys uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// Ed25519 and X25519: what ssh and gpg use, our default.
    Curve25519,
    /// Ed448 and X448: the reference's default.
    Curve448,
}

impl Suite {
    /// The algorithm for a key operation: encryption, escrow and
    /// authentication use key agreement; everything else signs.
    pub fn alg_for(self, operation: &str) -> KeyAlg {
        let agreement = [
            name::ENCRYPT,
            name::ESCROW,
            name::ADMIN_ENCRYPT,
            name::AUTHENTICATE,
        ]
        .contains(&operation);
        match (self, agreement) {
            (Suite::Curve25519, true) => KeyAlg::X25519,
            (Suite::Curve25519, false) => KeyAlg::Ed25519,
            (Suite::Curve448, true) => KeyAlg::X448,
            (Suite::Curve448, false) => KeyAlg::Ed448,
        }
    }
}

/// The HKDF output for `key_name` from `seed` (variant (a), the
/// reference code's).
pub fn derive_okm(seed: &Seed, key_name: &str, len: usize) -> Zeroizing<Vec<u8>> {
    let mut info = Vec::with_capacity(2 + key_name.len());
    info.extend_from_slice(&seed.specifier().to_bytes());
    info.extend_from_slice(key_name.as_bytes());
    expand(None, seed.ikm(), &info, len)
}

/// The HKDF output as the drafts' examples compute it (variant (b):
/// salt = specifier, no info). Only for checking the published vectors.
pub fn derive_okm_draft(seed: &Seed, len: usize) -> Zeroizing<Vec<u8>> {
    expand(Some(&seed.specifier().to_bytes()), seed.ikm(), &[], len)
}

fn expand(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut okm = Zeroizing::new(vec![0u8; len]);
    Hkdf::<Sha512>::new(salt, ikm)
        .expand(info, &mut okm)
        .unwrap_or_else(|_| unreachable!("key lengths are far below HKDF's limit"));
    okm
}

/// The private scalar of an ECDSA key on P-256, P-384 or P-521 from an
/// OKM, big-endian: `d = (c mod (p − 1)) + 1` with c the OKM as a
/// big-endian integer and p the curve's *field* prime, as the drafts'
/// examples compute it (research digest §1.6; the prose says the group
/// order).
pub fn ecdsa_scalar(alg: KeyAlg, okm: &[u8]) -> Result<Vec<u8>, KeyError> {
    use crypto_bigint::{Encoding, NonZero, U640};
    let (p, len) = match alg {
        KeyAlg::P256 => (
            U640::from_be_hex(concat!(
                "000000000000000000000000000000000000000000000000",
                "000000000000000000000000000000000000000000000000",
                "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff"
            )),
            32,
        ),
        KeyAlg::P384 => (
            U640::from_be_hex(concat!(
                "0000000000000000000000000000000000000000000000000000000000000000",
                "ffffffffffffffffffffffffffffffffffffffffffffffff",
                "fffffffffffffffeffffffff0000000000000000ffffffff"
            )),
            48,
        ),
        KeyAlg::P521 => (U640::ONE.shl_vartime(521).wrapping_sub(&U640::ONE), 66),
        _ => return Err(KeyError::Unsupported),
    };
    if okm.len() > 80 {
        return Err(KeyError::Invalid);
    }
    let mut wide = Zeroizing::new([0u8; 80]);
    wide[80 - okm.len()..].copy_from_slice(okm);
    let c = U640::from_be_slice(wide.as_ref());
    // CtOption::unwrap_or_else runs its closure in every case (constant
    // time), so go through Option.
    let modulus: NonZero<U640> =
        Option::from(NonZero::new(p.wrapping_sub(&U640::ONE))).ok_or(KeyError::Unsupported)?;
    let d = c.rem(&modulus).wrapping_add(&U640::ONE);
    Ok(d.to_be_bytes()[80 - len..].to_vec())
}

/// The OKM length for an algorithm.
fn okm_len(alg: KeyAlg) -> Result<usize, KeyError> {
    match alg {
        KeyAlg::Ed25519 | KeyAlg::X25519 => Ok(32),
        KeyAlg::Ed448 | KeyAlg::X448 => Ok(56),
        _ => Err(KeyError::Unsupported),
    }
}

/// A private key, held as what co-generation needs. Wiped on drop; its
/// `Debug` names only the algorithm.
pub enum PrivateKey {
    /// Ed25519: scalar and nonce prefix.
    Ed25519(ExpandedSecretKey),
    /// X25519: the scalar, reduced modulo the group order.
    X25519(Scalar),
    /// Ed448: scalar and 57-byte nonce prefix.
    Ed448(ed448::Scalar, Zeroizing<[u8; 57]>),
    /// X448: the clamped RFC 7748 scalar, not reduced.
    X448(ed448::Scalar),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PrivateKey")
            .field(&self.alg())
            .finish_non_exhaustive()
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        match self {
            PrivateKey::Ed25519(_) => {} // ExpandedSecretKey wipes itself.
            PrivateKey::X25519(s) => s.zeroize(),
            PrivateKey::Ed448(s, _) | PrivateKey::X448(s) => s.zeroize(),
        }
    }
}

/// A public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519: the Edwards point.
    Ed25519(EdwardsPoint),
    /// X25519: the Edwards point whose u-coordinate is the RFC 7748 key.
    X25519(EdwardsPoint),
    /// Ed448: the Edwards point.
    Ed448(ed448::EdwardsPoint),
    /// X448: the RFC 7748 u-coordinate.
    X448([u8; 56]),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?}, {})", self.alg(), self.fingerprint())
    }
}

impl PrivateKey {
    /// Derive the key `key_name` of algorithm `alg` from `seed`.
    pub fn derive(seed: &Seed, alg: KeyAlg, key_name: &str) -> Result<PrivateKey, KeyError> {
        let okm = derive_okm(seed, key_name, okm_len(alg)?);
        PrivateKey::from_okm(alg, &okm)
    }

    /// A key from its RFC secret bytes: the 32-byte Ed25519 secret or
    /// X25519 scalar, the Ed448 secret (56 or 57 bytes), the X448 scalar.
    pub fn from_okm(alg: KeyAlg, okm: &[u8]) -> Result<PrivateKey, KeyError> {
        match alg {
            KeyAlg::Ed25519 => {
                let secret: &[u8; 32] = okm.try_into().map_err(|_| KeyError::Invalid)?;
                Ok(PrivateKey::Ed25519(ExpandedSecretKey::from(secret)))
            }
            KeyAlg::X25519 => {
                let mut bytes: [u8; 32] = okm.try_into().map_err(|_| KeyError::Invalid)?;
                bytes[0] &= 248;
                bytes[31] &= 127;
                bytes[31] |= 64;
                let scalar = Scalar::from_bytes_mod_order(bytes);
                bytes.zeroize();
                Ok(PrivateKey::X25519(scalar))
            }
            KeyAlg::Ed448 => {
                let mut h = Zeroizing::new([0u8; 114]);
                Shake256::default()
                    .chain(okm)
                    .finalize_xof()
                    .read(h.as_mut());
                let mut s = ed448::ScalarBytes::default();
                s.copy_from_slice(&h[..57]);
                s[0] &= 0xFC;
                s[56] = 0;
                s[55] |= 0x80;
                let scalar = ed448::Scalar::from_bytes_mod_order(&s);
                s.zeroize();
                let mut prefix = Zeroizing::new([0u8; 57]);
                prefix.copy_from_slice(&h[57..]);
                Ok(PrivateKey::Ed448(scalar, prefix))
            }
            KeyAlg::X448 => {
                if okm.len() != 56 {
                    return Err(KeyError::Invalid);
                }
                let mut s = [0u8; 56];
                s.copy_from_slice(okm);
                s[0] &= 252;
                s[55] |= 128;
                // Kept whole, not reduced: the Montgomery ladder then is
                // RFC 7748's X448, and the clamped scalar, a multiple of
                // the cofactor 4, clears any small-order component.
                let scalar = ed448::Scalar::from_bytes(&s);
                s.zeroize();
                Ok(PrivateKey::X448(scalar))
            }
            _ => Err(KeyError::Unsupported),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            PrivateKey::Ed25519(_) => KeyAlg::Ed25519,
            PrivateKey::X25519(_) => KeyAlg::X25519,
            PrivateKey::Ed448(..) => KeyAlg::Ed448,
            PrivateKey::X448(_) => KeyAlg::X448,
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::Ed25519(esk) => PublicKey::Ed25519(ED25519_BASEPOINT_POINT * esk.scalar),
            PrivateKey::X25519(s) => PublicKey::X25519(ED25519_BASEPOINT_POINT * s),
            PrivateKey::Ed448(s, _) => PublicKey::Ed448(ed448::EdwardsPoint::GENERATOR * s),
            PrivateKey::X448(s) => PublicKey::X448((s * &ed448::MontgomeryPoint::GENERATOR).0),
        }
    }

    /// Co-generation: the key whose scalar is the sum of both scalars.
    pub fn combine(&self, other: &PrivateKey) -> Result<PrivateKey, KeyError> {
        match (self, other) {
            (PrivateKey::Ed25519(a), PrivateKey::Ed25519(b)) => {
                let mut prefix = [0u8; 32];
                prefix.copy_from_slice(&cogeneration_prefix(&a.hash_prefix, &b.hash_prefix)[..32]);
                Ok(PrivateKey::Ed25519(ExpandedSecretKey {
                    scalar: a.scalar + b.scalar,
                    hash_prefix: prefix,
                }))
            }
            (PrivateKey::X25519(a), PrivateKey::X25519(b)) => Ok(PrivateKey::X25519(a + b)),
            (PrivateKey::Ed448(a, pa), PrivateKey::Ed448(b, pb)) => {
                let mut prefix = Zeroizing::new([0u8; 57]);
                let mixed = cogeneration_prefix(pa.as_ref(), pb.as_ref());
                Shake256::default()
                    .chain(mixed.as_slice())
                    .finalize_xof()
                    .read(prefix.as_mut());
                Ok(PrivateKey::Ed448(a + b, prefix))
            }
            (PrivateKey::X448(_), PrivateKey::X448(_)) => Err(KeyError::Unsupported),
            _ => Err(KeyError::Mismatch),
        }
    }

    /// Sign `message` (pure EdDSA, no context).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            PrivateKey::Ed25519(esk) => {
                let PublicKey::Ed25519(point) = self.public() else {
                    unreachable!("an Ed25519 key has an Ed25519 public key")
                };
                let vk = ed25519_dalek::VerifyingKey::from(point);
                Ok(raw_sign::<Sha512>(esk, message, &vk).to_bytes().to_vec())
            }
            PrivateKey::Ed448(s, prefix) => Ok(ed448_sign(s, prefix, message).to_vec()),
            _ => Err(KeyError::Unsupported),
        }
    }

    /// Key agreement with a peer's public key: the shared u-coordinate.
    pub fn agree(&self, peer: &PublicKey) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if peer.alg() != self.alg() {
            return Err(KeyError::Mismatch);
        }
        self.agree_rfc(&peer.to_rfc_bytes())
    }

    /// Key agreement with a peer key given as its RFC 7748 u-coordinate
    /// (as an ephemeral key travels). An X25519 peer point is first
    /// multiplied by the cofactor (and our scalar divided by it) so that a
    /// small-order component learns nothing; a result of zero fails.
    pub fn agree_rfc(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self {
            PrivateKey::X25519(s) => {
                let u: [u8; 32] = peer.try_into().map_err(|_| KeyError::Invalid)?;
                x25519_agree(s, &MontgomeryPoint(u))
            }
            PrivateKey::X448(s) => {
                let u: [u8; 56] = peer.try_into().map_err(|_| KeyError::Invalid)?;
                x448_agree(s, &u)
            }
            _ => Err(KeyError::Unsupported),
        }
    }

    /// A fresh key of `alg` (for ephemeral keys).
    pub fn generate(
        rng: &mut impl rand_core::CryptoRngCore,
        alg: KeyAlg,
    ) -> Result<PrivateKey, KeyError> {
        let mut okm = Zeroizing::new(vec![0u8; okm_len(alg)?]);
        rng.fill_bytes(&mut okm);
        PrivateKey::from_okm(alg, &okm)
    }
}

/// X25519 with a scalar that is not clamped: `(s / 8) · (8 · P)`.
fn x25519_agree(s: &Scalar, peer: &MontgomeryPoint) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let eight = Scalar::from(8u8);
    let cleared = peer * eight;
    let shared = cleared * (s * eight.invert());
    if shared.0 == [0u8; 32] {
        return Err(KeyError::Failed);
    }
    Ok(Zeroizing::new(shared.0.to_vec()))
}

fn x448_agree(s: &ed448::Scalar, peer: &[u8; 56]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let shared = s * &ed448::MontgomeryPoint(*peer);
    if shared.0 == [0u8; 56] {
        return Err(KeyError::Failed);
    }
    Ok(Zeroizing::new(shared.0.to_vec()))
}

fn cogeneration_prefix(a: &[u8], b: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut h = Sha512::new();
    sha2::Digest::update(&mut h, b"mesh-cogeneration");
    sha2::Digest::update(&mut h, a);
    sha2::Digest::update(&mut h, b);
    Zeroizing::new(h.finalize().to_vec())
}

/// RFC 8032 Ed448 (no pre-hash, empty context) from a scalar and prefix.
fn ed448_sign(s: &ed448::Scalar, prefix: &[u8; 57], message: &[u8]) -> [u8; 114] {
    const DOM4: &[u8] = b"SigEd448\x00\x00";
    let public = (ed448::EdwardsPoint::GENERATOR * s).compress();
    let wide = |parts: &[&[u8]]| {
        let mut xof = Shake256::default();
        for part in parts {
            xof.update(part);
        }
        let mut out = ed448::WideScalarBytes::default();
        xof.finalize_xof().read(&mut out);
        ed448::Scalar::from_bytes_mod_order_wide(&out)
    };
    let r = wide(&[DOM4, prefix, message]);
    let big_r = (ed448::EdwardsPoint::GENERATOR * r).compress();
    let k = wide(&[DOM4, big_r.as_bytes(), public.as_bytes(), message]);
    let big_s = r + k * s;
    let mut sig = [0u8; 114];
    sig[..57].copy_from_slice(big_r.as_bytes());
    sig[57..].copy_from_slice(&big_s.to_bytes_rfc_8032());
    sig
}

/// The RFC 8410 SubjectPublicKeyInfo prefixes (everything before the key).
const SPKI_ED25519: &[u8] = &[
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const SPKI_X25519: &[u8] = &[
    0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x6E, 0x03, 0x21, 0x00,
];
const SPKI_ED448: &[u8] = &[
    0x30, 0x43, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x71, 0x03, 0x3A, 0x00,
];
const SPKI_X448: &[u8] = &[
    0x30, 0x42, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x6F, 0x03, 0x39, 0x00,
];

impl PublicKey {
    /// The algorithm.
    pub fn alg(&self) -> KeyAlg {
        match self {
            PublicKey::Ed25519(_) => KeyAlg::Ed25519,
            PublicKey::X25519(_) => KeyAlg::X25519,
            PublicKey::Ed448(_) => KeyAlg::Ed448,
            PublicKey::X448(_) => KeyAlg::X448,
        }
    }

    /// The key as RFC 8032 / RFC 7748 bytes (an X25519 key as its
    /// u-coordinate).
    pub fn to_rfc_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(p) => p.compress().to_bytes().to_vec(),
            PublicKey::X25519(p) => p.to_montgomery().to_bytes().to_vec(),
            PublicKey::Ed448(p) => p.compress().as_bytes().to_vec(),
            PublicKey::X448(u) => u.to_vec(),
        }
    }

    /// The key as the Mesh carries it: the RFC bytes, but an X25519 key as
    /// its compressed Edwards point, so that keys can be added.
    pub fn to_mesh_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::X25519(p) => p.compress().to_bytes().to_vec(),
            _ => self.to_rfc_bytes(),
        }
    }

    /// Read a key in its Mesh form.
    pub fn from_mesh_bytes(alg: KeyAlg, bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let edwards25519 = |bytes: &[u8]| -> Result<EdwardsPoint, KeyError> {
            let compressed =
                CompressedEdwardsY::from_slice(bytes).map_err(|_| KeyError::Invalid)?;
            compressed.decompress().ok_or(KeyError::Invalid)
        };
        match alg {
            KeyAlg::Ed25519 => Ok(PublicKey::Ed25519(edwards25519(bytes)?)),
            KeyAlg::X25519 => Ok(PublicKey::X25519(edwards25519(bytes)?)),
            KeyAlg::Ed448 => {
                let bytes: &[u8; 57] = bytes.try_into().map_err(|_| KeyError::Invalid)?;
                let point = ed448::CompressedEdwardsY(*bytes).decompress();
                Option::from(point)
                    .map(PublicKey::Ed448)
                    .ok_or(KeyError::Invalid)
            }
            KeyAlg::X448 => Ok(PublicKey::X448(
                bytes.try_into().map_err(|_| KeyError::Invalid)?,
            )),
            _ => Err(KeyError::Unsupported),
        }
    }

    /// Co-generation: the sum of two public keys.
    pub fn combine(&self, other: &PublicKey) -> Result<PublicKey, KeyError> {
        match (self, other) {
            (PublicKey::Ed25519(a), PublicKey::Ed25519(b)) => Ok(PublicKey::Ed25519(a + b)),
            (PublicKey::X25519(a), PublicKey::X25519(b)) => Ok(PublicKey::X25519(a + b)),
            (PublicKey::Ed448(a), PublicKey::Ed448(b)) => Ok(PublicKey::Ed448(a + b)),
            (PublicKey::X448(_), PublicKey::X448(_)) => Err(KeyError::Unsupported),
            _ => Err(KeyError::Mismatch),
        }
    }

    /// Verify an EdDSA signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        match self {
            PublicKey::Ed25519(point) => {
                let vk = ed25519_dalek::VerifyingKey::from(*point);
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| KeyError::Failed)?;
                vk.verify_strict(message, &sig)
                    .map_err(|_| KeyError::Failed)
            }
            PublicKey::Ed448(point) => {
                let bytes: &[u8; 114] = signature.try_into().map_err(|_| KeyError::Failed)?;
                let sig = ed448::Signature::from_bytes(bytes).map_err(|_| KeyError::Failed)?;
                let vk = ed448::VerifyingKey::from_bytes(point.compress().as_bytes())
                    .map_err(|_| KeyError::Failed)?;
                vk.verify_raw(&sig, message).map_err(|_| KeyError::Failed)
            }
            _ => Err(KeyError::Unsupported),
        }
    }

    /// The key as text: `<alg>:<base64url of the Mesh form>`, e.g.
    /// `ed25519:Gz0...`. Records and the command line write keys this way.
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        let label = match self.alg() {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::X25519 => "x25519",
            KeyAlg::Ed448 => "ed448",
            _ => "x448",
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_mesh_bytes());
        format!("{label}:{b64}")
    }

    /// Read a key written by [`PublicKey::to_text`].
    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        use base64::Engine as _;
        let (label, b64) = text.split_once(':').ok_or(KeyError::Invalid)?;
        let alg = match label {
            "ed25519" => KeyAlg::Ed25519,
            "x25519" => KeyAlg::X25519,
            "ed448" => KeyAlg::Ed448,
            "x448" => KeyAlg::X448,
            _ => return Err(KeyError::Unsupported),
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| KeyError::Invalid)?;
        PublicKey::from_mesh_bytes(alg, &bytes)
    }

    /// The key's RFC 8410 SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> Vec<u8> {
        let prefix = match self {
            PublicKey::Ed25519(_) => SPKI_ED25519,
            PublicKey::X25519(_) => SPKI_X25519,
            PublicKey::Ed448(_) => SPKI_ED448,
            PublicKey::X448(_) => SPKI_X448,
        };
        [prefix, &self.to_rfc_bytes()].concat()
    }

    /// The key's fingerprint: the SHA-2-512 UDF of its SPKI DER with
    /// content type `application/pkix-keyinfo` (present at 140 bits).
    pub fn fingerprint(&self) -> Udf {
        digest::content_digest(DigestAlg::Sha2_512, &self.spki_der(), digest::CT_KEY_INFO)
    }
}

/// The OID-type UDF of an Ed25519 public key, with the reference's DER:
/// AlgorithmIdentifier with a NULL parameter, and the key in an OCTET
/// STRING inside the BIT STRING (research digest §1.5, vector U16).
pub fn oid_udf_ed25519(key: &[u8; 32]) -> Udf {
    let der = [
        &[
            0x30, 0x2E, 0x30, 0x07, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x05, 0x00, 0x03, 0x23, 0x00,
            0x04, 0x20,
        ][..],
        key,
    ]
    .concat();
    Udf::new(code::OID, &der).unwrap_or_else(|_| unreachable!("48 bytes is a valid OID UDF"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::seed::KeySpecifier;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn rfc8032_ed448_test_1() {
        let secret = unhex(
            "6c82a562cb808d10d632be89c8513ebf6c929f34ddfa8c9f63c9960ef6e348a3528c8a3fcc2f044e39a3fc5b94492f8f032e7549a20098f95b",
        );
        let key = PrivateKey::from_okm(KeyAlg::Ed448, &secret).expect("a key");
        assert_eq!(
            key.public().to_rfc_bytes(),
            unhex(
                "5fd7449b59b461fd2ce787ec616ad46a1da1342485a70e1f8a0ea75d80e96778edf124769b46c7061bd6783df1e50f6cd1fa1abeafe8256180"
            )
        );
        let sig = key.sign(b"").expect("signs");
        assert_eq!(
            sig,
            unhex(
                "533a37f6bbe457251f023c0d88f976ae2dfb504a843e34d2074fd823d41a591f2b233f034f628281f2fd7a22ddd47d7828c59bd0a21bfd3980ff0d2028d4b18a9df63e006c5d1c2d345b925d8dc00b4104852db99ac5c7cdda8530a113a0f4dbb61149f05a7363268c71d95808ff2e652600"
            )
        );
        key.public().verify(b"", &sig).expect("verifies");
        assert_eq!(key.public().verify(b"x", &sig), Err(KeyError::Failed));
    }

    #[test]
    fn rfc7748_x448_and_x25519() {
        let alice = PrivateKey::from_okm(
            KeyAlg::X448,
            &unhex("9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b"),
        )
        .expect("a key");
        assert_eq!(
            alice.public().to_rfc_bytes(),
            unhex(
                "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0"
            )
        );
        let bob = PrivateKey::from_okm(
            KeyAlg::X448,
            &unhex("1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d"),
        )
        .expect("a key");
        let shared = alice.agree(&bob.public()).expect("agrees");
        assert_eq!(
            shared.as_slice(),
            unhex(
                "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56fd2464c335543936521c24403085d59a449a5037514a879d"
            )
        );
        let alice = PrivateKey::from_okm(
            KeyAlg::X25519,
            &unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .expect("a key");
        assert_eq!(
            alice.public().to_rfc_bytes(),
            unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let bob = PrivateKey::from_okm(
            KeyAlg::X25519,
            &unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        )
        .expect("a key");
        assert_eq!(
            alice.agree(&bob.public()).expect("agrees").as_slice(),
            unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }

    #[test]
    fn cogenerated_keys_work_as_their_public_sum_says() {
        let base = Seed::from_parts(KeySpecifier::new(KeyAlg::MeshProfileDevice), &[7u8; 32]);
        let activation =
            Seed::from_parts(KeySpecifier::new(KeyAlg::MeshActivationDevice), &[9u8; 32]);
        for suite in [Suite::Curve25519, Suite::Curve448] {
            let alg = suite.alg_for(name::SIGN);
            let b = PrivateKey::derive(&base, alg, "BaseDeviceSign").expect("a key");
            let a = PrivateKey::derive(&activation, alg, "ActivationDeviceSign").expect("a key");
            let device = b.combine(&a).expect("combines");
            let public = b.public().combine(&a.public()).expect("combines");
            assert_eq!(device.public(), public);
            let sig = device.sign(b"message").expect("signs");
            public.verify(b"message", &sig).expect("verifies");
            assert!(b.public().verify(b"message", &sig).is_err());
        }
        let enc = |seed: &Seed, name: &str| {
            PrivateKey::derive(seed, KeyAlg::X25519, name).expect("a key")
        };
        let device =
            enc(&base, "BaseDeviceEncrypt").combine(&enc(&activation, "ActivationDeviceEncrypt"));
        let device = device.expect("combines");
        let public = enc(&base, "BaseDeviceEncrypt")
            .public()
            .combine(&enc(&activation, "ActivationDeviceEncrypt").public())
            .expect("combines");
        let peer = PrivateKey::from_okm(KeyAlg::X25519, &[3u8; 32]).expect("a key");
        assert_eq!(
            device.agree(&peer.public()).expect("agrees"),
            peer.agree(&public).expect("agrees")
        );
    }

    #[test]
    fn names_have_no_separator() {
        assert_eq!(
            name::key_name(name::COMPLETE, name::ACCOUNT, name::PROFILE, None),
            "CompleteAccountProfile"
        );
        assert_eq!(
            name::key_name(
                name::COMPLETE,
                name::ACCOUNT,
                name::ENCRYPT,
                Some("MMM_Contact")
            ),
            "CompleteAccountEncryptMMM_Contact"
        );
    }
}
