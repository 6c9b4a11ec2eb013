//! Keyed UDFs: authenticators (type A) and the identifiers built on them
//! (mesh-udf-13 §3.2 and §5; research digest §1.4 and §1.7).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha512;
use sha3::Sha3_512;

use super::digest::hash;
use super::{DEFAULT_BITS, DigestAlg, Kind, Udf, UdfError, code};

/// The HKDF salt that turns an authenticator's key string into a key.
const KEYED_MASTER: &[u8] = b"KeyedUDFMaster";
/// The HKDF info of the same step.
const KEYED_EXPAND: &[u8] = b"KeyedUDFExpand";

/// The action a PIN is salted for when it connects a device.
pub const PIN_ACTION_DEVICE: &str = "Device";
/// The action a PIN is salted for when it exchanges contacts.
pub const PIN_ACTION_CONTACT: &str = "Contact";

/// The authenticator UDF (type 0) of `data` with `content_type`, under a
/// key given as a string (normally the presentation of a nonce UDF):
///
/// ```text
/// OKM = HKDF-SHA512(salt = "KeyedUDFMaster", ikm = UTF8(key), info = "KeyedUDFExpand", 64)
/// MAC = HMAC-SHA512(OKM, UTF8(content_type) || ":" || SHA512(data))
/// ```
pub fn authenticator(key: &str, data: &[u8], content_type: &str) -> Udf {
    let mut okm = zeroize::Zeroizing::new([0u8; 64]);
    Hkdf::<Sha512>::new(Some(KEYED_MASTER), key.as_bytes())
        .expand(KEYED_EXPAND, okm.as_mut())
        .unwrap_or_else(|_| unreachable!("64 bytes is a valid HKDF-SHA512 length"));
    let mut mac = hmac_sha512(okm.as_ref());
    mac.update(content_type.as_bytes());
    mac.update(b":");
    mac.update(&hash(DigestAlg::Sha2_512, data));
    udf_of_mac(&mac.finalize().into_bytes())
}

/// `SymmetricKeyMac` of the reference: the data bytes of `key` (types 0,
/// 32 and 33 with HMAC-SHA-2-512, type 1 with HMAC-SHA-3-512) key an HMAC
/// over `data`; the result is a type-0 UDF at the default 140 bits, cut as
/// parsing its presentation would cut it.
pub fn symmetric_key_mac(data: &[u8], key: &Udf) -> Result<Udf, UdfError> {
    let tag = match key.kind() {
        Kind::Authenticator(DigestAlg::Sha2_512) | Kind::EncryptionKey { .. } => {
            let mut mac = hmac_sha512(key.data());
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Kind::Authenticator(DigestAlg::Sha3_512) => {
            let mut mac = <Hmac<Sha3_512>>::new_from_slice(key.data())
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        _ => return Err(UdfError::WrongType(key.code())),
    };
    Ok(udf_of_mac(&tag).truncate(DEFAULT_BITS))
}

/// A PIN salted for an action (`Device` or `Contact`): the key that
/// actually authenticates a PIN-based exchange.
pub fn salted_pin(pin: &Udf, action: &str) -> Result<Udf, UdfError> {
    symmetric_key_mac(action.as_bytes(), pin)
}

/// The identifier of a PIN registered for `account` (also the MessageId of
/// the MessagePin that carries it).
pub fn pin_id(salted_pin: &Udf, account: &str) -> Result<Udf, UdfError> {
    symmetric_key_mac(account.as_bytes(), salted_pin)
}

/// The witness that proves knowledge of a PIN:
/// `HMAC-SHA512(key = data(SaltedPin), UTF8(account) || client_nonce || payload_digest)`,
/// all 64 bytes.
pub fn pin_witness(
    salted_pin: &Udf,
    account: &str,
    client_nonce: &[u8],
    payload_digest: &[u8],
) -> [u8; 64] {
    let mut mac = hmac_sha512(salted_pin.data());
    mac.update(account.as_bytes());
    mac.update(client_nonce);
    mac.update(payload_digest);
    mac.finalize().into_bytes().into()
}

fn hmac_sha512(key: &[u8]) -> Hmac<Sha512> {
    <Hmac<Sha512>>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

fn udf_of_mac(tag: &[u8]) -> Udf {
    Udf::new(code::AUTHENTICATOR_SHA2, tag)
        .unwrap_or_else(|_| unreachable!("a 64-byte tag is a valid authenticator"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_values_of_u11() {
        let key = "NDD7-6CMX-H2FW-ISAL-K4VB-DQ3E-PEDM";
        let (prk, _) = Hkdf::<Sha512>::extract(Some(KEYED_MASTER), key.as_bytes());
        assert_eq!(prk[..8], [0x77, 0xD3, 0x0A, 0x08, 0x39, 0xBD, 0x9D, 0xC0]);
        let udf = authenticator(key, b"Konrad is the traitor", "text/plain");
        assert_eq!(
            udf.data()[..8],
            [0x4C, 0xC3, 0x7F, 0xD3, 0xF9, 0x9E, 0x52, 0xCF]
        );
    }

    #[test]
    fn a_pin_id_is_keyed_by_the_salted_pin() {
        let pin = Udf::parse("AAJP-KPYV-NSB4-GIYL-AM").expect("a PIN");
        let salted = salted_pin(&pin, PIN_ACTION_DEVICE).expect("salted");
        assert_eq!(salted.bits(), DEFAULT_BITS);
        assert_eq!(salted.data().len(), 16);
        let id = pin_id(&salted, "alice@example.com").expect("an id");
        assert_ne!(id, pin_id(&salted, "bob@example.com").expect("an id"));
        let other = salted_pin(&pin, PIN_ACTION_CONTACT).expect("salted");
        assert_ne!(salted, other);
        let nonce = Udf::parse("NAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA").expect("nonce");
        assert!(
            symmetric_key_mac(b"x", &nonce).is_err(),
            "a nonce is no key"
        );
    }
}
