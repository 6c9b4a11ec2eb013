//! The OpenPGP application: certificates in the account, keys for the
//! gpg-agent frontend, and the public parts in the user's gpg keyring.
//!
//! A certificate is two entries, both named `openpgp/<name>`:
//! - in the Application catalog (every device with the `device` right):
//!   the public certificate and the signing and encryption subkeys'
//!   secrets, without the certification (primary) key's;
//! - in MMM_Local (administrators only, and the escrow, since its store
//!   key derives from the account seed): the whole secret certificate.
//!
//! The key snapshot carries, for each certificate, the whole secret
//! certificate to an administrator (so it also certifies, and signs with a
//! primary-only key) and the subkeys to other devices; the keystore serves
//! them and the host puts the public parts in gpg's keyring.

use mesh_ipc::control::{OpenpgpAdded, OpenpgpCertificate, OpenpgpRow, Response};
use mesh_protocol::account::Store;
use mesh_protocol::application::{OPENPGP_MESSAGE_TYPE, OpenpgpEntry, valid_name};
use mesh_protocol::envelope::Event;
use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse as _;
use sequoia_openpgp::serialize::SerializeInto as _;

use super::{Account, AccountError};

fn armor_err<E>(_: E) -> AccountError {
    AccountError::Input("cannot encode the certificate".into())
}

impl Account {
    /// Put a certificate with its secrets in the account; `confirm`:
    /// whether each use of its keys is asked first (`None`: as the
    /// account has it, under this name or this fingerprint; no for a new
    /// certificate).
    pub(super) async fn openpgp_put(
        &mut self,
        cert: Cert,
        name: Option<String>,
        confirm: Option<bool>,
    ) -> Result<Response, AccountError> {
        let name = match name {
            Some(name) => name,
            None => cert
                .userids()
                .find_map(|u| u.userid().email().ok().flatten().map(str::to_owned))
                .unwrap_or_else(|| cert.fingerprint().to_hex()),
        };
        if !valid_name(&name) {
            return Err(AccountError::Input(format!(
                "bad name {name:?}: use up to 64 letters, digits, '.', '_', '-' or '@'"
            )));
        }
        let id = OpenpgpEntry::unique_id(&name);
        let primary = cert.fingerprint();
        let confirm = match confirm {
            Some(confirm) => confirm,
            None => self
                .openpgp_entries_in(Store::Application)?
                .iter()
                .any(|e| e.confirm && (e.name == name || e.fingerprint == primary.to_hex())),
        };
        // A certificate the account has already gains what is new (user
        // IDs, subkeys, secrets) and keeps the secrets it had: gpg adds a
        // subkey by handing over that key alone.
        let cert = match self
            .openpgp_entries_in(Store::Local)
            .ok()
            .and_then(|whole| {
                whole
                    .into_iter()
                    .find(|e| e.fingerprint == primary.to_hex())
            })
            .and_then(|e| Cert::from_bytes(e.secret.as_bytes()).ok())
        {
            Some(had) => had
                .merge_public_and_secret(cert)
                .map_err(|_| AccountError::Input("cannot merge the certificate".into()))?,
            None => cert,
        };
        let public =
            String::from_utf8(cert.armored().to_vec().map_err(armor_err)?).map_err(armor_err)?;
        let whole = String::from_utf8(cert.as_tsk().armored().to_vec().map_err(armor_err)?)
            .map_err(armor_err)?;
        let devices = String::from_utf8(
            cert.as_tsk()
                .set_filter(|k| k.fingerprint() != primary)
                .emit_secret_key_stubs(true)
                .armored()
                .to_vec()
                .map_err(armor_err)?,
        )
        .map_err(armor_err)?;
        let entry = |secret: String| OpenpgpEntry {
            name: name.clone(),
            fingerprint: primary.to_hex(),
            public: public.clone(),
            secret,
            confirm,
        };
        let activation = self.activation()?;
        let app_key = activation.store_key(Store::Application).ok_or_else(|| {
            AccountError::Input("this device does not have the openpgp right".into())
        })?;
        // Only administrators hold the certification key.
        let local_key = activation
            .store_key(Store::Local)
            .ok_or(AccountError::NotAdmin)?;
        let seal = |store: Store, entry: &OpenpgpEntry, key: &mesh_protocol::keys::PrivateKey| {
            let event = if self.live(store).contains_key(&id) {
                Event::Update
            } else {
                Event::New
            };
            self.entry(
                store,
                &id,
                event,
                OPENPGP_MESSAGE_TYPE,
                Some(entry),
                &activation.sign,
                &[key.public()],
            )
        };
        let app = seal(Store::Application, &entry(devices), app_key)?;
        let local = seal(Store::Local, &entry(whole), local_key)?;
        self.transact(
            vec![(Store::Application, vec![app]), (Store::Local, vec![local])],
            Vec::new(),
        )
        .await?;
        Ok(Response::OpenpgpAdded(OpenpgpAdded {
            name,
            fingerprint: primary.to_hex(),
            configured: None,
        }))
    }

