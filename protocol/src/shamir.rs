//! Shamir secret sharing as the Mesh specifies it (mesh-udf-13 §4.5;
//! research digest §2), used to escrow an account seed.
//!
//! A secret of n bytes (1 to 64) is the constant term of a polynomial of
//! degree k−1 over the prime `2^(8n) + OFFSETS[n−1]`, the smallest prime
//! above 2^(8n). Share i is the point (i, f(i)), written as an S-type UDF:
//! `0x90 || (k << 4 | (i − 1)) || f(i)` with f(i) in n big-endian bytes. Any
//! k shares give the secret back by Lagrange interpolation at 0; the
//! quorum k and the number of shares are each 1 to 15.
//!
//! The arithmetic is crypto-bigint's, fixed-width and constant-time.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U576};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::udf::{Kind, Udf, UdfError, code};

/// How much the smallest prime above 2^(8n) exceeds it, for n = 1..=64.
pub const OFFSETS: [u16; 64] = [
    1, 1, 43, 15, 15, 21, 81, 13, 15, 13, 7, 61, 111, 25, 451, 51, 85, 175, 253, 7, 87, 427, 27,
    133, 235, 375, 423, 735, 357, 115, 81, 297, 175, 57, 45, 127, 61, 37, 91, 27, 15, 241, 231, 55,
    105, 127, 115, 231, 207, 181, 37, 235, 163, 1093, 187, 211, 21, 841, 445, 165, 777, 583, 133,
    75,
];

/// The most shares, and the highest quorum, a secret may be split into.
pub const MAX_SHARES: usize = 15;

/// The longest secret, in bytes.
pub const MAX_SECRET: usize = OFFSETS.len();

/// How often [`split`] redraws the coefficients when a share does not fit
/// in n bytes before it gives up (each draw fails with a chance of about
/// `shares × offset / 2^(8n)`).
const MAX_DRAWS: usize = 1000;

const LIMBS: usize = U576::LIMBS;
const WIDTH: usize = LIMBS * 8;

/// Why a secret could not be split or recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// The quorum and share count are not 1 ≤ quorum ≤ shares ≤ 15.
    #[error("need 1 <= quorum <= shares <= {MAX_SHARES} (got quorum {quorum}, shares {shares})")]
    BadQuorum {
        /// The quorum asked for.
        quorum: usize,
        /// The number of shares asked for.
        shares: usize,
    },
    /// The secret is empty or longer than 64 bytes.
    #[error("a secret must be 1 to {MAX_SECRET} bytes")]
    BadSecret,
    /// A share is not a valid share UDF.
    #[error("share {index} is not a share: {source}")]
    BadShare {
        /// 1-based position in the list given.
        index: usize,
        /// What is wrong with it.
        source: UdfError,
    },
    /// The shares disagree on the quorum or the secret's length, or repeat
    /// a point: they do not come from one split.
    #[error("the shares do not come from the same secret")]
    Mismatched,
    /// Fewer shares than the quorum they name.
    #[error("{quorum} shares are needed, {given} given")]
    TooFew {
        /// The quorum the shares name.
        quorum: usize,
        /// How many were given.
        given: usize,
    },
    /// No set of coefficients gave shares that fit (only for tiny secrets).
    #[error("could not draw coefficients whose shares fit")]
    NoFit,
}

/// One share: its point, and the quorum it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The quorum (1 to 15).
    pub quorum: u8,
    /// The x-coordinate (1 to 16).
    pub x: u8,
    /// f(x), big-endian, as many bytes as the secret.
    pub y: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("quorum", &self.quorum)
            .field("x", &self.x)
            .finish_non_exhaustive()
    }
}

impl Share {
    /// The share as an S-type UDF.
    pub fn to_udf(&self) -> Udf {
        let mut data = Zeroizing::new(Vec::with_capacity(1 + self.y.len()));
        data.push((self.quorum << 4) | (self.x - 1));
        data.extend_from_slice(&self.y);
        Udf::new(code::SHARE, &data)
            .unwrap_or_else(|_| unreachable!("a share of at most 66 bytes is a valid UDF"))
    }

    /// Read a share from its UDF.
    pub fn from_udf(udf: &Udf) -> Result<Share, UdfError> {
        if udf.kind() != Kind::Share {
            return Err(UdfError::WrongType(udf.code()));
        }
        let (&first, y) = udf.data().split_first().ok_or(UdfError::BadLength)?;
        if y.is_empty() || y.len() > MAX_SECRET {
            return Err(UdfError::BadLength);
        }
        let quorum = first >> 4;
        if quorum == 0 {
            return Err(UdfError::BadLength);
        }
        Ok(Share {
            quorum,
            x: (first & 0x0F) + 1,
            y: Zeroizing::new(y.to_vec()),
        })
    }
}

