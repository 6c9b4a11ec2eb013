//! Catalog entries, format 2: what a frame means is signed with it.
//!
//! A DARE signature covers the PayloadDigest, the SHA-512 of the body as
//! carried, and nothing else: the header's `ContentMetaData` (which object
//! the frame is about, whether it creates, replaces or deletes it, and what
//! kind of record it is) and the frame's place in its sequence are outside
//! it. A reader that built its catalog from the header would believe
//! whatever the service writes there. So a format-2 entry carries what a
//! reader acts on inside the payload, where the signature (and, for an
//! encrypted entry, the witness) covers it:
//!
//! ```text
//! payload = {"Head":   {"Format": 2, "Account": "alice@example.com",
//!                       "Store": "MMM_Application", "UniqueId": "ssh/work",
//!                       "Event": "Update", "MessageType": "...",
//!                       "Previous": base64url(PayloadDigest of the
//!                                             object's previous frame)},
//!            "Record": { ...the record; absent for a Delete... }}
//! ```
//!
//! The header's `ContentMetaData` still names the object, event and type
//! for DARE readers; a format-2 reader requires it to say exactly what the
//! signed head says, and otherwise refuses the frame as relabelled.
//!
//! `Previous` chains every object's versions: a `New` of an object never
//! seen has none, and every later frame about it (updates, the delete, a
//! `New` after a delete) names the digest of the one before. Frames are
//! written through the service's optimistic transactions, so a writer
//! always chains onto the latest frame; a frame that chains onto anything
//! else is an old frame appended again (a replayed version). With every
//! field signed and every version chained, nobody but a key of the account
//! can put a frame into a catalog that a reader will accept: the service
//! can only withhold (which the Merkle apexes and the Status check reveal).
//!
//! [`open`] checks one frame (signature, format, header, place);
//! [`Ledger`] folds a store's frames in order, checks each one's chain and
//! applies the account's authority rules, which the reader supplies (who
//! may create, change or delete what: they depend on records this crate
//! does not know).

use std::collections::{BTreeMap, HashMap};

use rand_core::CryptoRngCore;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::envelope::{ContentMeta, Envelope, Event, SealOptions};
use crate::keys::{PrivateKey, PublicKey};
use mesh_ipc::names::Store;

/// The entry format this code writes and reads.
pub const FORMAT: u32 = 2;

/// The content type of a format-2 entry.
pub const CONTENT_TYPE: &str = "application/mmm/entry";

/// The longest UniqueId a reader accepts.
pub const MAX_ID: usize = 256;

/// What a frame means: signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The entry format, [`FORMAT`].
    #[serde(rename = "Format")]
    pub format: u32,
    /// The account's address.
    #[serde(rename = "Account")]
    pub account: String,
    /// The store the frame belongs to.
    #[serde(rename = "Store")]
    pub store: Store,
    /// The object the frame is about.
    #[serde(rename = "UniqueId")]
    pub unique_id: String,
    /// What the frame does to it.
    #[serde(rename = "Event")]
    pub event: Event,
    /// The kind of record.
    #[serde(rename = "MessageType")]
    pub message_type: String,
    /// The PayloadDigest of the object's previous frame, if it had one.
    #[serde(
        rename = "Previous",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::envelope::b64_opt"
    )]
    pub previous: Option<Vec<u8>>,
}

