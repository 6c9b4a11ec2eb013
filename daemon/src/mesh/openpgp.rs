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
//! After a sync or write that moved the Application catalog, the agent's
//! keys are rebuilt (an administrator's from the whole certificate, so it
//! also certifies and signs with a primary-only key) and any certificate gpg does not know yet is imported
//! into its keyring (`gpg --import`, ultimately trusted), with
//! `--no-autostart` so that importing never starts the real gpg-agent.

use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;

use mesh_protocol::account::{self, STORE_APPLICATION, STORE_LOCAL};
use mesh_protocol::application::{OPENPGP_MESSAGE_TYPE, OPENPGP_PREFIX, valid_name};
use rand_core::OsRng;
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::parse::Parse as _;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroize as _;

use super::{Mesh, MeshError, entry_type, err};
use crate::gpg::keys::GpgKey;

/// An OpenPGP certificate as a catalog holds it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OpenpgpEntry {
    name: String,
    fingerprint: String,
    /// The armored public certificate.
    public: String,
    /// The armored secret keys this store's readers may hold.
    secret: String,
}

impl Drop for OpenpgpEntry {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn armor_err<E>(_: E) -> MeshError {
    err("cannot encode the certificate")
}

impl Mesh {
    /// Make an OpenPGP certificate in the account.
    pub async fn openpgp_create(
        &mut self,
        user_id: &str,
        alg: &str,
        name: Option<&str>,
    ) -> Result<Value, MeshError> {
        let suite = match alg {
            "ed25519" | "cv25519" => CipherSuite::Cv25519,
            "rsa3072" | "rsa" => CipherSuite::RSA3k,
            "nistp256" | "p256" => CipherSuite::P256,
            other => {
                return Err(err(format!(
                    "unknown algorithm {other:?}: use ed25519, rsa3072 or nistp256"
                )));
            }
        };
        let user_id = user_id.to_owned();
        let cert = tokio::task::spawn_blocking(move || {
            CertBuilder::new()
                .set_cipher_suite(suite)
                .add_userid(user_id)
                .add_signing_subkey()
                .add_transport_encryption_subkey()
                .add_storage_encryption_subkey()
                .generate()
        })
        .await
        .map_err(|_| err("key generation failed"))?
        .map_err(|e| err(format!("key generation failed: {e}")))?
        .0;
        self.openpgp_put(cert, name).await
    }

    /// Put an existing secret key (e.g. `gpg --export-secret-keys -a`) in
    /// the account.
    pub async fn openpgp_import(
        &mut self,
        armored: &str,
        name: Option<&str>,
    ) -> Result<Value, MeshError> {
        let cert =
            Cert::from_bytes(armored.as_bytes()).map_err(|_| err("not an OpenPGP secret key"))?;
        if !cert.is_tsk() {
            return Err(err(
                "no secret keys in it: export with gpg --export-secret-keys",
            ));
        }
        if cert
            .keys()
            .secret()
            .any(|k| !k.key().has_unencrypted_secret())
        {
            return Err(err(
                "the secret keys are protected by a passphrase: export them without one \
                 (gpg --pinentry-mode loopback --passphrase '' --export-secret-keys)",
            ));
        }
        self.openpgp_put(cert, name).await
    }

    async fn openpgp_put(&mut self, cert: Cert, name: Option<&str>) -> Result<Value, MeshError> {
        let name = match name {
            Some(name) => name.to_owned(),
            None => cert
                .userids()
                .find_map(|u| u.userid().email().ok().flatten().map(str::to_owned))
                .unwrap_or_else(|| cert.fingerprint().to_hex()),
        };
        if !valid_name(&name) {
            return Err(err(format!(
                "bad name {name:?}: use up to 64 letters, digits, '.', '_', '-' or '@'"
            )));
        }
        let id = format!("{OPENPGP_PREFIX}{name}");
        let primary = cert.fingerprint();
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
        };
        let activation = self.activation()?;
        let app_key = activation
            .store_key(STORE_APPLICATION)
            .ok_or_else(|| err("this device does not have the openpgp right"))?;
        let local_key = activation.store_key(STORE_LOCAL).ok_or_else(|| {
            err("only an administrator device can add OpenPGP keys (the certification key stays with administrators)")
        })?;
        let exists = self.replicas.live(STORE_APPLICATION).contains_key(&id);
        let event = if exists { "Update" } else { "New" };
        let seal = |entry: &OpenpgpEntry, key: &mesh_protocol::keys::PrivateKey| {
            account::seal_entry(
                &mut OsRng,
                entry,
                OPENPGP_MESSAGE_TYPE,
                &id,
                event,
                &activation.sign,
                &[key.public()],
            )
        };
        let app = seal(&entry(devices), app_key)?;
        let local = seal(&entry(whole), local_key)?;
        let configured = match crate::gpg::ensure_agent_program() {
            Ok(change) => change,
            Err(warning) => Some(format!("warning: {warning}")),
        };
        self.transact(
            vec![(STORE_APPLICATION, vec![app]), (STORE_LOCAL, vec![local])],
            Vec::new(),
        )
        .await?;
        Ok(json!({"name": name, "fingerprint": primary.to_hex(), "configured": configured}))
    }

