//! Secret seeds (type Z) and their key specifiers (mesh-udf-13 §3.5;
//! research digest §1.5).
//!
//! A seed's data is a two-byte key specifier, then the secret. The
//! specifier's top two bits give the key's use and its other fourteen
//! the algorithm, or one of the Mesh's own seed kinds (a device, an
//! account, an activation ...).

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::{Kind, Udf, UdfError, code};

/// The default size of a seed's secret, in bytes (256 bits).
pub const DEFAULT_SECRET_BYTES: usize = 32;

/// The least secret a seed may hold, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// What keys made from a seed may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUse {
    /// Any use.
    Any = 0,
    /// Encryption (key agreement).
    Encrypt = 1,
    /// Signature.
    Sign = 2,
    /// Authentication.
    Authenticate = 3,
}

/// The algorithm part of a key specifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlg {
    /// Any algorithm.
    Any,
    /// X25519 (RFC 7748).
    X25519,
    /// X448 (RFC 7748).
    X448,
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// Ed448 (RFC 8032).
    Ed448,
    /// ECDSA P-256.
    P256,
    /// ECDSA P-384.
    P384,
    /// ECDSA P-521.
    P521,
    /// RSA, 2048 bits.
    Rsa2048,
    /// RSA, 3072 bits.
    Rsa3072,
    /// RSA, 4096 bits.
    Rsa4096,
    /// The seed of a device's profile.
    MeshProfileDevice,
    /// The seed of a device's activation.
    MeshActivationDevice,
    /// The seed of an account: every account key derives from it.
    MeshProfileAccount,
    /// The seed of an account's activation.
    MeshActivationAccount,
    /// The seed of a service's profile.
    MeshProfileService,
    /// The seed of a service's activation.
    MeshActivationService,
}

impl KeyAlg {
    const TABLE: [(KeyAlg, u16); 17] = [
        (KeyAlg::Any, 0),
        (KeyAlg::X25519, 1),
        (KeyAlg::X448, 2),
        (KeyAlg::Ed25519, 3),
        (KeyAlg::Ed448, 4),
        (KeyAlg::P256, 5),
        (KeyAlg::P384, 6),
        (KeyAlg::P521, 7),
        (KeyAlg::Rsa2048, 8),
        (KeyAlg::Rsa3072, 9),
        (KeyAlg::Rsa4096, 10),
        (KeyAlg::MeshProfileDevice, 256),
        (KeyAlg::MeshActivationDevice, 257),
        (KeyAlg::MeshProfileAccount, 258),
        (KeyAlg::MeshActivationAccount, 259),
        (KeyAlg::MeshProfileService, 260),
        (KeyAlg::MeshActivationService, 261),
    ];

    /// The 14-bit code.
    pub fn code(self) -> u16 {
        Self::TABLE
            .iter()
            .find(|(alg, _)| *alg == self)
            .map_or(0, |(_, code)| *code)
    }

    /// The algorithm of a 14-bit code.
    pub fn from_code(code: u16) -> Option<KeyAlg> {
        Self::TABLE
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(alg, _)| *alg)
    }
}

/// A key specifier: the first two bytes of a seed's data, and the prefix
/// of the HKDF info when keys are derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpecifier {
    /// What the keys are for.
    pub key_use: KeyUse,
    /// The algorithm or seed kind.
    pub alg: KeyAlg,
}

impl KeySpecifier {
    /// A specifier for any use.
    pub fn new(alg: KeyAlg) -> KeySpecifier {
        KeySpecifier {
            key_use: KeyUse::Any,
            alg,
        }
    }

    /// The two bytes, big-endian: use in the top two bits.
    pub fn to_bytes(self) -> [u8; 2] {
        (((self.key_use as u16) << 14) | self.alg.code()).to_be_bytes()
    }