    /// Switch a certificate's confirmation on or off: its entries written
    /// again with the flag (administrators only, as every OpenPGP entry).
    pub(super) async fn openpgp_set(
        &mut self,
        name: &str,
        confirm: bool,
    ) -> Result<Response, AccountError> {
        // Only administrators hold the whole certificates (MMM_Local).
        if self.activation()?.store_key(Store::Local).is_none() {
            return Err(AccountError::NotAdmin);
        }
        let whole = self
            .openpgp_entries_in(Store::Local)?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| AccountError::NotFound(format!("no OpenPGP key named {name:?}")))?;
        let cert = Cert::from_bytes(whole.secret.as_bytes())
            .map_err(|_| AccountError::Input(format!("the OpenPGP key {name:?} is damaged")))?;
        drop(whole);
        self.openpgp_put(cert, Some(name.to_owned()), Some(confirm))
            .await
    }

    /// Delete a certificate from the account.
    pub(super) async fn openpgp_delete(&mut self, name: &str) -> Result<Response, AccountError> {
        let id = OpenpgpEntry::unique_id(name);
        let sign = &self.activation()?.sign;
        if !self.live(Store::Application).contains_key(&id) {
            return Err(AccountError::NotFound(format!(
                "no OpenPGP key named {name:?}"
            )));
        }
        let tombstone = |store: Store| {
            self.entry::<()>(
                store,
                &id,
                Event::Delete,
                OPENPGP_MESSAGE_TYPE,
                None,
                sign,
                &[],
            )
        };
        let mut updates = vec![(Store::Application, vec![tombstone(Store::Application)?])];
        if self.live(Store::Local).contains_key(&id) {
            updates.push((Store::Local, vec![tombstone(Store::Local)?]));
        }
        self.transact(updates, Vec::new()).await?;
        Ok(Response::Deleted {
            deleted: name.to_owned(),
        })
    }

    fn openpgp_entries_in(&self, store: Store) -> Result<Vec<OpenpgpEntry>, AccountError> {
        let mut out = Vec::new();
        let entries =
            self.open_live_where(store, |live| live.message_type == OPENPGP_MESSAGE_TYPE)?;
        for (name, verified) in entries {
            if verified.head.message_type == OPENPGP_MESSAGE_TYPE {
                out.push(verified.record().ok_or_else(|| {
                    AccountError::untrusted(store, format!("damaged entry {name:?}"))
                })?);
            }
        }
        Ok(out)
    }

    /// `mesh openpgp list` and `export`.
    pub(super) fn openpgp_rows(
        &self,
    ) -> Result<Vec<(OpenpgpRow, OpenpgpCertificate)>, AccountError> {
        Ok(self
            .openpgp_entries_in(Store::Application)?
            .iter()
            .map(|e| {
                let user_ids: Vec<String> = Cert::from_bytes(e.public.as_bytes())
                    .map(|c| c.userids().map(|u| u.userid().to_string()).collect())
                    .unwrap_or_default();
                (
                    OpenpgpRow {
                        name: e.name.clone(),
                        fingerprint: e.fingerprint.clone(),
                        user_ids,
                        confirm: e.confirm,
                    },
                    OpenpgpCertificate {
                        name: e.name.clone(),
                        fingerprint: e.fingerprint.clone(),
                        public: e.public.clone(),
                    },
                )
            })
            .collect())
    }

    /// The certificates whose keys this device serves: for an
    /// administrator the whole secret certificate (MMM_Local), for other
    /// devices the subkeys (the Application catalog).
    pub(super) fn openpgp_keys(&self) -> Result<Vec<OpenpgpEntry>, AccountError> {
        let entries = self.openpgp_entries_in(Store::Application)?;
        let admin = self
            .activation()
            .is_ok_and(|a| a.store_key(Store::Local).is_some());
        if !admin {
            return Ok(entries);
        }
        let mut whole = match self.openpgp_entries_in(Store::Local) {
            Ok(whole) => whole,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the whole certificates; serving the subkeys");
                Vec::new()
            }
        };
        Ok(entries
            .into_iter()
            .map(|entry| {
                match whole
                    .iter()
                    .position(|w| w.fingerprint == entry.fingerprint)
                {
                    Some(at) => whole.swap_remove(at),
                    None => entry,
                }
            })
            .collect())
    }
}
