//! The SSH application: identities in the Application catalog.
//!
//! `mesh ssh create|import|delete` write [`SshIdentity`] entries through
//! the service like any catalog change; the account's key snapshot carries
//! them to the keystore, so a key made on one device is served by every
//! other one after its next sync, and a deleted one stops being served.

use mesh_ipc::control::{Response, SshIdentityRow};
use mesh_protocol::account::Store;
use mesh_protocol::application::{
    MAX_SSH_ACCEPTED, SSH_ACCEPTED_MESSAGE_TYPE, SSH_ACCEPTED_PREFIX, SSH_MESSAGE_TYPE,
    SshAccepted, SshIdentity, valid_name,
};
use mesh_protocol::envelope::Event;
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use super::{Account, AccountError};

/// An SSH identity to put in the account: a private key the keystore has
/// checked it can use.
pub struct SshPut {
    /// Its name.
    pub name: String,
    /// The key (decrypted).
    pub key: PrivateKey,
    /// Ask before each signature.
    pub confirm: bool,
    /// Replace an identity of that name (an import) rather than refuse.
    pub replace: bool,
    /// The hosts it is for (none: every host).
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for SshPut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshPut")
            .field("name", &self.name)
            .field("confirm", &self.confirm)
            .finish_non_exhaustive()
    }
}

