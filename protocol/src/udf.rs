//! Uniform Data Fingerprints (mesh-udf-13).
//!
//! A UDF is a type byte followed by a binary data sequence (BDS), written
//! in Base32 with a dash after every four characters: `MDDK-7N6A-727A-...`.
//! The type byte is chosen so that the first character says what the UDF
//! is (M: SHA-2-512 digest, K: SHA-3-512 digest, A: authenticator, N:
//! nonce, E: encryption key, Z: secret seed, S: Shamir share, O: OID).
//!
//! A presentation keeps as many bits as asked (140 by default, counting
//! the type byte), so a shorter UDF is a prefix of a longer one of the same
//! data; [`Udf::matches`] compares that way. Parsing is case-insensitive,
//! ignores dashes, and drops the trailing bits of a partial byte, as the
//! reference code does.
//!
//! The sub-modules build the UDFs of each kind: [`digest`] (content
//! digests, with compression), [`keyed`] (authenticators, symmetric-key
//! MACs and the PIN identifiers built on them), [`seed`] (secret seeds
//! and their key specifiers) and [`name`] (`udf:` names and `mcu://`
//! connect URIs).

use std::fmt;

use rand_core::CryptoRngCore;

pub mod digest;
pub mod keyed;
pub mod name;
pub mod seed;

/// The precision of a presentation when none is asked for, in bits
/// including the type byte: 28 characters.
pub const DEFAULT_BITS: usize = 140;

/// The largest precision of a digest presentation (used for EARL ids).
pub const MAX_BITS: usize = 440;

/// The fewest bits a UDF may have for [`Udf::matches`] to trust it: the
/// specification's shortest legitimate UDF has 96 significant bits.
pub const MIN_MATCH_BITS: usize = 100;

/// The type codes of mesh-udf-13 §2.1 (first byte of the binary form).
pub mod code {
    /// Authenticator (HMAC-SHA-2-512); also the type of a PIN.
    pub const AUTHENTICATOR_SHA2: u8 = 0;
    /// Authenticator (HMAC-SHA-3-512).
    pub const AUTHENTICATOR_SHA3: u8 = 1;
    /// Encryption key ("HKDF_AES_512").
    pub const ENCRYPTION: u8 = 32;
    /// Encryption and signature key.
    pub const ENCRYPTION_SIGNATURE: u8 = 33;
    /// SHA-3-512 digest, compression level 0; levels 1 to 4 follow.
    pub const SHA3_512: u8 = 80;
    /// SHA-2-512 digest, compression level 0; levels 1 to 4 follow.
    pub const SHA2_512: u8 = 96;
    /// Nonce.
    pub const NONCE: u8 = 104;
    /// OID-identified DER sequence (the prose says 108; the table and the
    /// code say 112).
    pub const OID: u8 = 112;
    /// Shamir secret share.
    pub const SHARE: u8 = 144;
    /// Secret seed for key derivation.
    pub const SEED: u8 = 200;
}

/// The hash function behind a digest or authenticator UDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// SHA-2-512 (FIPS 180-4).
    Sha2_512,
    /// SHA-3-512 (FIPS 202).
    Sha3_512,
}

/// What a UDF is, read from its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A keyed authenticator (or PIN) over the given hash.
    Authenticator(DigestAlg),
    /// An encryption key; `signature` when it may also sign.
    EncryptionKey {
        /// Type 33 rather than 32.
        signature: bool,
    },
    /// A content digest and its compression level (0 to 4).
    Digest {
        /// The hash function.
        alg: DigestAlg,
        /// 0: none; 1 to 4: at least 20, 30, 40, 50 trailing zero bits.
        compression: u8,
    },
    /// A random nonce.
    Nonce,
    /// An OID-identified DER sequence.
    Oid,
    /// A Shamir secret share.
    Share,
    /// A secret seed for key derivation.
    Seed,
}

