//! Sync: bring each replica up to the service's, checking everything, and
//! write through atomic transactions.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_ipc::control::{Standing, SyncReport};
use mesh_protocol::account::{self, Store};
use mesh_protocol::envelope::Envelope;
use mesh_protocol::sequence;
use mesh_protocol::service::{
    DownloadRequest, PostedResponse, ServiceRequest, ServiceResponse, StatusRequest, StoreStatus,
    StoreUpdate, TransactRequest,
};

use super::{Account, AccountError, now_ms};

/// The key under which a failure of the service as a whole is reported.
const SERVICE: &str = "service";

/// The most new frames one store may announce for one sync: more is
/// refused rather than downloaded (a legitimate catalog grows by far less
/// between two syncs; a hostile service could announce without end).
pub(super) const MAX_NEW_FRAMES: u64 = 100_000;

/// The most frames one download page may carry.
pub(super) const MAX_PAGE_FRAMES: usize = 4096;

impl Account {
    /// Append entries to stores in one atomic transaction, then sync.
    /// A stale view (Conflict) is synced and tried once more.
    pub(super) async fn transact(
        &mut self,
        updates: Vec<(Store, Vec<Envelope>)>,
        responses: Vec<PostedResponse>,
    ) -> Result<(), AccountError> {
        for attempt in 0..2 {
            let mut request = TransactRequest {
                account_address: self.remote()?.account().to_owned(),
                updates: Vec::new(),
                responses: responses.clone(),
            };
            for (store, entries) in &updates {
                let (index, apex) = self.replicas.head(*store);
                let frames = self
                    .replicas
                    .stage(*store, entries.clone())
                    .iter()
                    .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                    .collect();
                request.updates.push(StoreUpdate {
                    store: *store,
                    index,
                    apex: URL_SAFE_NO_PAD.encode(apex),
                    frames,
                });
            }
            // Our own frames must pass the checks every reader makes (a
            // stale chain after a conflict would not), and the account's
            // rules must let them apply.
            let mut ledgers = Vec::new();
            for (store, _) in &updates {
                let before = self.ledgers.get(*store).map_or(0, |l| l.denied().len());
                let checked = self.check_staged(*store).and_then(|ledger| {
                    match ledger.denied().get(before) {
                        Some(denied) => Err(AccountError::Forbidden(denied.why.clone())),
                        None => Ok(ledger),
                    }
                });
                match checked {
                    Ok(ledger) => ledgers.push((*store, ledger)),
                    Err(e) => {
                        for (store, _) in &updates {
                            self.replicas.rollback(*store);
                        }
                        return Err(match e {
                            AccountError::Forbidden(_) => e,
                            other => {
                                tracing::warn!(error = %other, "our own entry does not check");
                                AccountError::Conflict
                            }
                        });
                    }
                }
            }
            let result = self.call(ServiceRequest::Transact(request)).await;
            if result.is_ok() {
                for (store, ledger) in ledgers {
                    self.replicas.commit(store)?;
                    self.settle(store, ledger);
                }
            } else {
                for (store, _) in &updates {
                    self.replicas.rollback(*store);
                }
            }
            match result {
                Ok(_) => return Ok(()),
                Err(AccountError::Conflict) if attempt == 0 => {
                    Box::pin(self.sync()).await;
                }
                Err(e) => {
                    self.note(&e);
                    return Err(e);
                }
            }
        }
        Err(AccountError::Conflict)
    }

    /// Take note of what an error says about this device's standing.
    fn note(&mut self, e: &AccountError) {
        if matches!(e, AccountError::Revoked) {
            self.set_standing(Standing::Revoked);
            self.activation = None;
            if let Err(e) = self.save() {
                tracing::warn!(error = %e, "cannot save the account's state");
            }
        }
    }

    /// Sync every store this device may read. Problems are recorded (and
    /// reported by `mesh account status`), never papered over.
    pub(super) async fn sync(&mut self) -> SyncReport {
        match self.sync_inner().await {
            Ok(updated) => {
                self.sync_errors.remove(SERVICE);
                self.last_sync = Some(now_ms());
                SyncReport {
                    ok: self.sync_errors.is_empty(),
                    updated,
                    errors: self.sync_errors.clone(),
                }
            }
            Err(e) => {
                self.note(&e);
                self.sync_errors.insert(SERVICE.into(), e.to_string());
                SyncReport {
                    ok: false,
                    updated: BTreeMap::new(),
                    errors: self.sync_errors.clone(),
                }
            }
        }
    }

