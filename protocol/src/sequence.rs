//! DARE sequences (mesh-dare-12 §7; research digest §3.5): append-only
//! logs of envelopes, the form of every Mesh catalog and spool.
//!
//! # Frames
//!
//! A sequence is a series of frames, each walkable forwards and backwards:
//!
//! ```text
//! frame  = F4+w  len(w bytes, big-endian)  records  len(reversed)  F4+w
//! record = F0+w  len(w bytes, big-endian)  data
//! ```
//!
//! where w = 0..3 picks 1, 2, 4 or 8 length bytes (the fewest that fit).
//! A frame holds a header record (the envelope header's JSON), a payload
//! record (the body) and, if there is one, a trailer record (its JSON).
//! Frame 0 is header-only: it names the sequence's type.
//!
//! # Integrity
//!
//! * `List`: none.
//! * `Digest`: each frame's trailer carries its PayloadDigest.
//! * `Chain`: and `ChainDigest(n) = SHA-512(ChainDigest(n−1) || PayloadDigest(n))`,
//!   with 64 zero bytes before the first frame.
//! * `Merkle`: and `TreeDigest(n)`, the apex of the [`crate::merkle`] tree
//!   over frames 1..=n, whose leaf for a frame is
//!   `len(header) || header JSON || PayloadDigest` (the raw header bytes as
//!   stored, so a verifier needs no canonical JSON). Each apex commits to
//!   every frame before it; [`Sequence::inclusion_proof`] and
//!   [`Sequence::consistency_proof`] let a client check a service's log
//!   against an apex it remembers.
//!
//! A decoded sequence is [`Unverified`] until [`Unverified::verify`] has
//! recomputed every digest.
//!
//! # Persistence
//!
//! Frames carry `New`, `Update` and `Delete` events on objects named by
//! their `UniqueId` ([`Sequence::replay`] gives the live set).

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha512};

use crate::envelope::{ContentMeta, Envelope, Event, Header, SequenceInfo, Trailer};
use crate::merkle::{self, Frontier, Hash};

/// The largest frame we read or write.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;

/// The largest header or trailer record.
pub const MAX_RECORD_JSON: usize = 1024 * 1024;

const FRAME_TAG: u8 = 0xF4;
const RECORD_TAG: u8 = 0xF0;

/// The integrity a sequence keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerType {
    /// No integrity data.
    List,
    /// A PayloadDigest per frame.
    Digest,
    /// A digest chain.
    Chain,
    /// A Merkle tree.
    Merkle,
}

impl ContainerType {
    /// The name in frame 0.
    pub fn name(self) -> &'static str {
        match self {
            ContainerType::List => "List",
            ContainerType::Digest => "Digest",
            ContainerType::Chain => "Chain",
            ContainerType::Merkle => "Merkle",
        }
    }

    /// The type of a name.
    pub fn from_name(name: &str) -> Option<ContainerType> {
        [Self::List, Self::Digest, Self::Chain, Self::Merkle]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// Why bytes are not a valid sequence, or a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// The bytes end inside a frame.
    #[error("the sequence is truncated (frame at byte {0})")]
    Truncated(usize),
    /// A frame is malformed.
    #[error("frame at byte {0} is malformed")]
    Malformed(usize),
    /// A frame or record is over the limit.
    #[error("frame at byte {0} is too large")]
    TooLarge(usize),
    /// Frame 0 is missing or does not describe a sequence.
    #[error("frame 0 does not describe a sequence")]
    BadFrameZero,
    /// A frame's index is not its position.
    #[error("frame {0} has the wrong index")]
    BadIndex(u64),
    /// A frame's digest, chain or tree value does not match.
    #[error("frame {0} does not match its digest")]
    BadDigest(u64),
    /// An event on an object that does not allow it.
    #[error("frame {0}: {1}")]
    BadEvent(u64, &'static str),
}

/// One frame's records as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The header record: the header's JSON.
    pub header: Vec<u8>,
    /// The payload record.
    pub payload: Vec<u8>,
    /// The trailer record, if any: the trailer's JSON.
    pub trailer: Option<Vec<u8>>,
}