impl Kind {
    /// The kind of a type byte, if it is one the specification defines.
    pub fn of(code: u8) -> Option<Kind> {
        Some(match code {
            code::AUTHENTICATOR_SHA2 => Kind::Authenticator(DigestAlg::Sha2_512),
            code::AUTHENTICATOR_SHA3 => Kind::Authenticator(DigestAlg::Sha3_512),
            code::ENCRYPTION => Kind::EncryptionKey { signature: false },
            code::ENCRYPTION_SIGNATURE => Kind::EncryptionKey { signature: true },
            80..=84 => Kind::Digest {
                alg: DigestAlg::Sha3_512,
                compression: code - code::SHA3_512,
            },
            96..=100 => Kind::Digest {
                alg: DigestAlg::Sha2_512,
                compression: code - code::SHA2_512,
            },
            code::NONCE => Kind::Nonce,
            code::OID => Kind::Oid,
            code::SHARE => Kind::Share,
            code::SEED => Kind::Seed,
            _ => return None,
        })
    }

    /// Whether UDFs of this kind are always shown whole (keys, nonces,
    /// shares, seeds, OIDs), rather than truncated to a precision.
    pub fn fixed_length(self) -> bool {
        !matches!(self, Kind::Digest { .. } | Kind::Authenticator(_))
    }
}

/// Why a UDF string or binary value was refused. Errors give positions,
/// never the input itself, since a UDF may be a secret (a seed or share).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UdfError {
    /// The string holds a character that is neither Base32 nor a dash.
    #[error("character {position} of the UDF is not Base32 (A-Z, 2-7)")]
    BadCharacter {
        /// 1-based position in the string as given.
        position: usize,
    },
    /// Too short to hold even the type byte.
    #[error("the UDF is too short")]
    TooShort,
    /// Longer than any UDF can be.
    #[error("the UDF is too long")]
    TooLong,
    /// The type byte is not one the specification defines.
    #[error("unknown UDF type {0}")]
    UnknownType(u8),
    /// The UDF is of another kind than the operation needs.
    #[error("expected a UDF of another type (got type {0})")]
    WrongType(u8),
    /// The UDF's data has the wrong length for its kind.
    #[error("the UDF's data has the wrong length")]
    BadLength,
    /// A share, seed or OID written with padding bits set or with a
    /// character too many.
    #[error("the UDF is not in canonical form")]
    NotCanonical,
    /// A precision outside what the operation allows.
    #[error("precision of {0} bits is out of range")]
    BadPrecision(usize),
}

/// The longest binary UDF we accept (a type byte and 64 digest bytes
/// leave room; shares and OIDs are smaller).
const MAX_BINARY: usize = 256;

/// A Uniform Data Fingerprint: the binary value and how many of its bits
/// are significant (a parsed 28-character string has 140).
///
/// Equality is exact (same bits, same precision); use [`Udf::matches`] to
/// compare fingerprints of different precisions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Udf {
    /// `bits.div_ceil(8)` bytes; bits past `bits` are zero.
    bytes: Vec<u8>,
    bits: usize,
}

/// Seeds, shares and keys are UDFs too: every UDF is wiped when dropped.
impl Drop for Udf {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl Udf {
    /// A UDF from its whole binary form (type byte, then data).
    pub fn from_binary(bytes: Vec<u8>) -> Result<Udf, UdfError> {
        let &code = bytes.first().ok_or(UdfError::TooShort)?;
        Kind::of(code).ok_or(UdfError::UnknownType(code))?;
        if bytes.len() > MAX_BINARY {
            return Err(UdfError::TooLong);
        }
        let bits = bytes.len() * 8;
        Ok(Udf { bytes, bits })
    }

    /// A UDF of type `code` over `data`.
    pub fn new(code: u8, data: &[u8]) -> Result<Udf, UdfError> {
        let mut bytes = Vec::with_capacity(1 + data.len());
        bytes.push(code);
        bytes.extend_from_slice(data);
        Udf::from_binary(bytes)
    }

