//! DARE envelopes (mesh-dare-12 §4–§6; research digest §3.1–§3.3).
//!
//! An envelope is the JSON array `[Header, Body, Trailer]`; the body is the
//! base64url of the payload, or of its ciphertext. Encryption follows the
//! reference code, which the dare-12 example confirms (the draft's prose
//! differs on the HKDF hash and labels):
//!
//! ```text
//! base seed (32 random bytes), Salt (16 random bytes, in the header)
//! per recipient: Z = ECDH(ephemeral, recipient)
//!                KEK = HKDF-SHA512(ikm = Z, info = "master", 32)
//!                wmk = AES-KW-256(KEK, base seed)      (RFC 3394)
//! key = HKDF-SHA256(ikm = base seed, salt = Salt, info = "encrypt", 32)
//! iv  = HKDF-SHA256(ikm = base seed, salt = Salt, info = "iv", 16)
//! body = AES-256-CBC-PKCS7(key, iv, payload)
//! PayloadDigest = SHA-512(body as carried)
//! ```
//!
//! A signature is EdDSA over the 64-byte PayloadDigest. When the envelope
//! is also encrypted, the signature carries a witness,
//! `HKDF-SHA256(ikm = base seed, salt = Salt, info = signature, 32)`, which
//! shows the signer knew the payload key.
//!
//! Trust is a type: an [`Envelope`] is what came off the wire; only
//! [`Envelope::open`] turns it into an [`Opened`] payload, after checking
//! the digest, every witness, and (when asked) a signature. Every
//! cryptographic failure is the one detail-free [`OpenError::Failed`].
//!
//! Not implemented: annotations (EDS), cloaked headers, Malt, policies and
//! key exchange reuse across the frames of a sequence.

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::keys::{KeyError, PrivateKey, PublicKey};
use crate::udf::seed::KeyAlg;

/// The largest envelope, as JSON, that [`Envelope::from_json`] reads.
pub const MAX_ENVELOPE: usize = 16 * 1024 * 1024;

/// `enc` of an encrypted envelope.
pub const ENC_A256CBC: &str = "A256CBC";
/// `dig` when the trailer carries a SHA-512 PayloadDigest.
pub const DIG_S512: &str = "S512";

/// The header. Its JSON is the wire format (and what a signature's
/// digest does *not* cover: only the body is signed, as in DARE).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The encryption algorithm, when the body is encrypted.
    #[serde(rename = "enc", default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
    /// The digest algorithm of the trailer's PayloadDigest.
    #[serde(rename = "dig", default, skip_serializing_if = "Option::is_none")]
    pub dig: Option<String>,
    /// The salt of the payload keys.
    #[serde(
        rename = "Salt",
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_opt"
    )]
    pub salt: Option<Vec<u8>>,
    /// One entry for each recipient.
    #[serde(rename = "recipients", default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Recipient>,
    /// The base64url JSON of a [`ContentMeta`].
    #[serde(
        rename = "ContentMetaData",
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_opt"
    )]
    pub content_meta_data: Option<Vec<u8>>,
    /// Where the envelope sits in a sequence.
    #[serde(
        rename = "SequenceInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sequence_info: Option<SequenceInfo>,
}

/// A recipient entry (`DareRecipient`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The recipient key's fingerprint.
    pub kid: String,
    /// The ephemeral public key.
    pub epk: Epk,
    /// The wrapped base seed.
    #[serde(with = "b64")]
    pub wmk: Vec<u8>,
}

/// `{"PublicKeyECDH": {"crv": ..., "Public": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Epk {
    /// The key.
    #[serde(rename = "PublicKeyECDH")]
    pub public_key_ecdh: PublicKeyEcdh,
}

/// An ECDH public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyEcdh {
    /// `X25519` or `X448`.
    pub crv: String,
    /// The RFC 7748 u-coordinate.
    #[serde(rename = "Public", with = "b64")]
    pub public: Vec<u8>,
}

/// The trailer: what is known only after the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trailer {
    /// Signatures over the PayloadDigest.
    #[serde(rename = "signatures", default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    /// SHA-512 of the body as carried.
    #[serde(
        rename = "PayloadDigest",
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_opt"
    )]
    pub payload_digest: Option<Vec<u8>>,
    /// The chain digest, in a Chain sequence.
    #[serde(
        rename = "ChainDigest",
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_opt"
    )]
    pub chain_digest: Option<Vec<u8>>,
    /// The Merkle tree digest, in a Merkle sequence.
    #[serde(
        rename = "TreeDigest",
        default,
        skip_serializing_if = "Option::is_none",
        with = "b64_opt"
    )]
    pub tree_digest: Option<Vec<u8>>,
}

