//! gpg's transfer format for a secret key: what `gpg --import` hands the
//! agent in IMPORT_KEY, once unwrapped (GnuPG `g10/import.c`
//! `transfer_secret_keys`, read by gpg-agent's `agent/cvt-openpgp.c`):
//!
//! ```text
//! (openpgp-private-key (version 4) (algo EDDSA) (curve Ed25519)
//!   (skey _ <q> _ <d>) (csum <n>) (protection none))
//! ```
//!
//! `_` marks a plain value, `e` the OpenPGP-encrypted secret part of the
//! key packet (RFC 4880 §5.5.3) when `protection` is `sha1` or `sum`
//! followed by the cipher, IV, S2K mode, S2K hash, salt and coded count.
//! [`decode`] gives the key's public and secret parts as OpenPGP values;
//! the caller checks that they belong together.

use mesh_protocol::agent::sexp::{Sexp, unsigned};
use openssl::hash::{Hasher, MessageDigest};
use openssl::symm::{Cipher, Crypter, Mode};
use sequoia_openpgp::crypto::mpi::{MPI, ProtectedMPI, PublicKey, SecretKeyMaterial};
use sequoia_openpgp::types::{Curve, HashAlgorithm, SymmetricAlgorithm};
use zeroize::Zeroizing;

/// The largest wrapped key IMPORT_KEY takes (gpg-agent's MAXLEN_KEYDATA).
pub const MAX_KEYDATA: usize = 8192;

/// The largest coded S2K count taken: 0xff is gpg's maximum (65 MB).
const S2K_HASH_BYTES_MAX: u64 = 65_011_712;

/// Why a transferred key is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Not the transfer format, or a part of it is missing or wrong.
    #[error("malformed secret key")]
    Malformed,
    /// A key or protection algorithm not served here.
    #[error("unsupported algorithm {0}")]
    Unsupported(String),
    /// The passphrase does not decrypt the key.
    #[error("bad passphrase")]
    BadPassphrase,
}

/// A transferred key, not yet decrypted.
pub struct Transfer {
    public: PublicKey,
    algo: Algo,
    /// The secret values (unprotected) or the encrypted blob.
    secret: Zeroizing<Vec<Vec<u8>>>,
    protection: Option<Protection>,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("protected", &self.protection.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Rsa,
    EdDsa,
    Ecdh,
    Ecdsa,
}

struct Protection {
    /// `sha1` (the secret ends with its SHA-1) or `sum` (a 16-bit sum).
    sha1: bool,
    cipher: Cipher,
    key_len: usize,
    iv: Vec<u8>,
    s2k_mode: u8,
    hash: MessageDigest,
    salt: [u8; 8],
    hash_bytes: u64,
}

impl Transfer {
    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Whether a passphrase is needed.
    pub fn protected(&self) -> bool {
        self.protection.is_some()
    }