    /// Parse a presentation: case-insensitive, dashes anywhere. The bits
    /// of a last partial byte are kept for presentation and comparison,
    /// but are not part of [`Udf::as_bytes`] and [`Udf::data`].
    pub fn parse(text: &str) -> Result<Udf, UdfError> {
        let mut bytes = Vec::with_capacity(text.len() * 5 / 8 + 1);
        let (mut acc, mut held, mut chars) = (0u16, 0u32, 0usize);
        for (index, c) in text.chars().enumerate() {
            let value = match c {
                '-' => continue,
                'a'..='z' => c as u8 - b'a',
                'A'..='Z' => c as u8 - b'A',
                '2'..='7' => c as u8 - b'2' + 26,
                _ => {
                    return Err(UdfError::BadCharacter {
                        position: index + 1,
                    });
                }
            };
            chars += 1;
            if chars * 5 > MAX_BINARY * 8 {
                return Err(UdfError::TooLong);
            }
            acc = (acc << 5) | u16::from(value);
            held += 5;
            if held >= 8 {
                held -= 8;
                bytes.push((acc >> held) as u8);
                acc &= (1 << held) - 1;
            }
        }
        if held > 0 {
            bytes.push((acc << (8 - held)) as u8);
        }
        if chars < 2 {
            return Err(UdfError::TooShort);
        }
        let mut udf = Udf::from_binary(bytes)?;
        udf.bits = chars * 5;
        if matches!(udf.kind(), Kind::Share | Kind::Seed | Kind::Oid) {
            // Shares, seeds and OIDs are whole bytes: the last character
            // only pads, and its padding bits must be zero. (Nonces and
            // keys are bit strings: the reference's nonces have 132 bits.)
            let whole = udf.bits / 8;
            if udf.bytes.get(whole).is_some_and(|partial| *partial != 0)
                || udf.bits - whole * 8 >= 5
            {
                return Err(UdfError::NotCanonical);
            }
            udf = udf.truncate(whole * 8);
        }
        Ok(udf)
    }

    /// The same UDF cut to its first `bits` bits, as parsing its
    /// presentation at that precision would give.
    pub fn truncate(mut self, bits: usize) -> Udf {
        let bits = bits.clamp(8, self.bits);
        self.bytes.truncate(bits.div_ceil(8));
        if let Some(last) = self.bytes.last_mut()
            && !bits.is_multiple_of(8)
        {
            *last &= 0xFFu8 << (8 - bits % 8);
        }
        self.bits = bits;
        self
    }

    /// A fresh nonce of `bytes` random bytes (16 by default in the CLI).
    pub fn nonce(rng: &mut impl CryptoRngCore, bytes: usize) -> Result<Udf, UdfError> {
        if bytes == 0 || bytes > 64 {
            return Err(UdfError::BadLength);
        }
        let mut data = vec![0u8; bytes];
        rng.fill_bytes(&mut data);
        Udf::new(code::NONCE, &data)
    }

    /// An encryption-key UDF (type 32) holding `key`.
    pub fn encryption_key(key: &[u8]) -> Result<Udf, UdfError> {
        Udf::new(code::ENCRYPTION, key)
    }

    /// The type byte.
    pub fn code(&self) -> u8 {
        self.bytes.first().copied().unwrap_or_default()
    }

    /// What the UDF is.
    pub fn kind(&self) -> Kind {
        // from_binary checked the type byte.
        Kind::of(self.code()).unwrap_or(Kind::Nonce)
    }

    /// The binary form: type byte and data, in whole bytes (a trailing
    /// partial byte of a parsed presentation is left out).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.bits / 8).unwrap_or_default()
    }

    /// The binary data sequence: [`Udf::as_bytes`] without the type byte.
    pub fn data(&self) -> &[u8] {
        self.as_bytes().get(1..).unwrap_or_default()
    }

    /// How many bits of the UDF are known.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The presentation at `bits` of precision (type byte included),
    /// clamped to what is known. Fixed-length kinds are always whole.
    pub fn to_string_bits(&self, bits: usize) -> String {
        let bits = if self.kind().fixed_length() {
            self.bits
        } else {
            bits.min(self.bits)
        };
        present(&self.bytes, bits)
    }

    /// Whether two UDFs name the same thing: the shorter presentation is a
    /// prefix of the longer, and the shorter has at least
    /// [`MIN_MATCH_BITS`].
    pub fn matches(&self, other: &Udf) -> bool {
        let bits = self.bits.min(other.bits);
        bits >= MIN_MATCH_BITS && self.to_string_bits(bits) == other.to_string_bits(bits)
    }
}

impl fmt::Display for Udf {
    /// The default presentation: 140 bits for digests and authenticators,
    /// whole for everything else.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_bits(DEFAULT_BITS))
    }
}