/// A signature (`DareSignature`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `Ed25519` or `Ed448`.
    pub alg: String,
    /// The signer key's fingerprint.
    pub kid: String,
    /// The signature.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The witness, when the envelope is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub witness: Option<Vec<u8>>,
}

/// Where a frame sits in a DARE sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceInfo {
    /// `JSON` (frame 0 only).
    #[serde(
        rename = "DataEncoding",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_encoding: Option<String>,
    /// `List`, `Digest`, `Chain`, `Merkle` (frame 0 only).
    #[serde(
        rename = "ContainerType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_type: Option<String>,
    /// The frame's index.
    #[serde(rename = "Index")]
    pub index: u64,
}

/// A persistence event on a catalog entry (DARE `Event`). The set is
/// closed: a frame naming another event does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// The entry is made.
    New,
    /// The entry is replaced.
    Update,
    /// The entry is removed.
    Delete,
}

/// What the payload is (`ContentMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentMeta {
    /// The object's identifier, shared by all its versions in a log.
    #[serde(rename = "UniqueId", default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// The content type.
    #[serde(rename = "cty", default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The Mesh message type, e.g. `ProfileUser`.
    #[serde(
        rename = "MessageType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub message_type: Option<String>,
    /// The persistence event; any other name is a decode error.
    #[serde(rename = "Event", default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    /// When the content was made (RFC 3339), given by the caller.
    #[serde(rename = "Created", default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// A file name.
    #[serde(rename = "Filename", default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

impl ContentMeta {
    /// The metadata of a persistence event (`New`, `Update`, `Delete`) on
    /// the object `unique_id`, as catalog entries carry it.
    pub fn for_event(unique_id: &str, event: Event) -> ContentMeta {
        ContentMeta {
            unique_id: Some(unique_id.into()),
            event: Some(event),
            ..ContentMeta::default()
        }
    }
}

/// A DARE envelope as it travels: untrusted until opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The header.
    pub header: Header,
    /// The body: the payload, or its ciphertext. Not public: its bytes are
    /// unverified until [`Envelope::open`]; see [`Envelope::peek_unverified`].
    pub(crate) body: Vec<u8>,
    /// The trailer.
    pub trailer: Trailer,
}

/// An opened envelope: the payload, its metadata, and who was checked to
/// have signed it.
pub struct Opened {
    /// The payload (wiped when dropped).
    pub payload: Zeroizing<Vec<u8>>,
    /// The metadata, if the header carried any.
    pub meta: Option<ContentMeta>,
    /// The fingerprint of the signer whose signature was verified.
    pub verified_signer: Option<String>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("len", &self.payload.len())
            .field("meta", &self.meta)
            .field("verified_signer", &self.verified_signer)
            .finish()
    }
}

/// Why JSON is not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Over [`MAX_ENVELOPE`] bytes.
    #[error("envelope too large")]
    TooLarge,
    /// Valid JSON, but not `[header, "body", trailer]`.
    #[error("not a DARE envelope: expected [header, body, trailer]")]
    Shape,
    /// Not the JSON of an envelope; only the position is kept.
    #[error("malformed envelope (at line {line}, column {column})")]
    Malformed {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
}

/// Why an envelope could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// A recipient key that cannot receive (not X25519 or X448).
    #[error("recipients must be X25519 or X448 keys")]
    Recipient,
    /// A signer key that cannot sign.
    #[error("the signer must be an Ed25519 or Ed448 key")]
    Signer,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The envelope is encrypted and no key was given.
    #[error("the envelope is encrypted")]
    Encrypted,
    /// No recipient entry is for the key given.
    #[error("the envelope is not encrypted to this key")]
    NotForThisKey,
    /// A signature by the expected signer was asked for and is missing.
    #[error("the envelope is not signed by this key")]
    NotSigned,
    /// Decryption, digest, witness or signature check failed.
    #[error("failed")]
    Failed,
}

impl From<KeyError> for OpenError {
    fn from(_: KeyError) -> OpenError {
        OpenError::Failed
    }
}