impl RawFrame {
    /// The frame as an envelope (nothing is verified).
    pub fn to_envelope(&self) -> Result<Envelope, SequenceError> {
        envelope_of(self).map_err(|_| SequenceError::Malformed(0))
    }
}

/// The length width code for `len`: 0..3 for 1, 2, 4, 8 bytes.
fn width(len: usize) -> (u8, usize) {
    match len {
        0..=0xFF => (0, 1),
        0x100..=0xFFFF => (1, 2),
        0x1_0000..=0xFFFF_FFFF => (2, 4),
        _ => (3, 8),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize, bytes: usize) {
    let be = (len as u64).to_be_bytes();
    out.extend_from_slice(be.get(8 - bytes..).unwrap_or_default());
}

fn put_record(out: &mut Vec<u8>, data: &[u8]) {
    let (code, bytes) = width(data.len());
    out.push(RECORD_TAG + code);
    put_len(out, data.len(), bytes);
    out.extend_from_slice(data);
}

/// Encode one frame.
pub fn encode_frame(frame: &RawFrame) -> Vec<u8> {
    let mut records = Vec::with_capacity(frame.header.len() + frame.payload.len() + 32);
    put_record(&mut records, &frame.header);
    put_record(&mut records, &frame.payload);
    if let Some(trailer) = &frame.trailer {
        put_record(&mut records, trailer);
    }
    let (code, bytes) = width(records.len());
    let mut out = Vec::with_capacity(records.len() + 2 * bytes + 2);
    out.push(FRAME_TAG + code);
    put_len(&mut out, records.len(), bytes);
    out.extend_from_slice(&records);
    let mut reversed = (records.len() as u64).to_be_bytes();
    reversed.reverse();
    out.extend_from_slice(reversed.get(..bytes).unwrap_or_default());
    out.push(FRAME_TAG + code);
    out
}

/// Read a tag's length field at the start of `buf`: `(length, bytes
/// used)`, `Ok(None)` if `buf` is too short.
fn read_len(buf: &[u8], base: u8) -> Result<Option<(usize, usize)>, ()> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let code = tag.checked_sub(base).filter(|c| *c < 4).ok_or(())?;
    let bytes = 1usize << code;
    let Some(field) = buf.get(1..1 + bytes) else {
        return Ok(None);
    };
    let len = field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let len = usize::try_from(len).map_err(|_| ())?;
    Ok(Some((len, 1 + bytes)))
}

