//! The gpg-agent frontend's keys: OpenPGP secret (sub)keys by keygrip,
//! each parsed once into what signs or decrypts.
//!
//! The operations are the agent's primitives only: a signature over the
//! digest gpg sends (EdDSA over the digest bytes themselves, RSA
//! PKCS#1 v1.5 with the digest's DigestInfo added here), the X25519 shared
//! point for ECDH, and the raw RSA decryption; gpg does the rest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::Signer as _;
use mesh_protocol::agent::keygrip::{self, Curve, Keygrip};
use mesh_protocol::agent::sexp::{Sexp, mpi, unsigned};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use sequoia_openpgp::crypto::mpi::{PublicKey as Mpis, SecretKeyMaterial};
use sequoia_openpgp::packet::key::SecretKeyMaterial as Secret;
use sequoia_openpgp::types::Curve as PgpCurve;
use zeroize::Zeroizing;

/// Why a key cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpgKeyError {
    /// A key type the agent does not hold.
    #[error("unsupported key type")]
    Unsupported,
    /// The secret is missing, encrypted, or does not match the public key.
    #[error("unusable secret key")]
    Invalid,
    /// The operation does not apply to this key or its input is wrong.
    #[error("bad input for this key")]
    BadInput,
    /// An ECDSA digest shorter than the curve: a signature gpg could not
    /// verify (gpg-agent refuses it the same way).
    #[error("a {0}-byte digest is not valid for this key")]
    DigestTooShort(usize),
}

/// The secret part, ready to use.
enum Material {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Cv25519(Box<x25519_dalek::StaticSecret>),
    /// NIST P-256, for ECDSA or ECDH.
    P256(EcKey<Private>),
    Rsa(PKey<Private>),
}

/// One OpenPGP (sub)key the agent holds.
pub struct GpgKey {
    /// Its keygrip.
    pub grip: Keygrip,
    /// `(public-key ...)` as READKEY answers.
    pub public: Vec<u8>,
    /// What the certificate calls it, for logs.
    pub label: String,
    /// Ask the user (or another device) before each use.
    pub confirm: bool,
    material: Material,
}

impl std::fmt::Debug for GpgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpgKey")
            .field("grip", &keygrip::to_hex(&self.grip))
            .field("label", &self.label)
            .field("confirm", &self.confirm)
            .finish_non_exhaustive()
    }
}

/// libgcrypt's hash algorithm numbers (SETHASH), with digest lengths and
/// the DigestInfo prefix RSA signatures carry.
pub fn hash_algorithm(number: u32) -> Option<(usize, MessageDigest)> {
    Some(match number {
        2 => (20, MessageDigest::sha1()),
        3 => (20, MessageDigest::ripemd160()),
        8 => (32, MessageDigest::sha256()),
        9 => (48, MessageDigest::sha384()),
        10 => (64, MessageDigest::sha512()),
        11 => (28, MessageDigest::sha224()),
        _ => return None,
    })
}

fn bn(bytes: &[u8]) -> Result<BigNum, GpgKeyError> {
    BigNum::from_slice(bytes).map_err(|_| GpgKeyError::Invalid)
}

impl GpgKey {
    /// A key from an OpenPGP key packet's public and (unencrypted) secret
    /// parts.
    pub fn new(public: &Mpis, secret: &Secret, label: String) -> Result<GpgKey, GpgKeyError> {
        let Secret::Unencrypted(secret) = secret else {
            return Err(GpgKeyError::Invalid);
        };
        secret.map(|secret| GpgKey::from_mpis(public, secret, label))
    }