/// What to seal a payload with.
#[derive(Debug, Default)]
pub struct SealOptions<'a> {
    /// Encrypt to these keys (none: a plaintext envelope).
    pub recipients: &'a [PublicKey],
    /// Sign with this key.
    pub signer: Option<&'a PrivateKey>,
    /// The metadata to carry in the header.
    pub meta: Option<&'a ContentMeta>,
    /// The frame's place in a sequence.
    pub sequence_info: Option<SequenceInfo>,
}

impl Envelope {
    /// The body's bytes as they came, before any check: for records whose
    /// every field the caller verifies itself (a service-written spool
    /// entry), and for display. Trust nothing read here.
    pub fn peek_unverified(&self) -> &[u8] {
        &self.body
    }

    /// The body's bytes, to alter: for hostile test doubles and negative
    /// test vectors only.
    pub fn tamper_body(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// An envelope that is neither signed nor encrypted: the payload and
    /// its metadata, for a sequence to add its digests to.
    pub fn unsealed(payload: Vec<u8>, meta: Option<&ContentMeta>) -> Envelope {
        Envelope {
            header: Header {
                content_meta_data: meta.map(|m| {
                    serde_json::to_vec(m).unwrap_or_else(|_| unreachable!("metadata serializes"))
                }),
                ..Header::default()
            },
            body: payload,
            trailer: Trailer::default(),
        }
    }

    /// Seal `payload`: encrypt it to every recipient, sign it, or both.
    pub fn seal(
        rng: &mut impl CryptoRngCore,
        payload: &[u8],
        options: &SealOptions<'_>,
    ) -> Result<Envelope, SealError> {
        let mut header = Header {
            dig: Some(DIG_S512.into()),
            sequence_info: options.sequence_info.clone(),
            content_meta_data: options.meta.map(|meta| {
                serde_json::to_vec(meta).unwrap_or_else(|_| unreachable!("metadata serializes"))
            }),
            ..Header::default()
        };
        let mut keys = None;
        let body = if options.recipients.is_empty() {
            payload.to_vec()
        } else {
            let mut base_seed = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(base_seed.as_mut());
            let mut salt = [0u8; 16];
            rng.fill_bytes(&mut salt);
            for recipient in options.recipients {
                header
                    .recipients
                    .push(wrap_for(rng, recipient, base_seed.as_ref())?);
            }
            header.enc = Some(ENC_A256CBC.into());
            header.salt = Some(salt.to_vec());
            let body = encrypt_payload(base_seed.as_ref(), &salt, payload);
            keys = Some((base_seed, salt));
            body
        };
        let digest = Sha512::digest(&body).to_vec();
        let mut trailer = Trailer::default();
        if let Some(signer) = options.signer {
            let signature = signer.sign(&digest).map_err(|_| SealError::Signer)?;
            let witness = keys
                .as_ref()
                .map(|(seed, salt)| witness(seed.as_ref(), salt, &signature));
            trailer.signatures.push(Signature {
                alg: alg_name(signer.alg()).ok_or(SealError::Signer)?.into(),
                kid: signer.public().fingerprint().to_string(),
                signature,
                witness,
            });
        }
        trailer.payload_digest = Some(digest);
        Ok(Envelope {
            header,
            body,
            trailer,
        })
    }

    /// Open the envelope: decrypt it with `key` if it is encrypted, check
    /// the PayloadDigest and every witness, and, if `signer` is given,
    /// require a valid signature by that key.
    pub fn open(
        &self,
        key: Option<&PrivateKey>,
        signer: Option<&PublicKey>,
    ) -> Result<Opened, OpenError> {
        let digest = self.checked_digest()?;
        let verified_signer = match signer {
            Some(signer) => Some(self.verify_signature(signer, &digest)?),
            None => None,
        };
        let payload = if self.header.enc.is_some() {
            let key = key.ok_or(OpenError::Encrypted)?;
            let (seed, salt) = self.unwrap_seed(key)?;
            for signature in &self.trailer.signatures {
                let expected = witness(seed.as_ref(), salt, &signature.signature);
                let given = signature.witness.as_deref().ok_or(OpenError::Failed)?;
                if !bool::from(given.ct_eq(&expected)) {
                    return Err(OpenError::Failed);
                }
            }
            decrypt_payload(seed.as_ref(), salt, &self.body)?
        } else {
            Zeroizing::new(self.body.clone())
        };
        let meta = match &self.header.content_meta_data {
            Some(json) => Some(serde_json::from_slice(json).map_err(|_| OpenError::Failed)?),
            None => None,
        };
        Ok(Opened {
            payload,
            meta,
            verified_signer,
        })
    }

    /// Check the PayloadDigest and a signature by `signer`, without
    /// opening the payload (an encrypted envelope needs no key for this:
    /// the signature covers the body as carried). Returns the signer's
    /// fingerprint.
    pub fn verify(&self, signer: &PublicKey) -> Result<String, OpenError> {
        let digest = self.checked_digest()?;
        self.verify_signature(signer, &digest)
    }

    /// The body's digest, checked against the trailer's if it has one.
    fn checked_digest(&self) -> Result<Vec<u8>, OpenError> {
        let digest = Sha512::digest(&self.body).to_vec();
        if let Some(claimed) = &self.trailer.payload_digest
            && !bool::from(claimed.as_slice().ct_eq(&digest))
        {
            return Err(OpenError::Failed);
        }
        Ok(digest)
    }

    /// Check that `signer` signed the body's digest; return its
    /// fingerprint.
    fn verify_signature(&self, signer: &PublicKey, digest: &[u8]) -> Result<String, OpenError> {
        let fingerprint = signer.fingerprint().to_string();
        let signature = self
            .trailer
            .signatures
            .iter()
            .find(|s| s.kid == fingerprint)
            .ok_or(OpenError::NotSigned)?;
        signer.verify(digest, &signature.signature)?;
        Ok(fingerprint)
    }

    /// Find our recipient entry and unwrap the base seed.
    fn unwrap_seed(&self, key: &PrivateKey) -> Result<(Zeroizing<Vec<u8>>, &[u8]), OpenError> {
        let kid = key.public().fingerprint().to_string();
        let entry = self
            .header
            .recipients
            .iter()
            .find(|r| r.kid == kid)
            .ok_or(OpenError::NotForThisKey)?;
        if Some(entry.epk.public_key_ecdh.crv.as_str()) != alg_name(key.alg()) {
            return Err(OpenError::Failed);
        }
        let shared = key.agree_rfc(&entry.epk.public_key_ecdh.public)?;
        let kek = kek(&shared);
        let seed = aes_kw::KekAes256::from(*kek)
            .unwrap_vec(&entry.wmk)
            .map_err(|_| OpenError::Failed)?;
        let salt = self.header.salt.as_deref().ok_or(OpenError::Failed)?;
        Ok((Zeroizing::new(seed), salt))
    }

    /// The envelope as JSON: `[header, "body", trailer]`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!([
            self.header,
            URL_SAFE_NO_PAD.encode(&self.body),
            self.trailer
        ]);
        value.to_string()
    }

    /// Read an envelope from its JSON, plain or tagged
    /// (`{"DareEnvelope": [...]}`). Nothing is trusted yet.
    pub fn from_json(json: &[u8]) -> Result<Envelope, DecodeError> {
        if json.len() > MAX_ENVELOPE {
            return Err(DecodeError::TooLarge);
        }
        let malformed = |err: serde_json::Error| DecodeError::Malformed {
            line: err.line(),
            column: err.column(),
        };
        let shape = DecodeError::Shape;
        let mut value: serde_json::Value = serde_json::from_slice(json).map_err(malformed)?;
        if let Some(object) = value.as_object_mut() {
            value = match (object.len(), object.remove("DareEnvelope")) {
                (1, Some(inner)) => inner,
                _ => return Err(shape),
            };
        }
        let serde_json::Value::Array(parts) = value else {
            return Err(shape);
        };
        let mut parts = parts.into_iter();
        let (Some(header), Some(serde_json::Value::String(body)), trailer, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape);
        };
        let header: Header = serde_json::from_value(header).map_err(malformed)?;
        let trailer: Option<Trailer> = trailer
            .map(serde_json::from_value)
            .transpose()
            .map_err(malformed)?;
        let body = URL_SAFE_NO_PAD.decode(body.as_bytes()).map_err(|_| shape)?;
        Ok(Envelope {
            header,
            body,
            trailer: trailer.unwrap_or_default(),
        })
    }
}

