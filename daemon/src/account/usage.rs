//! The usage log: each device writes its key uses (signatures,
//! decryptions) in batches to the Application catalog, as
//! `usage/<device>/<random>` entries it signs; `mesh log` shows every
//! device's. The catalog is a Merkle log every device verifies, so the
//! record of where the account's keys were used is tamper-evident.

use mesh_ipc::control::UsageRow;
use mesh_protocol::account::Store;
use mesh_protocol::application::{
    MAX_USAGE_BATCH, USAGE_MESSAGE_TYPE, USAGE_PREFIX, Usage, UsageBatch,
};
use mesh_protocol::entry;
use mesh_protocol::envelope::Event;
use rand_core::{OsRng, RngCore as _};

use super::{Account, AccountError};

/// The most uses `mesh log` shows (the latest).
pub(super) const SHOWN: usize = 500;

impl Account {
    /// Write a batch of this device's key uses (nothing for a device that
    /// does not read the Application catalog: it holds no such keys).
    pub(super) async fn note_usage(&mut self, mut uses: Vec<Usage>) -> Result<(), AccountError> {
        let Ok(store_key) = self.store_key(Store::Application).map(|k| k.public()) else {
            return Ok(());
        };
        let device = self
            .device
            .as_ref()
            .map(|d| d.udf().to_string())
            .ok_or(AccountError::NoAccount)?;
        uses.truncate(MAX_USAGE_BATCH);
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        let suffix: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("{USAGE_PREFIX}{device}/{suffix}");
        let batch = UsageBatch { device, uses };
        let entry = self.entry(
            Store::Application,
            &id,
            Event::New,
            USAGE_MESSAGE_TYPE,
            Some(&batch),
            &self.activation()?.sign,
            &[store_key],
        )?;
        self.transact(vec![(Store::Application, vec![entry])], Vec::new())
            .await
    }

    /// The account's latest key uses, every device's, newest last. Only
    /// the latest batches are opened (by their place in the log): enough
    /// for [`SHOWN`] uses, however long the log has grown.
    pub(super) fn usage_rows(&self) -> Result<Vec<UsageRow>, AccountError> {
        let names: std::collections::BTreeMap<String, String> = self
            .devices()?
            .into_iter()
            .map(|(name, device)| (device.device_udf, name))
            .collect();
        let activation = self.activation()?;
        let address = self.remote()?.account();
        let mut batches: Vec<u64> = self
            .live(Store::Application)
            .values()
            .filter(|live| live.message_type == USAGE_MESSAGE_TYPE)
            .map(|live| live.index)
            .collect();
        batches.sort_unstable_by(|a, b| b.cmp(a));
        let mut rows = Vec::new();
        for index in batches {
            if rows.len() >= SHOWN {
                break;
            }
            let Some(batch) = self
                .replicas
                .frame(Store::Application, index)
                .and_then(|frame| {
                    let key = activation.store_key_for(Store::Application, &frame);
                    entry::open(
                        &frame,
                        address,
                        Store::Application,
                        key,
                        self.ledgers.keys(),
                    )
                    .ok()
                })
                .and_then(|verified| verified.record::<UsageBatch>())
            else {
                continue;
            };
            let device = names
                .get(&batch.device)
                .cloned()
                .unwrap_or_else(|| batch.device.clone());
            rows.extend(batch.uses.into_iter().map(|u| UsageRow {
                time_ms: u.time_ms,
                device: device.clone(),
                operation: u.operation,
                key: u.key,
                fingerprint: u.fingerprint,
                pid: u.pid,
                program: u.program,
                host: u.host,
                confirmed: u.confirmed,
            }));
        }
        rows.sort_by_key(|r| r.time_ms);
        let skip = rows.len().saturating_sub(SHOWN);
        Ok(rows.split_off(skip))
    }
}
