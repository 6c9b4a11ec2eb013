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

    /// The account's latest key uses, every device's, newest last.
    pub(super) fn usage_rows(&self) -> Result<Vec<UsageRow>, AccountError> {
        let names: std::collections::BTreeMap<String, String> = self
            .devices()?
            .into_iter()
            .map(|(name, device)| (device.device_udf, name))
            .collect();
        let mut rows: Vec<UsageRow> = self
            .open_live(Store::Application)?
            .into_iter()
            .filter(|(_, v)| v.head.message_type == USAGE_MESSAGE_TYPE)
            .filter_map(|(_, v)| v.record::<UsageBatch>())
            .flat_map(|batch| {
                let device = names
                    .get(&batch.device)
                    .cloned()
                    .unwrap_or_else(|| batch.device.clone());
                batch.uses.into_iter().map(move |u| UsageRow {
                    time_ms: u.time_ms,
                    device: device.clone(),
                    operation: u.operation,
                    key: u.key,
                    fingerprint: u.fingerprint,
                    pid: u.pid,
                    program: u.program,
                    host: u.host,
                    confirmed: u.confirmed,
                })
            })
            .collect();
        rows.sort_by_key(|r| r.time_ms);
        let skip = rows.len().saturating_sub(SHOWN);
        Ok(rows.split_off(skip))
    }
}