/// The prime for secrets of `n` bytes.
pub fn prime(n: usize) -> Option<U576> {
    let offset = *OFFSETS.get(n.checked_sub(1)?)?;
    Some(
        U576::ONE
            .shl_vartime(8 * n)
            .wrapping_add(&U576::from_u64(u64::from(offset))),
    )
}

/// Split `secret` into `shares` shares, any `quorum` of which recover it.
pub fn split(
    rng: &mut impl CryptoRngCore,
    secret: &[u8],
    shares: usize,
    quorum: usize,
) -> Result<Vec<Share>, ShamirError> {
    check_quorum(quorum, shares)?;
    let n = secret.len();
    let mut coefficients = Zeroizing::new(vec![0u8; n * (quorum - 1)]);
    for _ in 0..MAX_DRAWS {
        rng.fill_bytes(&mut coefficients);
        let coefficients: Vec<&[u8]> = coefficients.chunks(n.max(1)).collect();
        match split_with(secret, &coefficients, shares) {
            Err(ShamirError::NoFit) => continue,
            other => return other,
        }
    }
    Err(ShamirError::NoFit)
}

/// Split with given coefficients a1..a(k−1) (each at most n bytes,
/// big-endian): deterministic, for test vectors. Fails with
/// [`ShamirError::NoFit`] if some share does not fit in n bytes.
pub fn split_with(
    secret: &[u8],
    coefficients: &[&[u8]],
    shares: usize,
) -> Result<Vec<Share>, ShamirError> {
    let quorum = coefficients.len() + 1;
    check_quorum(quorum, shares)?;
    let n = secret.len();
    let p = prime(n).ok_or(ShamirError::BadSecret)?;
    let params = DynResidueParams::new(&p);
    let residue = |bytes: &[u8]| -> Result<DynResidue<LIMBS>, ShamirError> {
        Ok(DynResidue::new(
            &uint(bytes).ok_or(ShamirError::BadSecret)?,
            params,
        ))
    };
    // Highest degree first, for Horner's rule.
    let mut terms = Vec::with_capacity(quorum);
    for c in coefficients.iter().rev() {
        if c.len() > n {
            return Err(ShamirError::BadSecret);
        }
        terms.push(residue(c)?);
    }
    terms.push(residue(secret)?);
    let limit = U576::ONE.shl_vartime(8 * n);
    let mut out = Vec::with_capacity(shares);
    for x in 1..=shares {
        let x_res = DynResidue::new(&U576::from_u64(x as u64), params);
        let mut y = DynResidue::zero(params);
        for term in &terms {
            y = y * x_res + *term;
        }
        let mut value = y.retrieve();
        if value >= limit {
            value.zeroize();
            return Err(ShamirError::NoFit);
        }
        out.push(Share {
            quorum: quorum as u8,
            x: x as u8,
            y: Zeroizing::new(be_bytes(&value, n)),
        });
        value.zeroize();
    }
    Ok(out)
}

/// Recover the secret from shares. All must name the same quorum and
/// secret length, with distinct points; at least the quorum must be
/// given. Shares beyond the quorum are checked against the polynomial the
/// first ones define, so a set mixed from two splits is refused.
pub fn recover(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::TooFew {
        quorum: 1,
        given: 0,
    })?;
    let (quorum, n) = (usize::from(first.quorum), first.y.len());
    let consistent = shares
        .iter()
        .all(|s| usize::from(s.quorum) == quorum && s.y.len() == n);
    let mut xs: Vec<u8> = shares.iter().map(|s| s.x).collect();
    xs.sort_unstable();
    xs.dedup();
    if !consistent || xs.len() != shares.len() {
        return Err(ShamirError::Mismatched);
    }
    if shares.len() < quorum {
        return Err(ShamirError::TooFew {
            quorum,
            given: shares.len(),
        });
    }
    let p = prime(n).ok_or(ShamirError::Mismatched)?;
    let params = DynResidueParams::new(&p);
    let points: Vec<(DynResidue<LIMBS>, DynResidue<LIMBS>)> = shares
        .iter()
        .map(|s| {
            let y = uint(&s.y).ok_or(ShamirError::Mismatched)?;
            Ok((
                DynResidue::new(&U576::from_u64(u64::from(s.x)), params),
                DynResidue::new(&y, params),
            ))
        })
        .collect::<Result<_, ShamirError>>()?;
    let (basis, extra) = points.split_at(quorum);
    for (x, y) in extra {
        if interpolate(basis, *x, params) != *y {
            return Err(ShamirError::Mismatched);
        }
    }
    let zero = DynResidue::zero(params);
    let mut secret = interpolate(basis, zero, params).retrieve();
    if secret >= U576::ONE.shl_vartime(8 * n) {
        secret.zeroize();
        return Err(ShamirError::Mismatched);
    }
    let bytes = Zeroizing::new(be_bytes(&secret, n));
    secret.zeroize();
    Ok(bytes)
}

