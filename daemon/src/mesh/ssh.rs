//! The SSH application: identities in the Application catalog, and the
//! agent's view of them.
//!
//! `mesh ssh create|import|delete` write [`SshIdentity`] entries through
//! the service like any catalog change; after every sync or write the
//! agent's Mesh keys are rebuilt from the catalog if it changed, so a key
//! made on one device is served by every other one after its next sync,
//! and a deleted one stops being served.

use mesh_protocol::account::{self, STORE_APPLICATION};
use mesh_protocol::application::{SSH_MESSAGE_TYPE, SshIdentity, valid_name};
use rand_core::OsRng;
use serde_json::{Value, json};
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey};
use zeroize::Zeroizing;

use super::{Mesh, MeshError, entry_type, err};
use crate::ssh::keys::Identity;

/// RSA keys `mesh ssh create --alg rsa` makes.
const RSA_BITS: u32 = 3072;

/// A key algorithm by its command-line name.
fn algorithm(name: &str) -> Result<Algorithm, MeshError> {
    Ok(match name {
        "ed25519" => Algorithm::Ed25519,
        "ecdsa" | "ecdsa-p256" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        "ecdsa-p384" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        "ecdsa-p521" => Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        "rsa" => Algorithm::Rsa { hash: None },
        other => {
            return Err(err(format!(
                "unknown algorithm {other:?}: use ed25519, ecdsa (ecdsa-p384, ecdsa-p521) or rsa"
            )));
        }
    })
}