/// Check an application name.
pub(crate) fn check_name(name: &str) -> Result<(), AccountError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(AccountError::Input(format!(
            "bad name {name:?}: use up to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// Check host patterns: host names, or patterns with `*` and `?`.
fn check_hosts(hosts: &[String]) -> Result<(), AccountError> {
    for host in hosts {
        if host.is_empty() || host.len() > 255 || !host.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AccountError::Input(format!(
                "bad host pattern {host:?}: a host name, or a pattern with * and ?"
            )));
        }
    }
    Ok(())
}

/// A one-line summary of an identity for `mesh ssh list`.
fn describe(entry: &SshIdentity) -> SshIdentityRow {
    let public = ssh_key::PublicKey::from_openssh(&entry.public).ok();
    SshIdentityRow {
        name: entry.name.clone(),
        algorithm: public.as_ref().map(|k| k.algorithm().to_string()),
        fingerprint: public
            .as_ref()
            .map(|k| k.fingerprint(HashAlg::Sha256).to_string()),
        public: entry.public.clone(),
        confirm: entry.confirm,
        hosts: entry.hosts.clone(),
        taken_by: 0,
    }
}

impl Account {
    /// Put an SSH identity in the Application catalog.
    pub(super) async fn ssh_put(&mut self, put: SshPut) -> Result<Response, AccountError> {
        let SshPut {
            name,
            mut key,
            confirm,
            replace,
            hosts,
        } = put;
        check_hosts(&hosts)?;
        check_name(&name)?;
        let id = SshIdentity::unique_id(&name);
        let exists = self.live(Store::Application).contains_key(&id);
        if exists && !replace {
            return Err(AccountError::Exists(format!(
                "an SSH identity named {name:?} exists: delete it first or pick another name"
            )));
        }
        key.set_comment(&name);
        let cannot = || AccountError::Input("cannot encode the key".into());
        let private = crate::hygiene::then_wipe_stack(|| key.to_openssh(LineEnding::LF))
            .map_err(|_| cannot())?;
        let public = key.public_key().to_openssh().map_err(|_| cannot())?;
        let entry = SshIdentity {
            name,
            public,
            private: private.as_str().to_owned(),
            confirm,
            hosts,
        };
        let event = if exists { Event::Update } else { Event::New };
        self.write_identity(&entry, event).await?;
        Ok(Response::SshIdentity(describe(&entry)))
    }

    /// Write an identity's entry to the Application catalog.
    async fn write_identity(
        &mut self,
        entry: &SshIdentity,
        event: Event,
    ) -> Result<(), AccountError> {
        let store_key = self
            .activation()?
            .store_key(Store::Application)
            .ok_or_else(|| AccountError::Input("this device does not have the ssh right".into()))?
            .public();
        let envelope = self.entry(
            Store::Application,
            &SshIdentity::unique_id(&entry.name),
            event,
            SSH_MESSAGE_TYPE,
            Some(entry),
            &self.activation()?.sign,
            &[store_key],
        )?;
        self.transact(vec![(Store::Application, vec![envelope])], Vec::new())
            .await
    }

    /// Change which hosts an identity is for: the entry again, with new
    /// hosts (the account's rules let its author and administrators).
    pub(super) async fn ssh_set(
        &mut self,
        name: &str,
        hosts: Vec<String>,
    ) -> Result<Response, AccountError> {
        check_hosts(&hosts)?;
        let mut entry = self
            .ssh_entries()?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| AccountError::NotFound(format!("no SSH identity named {name:?}")))?;
        entry.hosts = hosts;
        self.write_identity(&entry, Event::Update).await?;
        Ok(Response::SshIdentity(describe(&entry)))
    }

    /// Delete an SSH identity from the account.
    pub(super) async fn ssh_delete(&mut self, name: &str) -> Result<Response, AccountError> {
        let id = SshIdentity::unique_id(name);
        let sign = &self.activation()?.sign;
        if !self.live(Store::Application).contains_key(&id) {
            return Err(AccountError::NotFound(format!(
                "no SSH identity named {name:?}"
            )));
        }
        let envelope = self.entry::<()>(
            Store::Application,
            &id,
            Event::Delete,
            SSH_MESSAGE_TYPE,
            None,
            sign,
            &[],
        )?;
        self.transact(vec![(Store::Application, vec![envelope])], Vec::new())
            .await?;
        Ok(Response::Deleted {
            deleted: name.to_owned(),
        })
    }

    /// The account's SSH identities, checked, in name order.
    pub(super) fn ssh_entries(&self) -> Result<Vec<SshIdentity>, AccountError> {
        let mut out = Vec::new();
        let entries = self.open_live_where(Store::Application, |live| {
            live.message_type == SSH_MESSAGE_TYPE
        })?;
        for (name, verified) in entries {
            if verified.head.message_type != SSH_MESSAGE_TYPE {
                continue;
            }
            let entry: SshIdentity = verified.record().ok_or_else(|| {
                AccountError::untrusted(Store::Application, format!("damaged entry {name:?}"))
            })?;
            out.push(entry);
        }
        Ok(out)
    }

    /// Note that a server took a key: this device's `ssh-accepted/` record
    /// in the Application catalog gains the pair (nothing is written if it
    /// has it, is full, or this device does not use SSH keys).
    pub(super) async fn ssh_accepted(
        &mut self,
        host: String,
        key: String,
    ) -> Result<(), AccountError> {
        let Ok(store_key) = self.store_key(Store::Application).map(|k| k.public()) else {
            return Ok(());
        };
        let udf = self
            .device
            .as_ref()
            .map(|d| d.udf().to_string())
            .ok_or(AccountError::NoAccount)?;
        let id = format!("{SSH_ACCEPTED_PREFIX}{udf}");
        let live = self.live(Store::Application);
        let mut record = self
            .open_live_where(Store::Application, |live| {
                live.message_type == SSH_ACCEPTED_MESSAGE_TYPE
            })?
            .into_iter()
            .find(|(name, _)| *name == id)
            .and_then(|(_, v)| v.record::<SshAccepted>())
            .unwrap_or_else(|| SshAccepted {
                device: udf,
                pairs: Vec::new(),
            });
        let pair = (host, key);
        if record.pairs.contains(&pair) || record.pairs.len() >= MAX_SSH_ACCEPTED {
            return Ok(());
        }
        record.pairs.push(pair);
        let event = if live.contains_key(&id) {
            Event::Update
        } else {
            Event::New
        };
        let entry = self.entry(
            Store::Application,
            &id,
            event,
            SSH_ACCEPTED_MESSAGE_TYPE,
            Some(&record),
            &self.activation()?.sign,
            &[store_key],
        )?;
        self.transact(vec![(Store::Application, vec![entry])], Vec::new())
            .await
    }

    /// Every device's `(host, key)` pairs.
    pub(super) fn ssh_accepted_pairs(&self) -> Vec<(String, String)> {
        let Ok(entries) = self.open_live_where(Store::Application, |live| {
            live.message_type == SSH_ACCEPTED_MESSAGE_TYPE
        }) else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|(_, v)| v.head.message_type == SSH_ACCEPTED_MESSAGE_TYPE)
            .filter_map(|(_, v)| v.record::<SshAccepted>())
            .flat_map(|r| r.pairs)
            .collect()
    }

    /// `mesh ssh list`.
    pub(super) fn ssh_rows(&self) -> Result<Vec<SshIdentityRow>, AccountError> {
        let taken = self.ssh_accepted_pairs();
        Ok(self
            .ssh_entries()?
            .iter()
            .map(|entry| {
                let mut row = describe(entry);
                let mut hosts: Vec<&String> = taken
                    .iter()
                    .filter(|(_, key)| Some(key) == row.fingerprint.as_ref())
                    .map(|(host, _)| host)
                    .collect();
                hosts.sort();
                hosts.dedup();
                row.taken_by = hosts.len();
                row
            })
            .collect())
    }
}
