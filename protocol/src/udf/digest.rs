//! Content digest UDFs, types M (SHA-2-512) and K (SHA-3-512)
//! (mesh-udf-13 §3.1; research digest §1.3).
//!
//! ```text
//! CDV  = H(data)
//! TCDV = H(UTF8(content_type) || ":" || CDV)
//! UDF  = (base + compression(TCDV)) || TCDV
//! ```
//!
//! The compression level counts the trailing zero bits at the *end* of
//! TCDV, as the reference code and the draft's own example do (the draft's
//! prose says otherwise). The digest bytes are never shifted; only the type
//! byte changes.

use sha2::{Digest as _, Sha512};
use sha3::Sha3_512;

use super::{DigestAlg, Kind, Udf, code};

/// Content type of message envelope identifiers.
pub const CT_ENVELOPE_ID: &str = "application/mmm/envelopeid";
/// Content type of message response identifiers.
pub const CT_RESPONSE_ID: &str = "application/mmm/responseid";
/// Content type of public-key fingerprints (the key's SPKI DER).
pub const CT_KEY_INFO: &str = "application/pkix-keyinfo";
/// Content type of encryption-key identifiers.
pub const CT_UDF_ENCRYPTION: &str = "application/udf-encryption";

/// The 64-byte digest of `data`.
pub fn hash(alg: DigestAlg, data: &[u8]) -> [u8; 64] {
    match alg {
        DigestAlg::Sha2_512 => Sha512::digest(data).into(),
        DigestAlg::Sha3_512 => Sha3_512::digest(data).into(),
    }
}

/// The content digest UDF of `data` labelled with `content_type`, at full
/// precision (present it with [`Udf::to_string_bits`]).
pub fn content_digest(alg: DigestAlg, data: &[u8], content_type: &str) -> Udf {
    digest_of_digest(alg, &hash(alg, data), content_type)
}

/// The UDF of a value that is a digest already: the inner hash is skipped
/// (`DigestToUDFBinary` in the reference).
pub fn digest_of_digest(alg: DigestAlg, cdv: &[u8], content_type: &str) -> Udf {
    let tcdv = match alg {
        DigestAlg::Sha2_512 => typed::<Sha512>(cdv, content_type),
        DigestAlg::Sha3_512 => typed::<Sha3_512>(cdv, content_type),
    };
    let base = match alg {
        DigestAlg::Sha2_512 => code::SHA2_512,
        DigestAlg::Sha3_512 => code::SHA3_512,
    };
    let mut bytes = Vec::with_capacity(65);
    bytes.push(base + compression(&tcdv));
    bytes.extend_from_slice(&tcdv);
    // Every digest type byte is known and 65 bytes is within the limit.
    Udf::from_binary(bytes).unwrap_or_else(|_| unreachable!("a digest UDF is always valid"))
}

fn typed<H: sha2::Digest>(cdv: &[u8], content_type: &str) -> [u8; 64] {
    let mut h = H::new();
    h.update(content_type.as_bytes());
    h.update(b":");
    h.update(cdv);
    let out = h.finalize();
    let mut tcdv = [0u8; 64];
    tcdv.copy_from_slice(out.as_slice());
    tcdv
}

/// The compression level of a typed digest: 1 for at least 20 trailing
/// zero bits, 2 for 30, 3 for 40, 4 for 50, else 0.
pub fn compression(tcdv: &[u8; 64]) -> u8 {
    let mut zeros = 0u32;
    for byte in tcdv.iter().rev() {
        zeros += byte.trailing_zeros();
        if *byte != 0 {
            break;
        }
    }
    match zeros {
        50.. => 4,
        40.. => 3,
        30.. => 2,
        20.. => 1,
        _ => 0,
    }
}

/// The digest algorithm an identifier derived from `udf` uses: SHA-3 if
/// `udf` is itself a SHA-3 digest, SHA-2 otherwise.
fn alg_following(udf: &Udf) -> DigestAlg {
    match udf.kind() {
        Kind::Digest { alg, .. } => alg,
        _ => DigestAlg::Sha2_512,
    }
}

/// The envelope identifier of a message: the digest of its MessageId's
/// data with content type `application/mmm/envelopeid`.
pub fn envelope_id(message_id: &Udf) -> Udf {
    content_digest(alg_following(message_id), message_id.data(), CT_ENVELOPE_ID)
}

/// The identifier of responses to a message:
/// content type `application/mmm/responseid`.
pub fn response_id(message_id: &Udf) -> Udf {
    content_digest(alg_following(message_id), message_id.data(), CT_RESPONSE_ID)
}

/// The identifier of an encryption-key UDF: the SHA-2 content digest of
/// its presentation, with content type `application/udf-encryption`.
///
/// The reference has two variants (the library hashes once, the CLI's
/// `key earl` uses the normal two-stage digest) and the published EARL
/// vector matches neither; we use the normal two-stage digest, so that
/// every content id in the Mesh is computed one way. Present it at twice
/// the key's precision, at most [`super::MAX_BITS`].
pub fn encryption_key_id(key: &Udf) -> Udf {
    content_digest(
        DigestAlg::Sha2_512,
        key.to_string().as_bytes(),
        CT_UDF_ENCRYPTION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_values_of_u1_and_u7() {
        let cdv = hash(DigestAlg::Sha2_512, b"UDF Data Value");
        assert_eq!(cdv[..8], [0x48, 0xDA, 0x47, 0xCC, 0xAB, 0xFE, 0xA4, 0x5C]);
        let udf = content_digest(DigestAlg::Sha2_512, b"UDF Data Value", "text/plain");
        assert_eq!(udf.as_bytes()[..4], [0x60, 0xC6, 0xAF, 0xB7]);
        let compressed = content_digest(
            DigestAlg::Sha2_512,
            b"UDF Compressed Document 4187123",
            "text/plain",
        );
        assert_eq!(compressed.code(), 0x61);
        assert_eq!(compressed.as_bytes()[62..], [0xA0, 0x00, 0x00]);
    }

    #[test]
    fn compression_counts_trailing_zero_bits() {
        let mut tcdv = [0xFFu8; 64];
        assert_eq!(compression(&tcdv), 0);
        tcdv[63] = 0;
        tcdv[62] = 0;
        tcdv[61] = 0xF0; // 16 + 4 = 20
        assert_eq!(compression(&tcdv), 1);
        tcdv[61] = 0xE0; // 21
        assert_eq!(compression(&tcdv), 1);
        tcdv[61] = 0;
        tcdv[60] = 0x40; // 24 + 6 = 30
        assert_eq!(compression(&tcdv), 2);
        tcdv[60] = 0;
        tcdv[59] = 0;
        tcdv[58] = 0x80; // 40 + 7 = 47
        assert_eq!(compression(&tcdv), 3);
        tcdv[58] = 0;
        tcdv[57] = 0x04; // 48 + 2 = 50
        assert_eq!(compression(&tcdv), 4);
    }
}