/// Decode the frame at the start of `buf`: `Ok(None)` if more bytes are
/// needed, the frame and the bytes it used otherwise. `at` is the
/// frame's offset, for error messages.
pub fn decode_frame(buf: &[u8], at: usize) -> Result<Option<(RawFrame, usize)>, SequenceError> {
    let bad = SequenceError::Malformed(at);
    let Some((len, head)) = read_len(buf, FRAME_TAG).map_err(|()| bad.clone())? else {
        return Ok(None);
    };
    if len > MAX_FRAME {
        return Err(SequenceError::TooLarge(at));
    }
    let tail = head - 1;
    let total = head + len + tail + 1;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let (front, back) = frame.split_at(head + len);
    let mut reversed: Vec<u8> = front.get(1..head).unwrap_or_default().to_vec();
    reversed.reverse();
    if back.get(..tail) != Some(reversed.as_slice()) || back.last() != front.first() {
        return Err(bad);
    }
    let mut records = front.get(head..).unwrap_or_default();
    let mut parts = Vec::with_capacity(3);
    while !records.is_empty() {
        let Some((rlen, rhead)) = read_len(records, RECORD_TAG).map_err(|()| bad.clone())? else {
            return Err(bad);
        };
        // A record length near usize::MAX must not wrap around.
        let end = rhead.checked_add(rlen).ok_or(bad.clone())?;
        let data = records.get(rhead..end).ok_or(bad.clone())?;
        parts.push(data.to_vec());
        records = records.get(end..).unwrap_or_default();
    }
    let mut parts = parts.into_iter();
    let (Some(header), Some(payload), trailer, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    if header.len() > MAX_RECORD_JSON || trailer.as_ref().is_some_and(|t| t.len() > MAX_RECORD_JSON)
    {
        return Err(SequenceError::TooLarge(at));
    }
    Ok(Some((
        RawFrame {
            header,
            payload,
            trailer,
        },
        total,
    )))
}

/// The start offsets of the frames of `bytes`, found by walking from the
/// end backwards (each frame ends with its length and tag).
pub fn walk_backwards(bytes: &[u8]) -> Result<Vec<usize>, SequenceError> {
    let mut starts = Vec::new();
    let mut end = bytes.len();
    while end > 0 {
        let bad = SequenceError::Malformed(end);
        let tag = *bytes.get(end - 1).ok_or(bad.clone())?;
        let code = tag
            .checked_sub(FRAME_TAG)
            .filter(|c| *c < 4)
            .ok_or(bad.clone())?;
        let width = 1usize << code;
        let field = bytes
            .get(end.checked_sub(1 + width).ok_or(bad.clone())?..end - 1)
            .ok_or(bad.clone())?;
        let len = field
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let len = usize::try_from(len).map_err(|_| bad.clone())?;
        if len > MAX_FRAME {
            return Err(SequenceError::TooLarge(end));
        }
        let start = end.checked_sub(2 + 2 * width + len).ok_or(bad.clone())?;
        match decode_frame(bytes.get(start..end).unwrap_or_default(), start)? {
            Some((_, used)) if used == end - start => starts.push(start),
            _ => return Err(bad),
        }
        end = start;
    }
    starts.reverse();
    Ok(starts)
}

/// The running integrity values, advanced one frame at a time.
struct State {
    chain: Hash,
    frontier: Frontier,
    leaf: Hash,
}

impl State {
    fn advance(&mut self, header: &[u8], digest: &Hash) {
        let mut h = Sha512::new();
        h.update(self.chain);
        h.update(digest);
        self.chain = h.finalize().into();
        self.leaf = merkle::leaf_hash(&leaf_data(header, digest));
        self.frontier.push(self.leaf);
    }
}

/// A sequence whose frames decoded but whose digests are not yet checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    frames: Vec<RawFrame>,
}

/// A sequence: frame 0 and the data frames, with their integrity data
/// checked or computed by us.
#[derive(Debug, Clone)]
pub struct Sequence {
    container: ContainerType,
    frames: Vec<RawFrame>,
    leaves: Vec<Hash>,
    frontier: Frontier,
    chain: Hash,
}

impl Sequence {
    /// An empty sequence of the given type: frame 0 alone.
    pub fn new(container: ContainerType) -> Sequence {
        let header = Header {
            sequence_info: Some(SequenceInfo {
                data_encoding: Some("JSON".into()),
                container_type: Some(container.name().into()),
                index: 0,
            }),
            ..Header::default()
        };
        Sequence {
            container,
            frames: vec![RawFrame {
                header: json(&header),
                payload: Vec::new(),
                trailer: None,
            }],
            leaves: Vec::new(),
            frontier: Frontier::new(),
            chain: [0u8; 64],
        }
    }

    /// The sequence's type.
    pub fn container(&self) -> ContainerType {
        self.container
    }

    /// The number of data frames (frame 0 not counted).
    pub fn len(&self) -> u64 {
        self.frames.len() as u64 - 1
    }

    /// Whether there is no data frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append an envelope as the next frame; return its index. Its
    /// SequenceInfo and integrity fields are set here.
    pub fn append(&mut self, mut envelope: Envelope) -> u64 {
        let index = self.len() + 1;
        envelope.header.sequence_info = Some(SequenceInfo {
            index,
            ..SequenceInfo::default()
        });
        let header = json(&envelope.header);
        let digest: Hash = Sha512::digest(&envelope.body).into();
        let trailer = &mut envelope.trailer;
        trailer.chain_digest = None;
        trailer.tree_digest = None;
        if self.container != ContainerType::List {
            trailer.payload_digest = Some(digest.to_vec());
        }
        self.advance(&header, &digest);
        match self.container {
            ContainerType::Chain => trailer.chain_digest = Some(self.chain.to_vec()),
            ContainerType::Merkle => trailer.tree_digest = Some(self.frontier.root().to_vec()),
            _ => {}
        }
        let trailer = (*trailer != Trailer::default()).then(|| json(trailer));
        self.frames.push(RawFrame {
            header,
            payload: envelope.body,
            trailer,
        });
        index
    }