    /// A key from its public and secret values.
    pub fn from_mpis(
        public: &Mpis,
        secret: &SecretKeyMaterial,
        label: String,
    ) -> Result<GpgKey, GpgKeyError> {
        match (public, secret) {
            (Mpis::EdDSA { curve, q }, SecretKeyMaterial::EdDSA { scalar })
                if *curve == PgpCurve::Ed25519 =>
            {
                let seed: [u8; 32] = scalar
                    .value_padded(32)
                    .as_ref()
                    .try_into()
                    .map_err(|_| GpgKeyError::Invalid)?;
                let key = ed25519_dalek::SigningKey::from_bytes(&seed);
                let point = q.value();
                if point.get(1..) != Some(key.verifying_key().as_bytes().as_slice()) {
                    return Err(GpgKeyError::Invalid);
                }
                Ok(GpgKey {
                    grip: keygrip::ecc(Curve::Ed25519, point),
                    public: public_ecc("Ed25519", Some("eddsa"), point),
                    label,
                    confirm: false,
                    material: Material::Ed25519(Box::new(key)),
                })
            }
            (Mpis::ECDH { curve, q, .. }, SecretKeyMaterial::ECDH { scalar })
                if *curve == PgpCurve::Cv25519 =>
            {
                // OpenPGP stores the scalar big-endian; X25519 wants the
                // RFC 7748 (little-endian) string.
                let mut bytes = Zeroizing::new([0u8; 32]);
                bytes.copy_from_slice(&scalar.value_padded(32));
                bytes.reverse();
                let secret = x25519_dalek::StaticSecret::from(*bytes);
                let point = q.value();
                if point.get(1..)
                    != Some(x25519_dalek::PublicKey::from(&secret).as_bytes().as_slice())
                {
                    return Err(GpgKeyError::Invalid);
                }
                Ok(GpgKey {
                    grip: keygrip::ecc(Curve::Curve25519, point),
                    public: public_ecc("Curve25519", Some("djb-tweak"), point),
                    label,
                    confirm: false,
                    material: Material::Cv25519(Box::new(secret)),
                })
            }
            (Mpis::ECDSA { curve, q }, SecretKeyMaterial::ECDSA { scalar })
            | (Mpis::ECDH { curve, q, .. }, SecretKeyMaterial::ECDH { scalar })
                if *curve == PgpCurve::NistP256 =>
            {
                let invalid = |_| GpgKeyError::Invalid;
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(invalid)?;
                let mut ctx = BigNumContext::new_secure().map_err(invalid)?;
                let point = EcPoint::from_bytes(&group, q.value(), &mut ctx).map_err(invalid)?;
                let key =
                    EcKey::from_private_components(&group, bn(scalar.value())?.as_ref(), &point)
                        .map_err(invalid)?;
                key.check_key().map_err(invalid)?;
                Ok(GpgKey {
                    grip: keygrip::ecc(Curve::NistP256, q.value()),
                    public: public_ecc("NIST P-256", None, q.value()),
                    label,
                    confirm: false,
                    material: Material::P256(key),
                })
            }
            (Mpis::RSA { e, n }, SecretKeyMaterial::RSA { d, p, q, u }) => {
                // OpenPGP: p < q, u = p^-1 mod q; OpenSSL's iqmp is
                // q'^-1 mod p', so its p' is our q.
                let key = super::rsa::from_parts(
                    n.value(),
                    e.value(),
                    d.value(),
                    q.value(),
                    p.value(),
                    u.value(),
                )
                .ok_or(GpgKeyError::Invalid)?;
                let public = Sexp::list([
                    Sexp::atom("public-key"),
                    Sexp::list([
                        Sexp::atom("rsa"),
                        Sexp::list([Sexp::atom("n"), Sexp::atom(mpi(n.value()))]),
                        Sexp::list([Sexp::atom("e"), Sexp::atom(mpi(e.value()))]),
                    ]),
                ])
                .encode();
                Ok(GpgKey {
                    grip: keygrip::rsa(n.value()),
                    public,
                    label,
                    confirm: false,
                    material: Material::Rsa(key),
                })
            }
            _ => Err(GpgKeyError::Unsupported),
        }
    }

    /// PKSIGN: the `(sig-val ...)` for a digest made with libgcrypt hash
    /// algorithm `algo`.
    pub fn sign(&self, algo: u32, digest: &[u8]) -> Result<Vec<u8>, GpgKeyError> {
        let (len, md) = hash_algorithm(algo).ok_or(GpgKeyError::BadInput)?;
        if digest.len() != len {
            return Err(GpgKeyError::BadInput);
        }
        let value = match &self.material {
            Material::Ed25519(key) => {
                let sig = key.sign(digest).to_bytes();
                let (r, s) = sig.split_at(32);
                Sexp::list([
                    Sexp::atom("eddsa"),
                    Sexp::list([Sexp::atom("r"), Sexp::atom(r)]),
                    Sexp::list([Sexp::atom("s"), Sexp::atom(s)]),
                ])
            }
            Material::Rsa(key) => {
                let mut ctx = PkeyCtx::new(key).map_err(|_| GpgKeyError::Invalid)?;
                ctx.sign_init().map_err(|_| GpgKeyError::Invalid)?;
                ctx.set_rsa_padding(Padding::PKCS1)
                    .map_err(|_| GpgKeyError::Invalid)?;
                ctx.set_signature_md(
                    openssl::md::Md::from_nid(md.type_()).ok_or(GpgKeyError::BadInput)?,
                )
                .map_err(|_| GpgKeyError::Invalid)?;
                let mut sig = Vec::new();
                ctx.sign_to_vec(digest, &mut sig)
                    .map_err(|_| GpgKeyError::Invalid)?;
                Sexp::list([
                    Sexp::atom("rsa"),
                    Sexp::list([Sexp::atom("s"), Sexp::atom(sig)]),
                ])
            }
            Material::P256(key) => {
                // OpenSSL truncates a longer digest to the group order; a
                // shorter one (SHA-1, SHA-224) makes a signature gpg does
                // not verify: refused, as gpg-agent refuses it.
                if digest.len() < 32 {
                    return Err(GpgKeyError::DigestTooShort(digest.len()));
                }
                let sig = EcdsaSig::sign(digest, key).map_err(|_| GpgKeyError::Invalid)?;
                Sexp::list([
                    Sexp::atom("ecdsa"),
                    Sexp::list([Sexp::atom("r"), Sexp::atom(sig.r().to_vec())]),
                    Sexp::list([Sexp::atom("s"), Sexp::atom(sig.s().to_vec())]),
                ])
            }
            Material::Cv25519(_) => return Err(GpgKeyError::BadInput),
        };
        Ok(Sexp::list([Sexp::atom("sig-val"), value]).encode())
    }