    /// The key's public and secret parts; `passphrase` is used only if
    /// the key is protected.
    pub fn open(&self, passphrase: &[u8]) -> Result<(PublicKey, SecretKeyMaterial), TransferError> {
        let secret = match &self.protection {
            None => self.secret.clone(),
            Some(protection) => {
                let blob = self.secret.first().ok_or(TransferError::Malformed)?;
                let plain = protection.decrypt(passphrase, blob)?;
                split_mpis(&plain, if self.algo == Algo::Rsa { 4 } else { 1 })?
            }
        };
        let value = |i: usize| -> Result<ProtectedMPI, TransferError> {
            secret
                .get(i)
                .map(|v| ProtectedMPI::from(unsigned(v)))
                .ok_or(TransferError::Malformed)
        };
        let material = match self.algo {
            Algo::Rsa => SecretKeyMaterial::RSA {
                d: value(0)?,
                p: value(1)?,
                q: value(2)?,
                u: value(3)?,
            },
            Algo::EdDsa => SecretKeyMaterial::EdDSA { scalar: value(0)? },
            Algo::Ecdh => SecretKeyMaterial::ECDH { scalar: value(0)? },
            Algo::Ecdsa => SecretKeyMaterial::ECDSA { scalar: value(0)? },
        };
        Ok((self.public.clone(), material))
    }
}

/// Read a transferred key (the unwrapped KEYDATA, its zero padding
/// removed).
pub fn decode(bytes: &[u8]) -> Result<Transfer, TransferError> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let parsed = Wiped(Sexp::parse(&bytes[..end]).map_err(|_| TransferError::Malformed)?);
    let sexp = &parsed.0;
    if sexp.name() != Some(b"openpgp-private-key") {
        return Err(TransferError::Unsupported("key format".into()));
    }
    let text = |name: &[u8]| {
        sexp.value(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(TransferError::Malformed)
    };
    if text(b"version")? != "4" {
        return Err(TransferError::Unsupported(format!(
            "key version {}",
            text(b"version")?
        )));
    }
    let algo_name = text(b"algo")?;
    let algo = match algo_name {
        "RSA" => Algo::Rsa,
        "EDDSA" => Algo::EdDsa,
        "ECDH" => Algo::Ecdh,
        "ECDSA" => Algo::Ecdsa,
        other => return Err(TransferError::Unsupported(other.to_owned())),
    };
    let curve = if algo == Algo::Rsa {
        None
    } else {
        Some(match text(b"curve")? {
            "Ed25519" if algo == Algo::EdDsa => Curve::Ed25519,
            "Curve25519" if algo == Algo::Ecdh => Curve::Cv25519,
            "NIST P-256" if matches!(algo, Algo::Ecdh | Algo::Ecdsa) => Curve::NistP256,
            other => return Err(TransferError::Unsupported(format!("{algo_name} {other}"))),
        })
    };
    // (skey _ a _ b e c ...): the public values, then the secret ones.
    let items = sexp
        .find(b"skey")
        .and_then(Sexp::as_list)
        .ok_or(TransferError::Malformed)?;
    let mut values: Vec<(bool, &[u8])> = Vec::new();
    for pair in items.get(1..).unwrap_or_default().chunks(2) {
        let [flag, value] = pair else {
            return Err(TransferError::Malformed);
        };
        let encrypted = match flag.as_atom() {
            Some(b"_") => false,
            Some(b"e") => true,
            _ => return Err(TransferError::Malformed),
        };
        let value = value.as_atom().ok_or(TransferError::Malformed)?;
        if value.is_empty() || values.len() >= 6 {
            return Err(TransferError::Malformed);
        }
        values.push((encrypted, value));
    }
    let npublic = if algo == Algo::Rsa { 2 } else { 1 };
    if values.len() <= npublic || values[..npublic].iter().any(|(e, _)| *e) {
        return Err(TransferError::Malformed);
    }
    let public = match (algo, curve) {
        (Algo::Rsa, _) => PublicKey::RSA {
            n: MPI::new(unsigned(values[0].1)),
            e: MPI::new(unsigned(values[1].1)),
        },
        (Algo::EdDsa, Some(curve)) => PublicKey::EdDSA {
            curve,
            q: MPI::new(values[0].1),
        },
        (Algo::Ecdsa, Some(curve)) => PublicKey::ECDSA {
            curve,
            q: MPI::new(values[0].1),
        },
        // gpg leaves the KDF parameters out; they are not needed to use
        // the key, only to name it in the certificate, which has them.
        (Algo::Ecdh, Some(curve)) => PublicKey::ECDH {
            curve,
            q: MPI::new(values[0].1),
            hash: HashAlgorithm::SHA256,
            sym: SymmetricAlgorithm::AES128,
        },
        _ => return Err(TransferError::Malformed),
    };
    let rest = &values[npublic..];
    let protection = match sexp.find(b"protection").and_then(Sexp::as_list) {
        Some([_, mode, ..]) if mode.as_atom() == Some(b"none") => None,
        Some([_, mode, cipher, iv, s2k_mode, hash, salt, count, ..]) => {
            let sha1 = match mode.as_atom() {
                Some(b"sha1") => true,
                Some(b"sum") => false,
                _ => return Err(TransferError::Malformed),
            };
            Some(Protection::new(
                sha1, cipher, iv, s2k_mode, hash, salt, count,
            )?)
        }
        _ => return Err(TransferError::Malformed),
    };
    let nsecret = if algo == Algo::Rsa { 4 } else { 1 };
    let secret = match &protection {
        None if rest.len() == nsecret && rest.iter().all(|(e, _)| !e) => {
            rest.iter().map(|(_, v)| v.to_vec()).collect()
        }
        Some(_) if rest.len() == 1 && rest[0].0 => vec![rest[0].1.to_vec()],
        _ => return Err(TransferError::Malformed),
    };
    Ok(Transfer {
        public,
        algo,
        secret: Zeroizing::new(secret),
        protection,
    })
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection").finish_non_exhaustive()
    }
}