impl fmt::Debug for Udf {
    /// Seeds and shares are secrets: only their kind is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Kind::Seed | Kind::Share | Kind::EncryptionKey { .. } => f
                .debug_struct("Udf")
                .field("kind", &self.kind())
                .finish_non_exhaustive(),
            _ => write!(f, "Udf({self})"),
        }
    }
}

impl std::str::FromStr for Udf {
    type Err = UdfError;
    fn from_str(text: &str) -> Result<Udf, UdfError> {
        Udf::parse(text)
    }
}

/// Base32 of `bytes`, cut to `bits` (rounded up to whole characters),
/// with a dash after every four characters.
///
/// Every bit a shown character holds is data where the data reaches: the
/// reference takes `(bits + 7) / 8` bytes, which for a precision that is
/// not a multiple of 5 leaves padding in the last character; we take the
/// bytes the characters need. For the usual precisions (multiples of 20)
/// the two are the same.
fn present(bytes: &[u8], bits: usize) -> String {
    let take = bytes.len().min((bits.div_ceil(5) * 5).div_ceil(8));
    let encoded = base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        bytes.get(..take).unwrap_or_default(),
    );
    let chars = encoded.len().min(bits.div_ceil(5));
    let mut out = String::with_capacity(chars + chars / 4);
    for (index, c) in encoded.chars().take(chars).enumerate() {
        if index > 0 && index % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Base32 of raw bytes with no type byte, whole, grouped in fours: how
/// the reference prints a raw shared secret (`SharedSecret.UDFKey`).
pub fn present_raw(bytes: &[u8]) -> String {
    present(bytes, bytes.len() * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_and_dash_insensitive() {
        let a = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF").expect("parses");
        let b = Udf::parse("mddk7n6a727ajznostrxxks7djaf").expect("parses");
        assert_eq!(a, b);
        assert_eq!(a.bits(), 140);
        assert_eq!(a.as_bytes().len(), 17, "partial bits are not data");
        assert_eq!(a.to_string_bits(100), "MDDK-7N6A-727A-JZNO-STRX");
        assert_eq!(
            a.clone().truncate(100),
            Udf::parse("MDDK7N6A727AJZNOSTRX").expect("parses")
        );
        assert_eq!(a.to_string(), "MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF");
    }

    #[test]
    fn shorter_presentations_are_prefixes() {
        let long = Udf::parse("MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF").expect("parses");
        let short = Udf::parse("MDDK-7N6A-727A-JZNO-STRX").expect("parses");
        assert!(long.matches(&short) && short.matches(&long));
        let other = Udf::parse("MDDK-7N6A-727A-JZNO-STRY").expect("parses");
        assert!(!long.matches(&other));
        let tiny = Udf::parse("MDDK-7N6A").expect("parses");
        assert!(!long.matches(&tiny), "too few bits to trust");
    }

    #[test]
    fn bad_strings_are_refused_by_position() {
        assert_eq!(
            Udf::parse("MDDK-1N6A"),
            Err(UdfError::BadCharacter { position: 6 })
        );
        assert_eq!(Udf::parse("M"), Err(UdfError::TooShort));
        assert_eq!(Udf::parse(""), Err(UdfError::TooShort));
        assert_eq!(Udf::parse("7777-7777"), Err(UdfError::UnknownType(0xff)));
        assert_eq!(Udf::parse(&"M".repeat(500)), Err(UdfError::TooLong));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let seed = Udf::new(code::SEED, &[0, 1, 2, 3]).expect("valid");
        assert!(!format!("{seed:?}").contains(&seed.to_string()));
    }

    proptest::proptest! {
        #[test]
        fn presentations_round_trip(
            code in proptest::sample::select(vec![0u8, 1, 32, 80, 96, 104]),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..80),
            bits in 16usize..700,
        ) {
            let udf = Udf::new(code, &data).expect("valid");
            let shown = udf.to_string_bits(bits);
            let parsed = Udf::parse(&shown).expect("parses");
            proptest::prop_assert_eq!(parsed.to_string_bits(parsed.bits()), shown.clone());
            proptest::prop_assert_eq!(Udf::parse(&shown.to_lowercase().replace('-', "")).expect("parses"), parsed.clone());
            if parsed.bits().min(udf.bits()) >= MIN_MATCH_BITS {
                proptest::prop_assert!(udf.matches(&parsed));
            }
        }
    }
}