    /// PKDECRYPT --kem=PGP (gpg 2.5): the session key from
    ///
    /// ```text
    /// (enc-val (ecc (c <cipher>) (h <hash>) (e <ephemeral>) (s <wrapped>)
    ///   (kdf-params <param>)))
    /// ```
    ///
    /// ECDH, the RFC 6637 §7 KDF over the shared X with the
    /// parameters gpg built, then AES key unwrap (RFC 3394) of `s` after
    /// its length byte. The `(value ...)` holds what was wrapped (the
    /// padded session key); gpg does the rest.
    pub fn kem_decrypt(&self, ciphertext: &Sexp) -> Result<Zeroizing<Vec<u8>>, GpgKeyError> {
        let ecc = ciphertext
            .find(b"ecc")
            .filter(|_| ciphertext.name() == Some(b"enc-val"))
            .ok_or(GpgKeyError::BadInput)?;
        let number = |name: &[u8]| {
            ecc.value(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or(GpgKeyError::BadInput)
        };
        let kek_len = match number(b"c")? {
            7 => 16,
            8 => 24,
            9 => 32,
            _ => return Err(GpgKeyError::BadInput),
        };
        let md = match number(b"h")? {
            8 => MessageDigest::sha256(),
            9 => MessageDigest::sha384(),
            10 => MessageDigest::sha512(),
            _ => return Err(GpgKeyError::BadInput),
        };
        let e = ecc.value(b"e").ok_or(GpgKeyError::BadInput)?;
        let s = ecc.value(b"s").ok_or(GpgKeyError::BadInput)?;
        let param = ecc.value(b"kdf-params").ok_or(GpgKeyError::BadInput)?;
        let shared: Zeroizing<Vec<u8>> = match &self.material {
            Material::Cv25519(secret) => {
                let point = match e {
                    [0x40, rest @ ..] if rest.len() == 32 => rest,
                    rest => rest,
                };
                let point: [u8; 32] = point.try_into().map_err(|_| GpgKeyError::BadInput)?;
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(point));
                Zeroizing::new(shared.as_bytes().to_vec())
            }
            Material::P256(key) => {
                let bad = |_| GpgKeyError::BadInput;
                let group = key.group();
                let mut ctx = BigNumContext::new_secure().map_err(|_| GpgKeyError::Invalid)?;
                let theirs = EcPoint::from_bytes(group, e, &mut ctx).map_err(bad)?;
                let mut shared = EcPoint::new(group).map_err(|_| GpgKeyError::Invalid)?;
                shared
                    .mul2(group, &theirs, key.private_key(), &mut ctx)
                    .map_err(bad)?;
                let point = Zeroizing::new(
                    shared
                        .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                        .map_err(bad)?,
                );
                Zeroizing::new(point.get(1..33).ok_or(GpgKeyError::BadInput)?.to_vec())
            }
            Material::Ed25519(_) | Material::Rsa(_) => return Err(GpgKeyError::BadInput),
        };
        let mut hasher = openssl::hash::Hasher::new(md).map_err(|_| GpgKeyError::Invalid)?;
        for part in [&[0, 0, 0, 1][..], &shared, param] {
            hasher.update(part).map_err(|_| GpgKeyError::Invalid)?;
        }
        let digest = Zeroizing::new(hasher.finish().map_err(|_| GpgKeyError::Invalid)?.to_vec());
        let kek = openssl::aes::AesKey::new_decrypt(&digest[..kek_len])
            .map_err(|_| GpgKeyError::Invalid)?;
        let wrapped = match s {
            [len, rest @ ..] if usize::from(*len) == rest.len() => rest,
            _ => return Err(GpgKeyError::BadInput),
        };
        if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
            return Err(GpgKeyError::BadInput);
        }
        let mut key = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
        openssl::aes::unwrap_key(&kek, None, &mut key, wrapped)
            .map_err(|_| GpgKeyError::BadInput)?;
        let mut encoded = Zeroizing::new(format!("(5:value{}:", key.len()).into_bytes());
        encoded.extend_from_slice(&key);
        encoded.push(b')');
        Ok(encoded)
    }

    /// PKDECRYPT: the `(value ...)` for an `(enc-val ...)`.
    pub fn decrypt(&self, ciphertext: &Sexp) -> Result<Zeroizing<Vec<u8>>, GpgKeyError> {
        if ciphertext.name() != Some(b"enc-val") {
            return Err(GpgKeyError::BadInput);
        }
        let value = match &self.material {
            Material::Cv25519(secret) => {
                let e = ciphertext
                    .find(b"ecdh")
                    .and_then(|ecdh| ecdh.value(b"e"))
                    .ok_or(GpgKeyError::BadInput)?;
                let point: [u8; 32] = match e {
                    [0x40, rest @ ..] => rest.try_into().map_err(|_| GpgKeyError::BadInput)?,
                    _ => return Err(GpgKeyError::BadInput),
                };
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(point));
                let mut out = Zeroizing::new(vec![0x40]);
                out.extend_from_slice(shared.as_bytes());
                out
            }
            Material::Rsa(key) => {
                let a = ciphertext
                    .find(b"rsa")
                    .and_then(|rsa| rsa.value(b"a"))
                    .ok_or(GpgKeyError::BadInput)?;
                let rsa = key.rsa().map_err(|_| GpgKeyError::Invalid)?;
                let size = rsa.size() as usize;
                let a = unsigned(a);
                if a.len() > size {
                    return Err(GpgKeyError::BadInput);
                }
                let mut block = vec![0u8; size];
                block[size - a.len()..].copy_from_slice(a);
                let mut out = Zeroizing::new(vec![0u8; size]);
                let n = rsa
                    .private_decrypt(&block, &mut out, Padding::NONE)
                    .map_err(|_| GpgKeyError::BadInput)?;
                out.truncate(n);
                Zeroizing::new(unsigned(&out).to_vec())
            }
            Material::P256(key) => {
                let e = ciphertext
                    .find(b"ecdh")
                    .and_then(|ecdh| ecdh.value(b"e"))
                    .ok_or(GpgKeyError::BadInput)?;
                let bad = |_| GpgKeyError::BadInput;
                let group = key.group();
                let mut ctx = BigNumContext::new_secure().map_err(|_| GpgKeyError::Invalid)?;
                let theirs = EcPoint::from_bytes(group, e, &mut ctx).map_err(bad)?;
                let mut shared = EcPoint::new(group).map_err(|_| GpgKeyError::Invalid)?;
                shared
                    .mul2(group, &theirs, key.private_key(), &mut ctx)
                    .map_err(bad)?;
                Zeroizing::new(
                    shared
                        .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                        .map_err(bad)?,
                )
            }
            Material::Ed25519(_) => return Err(GpgKeyError::BadInput),
        };
        let mut encoded = Zeroizing::new(b"(5:value".to_vec());
        encoded.extend_from_slice(format!("{}:", value.len()).as_bytes());
        encoded.extend_from_slice(&value);
        encoded.push(b')');
        Ok(encoded)
    }
}