impl Head {
    /// The metadata the header carries for DARE readers.
    fn meta(&self) -> ContentMeta {
        ContentMeta {
            content_type: Some(CONTENT_TYPE.into()),
            message_type: Some(self.message_type.clone()),
            ..ContentMeta::for_event(&self.unique_id, self.event)
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload<T> {
    #[serde(rename = "Head")]
    head: Head,
    #[serde(rename = "Record", skip_serializing_if = "Option::is_none")]
    record: Option<T>,
}

/// Why a frame is not a valid entry. Every one of these is something only
/// the service (or whoever else writes the log) can cause: an account's
/// devices write valid entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Not signed by any key the account vouches for, or its signature,
    /// witness or encryption does not check.
    #[error("it is not signed by any device of the account")]
    NotSigned,
    /// An entry of another format (1: the unsigned-metadata format of
    /// meshd before entry format 2).
    #[error("it is not an entry of format {FORMAT}")]
    Format,
    /// The unsigned header names another object, event or type than the
    /// signed head.
    #[error("its header was relabelled (it says {0:?}, the signed entry does not)")]
    Relabelled(String),
    /// Signed for another account or store.
    #[error("it was signed for another account or store")]
    Misplaced,
    /// Its version chain does not continue the object's: an old version
    /// appended again, or a frame out of its place.
    #[error("entry {0:?} is an old version appended again (its chain does not continue)")]
    Replayed(String),
}

/// Why an entry could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The record does not encode as JSON.
    #[error("the record does not encode")]
    Encode,
    /// A recipient or signer key that cannot serve.
    #[error(transparent)]
    Key(#[from] crate::envelope::SealError),
}

/// Seal a record as a format-2 entry: the head and the record, signed by
/// `signer`, encrypted to `recipients` (none: in the clear). A `Delete`
/// carries no record.
pub fn seal<T: Serialize>(
    rng: &mut impl CryptoRngCore,
    head: &Head,
    record: Option<&T>,
    signer: &PrivateKey,
    recipients: &[PublicKey],
) -> Result<Envelope, SealError> {
    let payload = Payload {
        head: head.clone(),
        record,
    };
    let json = Zeroizing::new(serde_json::to_vec(&payload).map_err(|_| SealError::Encode)?);
    let meta = head.meta();
    let options = SealOptions {
        recipients,
        signer: Some(signer),
        meta: Some(&meta),
        sequence_info: None,
    };
    Ok(Envelope::seal(rng, &json, &options)?)
}

/// A frame that opened as a valid entry.
pub struct Verified {
    /// What it means, as signed.
    pub head: Head,
    /// Which of the signers given to [`open`] signed it.
    pub signer: usize,
    /// Its PayloadDigest: the next version's `Previous`.
    pub digest: Vec<u8>,
    payload: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("head", &self.head)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Verified {
    /// The record, read as `T` (`None` for a Delete).
    pub fn record<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice::<Payload<T>>(&self.payload)
            .ok()
            .and_then(|p| p.record)
    }
}

/// Open a frame of `store` in `account` as a format-2 entry: decrypt it
/// with `key` if it is encrypted, require a signature by one of `signers`,
/// and check that the header says what the signed head says and that the
/// head names this account and store.
pub fn open(
    frame: &Envelope,
    account: &str,
    store: Store,
    key: Option<&PrivateKey>,
    signers: &[PublicKey],
) -> Result<Verified, EntryError> {
    let (signer, opened) = signers
        .iter()
        .enumerate()
        .find_map(|(i, s)| frame.open(key, Some(s)).ok().map(|o| (i, o)))
        .ok_or(EntryError::NotSigned)?;
    let head = serde_json::from_slice::<Payload<IgnoredAny>>(&opened.payload)
        .map_err(|_| EntryError::Format)?
        .head;
    if head.format != FORMAT || head.unique_id.is_empty() || head.unique_id.len() > MAX_ID {
        return Err(EntryError::Format);
    }
    if opened.meta.as_ref() != Some(&head.meta()) {
        let said = opened
            .meta
            .and_then(|m| m.unique_id)
            .unwrap_or_default()
            .chars()
            .take(MAX_ID)
            .collect();
        return Err(EntryError::Relabelled(said));
    }
    if head.account != account || head.store != store {
        return Err(EntryError::Misplaced);
    }
    let digest = frame
        .trailer
        .payload_digest
        .clone()
        .ok_or(EntryError::NotSigned)?;
    Ok(Verified {
        head,
        signer,
        digest,
        payload: opened.payload,
    })
}

/// The version of an object a reader believes, and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live<S> {
    /// The frame's index in the store.
    pub index: u64,
    /// Its message type.
    pub message_type: String,
    /// Which signer wrote it (as the reader numbers them).
    pub author: usize,
    /// What the reader's rules keep about it (for example its policy).
    pub summary: S,
}

/// A frame that is in the log but was not applied: a device of the account
/// wrote something the account's rules do not allow it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The frame's index.
    pub index: u64,
    /// The object.
    pub unique_id: String,
    /// Why.
    pub why: String,
}

