//! Where the service keeps accounts: behind the [`Storage`] trait, so a
//! database engine can stand in later; [`RedbStorage`] is the embedded
//! single-file default.
//!
//! Every change a transaction makes is one [`Commit`], written in one
//! durable redb write transaction before the service answers: an
//! acknowledged write survives a SIGKILL of the service.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Accounts: address → the account's record (JSON).
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Frames: (address, store, index) → frame bytes.
const FRAMES: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("frames");
/// The last request time of each device: (address, device) → ms.
const TIMES: TableDefinition<(&str, &str), u64> = TableDefinition::new("times");
/// Pending connection requests: (address, response id) → device profile.
const PENDING: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pending");
/// Administrators' answers: (address, response id) → envelope.
const RESPONSES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("responses");

/// A storage failure: the service answers 500 and changes nothing.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(String);

fn fail(err: impl std::fmt::Display) -> StorageError {
    StorageError(err.to_string())
}

/// Everything one transaction changes, applied all or nothing.
#[derive(Debug, Default)]
pub struct Commit {
    /// A new account: (address, record).
    pub new_account: Option<(String, Vec<u8>)>,
    /// An account to delete, with all it holds.
    pub delete_account: Option<String>,
    /// Frames to store: (address, store, index, bytes).
    pub frames: Vec<(String, String, u64, Vec<u8>)>,
    /// Device times: (address, device, time).
    pub times: Vec<(String, String, u64)>,
    /// Pending requests: (address, response id, device profile).
    pub pending: Vec<(String, String, Vec<u8>)>,
    /// Answers: (address, response id, envelope).
    pub responses: Vec<(String, String, Vec<u8>)>,
}

/// The service's storage.
pub trait Storage: Send + Sync {
    /// An account's record.
    fn account(&self, address: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Every frame of a store, in order.
    fn frames(&self, address: &str, store: &str) -> Result<Vec<Vec<u8>>, StorageError>;
    /// A device's last request time (0 if none).
    fn time(&self, address: &str, device: &str) -> Result<u64, StorageError>;
    /// A pending connection request's device profile.
    fn pending(&self, address: &str, response_id: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// An administrator's answer to a request.
    fn response(&self, address: &str, response_id: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// How many of an account's connection requests no administrator has
    /// answered yet.
    fn unanswered(&self, address: &str) -> Result<u64, StorageError>;
    /// Apply a commit atomically and durably.
    fn commit(&self, commit: Commit) -> Result<(), StorageError>;
}

/// The embedded default: one redb file.
#[derive(Debug)]
pub struct RedbStorage {
    db: Database,
}

impl RedbStorage {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<RedbStorage, StorageError> {
        RedbStorage::tables(Database::create(path).map_err(fail)?)
    }

    /// A store in memory only, gone when dropped: for tests that run the
    /// service's handler in process.
    pub fn in_memory() -> Result<RedbStorage, StorageError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(fail)?;
        RedbStorage::tables(db)
    }

    fn tables(db: Database) -> Result<RedbStorage, StorageError> {
        let txn = db.begin_write().map_err(fail)?;
        txn.open_table(ACCOUNTS).map_err(fail)?;
        txn.open_table(FRAMES).map_err(fail)?;
        txn.open_table(TIMES).map_err(fail)?;
        txn.open_table(PENDING).map_err(fail)?;
        txn.open_table(RESPONSES).map_err(fail)?;
        txn.commit().map_err(fail)?;
        Ok(RedbStorage { db })
    }
}

impl Storage for RedbStorage {
    fn account(&self, address: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(ACCOUNTS).map_err(fail)?;
        Ok(table
            .get(address)
            .map_err(fail)?
            .map(|v| v.value().to_vec()))
    }

    fn frames(&self, address: &str, store: &str) -> Result<Vec<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(FRAMES).map_err(fail)?;
        let range = table
            .range((address, store, 0u64)..=(address, store, u64::MAX))
            .map_err(fail)?;
        range
            .map(|entry| entry.map(|(_, v)| v.value().to_vec()).map_err(fail))
            .collect()
    }

    fn time(&self, address: &str, device: &str) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(TIMES).map_err(fail)?;
        Ok(table
            .get((address, device))
            .map_err(fail)?
            .map_or(0, |v| v.value()))
    }