    /// Fold a frame into the chain and the tree.
    fn advance(&mut self, header: &[u8], digest: &Hash) {
        let mut next = self.clone_state();
        next.advance(header, digest);
        self.chain = next.chain;
        self.frontier = next.frontier;
        self.leaves.push(next.leaf);
    }

    /// Append a frame made elsewhere (downloaded, or sent to a service),
    /// after checking that it is the next frame of this sequence: its
    /// index, and every digest the sequence's type keeps, recomputed over
    /// the frames already here. A frame that does not fit changes nothing.
    pub fn push_verified(&mut self, raw: RawFrame) -> Result<u64, SequenceError> {
        let index = self.len() + 1;
        let envelope = envelope_of(&raw).map_err(|_| SequenceError::BadDigest(index))?;
        if envelope.header.sequence_info.map(|i| i.index) != Some(index) {
            return Err(SequenceError::BadIndex(index));
        }
        let digest: Hash = Sha512::digest(&raw.payload).into();
        let mut next = self.clone_state();
        next.advance(&raw.header, &digest);
        let trailer = &envelope.trailer;
        let matches = |claimed: &Option<Vec<u8>>, actual: &[u8]| claimed.as_deref() == Some(actual);
        let ok = match self.container {
            ContainerType::List => true,
            ContainerType::Digest => matches(&trailer.payload_digest, &digest),
            ContainerType::Chain => {
                matches(&trailer.payload_digest, &digest)
                    && matches(&trailer.chain_digest, &next.chain)
            }
            ContainerType::Merkle => {
                matches(&trailer.payload_digest, &digest)
                    && matches(&trailer.tree_digest, &next.frontier.root())
            }
        };
        if !ok {
            return Err(SequenceError::BadDigest(index));
        }
        self.chain = next.chain;
        self.frontier = next.frontier;
        self.leaves.push(next.leaf);
        self.frames.push(raw);
        Ok(index)
    }

    /// Drop every frame after `len` (a write the service refused): the
    /// integrity values are recomputed from what stays, O(n).
    pub fn truncate(&mut self, len: u64) {
        if len >= self.len() {
            return;
        }
        let keep = usize::try_from(len).unwrap_or(usize::MAX);
        self.frames.truncate(keep + 1);
        self.leaves.truncate(keep);
        self.frontier = Frontier::new();
        self.chain = [0u8; 64];
        for raw in self.frames.iter().skip(1) {
            let digest: Hash = Sha512::digest(&raw.payload).into();
            let mut h = Sha512::new();
            h.update(self.chain);
            h.update(digest);
            self.chain = h.finalize().into();
        }
        for leaf in &self.leaves {
            self.frontier.push(*leaf);
        }
    }

    /// The events of frames `from..=len` as `(UniqueId, event, index)`,
    /// for keeping a live set up to date without replaying everything.
    pub fn events_from(&self, from: u64) -> Vec<(String, Event, u64)> {
        let mut out = Vec::new();
        for index in from.max(1)..=self.len() {
            let Some(raw) = usize::try_from(index).ok().and_then(|i| self.frames.get(i)) else {
                continue;
            };
            let Ok(header) = serde_json::from_slice::<Header>(&raw.header) else {
                continue;
            };
            let meta: Option<ContentMeta> = header
                .content_meta_data
                .as_deref()
                .and_then(|json| serde_json::from_slice(json).ok());
            if let Some(ContentMeta {
                unique_id: Some(id),
                event,
                ..
            }) = meta
            {
                out.push((id, event.unwrap_or(Event::New), index));
            }
        }
        out
    }

