//! The attacker's side: a service that lies, one mode per attack, for the
//! clients' tests (`mesh-service --hostile MODE`). Each mode does what a
//! real hostile service (or anyone on a plain-HTTP path) could do with what
//! it holds: the account's frames, as ciphertext and signatures, and its
//! own keys; never a key of the account. None of them changes what is
//! stored: a restart without `--hostile` serves the honest logs again.

use base64::Engine as _;
use mesh_protocol::account::{AccountKeys, Store};
use mesh_protocol::application::{ANSWER_MESSAGE_TYPE, ANSWER_PREFIX, ApprovalAnswer};
use mesh_protocol::entry::{self, Head};
use mesh_protocol::envelope::{ContentMeta, Envelope, Event};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::sequence::Sequence;
use mesh_protocol::udf::seed::KeyAlg;
use rand_core::OsRng;

/// How a deliberately hostile service misbehaves (for testing clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hostile {
    /// Report and serve each store one frame shorter than it is.
    Rollback,
    /// Serve a history whose first data frame was rewritten.
    Fork,
    /// Serve the last two frames of a download swapped.
    Reorder,
    /// Flip a byte in the payload of every frame served.
    Alter,
    /// Append a copy of a catalog's last frame whose header names another
    /// entry (`git:https://github.com` becomes `git:https://evil.example`):
    /// the ciphertext and signatures are the genuine ones.
    Relabel,
    /// Append the catalog's first frame again: an old version, signed by
    /// its author, brought back.
    Replay,
    /// Append a Delete of the catalog's last entry that nobody signed.
    UnsignedDelete,
    /// Append a Delete of the catalog's last entry in the entry format,
    /// signed by a key of the service's own.
    ForgedDelete,
    /// Append a new entry of the service's own, signed by its own key.
    Inject,
    /// Leave the Application catalog out of every Status answer.
    Withhold,
    /// Name the Application catalog `../../.bashrc.d/mesh` in Status
    /// answers, so that a client that made paths of store names would
    /// write there.
    PathStore,
    /// Pad every answer to 64 MiB of JSON whitespace.
    Oversized,
    /// Announce a thousand million more frames than each store has.
    Endless,
    /// When a device's approval request is the last entry of the
    /// Application catalog, append a yes to it: an answer naming the
    /// request and its digest, as the account writes them, signed by a key
    /// of the service's own.
    ForgeApproval,
    /// When a device's approval request is the last entry of the
    /// Application catalog, append the latest genuine answer to an earlier
    /// request (signed by the device that gave it), its header naming the
    /// new request's answer.
    ReplayApproval,
    /// Answer a device asking to join an account with the profile of an
    /// account of the service's own, made for the same address (and the
    /// witness code for it), so that the device would join that one.
    Substitute,
}

/// The name a relabelled frame gets.
pub const RELABELLED: &str = "git:https://evil.example";

/// The store name [`Hostile::PathStore`] puts in Status answers.
pub const PATH_STORE: &str = "../../.bashrc.d/mesh";

/// How much [`Hostile::Oversized`] pads an answer to.
pub const OVERSIZED: usize = 64 * 1024 * 1024;

/// How many frames [`Hostile::Endless`] announces beyond the real ones.
pub const ENDLESS: u64 = 1_000_000_000;

impl Hostile {
    /// The log the service shows for `store` of `account`: the stored one,
    /// or, for the modes that add a frame to the plain catalogs, the stored
    /// one with that frame appended (and its Merkle tree recomputed, so it
    /// extends what the client has).
    pub fn served(self, account: &str, store: Store, stored: &Sequence) -> Option<Sequence> {
        if !matches!(store, Store::Application | Store::Credential) || stored.is_empty() {
            return None;
        }
        let last = stored.frame(stored.len())?;
        let last_id = header_meta(&last).and_then(|m| m.unique_id)?;
        let frame = match self {
            Hostile::Relabel => {
                let mut frame = last;
                let mut meta = header_meta(&frame)?;
                meta.unique_id = Some(RELABELLED.into());
                meta.event = Some(Event::New);
                frame.header.content_meta_data = serde_json::to_vec(&meta).ok();
                frame
            }
            Hostile::Replay => stored.frame(1)?,
            Hostile::UnsignedDelete => Envelope::unsealed(
                b"{}".to_vec(),
                Some(&ContentMeta::for_event(&last_id, Event::Delete)),
            ),
            Hostile::ForgedDelete => own_entry(account, store, &last_id, Event::Delete)?,
            Hostile::Inject => own_entry(account, store, "injected", Event::New)?,
            Hostile::ForgeApproval | Hostile::ReplayApproval => {
                let answer_id = approval_answer_id(&last, &last_id)?;
                if self == Hostile::ForgeApproval {
                    forged_answer(account, &last, &last_id, &answer_id)?
                } else {
                    replayed_answer(stored, &answer_id)?
                }
            }
            _ => return None,
        };
        let mut served = Sequence::new(stored.container());
        for index in 1..=stored.len() {
            served.append(stored.frame(index)?);
        }
        served.append(frame);
        Some(served)
    }

