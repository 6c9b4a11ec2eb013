//! The local replica of each catalog: one verified DARE sequence per
//! store, in a file `<store>.dare` under the data directory. What the
//! frames mean (which objects are live) is the account's to decide: it
//! checks every frame's signed head (`account::ledger`).
//!
//! A replica grows in place: frames are staged in memory ([`Replicas::stage`]
//! for our own writes, [`Replicas::extend`] for downloaded ones, which must
//! verify on top of it), then either committed — only the new frames are
//! appended to the file and synced, so a sync costs in proportion to what
//! changed — or rolled back. A crash in the middle of an append leaves a
//! partial last frame, which the next [`Replicas::open`] drops: the service
//! still has it.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mesh_protocol::account::Store;
use mesh_protocol::envelope::Envelope;
use mesh_protocol::sequence::{self, ContainerType, RawFrame, Sequence, SequenceError};

/// One store's replica.
#[derive(Debug)]
struct Replica {
    sequence: Sequence,
    /// Frames on disk (data frames; frame 0 counts once the file exists).
    persisted: Option<u64>,
}

impl Replica {
    fn empty() -> Replica {
        Replica {
            sequence: Sequence::new(ContainerType::Merkle),
            persisted: None,
        }
    }
}

/// The replicas of one account.
#[derive(Debug)]
pub struct Replicas {
    dir: PathBuf,
    stores: HashMap<Store, Replica>,
    set_aside: Vec<(Store, String)>,
}