fn public_ecc(curve: &str, flags: Option<&str>, q: &[u8]) -> Vec<u8> {
    let mut ecc = vec![
        Sexp::atom("ecc"),
        Sexp::list([Sexp::atom("curve"), Sexp::atom(curve)]),
    ];
    if let Some(flags) = flags {
        ecc.push(Sexp::list([Sexp::atom("flags"), Sexp::atom(flags)]));
    }
    ecc.push(Sexp::list([Sexp::atom("q"), Sexp::atom(q)]));
    Sexp::list([Sexp::atom("public-key"), Sexp::List(ecc)]).encode()
}

/// The keygrip of a public key of a kind the agent serves.
pub fn grip_of(public: &Mpis) -> Option<Keygrip> {
    match public {
        Mpis::EdDSA { curve, q } if *curve == PgpCurve::Ed25519 => {
            Some(keygrip::ecc(Curve::Ed25519, q.value()))
        }
        Mpis::ECDH { curve, q, .. } if *curve == PgpCurve::Cv25519 => {
            Some(keygrip::ecc(Curve::Curve25519, q.value()))
        }
        Mpis::ECDSA { curve, q } | Mpis::ECDH { curve, q, .. } if *curve == PgpCurve::NistP256 => {
            Some(keygrip::ecc(Curve::NistP256, q.value()))
        }
        Mpis::RSA { n, .. } => Some(keygrip::rsa(n.value())),
        _ => None,
    }
}

/// A key gpg made (GENKEY) or imported (IMPORT_KEY) through this agent,
/// served at once and waiting for its certificate, which gpg writes to
/// its keyring only afterwards, to go into the Mesh with it.
struct Pending {
    /// The key as served.
    key: Arc<GpgKey>,
    /// Its secret values, to put into the certificate.
    secret: Secret,
    /// Already handed to the account (it stays served until the account's
    /// keys include it).
    stored: bool,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("key", &self.key)
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

/// Every OpenPGP key the agent holds, by keygrip: the Mesh's, replaced
/// whole when its certificates change, and the pending ones (made or
/// imported by gpg, until the Mesh has them).
#[derive(Default)]
pub struct GpgKeyring {
    keys: Mutex<BTreeMap<Keygrip, Arc<GpgKey>>>,
    pending: Mutex<BTreeMap<Keygrip, Pending>>,
}

impl std::fmt::Debug for GpgKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpgKeyring")
            .field("keys", &self.grips().len())
            .finish_non_exhaustive()
    }
}

impl GpgKeyring {
    /// The key with this grip.
    pub fn get(&self, grip: &Keygrip) -> Option<Arc<GpgKey>> {
        let mesh = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(grip)
            .cloned();
        mesh.or_else(|| {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(grip)
                .map(|p| Arc::clone(&p.key))
        })
    }