    fn pending(&self, address: &str, response_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(PENDING).map_err(fail)?;
        Ok(table
            .get((address, response_id))
            .map_err(fail)?
            .map(|v| v.value().to_vec()))
    }

    fn response(&self, address: &str, response_id: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let table = txn.open_table(RESPONSES).map_err(fail)?;
        Ok(table
            .get((address, response_id))
            .map_err(fail)?
            .map(|v| v.value().to_vec()))
    }

    fn unanswered(&self, address: &str) -> Result<u64, StorageError> {
        let txn = self.db.begin_read().map_err(fail)?;
        let pending = txn.open_table(PENDING).map_err(fail)?;
        let responses = txn.open_table(RESPONSES).map_err(fail)?;
        let mut count = 0;
        for entry in pending.range((address, "")..).map_err(fail)? {
            let (key, _) = entry.map_err(fail)?;
            let (a, id) = key.value();
            if a != address {
                break;
            }
            if responses.get((address, id)).map_err(fail)?.is_none() {
                count += 1;
            }
        }
        Ok(count)
    }

    fn commit(&self, commit: Commit) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(fail)?;
        {
            let mut accounts = txn.open_table(ACCOUNTS).map_err(fail)?;
            let mut frames = txn.open_table(FRAMES).map_err(fail)?;
            let mut times = txn.open_table(TIMES).map_err(fail)?;
            let mut pending = txn.open_table(PENDING).map_err(fail)?;
            let mut responses = txn.open_table(RESPONSES).map_err(fail)?;
            if let Some(address) = &commit.delete_account {
                accounts.remove(address.as_str()).map_err(fail)?;
                let doomed: Vec<(String, u64)> = frames
                    .range((address.as_str(), "", 0u64)..)
                    .map_err(fail)?
                    .map_while(|entry| {
                        let (key, _) = entry.ok()?;
                        let (a, s, i) = key.value();
                        (a == address).then(|| (s.to_owned(), i))
                    })
                    .collect();
                for (store, index) in doomed {
                    frames
                        .remove((address.as_str(), store.as_str(), index))
                        .map_err(fail)?;
                }
                // Its connection requests and their answers go too: a
                // new account at the address starts with none waiting.
                for table in [&mut pending, &mut responses] {
                    let doomed: Vec<String> = table
                        .range((address.as_str(), "")..)
                        .map_err(fail)?
                        .map_while(|entry| {
                            let (key, _) = entry.ok()?;
                            let (a, id) = key.value();
                            (a == address).then(|| id.to_owned())
                        })
                        .collect();
                    for id in doomed {
                        table
                            .remove((address.as_str(), id.as_str()))
                            .map_err(fail)?;
                    }
                }
            }
            if let Some((address, record)) = &commit.new_account {
                accounts
                    .insert(address.as_str(), record.as_slice())
                    .map_err(fail)?;
            }
            for (address, store, index, bytes) in &commit.frames {
                frames
                    .insert((address.as_str(), store.as_str(), *index), bytes.as_slice())
                    .map_err(fail)?;
            }
            for (address, device, time) in &commit.times {
                times
                    .insert((address.as_str(), device.as_str()), *time)
                    .map_err(fail)?;
            }
            for (address, id, profile) in &commit.pending {
                pending
                    .insert((address.as_str(), id.as_str()), profile.as_slice())
                    .map_err(fail)?;
            }
            for (address, id, envelope) in &commit.responses {
                responses
                    .insert((address.as_str(), id.as_str()), envelope.as_slice())
                    .map_err(fail)?;
            }
        }
        // redb's default durability is Immediate: the commit returns after
        // the data is on disk.
        txn.commit().map_err(fail)
    }
}