impl Replicas {
    /// Load every replica in `dir`, verifying each; a partial last frame
    /// (a crash during an append) is dropped. A replica that does not
    /// verify (damaged on disk, or an empty file left by a crash during its
    /// first write) is set aside as `<store>.dare.damaged` and the store
    /// starts empty, to be synced again: the daemon always starts, and
    /// [`Replicas::set_aside`] says what was lost.
    pub fn open(dir: &Path) -> io::Result<Replicas> {
        let mut stores = HashMap::new();
        let mut set_aside = Vec::new();
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries {
                let path = entry?.path();
                // Only the account's own stores: any other file is not ours.
                let Some(store) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".dare"))
                    .and_then(Store::from_name)
                else {
                    continue;
                };
                let bytes = fs::read(&path)?;
                let whole = whole_frames(&bytes);
                if whole < bytes.len() {
                    tracing::warn!(%store, "dropping a partial frame at the end of the replica");
                    let file = fs::OpenOptions::new().write(true).open(&path)?;
                    file.set_len(whole as u64)?;
                    file.sync_all()?;
                }
                match Sequence::decode(&bytes[..whole]).and_then(sequence::Unverified::verify) {
                    Ok(sequence) => {
                        let replica = Replica {
                            persisted: Some(sequence.len()),
                            sequence,
                        };
                        stores.insert(store, replica);
                    }
                    Err(err) => {
                        tracing::warn!(%store, error = %err, "setting a damaged replica aside");
                        fs::rename(&path, path.with_extension("dare.damaged"))?;
                        set_aside.push((store, err.to_string()));
                    }
                }
            }
        }
        Ok(Replicas {
            dir: dir.to_owned(),
            stores,
            set_aside,
        })
    }

    /// The replicas [`Replicas::open`] found damaged and set aside, and why.
    pub fn set_aside(&self) -> &[(Store, String)] {
        &self.set_aside
    }

    fn replica(&mut self, store: Store) -> &mut Replica {
        self.stores.entry(store).or_insert_with(Replica::empty)
    }

    /// A store's replica, if there is one.
    pub fn sequence(&self, store: Store) -> Option<&Sequence> {
        self.stores.get(&store).map(|r| &r.sequence)
    }

    /// The number of frames of a store (0 if none).
    pub fn len(&self, store: Store) -> u64 {
        self.stores.get(&store).map_or(0, |r| r.sequence.len())
    }

    /// The number of frames and the apex of a store (an empty one if none).
    pub fn head(&self, store: Store) -> (u64, [u8; 64]) {
        match self.stores.get(&store) {
            Some(r) => (r.sequence.len(), r.sequence.apex()),
            None => (0, Sequence::new(ContainerType::Merkle).apex()),
        }
    }

    /// Frame `index` of a store.
    pub fn frame(&self, store: Store, index: u64) -> Option<Envelope> {
        self.stores.get(&store)?.sequence.frame(index)
    }

    /// Stage our own entries: append them in memory and return the new
    /// frames' bytes (commit or roll back afterwards).
    pub fn stage(&mut self, store: Store, entries: Vec<Envelope>) -> Vec<Vec<u8>> {
        let replica = self.replica(store);
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            replica.sequence.append(entry);
            if let Some(raw) = replica.sequence.raw_frames().last() {
                out.push(sequence::encode_frame(raw));
            }
        }
        out
    }

    /// Stage downloaded frames: each must verify on top of the replica.
    /// On the first that does not, everything staged is rolled back.
    pub fn extend(&mut self, store: Store, frames: Vec<RawFrame>) -> Result<(), SequenceError> {
        let replica = self.replica(store);
        for raw in frames {
            if let Err(err) = replica.sequence.push_verified(raw) {
                self.rollback(store);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Drop whatever was staged and not committed.
    pub fn rollback(&mut self, store: Store) {
        if let Some(replica) = self.stores.get_mut(&store) {
            replica.sequence.truncate(replica.persisted.unwrap_or(0));
        }
    }

    /// Write what was staged: only the new frames are appended and synced.
    pub fn commit(&mut self, store: Store) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.dir.join(format!("{}.dare", store.name()));
        let replica = self.replica(store);
        let from = replica.persisted.map_or(0, |n| n + 1);
        let bytes: Vec<u8> = replica
            .sequence
            .raw_frames()
            .iter()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .flat_map(sequence::encode_frame)
            .collect();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        replica.persisted = Some(replica.sequence.len());
        Ok(())
    }
}

/// How many leading bytes of `bytes` are whole frames.
fn whole_frames(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Ok(Some((_, used))) = sequence::decode_frame(bytes.get(at..).unwrap_or_default(), at)
    {
        at += used;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::envelope::{ContentMeta, Event};

    const S: Store = Store::Local;

    fn entry(id: &str) -> Envelope {
        Envelope::unsealed(
            id.as_bytes().to_vec(),
            Some(&ContentMeta::for_event(id, Event::New)),
        )
    }

    #[test]
    fn staged_frames_commit_by_appending_or_roll_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut replicas = Replicas::open(tmp.path()).expect("opens");
        replicas.stage(S, vec![entry("a"), entry("b")]);
        replicas.commit(S).expect("commits");
        replicas.stage(S, vec![entry("c")]);
        replicas.rollback(S);
        assert_eq!(replicas.head(S).0, 2);
        replicas.stage(S, vec![entry("d")]);
        replicas.commit(S).expect("commits");
        let again = Replicas::open(tmp.path()).expect("reopens");
        assert_eq!(again.head(S), replicas.head(S));
        assert_eq!(again.len(S), 3);

        // A crash mid-append leaves a partial frame: it is dropped.
        let path = tmp.path().join("MMM_Local.dare");
        let mut bytes = fs::read(&path).expect("read");
        let len = bytes.len();
        bytes.extend_from_slice(&[0xF5, 0x01, 0x00, 0xF0]);
        fs::write(&path, &bytes).expect("written");
        let recovered = Replicas::open(tmp.path()).expect("reopens");
        assert_eq!(recovered.head(S).0, 3);
        assert_eq!(fs::metadata(&path).expect("exists").len(), len as u64);
    }

    #[test]
    fn a_damaged_replica_is_set_aside_and_the_rest_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut replicas = Replicas::open(tmp.path()).expect("opens");
        replicas.stage(S, vec![entry("a"), entry("b")]);
        replicas.commit(S).expect("commits");
        replicas.stage(Store::Device, vec![entry("d")]);
        replicas.commit(Store::Device).expect("commits");
        // A flipped byte in a committed frame, and an empty file (a crash
        // during a store's first write).
        let path = tmp.path().join("MMM_Local.dare");
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 10;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).expect("written");
        fs::write(tmp.path().join("MMM_Credential.dare"), b"").expect("written");
        let again = Replicas::open(tmp.path()).expect("opens anyway");
        assert_eq!(again.len(S), 0);
        assert_eq!(again.len(Store::Device), 1);
        let mut aside: Vec<Store> = again.set_aside().iter().map(|(s, _)| *s).collect();
        aside.sort();
        assert_eq!(aside, [Store::Credential, Store::Local]);
        assert!(tmp.path().join("MMM_Local.dare.damaged").exists());
        assert!(!path.exists());
    }

    #[test]
    fn files_that_name_no_store_are_not_read_as_replicas() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut replicas = Replicas::open(tmp.path()).expect("opens");
        replicas.stage(S, vec![entry("a")]);
        replicas.commit(S).expect("commits");
        let bytes = fs::read(tmp.path().join("MMM_Local.dare")).expect("read");
        for stray in ["MMM_Other.dare", "..dare", "x.dare"] {
            fs::write(tmp.path().join(stray), &bytes).expect("written");
        }
        let again = Replicas::open(tmp.path()).expect("reopens");
        assert_eq!(again.stores.keys().collect::<Vec<_>>(), [&S]);
    }
}
