//! The usage log: each device writes its key uses (signatures,
//! decryptions) in batches to the Application catalog, as
//! `usage/<device>/<random>` entries it signs; `mesh log` shows every
//! device's. The catalog is a Merkle log every device verifies, so the
//! record of where the account's keys were used is tamper-evident.

use mesh_ipc::control::{MAX_FRAME, UsageRow};
use mesh_protocol::account::Store;
use mesh_protocol::application::{
    MAX_USAGE_BATCH, USAGE_MESSAGE_TYPE, USAGE_PREFIX, Usage, UsageBatch,
};
use mesh_protocol::entry;
use mesh_protocol::envelope::Event;
use mesh_protocol::service::MAX_MESSAGE;
use rand_core::{OsRng, RngCore as _};

use super::{Account, AccountError};

/// The most uses `mesh log` shows (the latest).
pub(super) const SHOWN: usize = 500;

/// The most bytes of rows, as JSON, `mesh log` is sent: an answer on the
/// control socket is at most [`MAX_FRAME`], and an eighth is left for
/// the rest of it. 500 uses of a program with a long path were 110 KiB,
/// and `mesh log` failed.
const SHOWN_JSON: usize = MAX_FRAME - MAX_FRAME / 8;

/// The latest of `rows` (oldest first) that fit [`SHOWN_JSON`].
fn latest_that_fit(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut bytes = 1;
    let fit = rows
        .iter()
        .rev()
        .take_while(|row| {
            bytes += serde_json::to_vec(row).map_or(0, |json| json.len()) + 1;
            bytes <= SHOWN_JSON
        })
        .count();
    rows.split_off(rows.len() - fit)
}

/// The most bytes of uses, as JSON, one batch holds. A batch travels
/// sealed (an envelope with its payload in base64) in a frame the
/// transaction encodes in base64 again: some 1.8 times its JSON, plus the
/// envelope's headers, in a request the service takes only up to
/// [`MAX_MESSAGE`]. A third of that leaves room for both; 256 uses of a
/// program with a long path were 50 KiB of JSON, refused as too large,
/// and lost whole.
const MAX_BATCH_JSON: usize = MAX_MESSAGE / 3;

/// `uses` in batches of at most [`MAX_USAGE_BATCH`] uses and
/// [`MAX_BATCH_JSON`] bytes, in order (a use too large for any batch,
/// which no field the agents fill can make, goes alone).
fn batches(uses: Vec<Usage>) -> Vec<Vec<Usage>> {
    let mut out: Vec<Vec<Usage>> = Vec::new();
    let mut bytes = 0;
    for usage in uses {
        // Each use's JSON and the comma between them.
        let size = serde_json::to_vec(&usage).map_or(0, |json| json.len()) + 1;
        match out.last_mut() {
            Some(batch) if batch.len() < MAX_USAGE_BATCH && bytes + size <= MAX_BATCH_JSON => {
                bytes += size;
                batch.push(usage);
            }
            _ => {
                // (The comma counted stands for a bracket.)
                bytes = size + 1;
                out.push(vec![usage]);
            }
        }
    }
    out
}

impl Account {
    /// Write this device's key uses, in as many batches as they need,
    /// each an entry of its own (nothing for a device that does not read
    /// the Application catalog: it holds no such keys). A batch that
    /// cannot be written does not keep the others back; the first error
    /// is returned.
    pub(super) async fn note_usage(&mut self, uses: Vec<Usage>) -> Result<(), AccountError> {
        let mut first_error = None;
        for batch in batches(uses) {
            if let Err(e) = self.note_batch(batch).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn note_batch(&mut self, uses: Vec<Usage>) -> Result<(), AccountError> {
        let Ok(store_key) = self.store_key(Store::Application).map(|k| k.public()) else {
            return Ok(());
        };
        let device = self
            .device
            .as_ref()
            .map(|d| d.udf().to_string())
            .ok_or(AccountError::NoAccount)?;
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
        Ok(latest_that_fit(rows.split_off(skip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(program: &str) -> Usage {
        Usage {
            time_ms: 1_764_000_000_000,
            operation: "ssh".into(),
            key: "a key with a fairly long name".into(),
            fingerprint: format!("SHA256:{}", "A".repeat(43)),
            pid: Some(4_194_304),
            program: Some(program.into()),
            host: Some(format!("SHA256:{}", "B".repeat(43))),
            confirmed: true,
        }
    }

    #[test]
    fn batches_keep_every_use_in_order_and_stay_small() {
        let long = format!("/{}", "long-directory-name/".repeat(10));
        let uses: Vec<Usage> = (0..1000)
            .map(|i| Usage {
                time_ms: i,
                ..usage(&long)
            })
            .collect();
        let split = batches(uses.clone());
        assert!(split.len() > 1000 / MAX_USAGE_BATCH);
        for batch in &split {
            assert!(!batch.is_empty() && batch.len() <= MAX_USAGE_BATCH);
            let json = serde_json::to_vec(batch).expect("encodes");
            assert!(json.len() <= MAX_BATCH_JSON, "{}", json.len());
        }
        assert_eq!(split.concat(), uses);
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn the_log_shown_is_the_latest_uses_that_fit_one_answer() {
        let long = format!("/{}", "long-directory-name/".repeat(10));
        let rows: Vec<UsageRow> = (0..SHOWN as u64)
            .map(|i| UsageRow {
                time_ms: i,
                device: "laptop".into(),
                operation: "ssh".into(),
                key: "key".into(),
                fingerprint: format!("SHA256:{}", "A".repeat(43)),
                pid: Some(1),
                program: Some(long.clone()),
                host: None,
                confirmed: false,
            })
            .collect();
        let shown = latest_that_fit(rows.clone());
        assert!(!shown.is_empty() && shown.len() < rows.len());
        assert!(serde_json::to_vec(&shown).expect("encodes").len() <= SHOWN_JSON);
        assert_eq!(shown.last(), rows.last());
        // Short rows: all of them.
        let short: Vec<UsageRow> = rows[..10].to_vec();
        assert_eq!(latest_that_fit(short.clone()), short);
    }
}