    /// Whether the Mesh's keys (not the pending ones) include this grip.
    pub fn in_mesh(&self, grip: &Keygrip) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(grip)
    }

    /// Every keygrip held, in order.
    pub fn grips(&self) -> Vec<Keygrip> {
        let mut grips: std::collections::BTreeSet<Keygrip> = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        grips.extend(
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .copied(),
        );
        grips.into_iter().collect()
    }

    /// Replace the Mesh's keys; the pending keys they now include are
    /// pending no more. A key in two certificates is asked for before
    /// use if either says so.
    pub fn set(&self, keys: Vec<GpgKey>) {
        let mut held: BTreeMap<Keygrip, GpgKey> = BTreeMap::new();
        for key in keys {
            match held.entry(key.grip) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(key);
                }
                std::collections::btree_map::Entry::Occupied(mut had) => {
                    had.get_mut().confirm |= key.confirm;
                }
            }
        }
        let map: BTreeMap<Keygrip, Arc<GpgKey>> = held
            .into_iter()
            .map(|(grip, k)| (grip, Arc::new(k)))
            .collect();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|grip, _| !map.contains_key(grip));
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// Serve a key made or imported through gpg until the Mesh has it.
    fn add_pending(&self, key: GpgKey, secret: Secret) {
        let key = Arc::new(key);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key.grip,
                Pending {
                    key,
                    secret,
                    stored: false,
                },
            );
    }

    /// How many pending keys are not yet handed to the account.
    pub fn unstored_count(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| !p.stored)
            .count()
    }

    /// Whether some pending key is not yet handed to the account.
    pub fn has_unstored(&self) -> bool {
        self.unstored_count() > 0
    }

    /// IMPORT_KEY: open a transferred key (slow when it is protected: the
    /// S2K) and serve it, pending, if its secret is its public key's.
    pub fn import(
        &self,
        transfer: &super::transfer::Transfer,
        passphrase: &[u8],
    ) -> Result<Keygrip, ImportError> {
        let (public, secret) = transfer.open(passphrase).map_err(ImportError::Transfer)?;
        let key = GpgKey::from_mpis(&public, &secret, "imported by gpg".to_owned())
            .map_err(ImportError::Key)?;
        let grip = key.grip;
        self.add_pending(key, secret.into());
        Ok(grip)
    }

    /// GENKEY: make a key (slow for RSA) and serve it, pending; its
    /// public key, as READKEY gives it.
    pub fn generate(&self, params: &Sexp) -> Result<Vec<u8>, GenkeyError> {
        let (key, secret) = generate(params, "made by gpg".to_owned())?;
        tracing::info!(grip = %keygrip::to_hex(&key.grip), "gpg made a key");
        let public = key.public.clone();
        self.add_pending(key, secret);
        Ok(public)
    }

    /// `cert` with the secrets of the pending keys not yet handed to the
    /// account that it has, and their grips; `None` if it has none.
    pub fn with_secrets(
        &self,
        cert: sequoia_openpgp::Cert,
    ) -> Option<(sequoia_openpgp::Cert, Vec<Keygrip>)> {
        use sequoia_openpgp::Packet;
        let primary = cert.fingerprint();
        let mut packets: Vec<Packet> = Vec::new();
        let mut grips = Vec::new();
        {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for ka in cert.keys() {
                let key = ka.key();
                let Some(grip) = grip_of(key.mpis()) else {
                    continue;
                };
                let Some(p) = pending.get(&grip).filter(|p| !p.stored) else {
                    continue;
                };
                let (with, _) = key
                    .clone()
                    .role_into_unspecified()
                    .add_secret(fit_secret(&p.secret, key.mpis()));
                packets.push(if key.fingerprint() == primary {
                    with.role_into_primary().into()
                } else {
                    with.role_into_subordinate().into()
                });
                grips.push(grip);
            }
        }
        if grips.is_empty() {
            return None;
        }
        match cert.insert_packets(packets) {
            Ok((cert, _)) => Some((cert, grips)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot add secrets to a certificate");
                None
            }
        }
    }

    /// Note that these pending keys were handed to the account.
    pub fn mark_stored(&self, grips: &[Keygrip]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for grip in grips {
            if let Some(p) = pending.get_mut(grip) {
                p.stored = true;
            }
        }
    }
}

/// `secret` as the secret of a key of `public`'s kind: a P-256 scalar
/// serves ECDSA and ECDH alike, and GENKEY cannot tell which gpg wants.
fn fit_secret(secret: &Secret, public: &Mpis) -> Secret {
    let Secret::Unencrypted(unencrypted) = secret else {
        return secret.clone();
    };
    unencrypted.map(|material| {
        match (material, public) {
            (SecretKeyMaterial::ECDSA { scalar }, Mpis::ECDH { .. }) => SecretKeyMaterial::ECDH {
                scalar: scalar.clone(),
            },
            (SecretKeyMaterial::ECDH { scalar }, Mpis::ECDSA { .. }) => SecretKeyMaterial::ECDSA {
                scalar: scalar.clone(),
            },
            (other, _) => other.clone(),
        }
        .into()
    })
}

/// Why IMPORT_KEY takes no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The transferred key does not open.
    #[error(transparent)]
    Transfer(super::transfer::TransferError),
    /// Its secret is not its public key's, or of a kind not served.
    #[error(transparent)]
    Key(GpgKeyError),
}

/// Why GENKEY makes no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenkeyError {
    /// Not a `(genkey ...)` this agent understands.
    #[error("malformed key parameters")]
    Malformed,
    /// A key kind not served here.
    #[error("unsupported key type")]
    Unsupported,
    /// Generation failed.
    #[error("key generation failed")]
    Failed,
}