impl Protection {
    fn new(
        sha1: bool,
        cipher: &Sexp,
        iv: &Sexp,
        s2k_mode: &Sexp,
        hash: &Sexp,
        salt: &Sexp,
        count: &Sexp,
    ) -> Result<Protection, TransferError> {
        let text = |s: &Sexp| {
            s.as_atom()
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
                .ok_or(TransferError::Malformed)
        };
        let (cipher, key_len) = match text(cipher)?.as_str() {
            "AES" => (Cipher::aes_128_cfb128(), 16),
            "AES192" => (Cipher::aes_192_cfb128(), 24),
            "AES256" => (Cipher::aes_256_cfb128(), 32),
            other => return Err(TransferError::Unsupported(format!("protection {other}"))),
        };
        let iv = iv.as_atom().ok_or(TransferError::Malformed)?.to_vec();
        if iv.len() != 16 {
            return Err(TransferError::Malformed);
        }
        let s2k_mode: u8 = text(s2k_mode)?
            .parse()
            .map_err(|_| TransferError::Malformed)?;
        if !matches!(s2k_mode, 0 | 1 | 3) {
            return Err(TransferError::Unsupported(format!("S2K mode {s2k_mode}")));
        }
        let hash = match text(hash)?.as_str() {
            "SHA1" => MessageDigest::sha1(),
            "SHA224" => MessageDigest::sha224(),
            "SHA256" => MessageDigest::sha256(),
            "SHA384" => MessageDigest::sha384(),
            "SHA512" => MessageDigest::sha512(),
            other => return Err(TransferError::Unsupported(format!("S2K hash {other}"))),
        };
        let salt: [u8; 8] = salt
            .as_atom()
            .and_then(|s| s.try_into().ok())
            .ok_or(TransferError::Malformed)?;
        // The coded count (RFC 4880 §3.7.1.3).
        let coded: u8 = text(count)?.parse().map_err(|_| TransferError::Malformed)?;
        let hash_bytes = (16 + u64::from(coded & 15)) << ((coded >> 4) + 6);
        debug_assert!(hash_bytes <= S2K_HASH_BYTES_MAX);
        Ok(Protection {
            sha1,
            cipher,
            key_len,
            iv,
            s2k_mode,
            hash,
            salt,
            hash_bytes,
        })
    }

