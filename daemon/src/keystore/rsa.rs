//! RSA private keys for OpenSSL from their numbers, as both the SSH and
//! the OpenPGP keys carry them.

use openssl::bn::{BigNum, BigNumContext};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;

/// An RSA private key from its unsigned big-endian numbers, checked
/// (`RSA_check_key`). `iqmp` is q⁻¹ mod p, OpenSSH's and OpenSSL's
/// convention; the CRT exponents are computed here. `None` if the numbers
/// do not make a valid key.
pub fn from_parts(
    n: &[u8],
    e: &[u8],
    d: &[u8],
    p: &[u8],
    q: &[u8],
    iqmp: &[u8],
) -> Option<PKey<Private>> {
    let secure = |bytes: &[u8]| {
        let mut n = BigNum::new_secure().ok()?;
        n.copy_from_slice(bytes).ok()?;
        Some(n)
    };
    let (d, p, q) = (secure(d)?, secure(p)?, secure(q)?);
    let mut ctx = BigNumContext::new_secure().ok()?;
    let one = BigNum::from_u32(1).ok()?;
    let mut crt = |prime: &BigNum| {
        let mut minus_one = BigNum::new().ok()?;
        minus_one.checked_sub(prime, &one).ok()?;
        let mut exponent = BigNum::new_secure().ok()?;
        exponent.nnmod(&d, &minus_one, &mut ctx).ok()?;
        Some(exponent)
    };
    let (dmp1, dmq1) = (crt(&p)?, crt(&q)?);
    let rsa = Rsa::from_private_components(
        BigNum::from_slice(n).ok()?,
        BigNum::from_slice(e).ok()?,
        d,
        p,
        q,
        dmp1,
        dmq1,
        secure(iqmp)?,
    )
    .ok()?;
    if !rsa.check_key().ok()? {
        return None;
    }
    PKey::from_rsa(rsa).ok()
}