fn check_name(name: &str) -> Result<(), MeshError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(err(format!(
            "bad name {name:?}: use up to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// A one-line summary of an identity for `mesh ssh list`.
fn describe(entry: &SshIdentity) -> Value {
    let public = ssh_key::PublicKey::from_openssh(&entry.public).ok();
    json!({
        "name": entry.name,
        "algorithm": public.as_ref().map(|k| k.algorithm().to_string()),
        "fingerprint": public.as_ref().map(|k| k.fingerprint(HashAlg::Sha256).to_string()),
        "public": entry.public,
        "confirm": entry.confirm,
    })
}

impl Mesh {
    /// Make an SSH identity and put it in the Application catalog.
    pub async fn ssh_create(
        &mut self,
        name: &str,
        alg: &str,
        confirm: bool,
    ) -> Result<Value, MeshError> {
        check_name(name)?;
        let alg = algorithm(alg)?;
        self.activation()?;
        let key = tokio::task::spawn_blocking(move || match alg {
            Algorithm::Rsa { .. } => crate::ssh::keys::generate_rsa(RSA_BITS)
                .map_err(|e| e.to_string())
                .and_then(|pair| PrivateKey::new(pair, "").map_err(|e| e.to_string())),
            alg => PrivateKey::random(&mut OsRng, alg).map_err(|e| e.to_string()),
        })
        .await
        .map_err(|_| err("key generation failed"))?
        .map_err(|e| err(format!("key generation failed: {e}")))?;
        self.ssh_put(name, key, confirm, false).await
    }

    /// Put an existing OpenSSH private key in the Application catalog.
    pub async fn ssh_import(
        &mut self,
        name: &str,
        private: &str,
        passphrase: Option<&str>,
        confirm: bool,
    ) -> Result<Value, MeshError> {
        check_name(name)?;
        self.activation()?;
        let mut key = PrivateKey::from_openssh(private)
            .map_err(|_| err("not an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)"))?;
        if key.is_encrypted() {
            let passphrase =
                passphrase.ok_or_else(|| err("the key is encrypted: give its passphrase"))?;
            key = key
                .decrypt(passphrase)
                .map_err(|_| err("wrong passphrase for the key"))?;
        }
        // Check now that the agent can use it.
        Identity::new(key.key_data(), String::new())
            .map_err(|e| err(format!("cannot use this key: {e}")))?;
        self.ssh_put(name, key, confirm, true).await
    }

    async fn ssh_put(
        &mut self,
        name: &str,
        mut key: PrivateKey,
        confirm: bool,
        replace: bool,
    ) -> Result<Value, MeshError> {
        let id = SshIdentity::unique_id(name);
        let exists = self.replicas.live(STORE_APPLICATION).contains_key(&id);
        if exists && !replace {
            return Err(err(format!(
                "an SSH identity named {name:?} exists: delete it first or pick another name"
            )));
        }
        key.set_comment(name);
        let private = key
            .to_openssh(LineEnding::LF)
            .map_err(|_| err("cannot encode the key"))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|_| err("cannot encode the key"))?;
        let entry = SshIdentity {
            name: name.to_owned(),
            public: public.clone(),
            private: private.as_str().to_owned(),
            confirm,
        };
        let activation = self.activation()?;
        let store_key = activation
            .store_key(STORE_APPLICATION)
            .ok_or_else(|| err("this device does not have the ssh right"))?;
        let envelope = account::seal_entry(
            &mut OsRng,
            &entry,
            SSH_MESSAGE_TYPE,
            &id,
            if exists { "Update" } else { "New" },
            &activation.sign,
            &[store_key.public()],
        )?;
        self.transact(vec![(STORE_APPLICATION, vec![envelope])], Vec::new())
            .await?;
        Ok(describe(&entry))
    }

    /// Delete an SSH identity from the account.
    pub async fn ssh_delete(&mut self, name: &str) -> Result<Value, MeshError> {
        let id = SshIdentity::unique_id(name);
        let activation = self.activation()?;
        if !self.replicas.live(STORE_APPLICATION).contains_key(&id) {
            return Err(err(format!("no SSH identity named {name:?}")));
        }
        let envelope = account::seal_entry(
            &mut OsRng,
            &json!({}),
            SSH_MESSAGE_TYPE,
            &id,
            "Delete",
            &activation.sign,
            &[],
        )?;
        self.transact(vec![(STORE_APPLICATION, vec![envelope])], Vec::new())
            .await?;
        Ok(json!({"deleted": name}))
    }

    /// The account's SSH identities, checked, in name order.
    fn ssh_entries(&self) -> Result<Vec<SshIdentity>, MeshError> {
        let mut out = Vec::new();
        for (_, opened) in self.open_entries(STORE_APPLICATION)? {
            if entry_type(&opened) != Some(SSH_MESSAGE_TYPE) {
                continue;
            }
            let entry: SshIdentity = serde_json::from_slice(&opened.payload)
                .map_err(|_| err("damaged SSH identity entry"))?;
            out.push(entry);
        }
        Ok(out)
    }

    /// `mesh ssh list`.
    pub fn ssh_list(&self) -> Result<Value, MeshError> {
        Ok(Value::Array(
            self.ssh_entries()?.iter().map(describe).collect(),
        ))
    }

    /// `mesh ssh get NAME`: the OpenSSH public key.
    pub fn ssh_get(&self, name: &str) -> Result<Value, MeshError> {
        self.ssh_entries()?
            .iter()
            .find(|e| e.name == name)
            .map(describe)
            .ok_or_else(|| err(format!("no SSH identity named {name:?}")))
    }

    /// `mesh ssh authorized-keys` and `mesh ssh allowed-signers`: one line
    /// per identity.
    pub fn ssh_lines(&self, allowed_signers: bool) -> Result<Value, MeshError> {
        let address = self.remote()?.account().to_owned();
        let lines: Vec<String> = self
            .ssh_entries()?
            .iter()
            .map(|e| {
                if allowed_signers {
                    format!("{address} namespaces=\"git\" {}", e.public)
                } else {
                    e.public.clone()
                }
            })
            .collect();
        Ok(json!(lines))
    }

    /// Rebuild the SSH agent's Mesh keys from the catalog.
    pub(super) fn load_ssh(&mut self, readable: bool) {
        let Some(agent) = self.ssh_agent.clone() else {
            return;
        };
        let entries = if readable {
            match self.ssh_entries() {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read SSH identities; keeping the old ones");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let mut identities = Vec::with_capacity(entries.len());
        for entry in &entries {
            let private = Zeroizing::new(entry.private.clone());
            let loaded = PrivateKey::from_openssh(private.as_str())
                .map_err(|e| e.to_string())
                .and_then(|key| {
                    Identity::new(key.key_data(), entry.name.clone()).map_err(|e| e.to_string())
                });
            match loaded {
                Ok(mut identity) => {
                    identity.confirm = entry.confirm;
                    identities.push(identity);
                }
                Err(e) => {
                    tracing::warn!(name = %entry.name, error = %e, "skipping an SSH identity")
                }
            }
        }
        tracing::info!(count = identities.len(), "SSH identities from the Mesh");
        agent.set_mesh(identities);
    }
}