    /// Delete a certificate from the account.
    pub async fn openpgp_delete(&mut self, name: &str) -> Result<Value, MeshError> {
        let id = format!("{OPENPGP_PREFIX}{name}");
        let activation = self.activation()?;
        if !self.replicas.live(STORE_APPLICATION).contains_key(&id) {
            return Err(err(format!("no OpenPGP key named {name:?}")));
        }
        let tombstone = || {
            account::seal_entry(
                &mut OsRng,
                &json!({}),
                OPENPGP_MESSAGE_TYPE,
                &id,
                "Delete",
                &activation.sign,
                &[],
            )
        };
        let mut updates = vec![(STORE_APPLICATION, vec![tombstone()?])];
        if self.replicas.live(STORE_LOCAL).contains_key(&id) {
            updates.push((STORE_LOCAL, vec![tombstone()?]));
        }
        self.transact(updates, Vec::new()).await?;
        Ok(json!({"deleted": name}))
    }

    fn openpgp_entries(&self) -> Result<Vec<OpenpgpEntry>, MeshError> {
        self.openpgp_entries_in(STORE_APPLICATION)
    }

    fn openpgp_entries_in(&self, store: &str) -> Result<Vec<OpenpgpEntry>, MeshError> {
        let mut out = Vec::new();
        for (_, opened) in self.open_entries(store)? {
            if entry_type(&opened) == Some(OPENPGP_MESSAGE_TYPE) {
                out.push(
                    serde_json::from_slice(&opened.payload)
                        .map_err(|_| err("damaged OpenPGP entry"))?,
                );
            }
        }
        Ok(out)
    }

    /// `mesh openpgp list`.
    pub fn openpgp_list(&self) -> Result<Value, MeshError> {
        Ok(Value::Array(
            self.openpgp_entries()?
                .iter()
                .map(|e| {
                    let user_ids: Vec<String> = Cert::from_bytes(e.public.as_bytes())
                        .map(|c| c.userids().map(|u| u.userid().to_string()).collect())
                        .unwrap_or_default();
                    json!({"name": e.name, "fingerprint": e.fingerprint, "user_ids": user_ids})
                })
                .collect(),
        ))
    }

    /// `mesh openpgp export NAME`: the armored public certificate.
    pub fn openpgp_export(&self, name: &str) -> Result<Value, MeshError> {
        self.openpgp_entries()?
            .iter()
            .find(|e| e.name == name)
            .map(|e| json!({"name": e.name, "fingerprint": e.fingerprint, "public": e.public}))
            .ok_or_else(|| err(format!("no OpenPGP key named {name:?}")))
    }

    /// Rebuild the gpg-agent keys from the catalog, and import new
    /// certificates into gpg's keyring.
    pub(super) fn refresh_openpgp(&mut self, readable: bool) {
        let Some(agent) = self.gpg_agent.clone() else {
            return;
        };
        let entries = if readable {
            match self.openpgp_entries() {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read OpenPGP keys; keeping the old ones");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        // An administrator holds the whole certificate, certification key
        // included (MMM_Local); other devices the subkeys.
        let whole: Vec<OpenpgpEntry> = if readable
            && self
                .activation()
                .is_ok_and(|a| a.store_key(STORE_LOCAL).is_some())
        {
            self.openpgp_entries_in(STORE_LOCAL).unwrap_or_default()
        } else {
            Vec::new()
        };
        let policy = StandardPolicy::new();
        let mut keys = Vec::new();
        for entry in &entries {
            let secret = whole
                .iter()
                .find(|w| w.fingerprint == entry.fingerprint)
                .map_or(&entry.secret, |w| &w.secret);
            let Ok(cert) = Cert::from_bytes(secret.as_bytes()) else {
                tracing::warn!(name = %entry.name, "skipping a damaged OpenPGP key");
                continue;
            };
            for ka in cert.keys().with_policy(&policy, None).secret() {
                let key = ka.key();
                if let Some(secret) = key.optional_secret() {
                    match GpgKey::new(key.mpis(), secret, entry.name.clone()) {
                        Ok(k) => keys.push(k),
                        Err(e) => tracing::debug!(error = %e, "OpenPGP key not served"),
                    }
                }
            }
            let imported = Arc::clone(&self.gpg_imported);
            let fresh = imported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(entry.fingerprint.clone());
            if fresh {
                // In the background: gpg asks this very daemon's agent
                // socket while it imports.
                let (name, fingerprint, public) = (
                    entry.name.clone(),
                    entry.fingerprint.clone(),
                    entry.public.clone(),
                );
                tokio::spawn(async move {
                    if !import_into_gpg(&name, &fingerprint, &public).await {
                        imported
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&fingerprint);
                    }
                });
            }
        }
        if !entries.is_empty() {
            match crate::gpg::ensure_agent_program() {
                Ok(Some(change)) => tracing::info!("{change}"),
                Ok(None) => {}
                Err(warning) => tracing::warn!("{warning}"),
            }
        }
        tracing::info!(count = keys.len(), "OpenPGP keys from the Mesh");
        agent.set(keys);
    }
}

/// `gpg --import` the public certificate and trust it ultimately.
async fn import_into_gpg(name: &str, fingerprint: &str, public: &str) -> bool {
    async fn run(args: &[&str], input: &str) -> bool {
        let child = tokio::process::Command::new("gpg")
            .args(["--batch", "--no-autostart", "--quiet"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = child else {
            tracing::warn!("cannot run gpg to import a certificate");
            return false;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        match child.wait_with_output().await {
            Ok(out) if out.status.success() => true,
            Ok(out) => {
                tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "gpg failed");
                false
            }
            Err(_) => false,
        }
    }
    let imported = run(&["--import"], public).await
        && run(&["--import-ownertrust"], &format!("{fingerprint}:6:\n")).await;
    if imported {
        tracing::info!(name, "certificate imported into gpg's keyring");
    }
    imported
}