/// The curve name of an ECDH or signature algorithm.
fn alg_name(alg: KeyAlg) -> Option<&'static str> {
    match alg {
        KeyAlg::X25519 => Some("X25519"),
        KeyAlg::X448 => Some("X448"),
        KeyAlg::Ed25519 => Some("Ed25519"),
        KeyAlg::Ed448 => Some("Ed448"),
        _ => None,
    }
}

/// Wrap the base seed for one recipient.
fn wrap_for(
    rng: &mut impl CryptoRngCore,
    recipient: &PublicKey,
    base_seed: &[u8],
) -> Result<Recipient, SealError> {
    let crv = alg_name(recipient.alg())
        .filter(|_| matches!(recipient.alg(), KeyAlg::X25519 | KeyAlg::X448))
        .ok_or(SealError::Recipient)?;
    let ephemeral = PrivateKey::generate(rng, recipient.alg()).map_err(|_| SealError::Recipient)?;
    let shared = ephemeral
        .agree(recipient)
        .map_err(|_| SealError::Recipient)?;
    let wmk = aes_kw::KekAes256::from(*kek(&shared))
        .wrap_vec(base_seed)
        .map_err(|_| SealError::Recipient)?;
    Ok(Recipient {
        kid: recipient.fingerprint().to_string(),
        epk: Epk {
            public_key_ecdh: PublicKeyEcdh {
                crv: crv.into(),
                public: ephemeral.public().to_rfc_bytes(),
            },
        },
        wmk,
    })
}

