//! The local replica of each catalog: one verified DARE sequence per
//! store, in a file `<store>.dare` under the data directory.
//!
//! A replica only ever grows by frames that verify on top of it, and is
//! written to a temporary file, synced and renamed into place, so a crash
//! leaves the old replica or the new one, never half of one.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mesh_protocol::sequence::{ContainerType, Sequence, Unverified};

/// The replicas of one account.
#[derive(Debug)]
pub struct Replicas {
    dir: PathBuf,
    stores: HashMap<String, Sequence>,
}

impl Replicas {
    /// Load every replica in `dir`, verifying each.
    pub fn open(dir: &Path) -> io::Result<Replicas> {
        let mut stores = HashMap::new();
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries {
                let path = entry?.path();
                let Some(store) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".dare"))
                else {
                    continue;
                };
                let bytes = fs::read(&path)?;
                let sequence = Sequence::decode(&bytes)
                    .and_then(Unverified::verify)
                    .map_err(|err| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {err}", path.display()),
                        )
                    })?;
                stores.insert(store.to_owned(), sequence);
            }
        }
        Ok(Replicas {
            dir: dir.to_owned(),
            stores,
        })
    }

    /// A store's replica (an empty Merkle sequence if there is none yet).
    pub fn get(&self, store: &str) -> Sequence {
        self.stores
            .get(store)
            .cloned()
            .unwrap_or_else(|| Sequence::new(ContainerType::Merkle))
    }

    /// A store's replica, by reference, if there is one.
    pub fn peek(&self, store: &str) -> Option<&Sequence> {
        self.stores.get(store)
    }

    /// Replace a store's replica, on disk first.
    pub fn put(&mut self, store: &str, sequence: Sequence) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let tmp = self.dir.join(format!(".{store}.tmp"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&sequence.encode())?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(format!("{store}.dare")))?;
        self.stores.insert(store.to_owned(), sequence);
        Ok(())
    }

    /// Forget every replica (the device left the account).
    pub fn clear(&mut self) -> io::Result<()> {
        self.stores.clear();
        match fs::remove_dir_all(&self.dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}