/// Read GENKEY's parameters, which gpg writes half canonical: atoms are
/// `<length>:<bytes>` or bare tokens, separated by spaces, as in
/// `(genkey(ecc(curve 7:Ed25519)(flags eddsa comp)))`.
pub fn parse_keyparam(input: &[u8]) -> Option<Sexp> {
    fn list(input: &[u8], at: &mut usize, depth: usize) -> Option<Sexp> {
        if depth > 8 || input.get(*at) != Some(&b'(') {
            return None;
        }
        *at += 1;
        let mut items = Vec::new();
        loop {
            match *input.get(*at)? {
                b')' => {
                    *at += 1;
                    return Some(Sexp::List(items));
                }
                b' ' | b'\t' | b'\n' | b'\r' => *at += 1,
                b'(' => items.push(list(input, at, depth + 1)?),
                b'0'..=b'9' => {
                    let start = *at;
                    while input.get(*at)?.is_ascii_digit() {
                        *at += 1;
                    }
                    if input[*at] == b':' {
                        let len: usize =
                            std::str::from_utf8(&input[start..*at]).ok()?.parse().ok()?;
                        let from = *at + 1;
                        let bytes = input.get(from..from.checked_add(len)?)?;
                        items.push(Sexp::atom(bytes));
                        *at = from + len;
                    } else {
                        while input.get(*at).is_some_and(|b| is_token(*b)) {
                            *at += 1;
                        }
                        items.push(Sexp::atom(&input[start..*at]));
                    }
                }
                b if is_token(b) => {
                    let start = *at;
                    while input.get(*at).is_some_and(|b| is_token(*b)) {
                        *at += 1;
                    }
                    items.push(Sexp::atom(&input[start..*at]));
                }
                _ => return None,
            }
        }
    }
    fn is_token(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-./_:*+=".contains(&b)
    }
    let mut at = 0;
    while input.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    let sexp = list(input, &mut at, 0)?;
    input[at..]
        .iter()
        .all(|b| b.is_ascii_whitespace() || *b == 0)
        .then_some(sexp)
}

/// The smallest and largest RSA key GENKEY makes (gpg's own bounds).
const RSA_BITS: std::ops::RangeInclusive<usize> = 1024..=4096;

/// Make a key as GENKEY's `(genkey ...)` asks: `(ecc (curve Ed25519)
/// (flags eddsa))`, `(ecc (curve Curve25519) (flags djb-tweak))` or
/// `(rsa (nbits 3072))`. Slow for RSA: call it off the async threads.
fn generate(params: &Sexp, label: String) -> Result<(GpgKey, Secret), GenkeyError> {
    use sequoia_openpgp::packet::key::{Key4, SecretParts, UnspecifiedRole};
    if params.name() != Some(b"genkey") {
        return Err(GenkeyError::Malformed);
    }
    let made = if let Some(ecc) = params.find(b"ecc") {
        let curve = match ecc.value(b"curve") {
            Some(b"Ed25519" | b"ed25519") => PgpCurve::Ed25519,
            Some(b"Curve25519" | b"cv25519") => PgpCurve::Cv25519,
            Some(b"NIST P-256" | b"nistp256") => PgpCurve::NistP256,
            Some(_) => return Err(GenkeyError::Unsupported),
            None => return Err(GenkeyError::Malformed),
        };
        // A P-256 key is the same for ECDSA and ECDH: made as ECDSA, it
        // takes the certificate's kind when it is stored.
        Key4::<SecretParts, UnspecifiedRole>::generate_ecc(curve != PgpCurve::Cv25519, curve)
    } else if let Some(rsa) = params.find(b"rsa") {
        let bits: usize = rsa
            .value(b"nbits")
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.trim().parse().ok())
            .ok_or(GenkeyError::Malformed)?;
        if !RSA_BITS.contains(&bits) {
            return Err(GenkeyError::Unsupported);
        }
        Key4::<SecretParts, UnspecifiedRole>::generate_rsa(bits)
    } else {
        return Err(GenkeyError::Unsupported);
    };
    let key = made.map_err(|_| GenkeyError::Failed)?;
    let secret = key.optional_secret().ok_or(GenkeyError::Failed)?.clone();
    let served = GpgKey::new(key.mpis(), &secret, label).map_err(|_| GenkeyError::Failed)?;
    Ok((served, secret))
}