/// `KEK = HKDF-SHA512(ikm = agreement, no salt, info = "master", 32)`.
pub fn kek(agreement: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha512>::new(None, agreement)
        .expand(b"master", out.as_mut())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid length"));
    out
}

/// A payload key: `HKDF-SHA256(ikm = base seed, salt = Salt, info)`.
fn payload_key<const N: usize>(base_seed: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(salt), base_seed)
        .expand(info, out.as_mut())
        .unwrap_or_else(|_| unreachable!("N is at most 32"));
    out
}

/// The payload encryption key and IV of a base seed and salt.
pub fn payload_keys(base_seed: &[u8], salt: &[u8]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 16]>) {
    (
        payload_key::<32>(base_seed, salt, b"encrypt"),
        payload_key::<16>(base_seed, salt, b"iv"),
    )
}

/// AES-256-CBC with PKCS#7 padding under the keys of `base_seed`, `salt`.
pub fn encrypt_payload(base_seed: &[u8], salt: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let (key, iv) = payload_keys(base_seed, salt);
    cbc::Encryptor::<Aes256>::new(key.as_ref().into(), iv.as_ref().into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext)
}

fn decrypt_payload(
    base_seed: &[u8],
    salt: &[u8],
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let (key, iv) = payload_keys(base_seed, salt);
    cbc::Decryptor::<Aes256>::new(key.as_ref().into(), iv.as_ref().into())
        .decrypt_padded_vec_mut::<Pkcs7>(body)
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Failed)
}

fn witness(base_seed: &[u8], salt: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), base_seed)
        .expand(signature, &mut out)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid length"));
    out
}

/// Serde for base64url without padding.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("invalid base64url"))
    }
}