    async fn sync_inner(&mut self) -> Result<BTreeMap<Store, u64>, AccountError> {
        if self.standing() == Standing::Pending {
            self.poll_connection().await?;
            return Ok(BTreeMap::new());
        }
        let address = self.remote()?.account().to_owned();
        let answer = self
            .call(ServiceRequest::Status(StatusRequest {
                account_address: address.clone(),
            }))
            .await?;
        let ServiceResponse::StatusResponse(status) = answer else {
            return Err(AccountError::Untrusted {
                store: None,
                why: "the service gave an unexpected answer".into(),
            });
        };
        let readable = account::stores_for(&self.activation()?.connection.roles);
        if let Some(other) = status.stores.iter().find(|s| !readable.contains(&s.store)) {
            return Err(AccountError::untrusted(
                other.store,
                "the service offers a store this device may not read",
            ));
        }
        let mut updated = BTreeMap::new();
        // In the stores' own order, but the Access catalog first (it counts
        // the key epochs), then the Device catalog (it names whose
        // signatures the others may carry).
        let mut readable = readable;
        readable.sort_by_key(|s| *s != Store::Access);
        for store in readable {
            let name = store.name().to_owned();
            let result = match status.stores.iter().find(|s| s.store == store) {
                Some(remote) => self.sync_store(&address, remote).await,
                None => Err(AccountError::untrusted(
                    store,
                    "the service withheld it (its status does not list it)",
                )),
            };
            match result {
                Ok(0) => {
                    self.sync_errors.remove(&name);
                }
                Ok(n) => {
                    self.sync_errors.remove(&name);
                    updated.insert(store, n);
                }
                Err(e) => {
                    tracing::warn!(%store, error = %e, "sync refused the service's data");
                    self.sync_errors.insert(name, e.to_string());
                }
            }
        }
        // This device's own entry must still be there (a recovering
        // device is about to write its own).
        if let Some(device) = self
            .device
            .as_ref()
            .filter(|_| self.standing() != Standing::Recovering)
        {
            let udf = device.udf().to_string();
            if !self.live(Store::Device).contains_key(&udf) {
                return Err(AccountError::Revoked);
            }
        }
        if updated.contains_key(&Store::Inbound) || updated.contains_key(&Store::Local) {
            self.accept_pins().await;
        }
        Ok(updated)
    }

    /// Bring one store up to the service's, checking everything.
    async fn sync_store(
        &mut self,
        address: &str,
        remote: &StoreStatus,
    ) -> Result<u64, AccountError> {
        let store = remote.store;
        let (local_len, local_apex) = self.replicas.head(store);
        if remote.index < local_len {
            return Err(AccountError::untrusted(
                store,
                format!(
                    "the service rolled it back from {local_len} to {} entries",
                    remote.index
                ),
            ));
        }
        if remote.index == local_len {
            if remote.apex != URL_SAFE_NO_PAD.encode(local_apex) {
                return Err(AccountError::untrusted(
                    store,
                    "the service's copy has another history than ours (a fork)",
                ));
            }
            return Ok(0);
        }
        if remote.index - local_len > MAX_NEW_FRAMES {
            return Err(AccountError::untrusted(
                store,
                format!(
                    "the service announced {} new entries, more than one sync takes ({MAX_NEW_FRAMES})",
                    remote.index - local_len
                ),
            ));
        }
        let result = self.download(address, remote).await;
        let (len, apex) = self.replicas.head(store);
        let checked = result.and_then(|()| {
            if URL_SAFE_NO_PAD.encode(apex) != remote.apex || len != remote.index {
                Err(AccountError::untrusted(
                    store,
                    "the service's copy does not match what it announced",
                ))
            } else {
                Ok(())
            }
        });
        match checked.and_then(|()| self.check_staged(store)) {
            Ok(ledger) => {
                self.replicas.commit(store)?;
                self.settle(store, ledger);
                Ok(len - local_len)
            }
            Err(e) => {
                self.replicas.rollback(store);
                Err(e)
            }
        }
    }

    /// Download and stage the frames a store lacks; each must extend it.
    async fn download(&mut self, address: &str, remote: &StoreStatus) -> Result<(), AccountError> {
        let store = remote.store;
        while self.replicas.head(store).0 < remote.index {
            let answer = self
                .call(ServiceRequest::Download(DownloadRequest {
                    account_address: address.to_owned(),
                    store,
                    after: self.replicas.head(store).0,
                }))
                .await?;
            let ServiceResponse::DownloadResponse(download) = answer else {
                return Err(AccountError::untrusted(
                    store,
                    "the service gave an unexpected answer",
                ));
            };
            if download.frames.len() > MAX_PAGE_FRAMES {
                return Err(AccountError::untrusted(
                    store,
                    format!("the service sent more than {MAX_PAGE_FRAMES} frames in one page"),
                ));
            }
            if download.frames.is_empty() {
                return Err(AccountError::untrusted(
                    store,
                    format!(
                        "the service announced {} entries but sent fewer",
                        remote.index
                    ),
                ));
            }
            let malformed = || AccountError::untrusted(store, "the service sent a malformed frame");
            // Frames written since the status are for the next sync.
            let wanted = remote.index - self.replicas.head(store).0;
            let mut frames = Vec::with_capacity(download.frames.len());
            for text in download
                .frames
                .into_iter()
                .take(usize::try_from(wanted).unwrap_or(usize::MAX))
            {
                let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| malformed())?;
                let (raw, _) = sequence::decode_frame(&bytes, 0)
                    .ok()
                    .flatten()
                    .filter(|(_, used)| *used == bytes.len())
                    .ok_or_else(malformed)?;
                frames.push(raw);
            }
            self.replicas.extend(store, frames).map_err(|e| {
                AccountError::untrusted(
                    store,
                    format!(
                        "the service sent entries that do not extend ours (forged, reordered, altered or forked): {e}"
                    ),
                )
            })?;
        }
        Ok(())
    }
}