/// A new certificate's signing and encryption subkeys, as the keystore
/// holds them: for the tests of this module and of the gpg frontend.
#[cfg(test)]
pub(crate) fn test_keys(suite: sequoia_openpgp::cert::CipherSuite) -> Vec<GpgKey> {
    let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
        .set_cipher_suite(suite)
        .add_userid("Test <test@example.org>")
        .add_signing_subkey()
        .add_transport_encryption_subkey()
        .generate()
        .expect("cert");
    let policy = sequoia_openpgp::policy::StandardPolicy::new();
    cert.keys()
        .subkeys()
        .with_policy(&policy, None)
        .secret()
        .map(|ka| {
            let key = ka.key();
            GpgKey::new(
                key.mpis(),
                key.optional_secret().expect("secret"),
                "test".into(),
            )
            .expect("usable")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;
    use sequoia_openpgp::cert::CipherSuite;

    use super::test_keys as keys;

    #[test]
    fn ed25519_signs_the_digest_and_cv25519_agrees() {
        let keys = keys(CipherSuite::Cv25519);
        let [sign, encrypt] = &keys[..] else {
            panic!("two subkeys")
        };
        let digest = [7u8; 32];
        let sig = Sexp::parse(&sign.sign(8, &digest).expect("signs")).expect("sexp");
        let eddsa = sig.find(b"eddsa").expect("eddsa");
        let mut bytes = eddsa.value(b"r").expect("r").to_vec();
        bytes.extend_from_slice(eddsa.value(b"s").expect("s"));
        let public = Sexp::parse(&sign.public).expect("public");
        let q = public.find(b"ecc").and_then(|e| e.value(b"q")).expect("q");
        let verifying =
            ed25519_dalek::VerifyingKey::from_bytes(q[1..].try_into().expect("32")).expect("point");
        verifying
            .verify_strict(
                &digest,
                &ed25519_dalek::Signature::from_slice(&bytes).expect("sig"),
            )
            .expect("verifies");
        assert_eq!(sign.sign(8, &[0; 31]), Err(GpgKeyError::BadInput));
        assert_eq!(sign.sign(77, &digest), Err(GpgKeyError::BadInput));

        let ephemeral = x25519_dalek::StaticSecret::from([9u8; 32]);
        let mut e = vec![0x40];
        e.extend_from_slice(x25519_dalek::PublicKey::from(&ephemeral).as_bytes());
        let ciphertext = Sexp::list([
            Sexp::atom("enc-val"),
            Sexp::list([
                Sexp::atom("ecdh"),
                Sexp::list([Sexp::atom("s"), Sexp::atom(vec![1u8; 49])]),
                Sexp::list([Sexp::atom("e"), Sexp::atom(e)]),
            ]),
        ]);
        let answer = encrypt.decrypt(&ciphertext).expect("decrypts");
        let public = Sexp::parse(&encrypt.public).expect("public");
        let q = public.find(b"ecc").and_then(|e| e.value(b"q")).expect("q");
        let theirs = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(
            <[u8; 32]>::try_from(&q[1..]).expect("32"),
        ));
        let mut expected = b"(5:value33:\x40".to_vec();
        expected.extend_from_slice(theirs.as_bytes());
        expected.push(b')');
        assert_eq!(&answer[..], &expected[..]);
        assert_eq!(encrypt.sign(8, &digest), Err(GpgKeyError::BadInput));
    }

    #[test]
    fn rsa_signs_with_digest_info_and_decrypts_raw() {
        let keys = keys(CipherSuite::RSA3k);
        let [sign, encrypt] = &keys[..] else {
            panic!("two subkeys")
        };
        let public = |key: &GpgKey| {
            let sexp = Sexp::parse(&key.public).expect("public");
            let rsa = sexp.find(b"rsa").expect("rsa");
            Rsa::from_public_components(
                bn(rsa.value(b"n").expect("n")).expect("n"),
                bn(rsa.value(b"e").expect("e")).expect("e"),
            )
            .expect("public key")
        };
        let digest = [3u8; 64];
        let sig = Sexp::parse(&sign.sign(10, &digest).expect("signs")).expect("sexp");
        let s = sig.find(b"rsa").and_then(|r| r.value(b"s")).expect("s");
        let mut recovered = vec![0u8; 384];
        let n = public(sign)
            .public_decrypt(s, &mut recovered, Padding::PKCS1)
            .expect("verifies");
        let info = [
            &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ][..],
            &digest,
        ]
        .concat();
        assert_eq!(&recovered[..n], &info[..]);

        let mut block = vec![0u8; 384];
        block[1] = 2;
        block[2..300].fill(0x55);
        block[380..].copy_from_slice(b"key!");
        let mut c = vec![0u8; 384];
        public(encrypt)
            .public_encrypt(&block, &mut c, Padding::NONE)
            .expect("encrypts");
        let ciphertext = Sexp::list([
            Sexp::atom("enc-val"),
            Sexp::list([
                Sexp::atom("rsa"),
                Sexp::list([Sexp::atom("a"), Sexp::atom(mpi(&c))]),
            ]),
        ]);
        let answer = encrypt.decrypt(&ciphertext).expect("decrypts");
        let mut expected = b"(5:value383:".to_vec();
        expected.extend_from_slice(&block[1..]);
        expected.push(b')');
        assert_eq!(&answer[..], &expected[..]);
    }

    #[test]
    fn p256_signs_and_agrees() {
        let keys = keys(CipherSuite::P256);
        let [sign, encrypt] = &keys[..] else {
            panic!("two subkeys")
        };
        let digest = [5u8; 64];
        let sig = Sexp::parse(&sign.sign(10, &digest).expect("signs")).expect("sexp");
        let ecdsa = sig.find(b"ecdsa").expect("ecdsa");
        let sig = EcdsaSig::from_private_components(
            bn(ecdsa.value(b"r").expect("r")).expect("r"),
            bn(ecdsa.value(b"s").expect("s")).expect("s"),
        )
        .expect("sig");
        let public = Sexp::parse(&sign.public).expect("public");
        let q = public.find(b"ecc").and_then(|e| e.value(b"q")).expect("q");
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        let mut ctx = BigNumContext::new().expect("ctx");
        let point = EcPoint::from_bytes(&group, q, &mut ctx).expect("point");
        let verifier = EcKey::from_public_key(&group, &point).expect("key");
        assert!(sig.verify(&digest[..32], &verifier).expect("verify"));
        // SHA-1 and SHA-224 are shorter than the curve.
        assert_eq!(
            sign.sign(2, &[5u8; 20]),
            Err(GpgKeyError::DigestTooShort(20))
        );
        assert_eq!(
            sign.sign(11, &[5u8; 28]),
            Err(GpgKeyError::DigestTooShort(28))
        );
        assert!(sign.sign(8, &[5u8; 32]).is_ok());

        let ephemeral = EcKey::generate(&group).expect("ephemeral");
        let e = ephemeral
            .public_key()
            .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .expect("e");
        let ciphertext = Sexp::list([
            Sexp::atom("enc-val"),
            Sexp::list([
                Sexp::atom("ecdh"),
                Sexp::list([Sexp::atom("s"), Sexp::atom(vec![1u8; 49])]),
                Sexp::list([Sexp::atom("e"), Sexp::atom(e)]),
            ]),
        ]);
        let answer = encrypt.decrypt(&ciphertext).expect("decrypts");
        let value = Sexp::parse(&answer).expect("sexp");
        let shared = value.as_list().expect("list")[1]
            .as_atom()
            .expect("atom")
            .to_vec();
        let public = Sexp::parse(&encrypt.public).expect("public");
        let q = public.find(b"ecc").and_then(|e| e.value(b"q")).expect("q");
        let theirs = EcPoint::from_bytes(&group, q, &mut ctx).expect("point");
        let mut expected = EcPoint::new(&group).expect("point");
        expected
            .mul2(&group, &theirs, ephemeral.private_key(), &mut ctx)
            .expect("mul");
        assert_eq!(
            shared,
            expected
                .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                .expect("bytes")
        );
    }

    #[test]
    fn keyparam_as_gpg_writes_it() {
        let parsed =
            parse_keyparam(b"(genkey(ecc(curve 7:Ed25519)(flags eddsa comp)))\0").expect("parses");
        let ecc = parsed.find(b"ecc").expect("ecc");
        assert_eq!(ecc.value(b"curve"), Some(&b"Ed25519"[..]));
        let flags = ecc.find(b"flags").and_then(Sexp::as_list).expect("flags");
        assert_eq!(flags.len(), 3);
        let rsa = parse_keyparam(b" (genkey (rsa (nbits 4:3072)))\n").expect("parses");
        assert_eq!(
            rsa.find(b"rsa").and_then(|r| r.value(b"nbits")),
            Some(&b"3072"[..])
        );
        let whole = b"(genkey(ecc(curve 10:NIST P-256)(flags nocomp)))";
        for cut in 0..whole.len() {
            assert!(parse_keyparam(&whole[..cut]).is_none(), "{cut}");
        }
        for bad in [
            &b"(genkey(ecc(curve 99:Ed25519)))"[..],
            b"(genkey)(more)",
            b"(genkey \"quoted\")",
            b"((((((((((deep))))))))))",
        ] {
            assert!(
                parse_keyparam(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            generate(
                &parse_keyparam(b"(genkey(ecc(curve 9:secp256k1)))").expect("parses"),
                String::new()
            )
            .err(),
            Some(GenkeyError::Unsupported)
        );
        assert_eq!(
            generate(
                &parse_keyparam(b"(genkey(rsa(nbits 3:512)))").expect("parses"),
                String::new()
            )
            .err(),
            Some(GenkeyError::Unsupported)
        );
        assert_eq!(
            generate(&parse_keyparam(b"(other)").expect("parses"), String::new()).err(),
            Some(GenkeyError::Malformed)
        );
    }

    #[test]
    fn keygrips_match_the_public_key() {
        for key in keys(CipherSuite::Cv25519) {
            let public = Sexp::parse(&key.public).expect("public");
            let ecc = public.find(b"ecc").expect("ecc");
            let curve = match ecc.value(b"curve") {
                Some(b"Ed25519") => Curve::Ed25519,
                _ => Curve::Curve25519,
            };
            assert_eq!(key.grip, keygrip::ecc(curve, ecc.value(b"q").expect("q")));
        }
    }

    #[test]
    fn a_key_in_two_certificates_is_confirmed_if_either_says_so() {
        let (cert, _) = sequoia_openpgp::cert::CertBuilder::new()
            .add_userid("Test <test@example.org>")
            .add_signing_subkey()
            .generate()
            .expect("cert");
        let policy = sequoia_openpgp::policy::StandardPolicy::new();
        let served = |confirm: bool| -> Vec<GpgKey> {
            cert.keys()
                .subkeys()
                .with_policy(&policy, None)
                .secret()
                .map(|ka| {
                    let key = ka.key();
                    let secret = key.optional_secret().expect("secret");
                    let mut key = GpgKey::new(key.mpis(), secret, "test".into()).expect("usable");
                    key.confirm = confirm;
                    key
                })
                .collect()
        };
        let grip = served(false)[0].grip;
        for (first, second) in [(false, true), (true, false)] {
            let ring = GpgKeyring::default();
            ring.set(served(first).into_iter().chain(served(second)).collect());
            assert_eq!(ring.grips(), vec![grip]);
            assert!(ring.get(&grip).expect("served").confirm);
        }
        let ring = GpgKeyring::default();
        ring.set(served(false));
        assert!(!ring.get(&grip).expect("served").confirm);
    }
}