/// Serde for an optional base64url field (also the entry head's).
pub(crate) mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(bytes)| bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = b"This is a test long enough to require multiple blocks";

    fn key(alg: KeyAlg, byte: u8) -> PrivateKey {
        let len = if matches!(alg, KeyAlg::Ed448 | KeyAlg::X448) {
            56
        } else {
            32
        };
        PrivateKey::from_okm(alg, &vec![byte; len]).expect("a key")
    }

    #[test]
    fn sign_encrypt_open_for_every_curve() {
        let mut rng = rand_core::OsRng;
        for (enc, sig) in [
            (KeyAlg::X25519, KeyAlg::Ed25519),
            (KeyAlg::X448, KeyAlg::Ed448),
        ] {
            let (alice, bob, carol) = (key(enc, 1), key(enc, 2), key(enc, 3));
            let signer = key(sig, 4);
            let meta = ContentMeta {
                content_type: Some("text/plain".into()),
                ..ContentMeta::default()
            };
            let options = SealOptions {
                recipients: &[alice.public(), bob.public()],
                signer: Some(&signer),
                meta: Some(&meta),
                sequence_info: None,
            };
            let sealed = Envelope::seal(&mut rng, PAYLOAD, &options).expect("seals");
            assert_ne!(sealed.body, PAYLOAD, "the body is ciphertext");
            let wire = Envelope::from_json(sealed.to_json().as_bytes()).expect("decodes");
            assert_eq!(wire, sealed);
            for reader in [&alice, &bob] {
                let opened = wire
                    .open(Some(reader), Some(&signer.public()))
                    .expect("opens");
                assert_eq!(opened.payload.as_slice(), PAYLOAD);
                assert_eq!(opened.meta.as_ref(), Some(&meta));
                assert!(opened.verified_signer.is_some());
            }
            assert_eq!(
                wire.open(Some(&carol), None).err(),
                Some(OpenError::NotForThisKey)
            );
            assert_eq!(wire.open(None, None).err(), Some(OpenError::Encrypted));
            let stranger = key(sig, 5).public();
            assert_eq!(
                wire.open(Some(&alice), Some(&stranger)).err(),
                Some(OpenError::NotSigned)
            );
        }
    }

    #[test]
    fn tampering_fails_without_detail() {
        let mut rng = rand_core::OsRng;
        let (alice, signer) = (key(KeyAlg::X25519, 1), key(KeyAlg::Ed25519, 4));
        let options = SealOptions {
            recipients: &[alice.public()],
            signer: Some(&signer),
            ..SealOptions::default()
        };
        let sealed = Envelope::seal(&mut rng, PAYLOAD, &options).expect("seals");
        let open = |e: &Envelope| e.open(Some(&alice), Some(&signer.public())).err();

        let mut body = sealed.clone();
        body.body[0] ^= 1;
        assert_eq!(open(&body), Some(OpenError::Failed));
        let mut both = body.clone();
        both.trailer.payload_digest = Some(Sha512::digest(&both.body).to_vec());
        assert_eq!(
            open(&both),
            Some(OpenError::Failed),
            "the signature covers the digest"
        );
        let mut sig = sealed.clone();
        sig.trailer.signatures[0].signature[3] ^= 1;
        assert_eq!(open(&sig), Some(OpenError::Failed));
        let mut wit = sealed.clone();
        wit.trailer.signatures[0].witness = None;
        assert_eq!(open(&wit), Some(OpenError::Failed));
        let mut wmk = sealed.clone();
        wmk.header.recipients[0].wmk[5] ^= 1;
        assert_eq!(open(&wmk), Some(OpenError::Failed));
        let mut salt = sealed.clone();
        salt.header.salt = Some(vec![0; 16]);
        assert_eq!(open(&salt), Some(OpenError::Failed));
        assert!(open(&sealed).is_none());
    }

    #[test]
    fn plaintext_and_signed_only() {
        let mut rng = rand_core::OsRng;
        let signer = key(KeyAlg::Ed25519, 4);
        let plain = Envelope::seal(&mut rng, b"hello", &SealOptions::default()).expect("seals");
        assert_eq!(plain.body, b"hello");
        assert_eq!(
            plain.open(None, None).expect("opens").payload.as_slice(),
            b"hello"
        );
        let options = SealOptions {
            signer: Some(&signer),
            ..SealOptions::default()
        };
        let signed = Envelope::seal(&mut rng, b"hello", &options).expect("seals");
        signed.open(None, Some(&signer.public())).expect("verifies");
        let mut forged = signed.clone();
        forged.body = b"hellO".to_vec();
        forged.trailer.payload_digest = Some(Sha512::digest(b"hellO").to_vec());
        assert_eq!(
            forged.open(None, Some(&signer.public())).err(),
            Some(OpenError::Failed)
        );
    }

    #[test]
    fn bad_json_is_refused_by_position_only() {
        for bad in [
            &b""[..],
            b"[",
            b"[{}, \"\"",
            b"[{}, \"!!\", {}]",
            b"[{\"enc\": 5}, \"\", {}]",
            b"[{\"unknown\": 1}, \"\", {}]",
            b"[{}, \"\", {}] trailing",
            b"{\"Envelope\": [{}, \"\", {}]}",
        ] {
            assert!(
                Envelope::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let minimal = Envelope::from_json(b"[{}, \"\", {}]").expect("the minimal envelope");
        assert_eq!(minimal, Envelope::default());
        let tagged = Envelope::from_json(b"{\"DareEnvelope\": [{}, \"\"]}").expect("tagged");
        assert_eq!(tagged, Envelope::default());
    }

    proptest::proptest! {
        #[test]
        fn json_round_trips(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let signer = key(KeyAlg::Ed25519, 4);
            let options = SealOptions { signer: Some(&signer), ..SealOptions::default() };
            let sealed = Envelope::seal(&mut rand_core::OsRng, &payload, &options).expect("seals");
            let json = sealed.to_json();
            let decoded = Envelope::from_json(json.as_bytes()).expect("decodes");
            proptest::prop_assert_eq!(decoded.to_json(), json);
            proptest::prop_assert_eq!(decoded, sealed);
        }
    }
}