    /// The session key from the passphrase (RFC 4880 §3.7.1).
    fn derive(&self, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransferError> {
        let failed = |_| TransferError::BadPassphrase;
        let mut key = Zeroizing::new(Vec::with_capacity(self.key_len + 64));
        let mut preload = 0;
        while key.len() < self.key_len {
            let mut hasher = Hasher::new(self.hash).map_err(failed)?;
            hasher.update(&vec![0u8; preload]).map_err(failed)?;
            let mut input = Zeroizing::new(Vec::with_capacity(8 + passphrase.len()));
            if self.s2k_mode != 0 {
                input.extend_from_slice(&self.salt);
            }
            input.extend_from_slice(passphrase);
            let total = if self.s2k_mode == 3 {
                (self.hash_bytes).max(input.len() as u64)
            } else {
                input.len() as u64
            };
            let mut left = total;
            while left > 0 {
                let take = usize::try_from(left.min(input.len() as u64)).unwrap_or(input.len());
                hasher.update(&input[..take]).map_err(failed)?;
                left -= take as u64;
            }
            key.extend_from_slice(&hasher.finish().map_err(failed)?);
            preload += 1;
        }
        key.truncate(self.key_len);
        Ok(key)
    }

    /// The secret values' OpenPGP encoding, checked.
    fn decrypt(&self, passphrase: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransferError> {
        if passphrase.is_empty() {
            return Err(TransferError::BadPassphrase);
        }
        let key = self.derive(passphrase)?;
        let failed = |_| TransferError::BadPassphrase;
        let mut crypter =
            Crypter::new(self.cipher, Mode::Decrypt, &key, Some(&self.iv)).map_err(failed)?;
        let mut plain = Zeroizing::new(vec![0u8; blob.len() + 32]);
        let n = crypter.update(blob, &mut plain).map_err(failed)?;
        let m = crypter.finalize(&mut plain[n..]).map_err(failed)?;
        plain.truncate(n + m);
        let checked = if self.sha1 {
            let at = plain
                .len()
                .checked_sub(20)
                .ok_or(TransferError::BadPassphrase)?;
            let digest =
                openssl::hash::hash(MessageDigest::sha1(), &plain[..at]).map_err(failed)?;
            openssl::memcmp::eq(&digest, &plain[at..]).then_some(at)
        } else {
            let at = plain
                .len()
                .checked_sub(2)
                .ok_or(TransferError::BadPassphrase)?;
            let sum = plain[..at]
                .iter()
                .fold(0u16, |a, &b| a.wrapping_add(u16::from(b)));
            (sum.to_be_bytes() == plain[at..]).then_some(at)
        };
        let at = checked.ok_or(TransferError::BadPassphrase)?;
        plain.truncate(at);
        Ok(plain)
    }
}

/// A parsed S-expression holding secrets: its atoms are wiped when it
/// goes.
struct Wiped(Sexp);

impl Drop for Wiped {
    fn drop(&mut self) {
        fn wipe(sexp: &mut Sexp) {
            match sexp {
                Sexp::Atom(bytes) => zeroize::Zeroize::zeroize(bytes),
                Sexp::List(items) => items.iter_mut().for_each(wipe),
            }
        }
        wipe(&mut self.0);
    }
}

/// `count` OpenPGP MPIs (two-byte bit count, then the bytes), exactly.
fn split_mpis(bytes: &[u8], count: usize) -> Result<Zeroizing<Vec<Vec<u8>>>, TransferError> {
    let mut out = Zeroizing::new(Vec::with_capacity(count));
    let mut rest = bytes;
    for _ in 0..count {
        let [hi, lo, tail @ ..] = rest else {
            return Err(TransferError::Malformed);
        };
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).div_ceil(8);
        if tail.len() < len {
            return Err(TransferError::Malformed);
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(TransferError::Malformed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(s: &[u8]) -> Sexp {
        Sexp::atom(s)
    }

    fn list(items: Vec<Sexp>) -> Sexp {
        Sexp::List(items)
    }

    fn ed25519(protection: Sexp, skey_secret: Vec<Sexp>) -> Vec<u8> {
        let mut skey = vec![atom(b"skey"), atom(b"_"), atom(&[0x40; 33])];
        skey.extend(skey_secret);
        let mut bytes = list(vec![
            atom(b"openpgp-private-key"),
            list(vec![atom(b"version"), atom(b"4")]),
            list(vec![atom(b"algo"), atom(b"EDDSA")]),
            list(vec![atom(b"curve"), atom(b"Ed25519")]),
            list(skey),
            list(vec![atom(b"csum"), atom(b"1234")]),
            protection,
        ])
        .encode();
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes
    }

    #[test]
    fn an_unprotected_key_is_read_and_padding_ignored() {
        let bytes = ed25519(
            list(vec![atom(b"protection"), atom(b"none")]),
            vec![atom(b"_"), atom(&[7; 32])],
        );
        let transfer = decode(&bytes).expect("decodes");
        assert!(!transfer.protected());
        let (public, secret) = transfer.open(b"").expect("opens");
        assert!(matches!(
            public,
            PublicKey::EdDSA {
                curve: Curve::Ed25519,
                ..
            }
        ));
        let SecretKeyMaterial::EdDSA { scalar } = secret else {
            panic!("eddsa")
        };
        assert_eq!(scalar.value(), &[7; 32]);
    }

    #[test]
    fn a_protected_key_needs_the_right_passphrase() {
        // Made as gpg makes it: AES-128 CFB under an iterated S2K, the
        // secret MPI followed by its SHA-1.
        let secret = [[0x01, 0x00].as_slice(), &[9u8; 32]].concat();
        let mut plain = secret.clone();
        plain.extend(
            openssl::hash::hash(MessageDigest::sha1(), &secret)
                .expect("sha1")
                .to_vec(),
        );
        let protection = Protection {
            sha1: true,
            cipher: Cipher::aes_128_cfb128(),
            key_len: 16,
            iv: vec![3; 16],
            s2k_mode: 3,
            hash: MessageDigest::sha1(),
            salt: [5; 8],
            // Coded count 96: (16 + 0) << (6 + 6).
            hash_bytes: 65536,
        };
        let key = protection.derive(b"hunter2").expect("key");
        let blob = openssl::symm::encrypt(Cipher::aes_128_cfb128(), &key, Some(&[3; 16]), &plain)
            .expect("encrypts");
        let bytes = ed25519(
            list(vec![
                atom(b"protection"),
                atom(b"sha1"),
                atom(b"AES"),
                atom(&[3; 16]),
                atom(b"3"),
                atom(b"SHA1"),
                atom(&[5; 8]),
                atom(b"96"),
            ]),
            vec![atom(b"e"), atom(&blob)],
        );
        let transfer = decode(&bytes).expect("decodes");
        assert!(transfer.protected());
        assert_eq!(
            transfer.open(b"wrong").err(),
            Some(TransferError::BadPassphrase)
        );
        assert_eq!(transfer.open(b"").err(), Some(TransferError::BadPassphrase));
        let (_, secret) = transfer.open(b"hunter2").expect("opens");
        let SecretKeyMaterial::EdDSA { scalar } = secret else {
            panic!("eddsa")
        };
        assert_eq!(scalar.value(), &[9; 32]);
    }

    #[test]
    fn no_damage_panics() {
        let bytes = ed25519(
            list(vec![
                atom(b"protection"),
                atom(b"sum"),
                atom(b"AES256"),
                atom(&[3; 16]),
                atom(b"3"),
                atom(b"SHA256"),
                atom(&[5; 8]),
                atom(b"0"),
            ]),
            vec![atom(b"e"), atom(&[0x55; 40])],
        );
        for cut in 0..bytes.len() {
            if let Ok(transfer) = decode(&bytes[..cut]) {
                let _ = transfer.open(b"pw");
            }
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x20, 0x80] {
                let mut damaged = bytes.clone();
                damaged[at] ^= flip;
                if let Ok(transfer) = decode(&damaged) {
                    let _ = transfer.open(b"pw");
                }
            }
        }
        assert_eq!(
            decode(&bytes).expect("decodes").open(b"pw").err(),
            Some(TransferError::BadPassphrase)
        );
    }

    #[test]
    fn other_keys_and_damage_are_refused() {
        let none = || list(vec![atom(b"protection"), atom(b"none")]);
        let dsa = list(vec![
            atom(b"openpgp-private-key"),
            list(vec![atom(b"version"), atom(b"4")]),
            list(vec![atom(b"algo"), atom(b"DSA")]),
            none(),
        ])
        .encode();
        assert_eq!(
            decode(&dsa).err(),
            Some(TransferError::Unsupported("DSA".into()))
        );
        let native = list(vec![atom(b"private-key")]).encode();
        assert!(matches!(
            decode(&native),
            Err(TransferError::Unsupported(_))
        ));
        assert_eq!(decode(b"(garbage").err(), Some(TransferError::Malformed));
        // No secret value, or two where one belongs.
        assert_eq!(
            decode(&ed25519(none(), vec![])).err(),
            Some(TransferError::Malformed)
        );
        assert_eq!(
            decode(&ed25519(
                none(),
                vec![atom(b"_"), atom(&[1]), atom(b"_"), atom(&[2])]
            ))
            .err(),
            Some(TransferError::Malformed)
        );
        assert_eq!(
            split_mpis(&[0x01, 0x00, 1], 1).err(),
            Some(TransferError::Malformed)
        );
    }
}