/// Parse share UDF strings and recover the secret.
pub fn recover_udfs(shares: &[Udf]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let shares = shares
        .iter()
        .enumerate()
        .map(|(index, udf)| {
            Share::from_udf(udf).map_err(|source| ShamirError::BadShare {
                index: index + 1,
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    recover(&shares)
}

/// The polynomial through `points`, evaluated at `at` (Lagrange).
fn interpolate(
    points: &[(DynResidue<LIMBS>, DynResidue<LIMBS>)],
    at: DynResidue<LIMBS>,
    params: DynResidueParams<LIMBS>,
) -> DynResidue<LIMBS> {
    let mut sum = DynResidue::zero(params);
    for (i, (xi, yi)) in points.iter().enumerate() {
        let mut num = DynResidue::one(params);
        let mut den = DynResidue::one(params);
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                num *= at - *xj;
                den *= *xi - *xj;
            }
        }
        // The x are distinct and below p, so den is invertible.
        let (inv, _) = den.invert();
        sum += *yi * num * inv;
    }
    sum
}

fn check_quorum(quorum: usize, shares: usize) -> Result<(), ShamirError> {
    if quorum == 0 || quorum > shares || shares > MAX_SHARES {
        return Err(ShamirError::BadQuorum { quorum, shares });
    }
    Ok(())
}

/// A big-endian byte string of at most 64 bytes as an integer.
fn uint(bytes: &[u8]) -> Option<U576> {
    let start = WIDTH.checked_sub(bytes.len())?;
    let mut wide = Zeroizing::new([0u8; WIDTH]);
    wide.get_mut(start..)?.copy_from_slice(bytes);
    Some(U576::from_be_slice(wide.as_ref()))
}

/// The low `n` bytes of `value`, big-endian.
fn be_bytes(value: &U576, n: usize) -> Vec<u8> {
    let mut wide = value.to_be_bytes();
    let out = wide.get(WIDTH - n..).unwrap_or_default().to_vec();
    wide.zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_are_above_the_power_of_two() {
        let p16 = prime(16).expect("a prime");
        assert_eq!(
            p16.wrapping_sub(&U576::ONE.shl_vartime(128)),
            U576::from_u64(51)
        );
        assert!(prime(0).is_none() && prime(65).is_none());
        assert_ne!(prime(64), Some(U576::ZERO));
    }

    #[test]
    fn quorum_rules() {
        let mut rng = rand_core::OsRng;
        for (shares, quorum) in [(0, 0), (3, 0), (3, 4), (16, 3)] {
            assert!(matches!(
                split(&mut rng, b"secret", shares, quorum),
                Err(ShamirError::BadQuorum { .. })
            ));
        }
        assert_eq!(
            split(&mut rng, b"", 3, 2).err(),
            Some(ShamirError::BadSecret)
        );
    }

    #[test]
    fn any_quorum_recovers_and_fewer_do_not() {
        let mut rng = rand_core::OsRng;
        let secret = [0xA5u8; 35];
        let shares = split(&mut rng, &secret, 5, 3).expect("split");
        for (a, b, c) in [(0, 1, 2), (0, 2, 4), (4, 3, 1)] {
            let subset = [shares[a].clone(), shares[b].clone(), shares[c].clone()];
            assert_eq!(recover(&subset).expect("recovers").as_slice(), secret);
        }
        assert_eq!(
            recover(&shares[..2]).err(),
            Some(ShamirError::TooFew {
                quorum: 3,
                given: 2
            })
        );
        let twice = [shares[0].clone(), shares[0].clone(), shares[1].clone()];
        assert_eq!(recover(&twice).err(), Some(ShamirError::Mismatched));
    }

    #[test]
    fn a_one_byte_secret_still_splits() {
        // p = 257: a share of 256 does not fit one byte, so redraws happen.
        let mut rng = rand_core::OsRng;
        for _ in 0..50 {
            let shares = split(&mut rng, &[200], 15, 8).expect("split");
            assert_eq!(recover(&shares[3..11]).expect("recovers").as_slice(), [200]);
        }
    }

    #[test]
    fn extra_shares_from_another_split_are_caught() {
        let mut rng = rand_core::OsRng;
        let one = split(&mut rng, &[1u8; 16], 4, 2).expect("split");
        let two = split(&mut rng, &[2u8; 16], 4, 2).expect("split");
        let mixed = [one[0].clone(), one[1].clone(), two[2].clone()];
        assert_eq!(recover(&mixed).err(), Some(ShamirError::Mismatched));
    }
}