/// One store's objects as its frames, checked in order, make them.
#[derive(Debug, Clone)]
pub struct Ledger<S> {
    /// The index of the next frame to fold (frame 0 is the sequence's
    /// own: the first entry is frame 1).
    next: u64,
    /// Every object ever seen: the digest of its latest frame.
    heads: HashMap<String, Vec<u8>>,
    /// The objects as the rules allow them.
    live: BTreeMap<String, Live<S>>,
    denied: Vec<Denied>,
    /// Deletes applied.
    deletes: u64,
}

impl<S> Default for Ledger<S> {
    fn default() -> Ledger<S> {
        Ledger {
            next: 1,
            heads: HashMap::new(),
            live: BTreeMap::new(),
            denied: Vec::new(),
            deletes: 0,
        }
    }
}

impl<S: Clone> Ledger<S> {
    /// The index of the next frame to fold: one more than the frames
    /// folded so far.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The live objects.
    pub fn live(&self) -> &BTreeMap<String, Live<S>> {
        &self.live
    }

    /// How many deletes applied.
    pub fn deletes(&self) -> u64 {
        self.deletes
    }

    /// The frames a rule refused.
    pub fn denied(&self) -> &[Denied] {
        &self.denied
    }

    /// The `Previous` a new frame about `unique_id` must carry.
    pub fn previous(&self, unique_id: &str) -> Option<Vec<u8>> {
        self.heads.get(unique_id).cloned()
    }