    /// The integrity state, to try a frame on without touching `self`.
    fn clone_state(&self) -> State {
        State {
            chain: self.chain,
            frontier: self.frontier.clone(),
            leaf: [0u8; 64],
        }
    }

    /// Frame `index` as an envelope (0 is the sequence's own frame).
    pub fn frame(&self, index: u64) -> Option<Envelope> {
        let raw = self.frames.get(usize::try_from(index).ok()?)?;
        envelope_of(raw).ok()
    }

    /// The raw records of every frame.
    pub fn raw_frames(&self) -> &[RawFrame] {
        &self.frames
    }

    /// The whole sequence as bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.frames.iter().flat_map(encode_frame).collect()
    }

    /// Decode a sequence; check it with [`Unverified::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Unverified, SequenceError> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            match decode_frame(bytes.get(at..).unwrap_or_default(), at)? {
                Some((frame, used)) => {
                    frames.push(frame);
                    at += used;
                }
                None => return Err(SequenceError::Truncated(at)),
            }
        }
        Ok(Unverified { frames })
    }

    /// The Merkle apex over every data frame.
    pub fn apex(&self) -> Hash {
        self.frontier.root()
    }

    /// The proof that data frame `index` (from 1) is in the tree of
    /// [`Sequence::apex`].
    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        merkle::inclusion_proof(usize::try_from(index.checked_sub(1)?).ok()?, &self.leaves)
    }

    /// The leaf hash of data frame `index` (from 1).
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.leaves
            .get(usize::try_from(index.checked_sub(1)?).ok()?)
            .copied()
    }

    /// The apex the tree had when it held `size` data frames.
    pub fn apex_at(&self, size: u64) -> Option<Hash> {
        Some(merkle::root(
            self.leaves.get(..usize::try_from(size).ok()?)?,
        ))
    }

    /// The proof that this log extends its first `old_size` frames.
    pub fn consistency_proof(&self, old_size: u64) -> Option<Vec<Hash>> {
        merkle::consistency_proof(usize::try_from(old_size).ok()?, &self.leaves)
    }

    /// Replay the New/Update/Delete events: the live objects, by
    /// UniqueId, with the index of the frame that holds each one's latest
    /// version.
    pub fn replay(&self) -> Result<BTreeMap<String, u64>, SequenceError> {
        let mut live = BTreeMap::new();
        for (index, raw) in self.frames.iter().enumerate().skip(1) {
            let index = index as u64;
            let envelope =
                envelope_of(raw).map_err(|_| SequenceError::BadEvent(index, "bad header"))?;
            let meta: ContentMeta = envelope
                .header
                .content_meta_data
                .as_deref()
                .ok_or(SequenceError::BadEvent(index, "no content metadata"))
                .and_then(|json| {
                    serde_json::from_slice(json)
                        .map_err(|_| SequenceError::BadEvent(index, "bad content metadata"))
                })?;
            let id = meta
                .unique_id
                .ok_or(SequenceError::BadEvent(index, "no UniqueId"))?;
            match meta.event.unwrap_or(Event::New) {
                Event::New if live.contains_key(&id) => {
                    return Err(SequenceError::BadEvent(index, "New on an existing object"));
                }
                Event::New => {
                    live.insert(id, index);
                }
                Event::Update => match live.get_mut(&id) {
                    Some(at) => *at = index,
                    None => {
                        return Err(SequenceError::BadEvent(index, "Update of a missing object"));
                    }
                },
                Event::Delete => {
                    if live.remove(&id).is_none() {
                        return Err(SequenceError::BadEvent(index, "Delete of a missing object"));
                    }
                }
            }
        }
        Ok(live)
    }
}

