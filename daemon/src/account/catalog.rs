//! Plain catalog entries (`mesh catalog`): names and values in the
//! Application and Credential catalogs, each entry signed by the device
//! that wrote it and sealed to the catalog's store key.

use std::collections::BTreeMap;

use mesh_ipc::control::{CatalogChange, Response};
use mesh_protocol::account::Store;
use mesh_protocol::application::{OPENPGP_PREFIX, SSH_PREFIX};
use mesh_protocol::envelope::Event;
use serde::{Deserialize, Serialize};

use zeroize::Zeroizing;

use super::{Account, AccountError, CatalogValues};

/// The message type of a plain catalog entry.
pub(super) const CATALOG_ENTRY: &str = "CatalogEntry";

/// Entries per transaction: well inside the service's 64 KiB request limit.
const BATCH: usize = 24;

/// A plain catalog entry (its value a secret: wiped when dropped).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CatalogEntry {
    pub(super) name: String,
    value: String,
}

impl Drop for CatalogEntry {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

/// Only the Application and Credential catalogs hold plain entries.
fn plain(store: Store) -> Result<Store, AccountError> {
    match store {
        Store::Application | Store::Credential => Ok(store),
        other => Err(AccountError::Input(format!(
            "{other} is not a catalog: use application or credential"
        ))),
    }
}

/// Refuse the names `mesh ssh` and `mesh openpgp` manage.
fn reserved(name: &str) -> Result<(), AccountError> {
    if name.starts_with(SSH_PREFIX) {
        return Err(AccountError::Input(format!(
            "{name:?} is an SSH identity: use mesh ssh to change it"
        )));
    }
    if name.starts_with(OPENPGP_PREFIX) {
        return Err(AccountError::Input(format!(
            "{name:?} is an OpenPGP key: use mesh openpgp to change it"
        )));
    }
    Ok(())
}

impl Account {
    /// Add or replace entries, in transactions of a size the service takes.
    pub(super) async fn catalog_import(
        &mut self,
        store: Store,
        entries: &[(String, String)],
    ) -> Result<Response, AccountError> {
        let store = plain(store)?;
        for (name, _) in entries {
            reserved(name)?;
        }
        for batch in entries.chunks(BATCH) {
            let key = self.store_key(store)?.public();
            let sign = &self.activation()?.sign;
            let live = self.live(store);
            let mut envelopes = Vec::with_capacity(batch.len());
            for (name, value) in batch {
                let entry = CatalogEntry {
                    name: name.clone(),
                    value: value.clone(),
                };
                let event = if live.contains_key(name) {
                    Event::Update
                } else {
                    Event::New
                };
                envelopes.push(self.entry(
                    store,
                    name,
                    event,
                    CATALOG_ENTRY,
                    Some(&entry),
                    sign,
                    &[key],
                )?);
            }
            self.transact(vec![(store, envelopes)], Vec::new()).await?;
        }
        Ok(Response::CatalogChanged(CatalogChange {
            store,
            written: entries.len(),
            deleted: None,
        }))
    }

    /// Delete a catalog entry.
    pub(super) async fn catalog_delete(
        &mut self,
        store: Store,
        name: &str,
    ) -> Result<Response, AccountError> {
        let store = plain(store)?;
        reserved(name)?;
        let sign = &self.activation()?.sign;
        if !self.live(store).contains_key(name) {
            return Err(AccountError::NotFound(format!(
                "no entry named {name:?} in {store}"
            )));
        }
        let entry = self.entry::<()>(store, name, Event::Delete, CATALOG_ENTRY, None, sign, &[])?;
        self.transact(vec![(store, vec![entry])], Vec::new())
            .await?;
        Ok(Response::CatalogChanged(CatalogChange {
            store,
            written: 0,
            deleted: Some(name.to_owned()),
        }))
    }

    /// The plain entries of a catalog, each checked.
    pub(super) fn catalog_list(&self, store: Store) -> Result<CatalogValues, AccountError> {
        let store = plain(store)?;
        let mut out = BTreeMap::new();
        // Only the catalog's own entries are opened: the Application
        // catalog also holds every usage batch, which grow without end.
        let entries = self.open_live_where(store, |live| live.message_type == CATALOG_ENTRY)?;
        for (name, verified) in entries {
            if verified.head.message_type != CATALOG_ENTRY {
                continue;
            }
            let entry: CatalogEntry = verified
                .record()
                .ok_or_else(|| AccountError::untrusted(store, format!("damaged entry {name:?}")))?;
            out.insert(name, Zeroizing::new(entry.value.clone()));
        }
        Ok(CatalogValues(out))
    }
}