    /// Fold frame `index` (the next one). Its chain must continue the
    /// object's (else [`EntryError::Replayed`], and nothing changes); then
    /// `rule` decides, from the frame and the object's live version,
    /// whether it applies (`Ok(summary)`) or is denied (`Err(why)`): a
    /// denied frame stays in the chain but changes nothing else.
    pub fn fold(
        &mut self,
        index: u64,
        verified: &Verified,
        rule: impl FnOnce(&Verified, Option<&Live<S>>) -> Result<S, String>,
    ) -> Result<(), EntryError> {
        let head = &verified.head;
        if index != self.next
            || self.heads.get(&head.unique_id).map(Vec::as_slice) != head.previous.as_deref()
        {
            return Err(EntryError::Replayed(head.unique_id.clone()));
        }
        self.next += 1;
        self.heads
            .insert(head.unique_id.clone(), verified.digest.clone());
        let current = self.live.get(&head.unique_id);
        let outcome = match (head.event, current) {
            (Event::New, Some(_)) => Err("it creates an object that exists".to_owned()),
            (Event::Update | Event::Delete, None) => {
                Err("it changes an object that does not exist".to_owned())
            }
            _ => rule(verified, current),
        };
        match outcome {
            Ok(_) if head.event == Event::Delete => {
                self.live.remove(&head.unique_id);
                self.deletes += 1;
            }
            Ok(summary) => {
                self.live.insert(
                    head.unique_id.clone(),
                    Live {
                        index,
                        message_type: head.message_type.clone(),
                        author: verified.signer,
                        summary,
                    },
                );
            }
            Err(why) => self.denied.push(Denied {
                index,
                unique_id: head.unique_id.clone(),
                why,
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::udf::seed::KeyAlg;
    use rand_core::OsRng;

    fn key(alg: KeyAlg) -> PrivateKey {
        PrivateKey::generate(&mut OsRng, alg).expect("key")
    }

    fn head(id: &str, event: Event, previous: Option<Vec<u8>>) -> Head {
        Head {
            format: FORMAT,
            account: "alice@example.com".into(),
            store: Store::Application,
            unique_id: id.into(),
            event,
            message_type: "T".into(),
            previous,
        }
    }

    fn sealed(signer: &PrivateKey, store_key: &PrivateKey, head: &Head) -> Envelope {
        seal(
            &mut OsRng,
            head,
            Some(&serde_json::json!({"v": 1})),
            signer,
            &[store_key.public()],
        )
        .expect("seal")
    }

    fn check(
        frame: &Envelope,
        signer: &PrivateKey,
        store_key: &PrivateKey,
    ) -> Result<Verified, EntryError> {
        open(
            frame,
            "alice@example.com",
            Store::Application,
            Some(store_key),
            &[signer.public()],
        )
    }

    /// Seal `head` and open it: a valid entry.
    fn entry_of(signer: &PrivateKey, store_key: &PrivateKey, head: &Head) -> Verified {
        check(&sealed(signer, store_key, head), signer, store_key).expect("an entry")
    }

    #[test]
    fn a_relabelled_header_is_refused() {
        let (signer, store_key) = (key(KeyAlg::Ed25519), key(KeyAlg::X25519));
        let mut frame = sealed(&signer, &store_key, &head("git:github", Event::New, None));
        assert!(check(&frame, &signer, &store_key).is_ok());
        let meta = ContentMeta {
            content_type: Some(CONTENT_TYPE.into()),
            message_type: Some("T".into()),
            ..ContentMeta::for_event("git:evil", Event::New)
        };
        frame.header.content_meta_data = Some(serde_json::to_vec(&meta).expect("json"));
        assert_eq!(
            check(&frame, &signer, &store_key).err(),
            Some(EntryError::Relabelled("git:evil".into()))
        );
    }

    #[test]
    fn unsigned_or_foreign_frames_are_refused() {
        let (signer, store_key, stranger) = (
            key(KeyAlg::Ed25519),
            key(KeyAlg::X25519),
            key(KeyAlg::Ed25519),
        );
        let forged = sealed(&stranger, &store_key, &head("x", Event::Delete, None));
        assert_eq!(
            check(&forged, &signer, &store_key).err(),
            Some(EntryError::NotSigned)
        );
        let bare = Envelope::unsealed(
            b"{}".to_vec(),
            Some(&ContentMeta::for_event("x", Event::Delete)),
        );
        assert_eq!(
            check(&bare, &signer, &store_key).err(),
            Some(EntryError::NotSigned)
        );
        let mut elsewhere = head("x", Event::New, None);
        elsewhere.store = Store::Credential;
        let moved = sealed(&signer, &store_key, &elsewhere);
        assert_eq!(
            check(&moved, &signer, &store_key).err(),
            Some(EntryError::Misplaced)
        );
    }

    #[test]
    fn the_ledger_chains_versions_and_refuses_replays() {
        let (signer, store_key) = (key(KeyAlg::Ed25519), key(KeyAlg::X25519));
        let allow = |_: &Verified, _: Option<&Live<()>>| Ok(());
        let mut ledger = Ledger::<()>::default();
        let v1 = entry_of(&signer, &store_key, &head("a", Event::New, None));
        ledger.fold(1, &v1, allow).expect("new");
        let v2 = entry_of(
            &signer,
            &store_key,
            &head("a", Event::Update, ledger.previous("a")),
        );
        ledger.fold(2, &v2, allow).expect("update");
        // v1 again, or v2 again: neither continues the chain.
        assert_eq!(
            ledger.fold(3, &v1, allow),
            Err(EntryError::Replayed("a".into()))
        );
        assert_eq!(
            ledger.fold(3, &v2, allow),
            Err(EntryError::Replayed("a".into()))
        );
        let gone = entry_of(
            &signer,
            &store_key,
            &head("a", Event::Delete, ledger.previous("a")),
        );
        ledger.fold(3, &gone, allow).expect("delete");
        assert!(ledger.live().is_empty());
        // The first New cannot bring it back after its delete.
        assert_eq!(
            ledger.fold(4, &v1, allow),
            Err(EntryError::Replayed("a".into()))
        );
        assert_eq!(ledger.next(), 4);
    }

    #[test]
    fn a_denied_frame_keeps_its_place_and_changes_nothing() {
        let (signer, store_key) = (key(KeyAlg::Ed25519), key(KeyAlg::X25519));
        let mut ledger = Ledger::<u8>::default();
        let v1 = entry_of(&signer, &store_key, &head("a", Event::New, None));
        ledger.fold(1, &v1, |_, _| Ok(7)).expect("new");
        let v2 = entry_of(
            &signer,
            &store_key,
            &head("a", Event::Update, ledger.previous("a")),
        );
        ledger
            .fold(2, &v2, |_, _| Err("not yours".into()))
            .expect("denied, not refused");
        assert_eq!(ledger.live()["a"].index, 1);
        assert_eq!(ledger.live()["a"].summary, 7);
        assert_eq!(ledger.denied().len(), 1);
        assert_eq!(ledger.previous("a"), Some(v2.digest.clone()));
    }
}