impl Unverified {
    /// Check frame 0, every index, and every digest the sequence's type
    /// keeps; only then is it a [`Sequence`].
    pub fn verify(self) -> Result<Sequence, SequenceError> {
        let mut frames = self.frames.into_iter();
        let zero = frames.next().ok_or(SequenceError::BadFrameZero)?;
        let info = envelope_of(&zero)
            .ok()
            .and_then(|e| e.header.sequence_info)
            .filter(|i| i.index == 0)
            .ok_or(SequenceError::BadFrameZero)?;
        let container = info
            .container_type
            .as_deref()
            .and_then(ContainerType::from_name)
            .ok_or(SequenceError::BadFrameZero)?;
        let mut sequence = Sequence {
            container,
            frames: vec![zero],
            leaves: Vec::new(),
            frontier: Frontier::new(),
            chain: [0u8; 64],
        };
        for raw in frames {
            sequence.push_verified(raw)?;
        }
        Ok(sequence)
    }
}

fn leaf_data(header: &[u8], digest: &Hash) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + header.len() + 64);
    data.extend_from_slice(&(header.len() as u64).to_be_bytes());
    data.extend_from_slice(header);
    data.extend_from_slice(digest);
    data
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| unreachable!("headers and trailers serialize"))
}

fn envelope_of(raw: &RawFrame) -> Result<Envelope, serde_json::Error> {
    Ok(Envelope {
        header: serde_json::from_slice(&raw.header)?,
        body: raw.payload.clone(),
        trailer: match &raw.trailer {
            Some(json) if !json.is_empty() => serde_json::from_slice(json)?,
            _ => Trailer::default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, event: Event, body: &[u8]) -> Envelope {
        Envelope::unsealed(body.to_vec(), Some(&ContentMeta::for_event(id, event)))
    }

    #[test]
    fn frame_lengths_pick_the_smallest_width() {
        for (len, tag) in [(0, 0xF4), (10, 0xF4), (300, 0xF5), (70_000, 0xF6)] {
            let frame = RawFrame {
                header: b"{}".to_vec(),
                payload: vec![7; len],
                trailer: None,
            };
            let bytes = encode_frame(&frame);
            assert_eq!(bytes[0], tag);
            assert_eq!(*bytes.last().expect("a tag"), tag);
            let (decoded, used) = decode_frame(&bytes, 0).expect("valid").expect("whole");
            assert_eq!((decoded, used), (frame, bytes.len()));
            for cut in 0..bytes.len() {
                assert!(
                    matches!(decode_frame(&bytes[..cut], 0), Ok(None)),
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn every_type_round_trips_and_verifies() {
        for container in [
            ContainerType::List,
            ContainerType::Digest,
            ContainerType::Chain,
            ContainerType::Merkle,
        ] {
            let mut seq = Sequence::new(container);
            for i in 0..20u8 {
                seq.append(entry(
                    &format!("id{}", i % 7),
                    if i < 7 { Event::New } else { Event::Update },
                    &[i; 40],
                ));
            }
            let bytes = seq.encode();
            let back = Sequence::decode(&bytes)
                .expect("decodes")
                .verify()
                .expect("verifies");
            assert_eq!(back.container(), container);
            assert_eq!(back.encode(), bytes);
            assert_eq!(back.len(), 20);
            assert_eq!(walk_backwards(&bytes).expect("walks").len(), 21);
        }
    }

    #[test]
    fn tampering_is_found_where_integrity_is_kept() {
        let mut seq = Sequence::new(ContainerType::Merkle);
        for i in 0..10u8 {
            seq.append(entry(&format!("id{i}"), Event::New, &[i; 40]));
        }
        let bytes = seq.encode();
        // Change one payload byte of frame 4 (its 40 bytes of 4s).
        let at = bytes
            .windows(40)
            .position(|w| w == [4u8; 40])
            .expect("found");
        let mut tampered = bytes.clone();
        tampered[at] = 5;
        assert_eq!(
            Sequence::decode(&tampered).expect("decodes").verify().err(),
            Some(SequenceError::BadDigest(5))
        );
        // Dropping a frame breaks the indexes.
        let starts = walk_backwards(&bytes).expect("walks");
        let mut dropped = bytes[..starts[3]].to_vec();
        dropped.extend_from_slice(&bytes[starts[4]..]);
        assert_eq!(
            Sequence::decode(&dropped).expect("decodes").verify().err(),
            Some(SequenceError::BadIndex(3))
        );
        // Truncation in the middle of a frame.
        assert!(matches!(
            Sequence::decode(&bytes[..bytes.len() - 3]),
            Err(SequenceError::Truncated(_))
        ));
        // Trailing garbage.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Sequence::decode(&trailing).is_err());
    }

    #[test]
    fn a_client_tells_an_honest_log_from_a_rolled_back_or_forked_one() {
        let mut honest = Sequence::new(ContainerType::Merkle);
        for i in 0..6u8 {
            honest.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        let (seen_size, seen_apex) = (honest.len(), honest.apex());
        let mut fork = honest.clone();
        for i in 6..9u8 {
            honest.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        let proof = honest.consistency_proof(seen_size).expect("a proof");
        assert!(merkle::verify_consistency(
            seen_size,
            &seen_apex,
            honest.len(),
            &honest.apex(),
            &proof
        ));
        // A fork rewrites history before the seen apex: frame 6 differs.
        let mut forked = Sequence::new(ContainerType::Merkle);
        for i in 0..5u8 {
            forked.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        forked.append(entry("evil", Event::New, b"x"));
        for i in 6..9u8 {
            forked.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        let proof = forked.consistency_proof(seen_size).expect("a proof");
        assert!(!merkle::verify_consistency(
            seen_size,
            &seen_apex,
            forked.len(),
            &forked.apex(),
            &proof
        ));
        // A rollback shows an older, shorter log than the one seen.
        fork.frames.truncate(4);
        let rolled = Sequence::decode(&fork.encode())
            .expect("decodes")
            .verify()
            .expect("valid");
        assert!(rolled.len() < seen_size);
        let leaf = honest.leaf(3).expect("leaf");
        let path = honest.inclusion_proof(3).expect("a path");
        assert!(merkle::verify_inclusion(
            &leaf,
            2,
            honest.len(),
            &path,
            &honest.apex()
        ));
    }

    #[test]
    fn truncate_undoes_appends() {
        let mut seq = Sequence::new(ContainerType::Merkle);
        for i in 0..5u8 {
            seq.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        let before = seq.encode();
        let (apex, chain) = (seq.apex(), seq.chain);
        for i in 5..9u8 {
            seq.append(entry(&format!("id{i}"), Event::New, &[i]));
        }
        seq.truncate(5);
        assert_eq!((seq.encode(), seq.apex(), seq.chain), (before, apex, chain));
        seq.append(entry("again", Event::New, b"x"));
        Sequence::decode(&seq.encode())
            .expect("decodes")
            .verify()
            .expect("verifies");
        assert_eq!(
            seq.events_from(6),
            vec![("again".to_string(), Event::New, 6)]
        );
    }

    #[test]
    fn replay_gives_the_live_set() {
        let mut seq = Sequence::new(ContainerType::Merkle);
        seq.append(entry("a", Event::New, b"1"));
        seq.append(entry("b", Event::New, b"2"));
        seq.append(entry("a", Event::Update, b"3"));
        seq.append(entry("b", Event::Delete, b""));
        let live = seq.replay().expect("replays");
        assert_eq!(live, BTreeMap::from([("a".to_string(), 3)]));
        seq.append(entry("b", Event::Update, b"4"));
        assert_eq!(
            seq.replay().err(),
            Some(SequenceError::BadEvent(5, "Update of a missing object"))
        );
    }

    proptest::proptest! {
        #[test]
        fn frames_round_trip(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..70_000),
            trailer in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)),
        ) {
            let frame = RawFrame { header, payload, trailer };
            let bytes = encode_frame(&frame);
            let (decoded, used) = decode_frame(&bytes, 0).expect("valid").expect("whole");
            proptest::prop_assert_eq!(used, bytes.len());
            proptest::prop_assert_eq!(encode_frame(&decoded), bytes.clone());
            proptest::prop_assert_eq!(decoded, frame);
            proptest::prop_assert_eq!(walk_backwards(&bytes).expect("walks"), vec![0]);
        }
    }
}