    /// Read two bytes.
    pub fn from_bytes(bytes: [u8; 2]) -> Result<KeySpecifier, UdfError> {
        let value = u16::from_be_bytes(bytes);
        let key_use = match value >> 14 {
            0 => KeyUse::Any,
            1 => KeyUse::Encrypt,
            2 => KeyUse::Sign,
            _ => KeyUse::Authenticate,
        };
        let alg = KeyAlg::from_code(value & 0x3FFF).ok_or(UdfError::WrongType(code::SEED))?;
        Ok(KeySpecifier { key_use, alg })
    }
}

/// A secret seed: a key specifier and a secret, from which keys derive.
/// Wiped when dropped; its `Debug` shows only the specifier.
pub struct Seed {
    specifier: KeySpecifier,
    /// Specifier bytes then the secret: the HKDF input keying material.
    ikm: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("specifier", &self.specifier)
            .finish_non_exhaustive()
    }
}

impl Seed {
    /// A fresh seed with a secret of `bytes` random bytes.
    pub fn generate(
        rng: &mut impl CryptoRngCore,
        specifier: KeySpecifier,
        bytes: usize,
    ) -> Result<Seed, UdfError> {
        if !(MIN_SECRET_BYTES..=64).contains(&bytes) {
            return Err(UdfError::BadLength);
        }
        let mut secret = Zeroizing::new(vec![0u8; bytes]);
        rng.fill_bytes(&mut secret);
        Ok(Seed::from_parts(specifier, &secret))
    }

    /// A seed from its specifier and secret.
    pub fn from_parts(specifier: KeySpecifier, secret: &[u8]) -> Seed {
        let mut ikm = Zeroizing::new(Vec::with_capacity(2 + secret.len()));
        ikm.extend_from_slice(&specifier.to_bytes());
        ikm.extend_from_slice(secret);
        Seed { specifier, ikm }
    }

    /// The seed a Z-type UDF holds.
    pub fn from_udf(udf: &Udf) -> Result<Seed, UdfError> {
        if udf.kind() != Kind::Seed {
            return Err(UdfError::WrongType(udf.code()));
        }
        let (spec, secret) = udf
            .data()
            .split_first_chunk::<2>()
            .ok_or(UdfError::BadLength)?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(UdfError::BadLength);
        }
        Ok(Seed::from_parts(KeySpecifier::from_bytes(*spec)?, secret))
    }

    /// The seed as a Z-type UDF (a secret: show it only to its owner).
    pub fn to_udf(&self) -> Udf {
        Udf::new(code::SEED, &self.ikm)
            .unwrap_or_else(|_| unreachable!("a seed of at most 66 bytes is a valid UDF"))
    }

    /// The key specifier.
    pub fn specifier(&self) -> KeySpecifier {
        self.specifier
    }

    /// The HKDF input keying material: specifier bytes, then the secret.
    pub fn ikm(&self) -> &[u8] {
        &self.ikm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifier_of_u21_is_x25519() {
        let udf = Udf::parse("ZAAA-CDJ5-DHPA-DUUW-WIPQ-UXNC-DSAR-U7A").expect("parses");
        let seed = Seed::from_udf(&udf).expect("a seed");
        assert_eq!(seed.specifier(), KeySpecifier::new(KeyAlg::X25519));
        assert_eq!(seed.ikm()[..4], [0x00, 0x01, 0x0D, 0x3D]);
        assert_eq!(
            seed.to_udf().to_string(),
            "ZAAA-CDJ5-DHPA-DUUW-WIPQ-UXNC-DSAR-U7A"
        );
    }

    #[test]
    fn specifiers_round_trip() {
        for (alg, _) in KeyAlg::TABLE {
            for key_use in [
                KeyUse::Any,
                KeyUse::Encrypt,
                KeyUse::Sign,
                KeyUse::Authenticate,
            ] {
                let spec = KeySpecifier { key_use, alg };
                assert_eq!(KeySpecifier::from_bytes(spec.to_bytes()), Ok(spec));
            }
        }
        assert!(KeySpecifier::from_bytes([0x00, 0x63]).is_err());
    }
}