    /// The answer's JSON as the hostile service sends it.
    pub fn body(self, json: Vec<u8>) -> Vec<u8> {
        match self {
            Hostile::PathStore => String::from_utf8(json)
                .map(|text| {
                    text.replace(
                        &format!("\"{}\"", Store::Application.name()),
                        &format!("\"{PATH_STORE}\""),
                    )
                    .into_bytes()
                })
                .unwrap_or_default(),
            Hostile::Oversized => {
                let mut padded = json;
                padded.resize(OVERSIZED.max(padded.len()), b' ');
                padded
            }
            _ => json,
        }
    }
}

/// [`Hostile::Substitute`]'s account for `address`: its profile, as JSON.
pub fn substitute_profile(address: &str) -> Option<String> {
    let keys = AccountKeys::generate(&mut OsRng).ok()?;
    Some(keys.profile(&mut OsRng, address).ok()?.to_json())
}

fn header_meta(frame: &Envelope) -> Option<ContentMeta> {
    serde_json::from_slice(frame.header.content_meta_data.as_deref()?).ok()
}

/// The unique id of the answer to `frame`, when it is a new approval
/// request.
fn approval_answer_id(frame: &Envelope, id: &str) -> Option<String> {
    let meta = header_meta(frame)?;
    if meta.event != Some(Event::New) {
        return None;
    }
    ApprovalAnswer::unique_id(id)
}

/// A yes to the request `request` (the frame `frame`), as well made as the
/// service can: the right id, request and digest, signed by its own key.
fn forged_answer(
    account: &str,
    frame: &Envelope,
    request: &str,
    answer_id: &str,
) -> Option<Envelope> {
    let key = PrivateKey::generate(&mut OsRng, KeyAlg::Ed25519).ok()?;
    let digest = frame.trailer.payload_digest.as_deref()?;
    let head = Head {
        format: entry::FORMAT,
        account: account.to_owned(),
        store: Store::Application,
        unique_id: answer_id.to_owned(),
        event: Event::New,
        message_type: ANSWER_MESSAGE_TYPE.into(),
        previous: None,
    };
    let answer = ApprovalAnswer {
        request: request.to_owned(),
        digest: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
        device: "the service".into(),
        approved: true,
    };
    entry::seal(&mut OsRng, &head, Some(&answer), &key, &[]).ok()
}

/// The latest answer in `stored`, its header relabelled as `answer_id`.
fn replayed_answer(stored: &Sequence, answer_id: &str) -> Option<Envelope> {
    let mut frame = (1..=stored.len()).rev().find_map(|index| {
        let frame = stored.frame(index)?;
        let meta = header_meta(&frame)?;
        (meta.event == Some(Event::New) && meta.unique_id?.starts_with(ANSWER_PREFIX))
            .then_some(frame)
    })?;
    let mut meta = header_meta(&frame)?;
    meta.unique_id = Some(answer_id.to_owned());
    frame.header.content_meta_data = serde_json::to_vec(&meta).ok();
    Some(frame)
}

/// An entry in the account's format, signed by a key the service made.
fn own_entry(account: &str, store: Store, id: &str, event: Event) -> Option<Envelope> {
    let key = PrivateKey::generate(&mut OsRng, KeyAlg::Ed25519).ok()?;
    let head = Head {
        format: entry::FORMAT,
        account: account.to_owned(),
        store,
        unique_id: id.to_owned(),
        event,
        message_type: "CatalogEntry".into(),
        previous: None,
    };
    let record = serde_json::json!({"Name": id, "Value": "from the service"});
    let record = (event != Event::Delete).then_some(&record);
    entry::seal(&mut OsRng, &head, record, &key, &[]).ok()
}
