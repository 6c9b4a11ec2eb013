//! This device's account: its seed, its activation, the replicas of the
//! catalogs, and the service they sync through.
//!
//! One task owns the [`Account`] ([`spawn`]); everything that changes it
//! (enrolment, administration, catalog writes, sync ticks) is a [`Command`]
//! sent through its [`Handle`] and done one at a time. What it holds is
//! published, so readers never queue behind a write or a slow service:
//! the [`View`] (status, devices, catalogs and application entries, as the
//! control socket shows them) through a `watch` channel; the
//! [`KeySnapshot`] (the private keys the agents serve) moved to the
//! keystore through a channel of its own, so no copy stays here; and its
//! public side, the [`Certificates`], through a `watch` channel that gpg's
//! keyring follows. Nothing here knows a socket, a frontend or gpg.
//!
//! Everything the service sends is checked before it is believed: frames
//! must extend the local replica (so a dropped, reordered, altered or
//! forged frame, or a rewritten history, is refused), a store may not
//! shrink (rollback), the service may name only the stores this device's
//! roles read, and records are opened only through the account's chain of
//! signatures.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_ipc::control::{
    AccountStatus, DeviceRow, OpenpgpCertificate, OpenpgpRow, PendingRequest, Response,
    SshIdentityRow, Standing,
};
use mesh_ipc::paths::Paths;
use mesh_protocol::account::{
    self, AccountKeys, Activation, CatalogedDevice, DeviceKeys, ProfileUser, Role, Store,
};
use mesh_protocol::application::{OpenpgpEntry, SshIdentity};
use mesh_protocol::envelope::Envelope;
use mesh_protocol::keys::PublicKey;
use mesh_protocol::service::{ServiceRequest, ServiceResponse};
use mesh_protocol::udf::Udf;
use mesh_protocol::udf::seed::Seed;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

pub use error::AccountError;

use crate::service_client::{Connector, Remote, TIME_FILE};
use crate::store::replica::Replicas;
use crate::store::secrets::SecretStore;

mod admin;
mod approval;
mod catalog;
mod enroll;
mod error;
mod ledger;
mod openpgp;
mod ssh;
mod sync;
#[cfg(test)]
mod tests;
mod usage;

/// The secret-store name of the device seed.
const DEVICE_SEED: &str = "device-seed";
/// The file (in the data directory, no secret in it) that records where
/// the device seed is kept: `file` or `secret-service`. It is written when
/// the seed is, and read at each start, so that a session with another
/// D-Bus (an ssh login after a desktop one) does not guess again.
const SECRETS_BACKEND: &str = "secrets-backend";

/// How long a service call may go unanswered before the view says that
/// the service does not answer (the call itself goes on until its own
/// time-out).
const SLOW_SERVICE: Duration = Duration::from_secs(3);

/// What the account needs to open.
#[derive(Clone)]
pub struct Settings {
    /// Where it lives.
    pub paths: Paths,
    /// `MESH_KEYRING`: force `file` or `secret-service`.
    pub keyring: Option<String>,
    /// Whether the session has a D-Bus bus (so maybe a Secret Service).
    pub session_bus: bool,
    /// How to reach a service.
    pub connector: Connector,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("paths", &self.paths)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

/// What is kept on disk about the account (no secrets): `account.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    address: String,
    service: String,
    device_name: String,
    #[serde(rename = "status")]
    standing: Standing,
    /// The account's profile, as the service first gave it.
    profile: String,
    /// While a connection request waits: its id and code.
    pending: Option<PendingConnection>,
    /// Inbound requests this administrator has answered.
    #[serde(default)]
    handled: Vec<String>,
    /// This device's own Device catalog entry as it was given (sealed to
    /// this device): activation does not depend on the replica, which may
    /// have been set aside.
    #[serde(default)]
    device_entry: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingConnection {
    response_id: String,
    witness: String,
}

/// The account as this device holds it. Owned by one task.
pub struct Account {
    settings: Settings,
    secrets: SecretStore,
    state: Option<State>,
    device: Option<DeviceKeys>,
    activation: Option<Activation>,
    replicas: Replicas,
    remote: Option<Remote>,
    /// The last sync's problems: `service` or a store's name.
    sync_errors: BTreeMap<String, String>,
    last_sync: Option<u64>,
    /// What the last [`KeySnapshot`] was made from, to make one only on
    /// change.
    keys_from: Option<Vec<u64>>,
    /// What the last [`View`]'s entries were made from.
    view_from: Option<Vec<u64>>,
    /// What the replicas mean, checked.
    ledgers: ledger::Ledgers,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Now, in ms since the epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Account {
    /// Load what this device knows: its state file, seed and replicas.
    pub fn open(settings: Settings) -> Result<Account, AccountError> {
        let paths = &settings.paths;
        let recorded = match std::fs::read_to_string(paths.data_dir.join(SECRETS_BACKEND)) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let secrets = SecretStore::open(
            &paths.data_dir.join("secrets"),
            settings.keyring.as_deref().or(recorded.as_deref()),
            settings.session_bus,
        )?;
        let state: Option<State> = match std::fs::read(paths.data_dir.join("account.json")) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|_| AccountError::Io("account.json is damaged".into()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let device = match secrets.get(DEVICE_SEED)? {
            Some(seed) => Some(DeviceKeys::from_seed(parse_seed(&seed)?)?),
            None => None,
        };
        if device.is_some() && recorded.is_none() {
            // (A seed kept before the record existed.)
            std::fs::write(paths.data_dir.join(SECRETS_BACKEND), secrets.kind())?;
        }
        let replicas = Replicas::open(&paths.data_dir.join("stores"))?;
        let remote = match &state {
            Some(s) => Some(Remote::with_time_file(
                (settings.connector)(&s.service)?,
                &s.address,
                &paths.data_dir.join(TIME_FILE),
            )),
            None => None,
        };
        let mut sync_errors = BTreeMap::new();
        for (store, why) in replicas.set_aside() {
            sync_errors.insert(
                store.name().to_owned(),
                format!("the local replica was damaged ({why}); it was set aside to sync again"),
            );
        }
        let mut account = Account {
            settings,
            secrets,
            state,
            device,
            activation: None,
            replicas,
            remote,
            sync_errors,
            last_sync: None,
            keys_from: None,
            view_from: None,
            ledgers: ledger::Ledgers::default(),
        };
        if account.standing() == Standing::Connected {
            account.activate()?;
        }
        Ok(account)
    }

    fn standing(&self) -> Standing {
        self.state.as_ref().map_or(Standing::None, |s| s.standing)
    }

    fn set_standing(&mut self, standing: Standing) {
        if let Some(state) = &mut self.state {
            state.standing = standing;
        }
    }

    fn save(&self) -> Result<(), AccountError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let dir = &self.settings.paths.data_dir;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".account.json.tmp");
        let json = serde_json::to_vec_pretty(state)
            .map_err(|_| AccountError::Io("cannot encode account.json".into()))?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, dir.join("account.json"))?;
        Ok(())
    }

    /// This device's keys, made on first use and kept in the secret store.
    fn device_keys(&mut self) -> Result<&DeviceKeys, AccountError> {
        if self.device.is_none() {
            let keys = DeviceKeys::generate(&mut OsRng)?;
            let text = Zeroizing::new(keys.seed().to_udf().to_string());
            self.secrets.set(DEVICE_SEED, text.as_bytes())?;
            let dir = &self.settings.paths.data_dir;
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(SECRETS_BACKEND), self.secrets.kind())?;
            self.device = Some(keys);
        }
        self.device
            .as_ref()
            .ok_or_else(|| AccountError::Io("no device keys".into()))
    }

    /// A client of `service` for `address` that keeps its request times
    /// in the data directory.
    fn remote_for(&self, service: &str, address: &str) -> Result<Remote, AccountError> {
        Ok(Remote::with_time_file(
            (self.settings.connector)(service)?,
            address,
            &self.settings.paths.data_dir.join(TIME_FILE),
        ))
    }

    fn remote(&self) -> Result<&Remote, AccountError> {
        self.remote.as_ref().ok_or(AccountError::NoAccount)
    }

    fn activation(&self) -> Result<&Activation, AccountError> {
        match self.standing() {
            Standing::Revoked => Err(AccountError::Revoked),
            Standing::Pending => Err(AccountError::Pending),
            _ => self.activation.as_ref().ok_or(AccountError::NoAccount),
        }
    }

    fn admin(&self) -> Result<&AccountKeys, AccountError> {
        self.activation()?
            .account
            .as_ref()
            .ok_or(AccountError::NotAdmin)
    }

    /// The key of `store`, if this device's roles grant it.
    fn store_key(&self, store: Store) -> Result<&mesh_protocol::keys::PrivateKey, AccountError> {
        self.activation()?
            .store_key(store)
            .ok_or_else(|| AccountError::Input(format!("this device may not use {store}")))
    }

    /// Re-open this device's activation from its Device catalog entry
    /// (the latest one, which is sealed to this device's own key too),
    /// then fold the replicas; this device must be live in them.
    fn activate(&mut self) -> Result<(), AccountError> {
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| AccountError::Io("the device seed is missing".into()))?;
        let state = self.state.as_ref().ok_or(AccountError::NoAccount)?;
        let (profile, _) = account::verify_profile::<ProfileUser>(&state.profile)?;
        let admin = profile.administrator_signature.key()?;
        let udf = device.udf().to_string();
        let kept = state
            .device_entry
            .as_deref()
            .and_then(|json| Envelope::from_json(json.as_bytes()).ok());
        let cataloged = (1..=self.replicas.len(Store::Device))
            .rev()
            .filter_map(|index| self.replicas.frame(Store::Device, index))
            .chain(kept)
            .find_map(|frame| {
                open_cataloged(&frame, device, &state.address, &admin)
                    .ok()
                    .filter(|c| c.device_udf == udf)
            })
            .ok_or_else(|| {
                // A replica of meshd before entry format 2 opens, and does
                // not read as an entry: say so rather than "not in it".
                let old = (1..=self.replicas.len(Store::Device))
                    .filter_map(|index| self.replicas.frame(Store::Device, index))
                    .any(|frame| {
                        let opened = mesh_protocol::entry::open(
                            &frame,
                            &state.address,
                            Store::Device,
                            Some(&device.encrypt),
                            std::slice::from_ref(&admin),
                        );
                        matches!(opened, Err(mesh_protocol::entry::EntryError::Format))
                    });
                if old {
                    AccountError::untrusted(
                        Store::Device,
                        "this account's catalogs are in entry format 1, which this meshd no longer reads (their metadata is not signed): make a new account",
                    )
                } else {
                    AccountError::untrusted(Store::Device, "this device is not in the Device catalog")
                }
            })?;
        self.activation = Some(Activation::open(device, &state.profile, &cataloged)?);
        self.refold()?;
        // (An empty Device replica was set aside: the next sync tells.)
        let devices = self.live(Store::Device);
        if !devices.is_empty() && !devices.contains_key(&udf) {
            return Err(AccountError::Revoked);
        }
        Ok(())
    }

    /// Sign as this device: its co-generated key once active.
    fn signer(&self) -> Result<(String, &mesh_protocol::keys::PrivateKey), AccountError> {
        let device = self.device.as_ref().ok_or(AccountError::NoAccount)?;
        Ok((device.udf().to_string(), &self.activation()?.sign))
    }

    async fn call(&self, request: ServiceRequest) -> Result<ServiceResponse, AccountError> {
        let (device, key) = self.signer()?;
        Ok(self.remote()?.call(&request, Some((&device, key))).await?)
    }

    /// The account and this device.
    fn status(&self) -> AccountStatus {
        let secrets = self.secrets.describe();
        let Some(state) = &self.state else {
            return AccountStatus {
                status: Standing::None,
                address: None,
                service: None,
                profile: None,
                device: None,
                device_name: None,
                admin: false,
                roles: None,
                stores: BTreeMap::new(),
                last_sync_ms: None,
                sync_errors: BTreeMap::new(),
                denied: Vec::new(),
                unanswered_since_ms: None,
                witness: None,
                secrets,
            };
        };
        let profile = account::verify_profile::<ProfileUser>(&state.profile)
            .map(|(p, _)| p.profile_signature.udf)
            .ok();
        AccountStatus {
            status: state.standing,
            address: Some(state.address.clone()),
            service: Some(state.service.clone()),
            profile,
            device: self.device.as_ref().map(|d| d.udf().to_string()),
            device_name: Some(state.device_name.clone()),
            admin: self
                .activation
                .as_ref()
                .is_some_and(|a| a.account.is_some()),
            roles: self.activation.as_ref().map(|a| a.connection.roles.clone()),
            stores: Store::ALL
                .into_iter()
                .filter_map(|s| self.replicas.sequence(s).map(|r| (s, r.len())))
                .collect(),
            last_sync_ms: self.last_sync,
            sync_errors: self.sync_errors.clone(),
            denied: self.ledgers.denied(),
            unanswered_since_ms: None,
            witness: state.pending.as_ref().map(|p| p.witness.clone()),
            secrets,
        }
    }

    /// The live devices, by name: `(name, cataloged)`.
    fn devices(&self) -> Result<Vec<(String, CatalogedDevice)>, AccountError> {
        let mut out = Vec::new();
        for (_, verified) in self.open_live(Store::Device)? {
            let device: CatalogedDevice = verified
                .record()
                .ok_or_else(|| AccountError::untrusted(Store::Device, "damaged entry"))?;
            out.push((device.name.clone(), device));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether this device is in an account (and so should sync).
    fn should_sync(&self) -> bool {
        matches!(self.standing(), Standing::Connected | Standing::Pending)
    }

    /// What the views are made from: standing, handled requests and each
    /// store's length. Equal marks mean equal views.
    fn marks(&self) -> Vec<u64> {
        let mut marks = vec![
            self.standing() as u64,
            self.state.as_ref().map_or(0, |s| s.handled.len() as u64),
        ];
        marks.extend(Store::ALL.iter().map(|s| self.replicas.len(*s)));
        marks
    }

    /// What the key snapshot is made from: standing, and the live version
    /// of each entry that carries keys or what servers took (a usage
    /// batch or a catalog value changes no key, and makes no snapshot).
    fn key_marks(&self) -> Vec<u64> {
        use mesh_protocol::application::{
            OPENPGP_MESSAGE_TYPE, SSH_ACCEPTED_MESSAGE_TYPE, SSH_MESSAGE_TYPE,
        };
        let mut marks = vec![self.standing() as u64];
        for store in [Store::Application, Store::Local] {
            marks.extend(
                self.live(store)
                    .values()
                    .filter(|live| {
                        matches!(
                            live.message_type.as_str(),
                            SSH_MESSAGE_TYPE | OPENPGP_MESSAGE_TYPE | SSH_ACCEPTED_MESSAGE_TYPE
                        )
                    })
                    .map(|live| live.index),
            );
            marks.push(u64::MAX);
        }
        marks
    }

    /// Do one command.
    async fn execute(&mut self, command: Command) -> Result<Response, AccountError> {
        match command {
            Command::Create {
                address,
                service,
                name,
            } => self.create(&address, &service, &name).await,
            Command::Sync => Ok(Response::Synced(self.sync().await)),
            Command::Escrow { shares, quorum } => self.escrow(shares, quorum),
            Command::Recover { shares, rejoin } => self.recover(&shares, rejoin).await,
            Command::Pin { roles, expires_in } => self.pin(roles, expires_in).await,
            Command::Connect {
                address,
                service,
                name,
                pin,
                profile,
            } => {
                self.connect(
                    &address,
                    &service,
                    &name,
                    pin.as_deref(),
                    profile.as_deref(),
                )
                .await
            }
            Command::ConnectStatus => self.poll_connection().await,
            Command::Answer { code, accept } => self.answer(&code, accept).await,
            Command::Revoke { name } => self.revoke(&name).await,
            Command::CatalogImport { store, entries } => self.catalog_import(store, &entries).await,
            Command::CatalogDelete { store, name } => self.catalog_delete(store, &name).await,
            Command::SshPut(put) => self.ssh_put(*put).await,
            Command::SshSet { name, hosts } => self.ssh_set(&name, hosts).await,
            Command::SshDelete { name } => self.ssh_delete(&name).await,
            Command::Usage(uses) => {
                let noted = uses.len();
                self.note_usage(uses).await?;
                Ok(Response::Lines {
                    lines: vec![format!("{noted} uses noted")],
                })
            }
            Command::SshAccepted { host, key } => {
                let line = format!("{key} taken by {host}");
                self.ssh_accepted(host, key).await?;
                Ok(Response::Lines { lines: vec![line] })
            }
            Command::OpenpgpPut {
                cert,
                name,
                confirm,
            } => self.openpgp_put(*cert, name, confirm).await,
            Command::OpenpgpSet { name, confirm } => self.openpgp_set(&name, confirm).await,
            Command::OpenpgpDelete { name } => self.openpgp_delete(&name).await,
            Command::AskApproval(question) => self.ask_approval(*question).await,
            Command::AnswerApproval { id, approved } => self.answer_approval(&id, approved).await,
            Command::WithdrawApproval { id } => self.withdraw_approval(&id).await,
        }
    }
}

/// What the account's task is asked to do: every change to the account.
/// Reads are answered from the [`View`] instead. Its `Debug` names the
/// command only: several carry secrets (shares, PINs, values, keys).
#[non_exhaustive]
pub enum Command {
    /// Make an account with this device as its first administrator.
    Create {
        /// Its address.
        address: String,
        /// Its service's URL.
        service: String,
        /// This device's name.
        name: String,
    },
    /// Sync now.
    Sync,
    /// Split the account seed into shares.
    Escrow {
        /// How many.
        shares: usize,
        /// How many recover it.
        quorum: usize,
    },
    /// Rebuild the account seed from shares, and maybe rejoin.
    Recover {
        /// The shares (secrets).
        shares: Vec<String>,
        /// `(address, service, device name)` to rejoin as.
        rejoin: Option<(String, String, String)>,
    },
    /// Register a PIN.
    Pin {
        /// The roles it grants.
        roles: Vec<Role>,
        /// How long it is accepted.
        expires_in: Duration,
    },
    /// Ask to join an account.
    Connect {
        /// Its address.
        address: String,
        /// Its service's URL.
        service: String,
        /// This device's name.
        name: String,
        /// A PIN, to skip approval.
        pin: Option<String>,
        /// The account's profile fingerprint, when known (from a connect
        /// URI): another account is refused.
        profile: Option<String>,
    },
    /// Ask the service how the connection request stands.
    ConnectStatus,
    /// Accept (with roles and maybe a name) or reject a request.
    Answer {
        /// Its witness code.
        code: String,
        /// Roles and name if accepted; `None` rejects.
        accept: Option<(Vec<Role>, Option<String>)>,
    },
    /// Revoke a device by name.
    Revoke {
        /// Its name.
        name: String,
    },
    /// Add or replace catalog entries.
    CatalogImport {
        /// The catalog.
        store: Store,
        /// `(name, value)` pairs.
        entries: Vec<(String, String)>,
    },
    /// Delete a catalog entry.
    CatalogDelete {
        /// The catalog.
        store: Store,
        /// The entry.
        name: String,
    },
    /// Put an SSH identity in the account.
    SshPut(Box<SshPut>),
    /// Delete an SSH identity.
    SshDelete {
        /// Its name.
        name: String,
    },
    /// Change which hosts an SSH identity is for.
    SshSet {
        /// Its name.
        name: String,
        /// The hosts (none: every host).
        hosts: Vec<String>,
    },
    /// Write a batch of this device's key uses to the usage log.
    Usage(Vec<mesh_protocol::application::Usage>),
    /// Note (and share with the other devices) that a server took a key.
    SshAccepted {
        /// The server's host key, its SHA-256 fingerprint.
        host: String,
        /// The key, its SHA-256 fingerprint.
        key: String,
    },
    /// Put an OpenPGP certificate (with secrets) in the account.
    OpenpgpPut {
        /// The certificate.
        cert: Box<sequoia_openpgp::Cert>,
        /// Its name (default: its email address).
        name: Option<String>,
        /// Ask before each use of its keys; `None`: as the account has
        /// it already (not for a new certificate).
        confirm: Option<bool>,
    },
    /// Switch an OpenPGP certificate's confirmation on or off.
    OpenpgpSet {
        /// Its name.
        name: String,
        /// Ask before each use of its keys.
        confirm: bool,
    },
    /// Delete an OpenPGP certificate.
    OpenpgpDelete {
        /// Its name.
        name: String,
    },
    /// Ask the account's other devices to approve a use of a key.
    AskApproval(Box<Question>),
    /// Answer another device's approval request.
    AnswerApproval {
        /// The request's id.
        id: String,
        /// Yes or no.
        approved: bool,
    },
    /// Delete this device's approval request.
    WithdrawApproval {
        /// Its id.
        id: String,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Create { .. } => "Create",
            Command::Sync => "Sync",
            Command::Escrow { .. } => "Escrow",
            Command::Recover { .. } => "Recover",
            Command::Pin { .. } => "Pin",
            Command::Connect { .. } => "Connect",
            Command::ConnectStatus => "ConnectStatus",
            Command::Answer { .. } => "Answer",
            Command::Revoke { .. } => "Revoke",
            Command::CatalogImport { .. } => "CatalogImport",
            Command::CatalogDelete { .. } => "CatalogDelete",
            Command::SshPut(_) => "SshPut",
            Command::SshSet { .. } => "SshSet",
            Command::SshDelete { .. } => "SshDelete",
            Command::SshAccepted { .. } => "SshAccepted",
            Command::Usage(_) => "Usage",
            Command::OpenpgpPut { .. } => "OpenpgpPut",
            Command::OpenpgpSet { .. } => "OpenpgpSet",
            Command::OpenpgpDelete { .. } => "OpenpgpDelete",
            Command::AskApproval(_) => "AskApproval",
            Command::AnswerApproval { .. } => "AnswerApproval",
            Command::WithdrawApproval { .. } => "WithdrawApproval",
        })
    }
}

pub use approval::{Approvals, Question};
pub use ssh::SshPut;
pub(crate) use ssh::check_name;

/// What the account shows, as of its last change: every local read is
/// answered from this, never by waiting for the account's task.
#[derive(Debug, Clone)]
pub struct View {
    /// `mesh account status`.
    pub status: AccountStatus,
    /// `mesh device list`.
    pub devices: Result<Vec<DeviceRow>, AccountError>,
    /// `mesh device pending`.
    pub pending: Result<Vec<PendingRequest>, AccountError>,
    /// `mesh ssh list`.
    pub ssh: Result<Vec<SshIdentityRow>, AccountError>,
    /// `mesh openpgp list` and `export`.
    pub openpgp: Result<Vec<(OpenpgpRow, OpenpgpCertificate)>, AccountError>,
    /// `mesh catalog list application`.
    pub application: Result<Arc<CatalogValues>, AccountError>,
    /// `mesh catalog list credential`.
    pub credential: Result<Arc<CatalogValues>, AccountError>,
    /// `mesh log`.
    pub usage: Result<Vec<mesh_ipc::control::UsageRow>, AccountError>,
    /// Approval requests: answers to this device's, other devices' waiting
    /// (`mesh approve`).
    pub approvals: Result<Arc<Approvals>, AccountError>,
}

/// A catalog's entries, name to value. The values are secrets (passwords,
/// tokens): shared, not copied, with the view; never printed; wiped when
/// the last view holding them goes. Like the keystore's keys, they stay
/// in meshd's memory while they are current, so that reading them never
/// waits for the account's task.
#[derive(Default)]
pub struct CatalogValues(BTreeMap<String, Zeroizing<String>>);

impl CatalogValues {
    /// Each entry's name and value, in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.as_str())
    }
}

impl std::fmt::Debug for CatalogValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CatalogValues({} entries)", self.0.len())
    }
}

/// The private keys the agents serve, as of the account's last change.
/// It moves (it is not shared): the keystore parses it and drops it, so
/// no copy of the keys' text stays behind. `generation` grows with each.
#[derive(Debug, Default)]
pub struct KeySnapshot {
    /// Grows by one with each snapshot.
    pub generation: u64,
    /// The SSH identities; `None` when they could not be read (the
    /// keystore keeps the ones it has).
    pub ssh: Option<Vec<SshIdentity>>,
    /// Which keys which servers took, as every device of the account
    /// learned it: `(host key, key)` SHA-256 fingerprints.
    pub accepted: Vec<(String, String)>,
    /// The OpenPGP certificates: for an administrator the whole secret
    /// certificate, for other devices the subkeys' secrets; `None` when
    /// they could not be read.
    pub openpgp: Option<Vec<OpenpgpEntry>>,
}

/// The public side of a [`KeySnapshot`], shared with whoever wants it
/// (gpg's keyring).
#[derive(Debug, Default)]
pub struct Certificates {
    /// The [`KeySnapshot::generation`] it goes with.
    pub generation: u64,
    /// Each OpenPGP certificate: name, fingerprint, armored public key.
    pub openpgp: Vec<OpenpgpCertificate>,
}

impl Account {
    /// The view as of now, reusing `last`'s entries when nothing they
    /// are made from changed.
    fn view(&mut self, last: &View) -> View {
        let marks = self.marks();
        if self.view_from.as_ref() == Some(&marks) {
            return View {
                status: self.status(),
                ..last.clone()
            };
        }
        self.view_from = Some(marks);
        if self.state.is_none() {
            // Nothing to open: say so without touching the code that would.
            return View {
                status: self.status(),
                devices: Err(AccountError::NoAccount),
                pending: Err(AccountError::NoAccount),
                ssh: Err(AccountError::NoAccount),
                openpgp: Err(AccountError::NoAccount),
                application: Err(AccountError::NoAccount),
                credential: Err(AccountError::NoAccount),
                usage: Err(AccountError::NoAccount),
                approvals: Err(AccountError::NoAccount),
            };
        }
        View {
            status: self.status(),
            devices: self.device_rows(),
            pending: self.pending(),
            ssh: self.ssh_rows(),
            openpgp: self.openpgp_rows(),
            application: self.catalog_list(Store::Application).map(Arc::new),
            credential: self.catalog_list(Store::Credential).map(Arc::new),
            usage: self.usage_rows(),
            approvals: self.approvals().map(Arc::new),
        }
    }

    /// A new key snapshot if the keys may have changed since the last one.
    fn key_snapshot(&mut self, generation: u64) -> Option<KeySnapshot> {
        let marks = self.key_marks();
        if self.keys_from.as_ref() == Some(&marks) {
            return None;
        }
        let readable = self
            .activation()
            .is_ok_and(|a| a.store_key(Store::Application).is_some());
        self.keys_from = Some(marks);
        let (ssh, openpgp) = if readable {
            // Each application on its own: one that cannot be read keeps
            // its old keys and does not hold the other back.
            let keep = |what: &str, e: AccountError| {
                tracing::warn!(error = %e, "cannot read the {what} keys; keeping the old ones");
            };
            (
                self.ssh_entries().map_err(|e| keep("SSH", e)).ok(),
                self.openpgp_keys().map_err(|e| keep("OpenPGP", e)).ok(),
            )
        } else {
            (Some(Vec::new()), Some(Vec::new()))
        };
        if ssh.is_none() && openpgp.is_none() {
            return None;
        }
        tracing::info!(
            ssh = ?ssh.as_ref().map(Vec::len),
            openpgp = ?openpgp.as_ref().map(Vec::len),
            "application keys from the Mesh"
        );
        let accepted = if readable {
            self.ssh_accepted_pairs()
        } else {
            Vec::new()
        };
        Some(KeySnapshot {
            generation,
            ssh,
            accepted,
            openpgp,
        })
    }
}

/// The account's task, seen from outside: send it commands, read what it
/// publishes.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::Sender<(Command, oneshot::Sender<Result<Response, AccountError>>)>,
    view: watch::Receiver<Arc<View>>,
    certificates: watch::Receiver<Arc<Certificates>>,
}

impl Handle {
    /// Have the account do `command`; the answer comes once its effects
    /// are in the view and the key snapshot.
    pub async fn run(&self, command: Command) -> Result<Response, AccountError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send((command, reply))
            .await
            .map_err(|_| AccountError::Io("the account's task has stopped".into()))?;
        answer
            .await
            .map_err(|_| AccountError::Io("the account's task has stopped".into()))?
    }

    /// The view as of now (never waits).
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// A subscription to the public side of the key snapshots.
    pub fn certificates(&self) -> watch::Receiver<Arc<Certificates>> {
        self.certificates.clone()
    }

    /// A subscription to the view, for whoever waits on a change (an
    /// answer to an approval request).
    pub fn views(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// The generation of the latest key snapshot.
    pub fn generation(&self) -> u64 {
        self.certificates.borrow().generation
    }
}

/// Start the account's task: it owns `account`, does commands one at a
/// time, syncs every `interval` while the device is in an account, and
/// after each publishes the view, and the key snapshot (sent to the
/// returned receiver, the keystore's) with its certificates when they
/// changed. The future ends when every [`Handle`] is gone.
pub fn spawn(
    mut account: Account,
    interval: Duration,
) -> (
    Handle,
    mpsc::UnboundedReceiver<KeySnapshot>,
    impl Future<Output = ()>,
) {
    let empty = View {
        status: account.status(),
        devices: Ok(Vec::new()),
        pending: Ok(Vec::new()),
        ssh: Ok(Vec::new()),
        openpgp: Ok(Vec::new()),
        application: Ok(Arc::default()),
        credential: Ok(Arc::default()),
        usage: Ok(Vec::new()),
        approvals: Ok(Arc::default()),
    };
    let view = account.view(&empty);
    let (view_tx, view_rx) = watch::channel(Arc::new(view));
    let (certs_tx, certs_rx) = watch::channel(Arc::new(Certificates::default()));
    let (keys_tx, keys_rx) = mpsc::unbounded_channel();
    let (commands, mut inbox) = mpsc::channel(16);
    let handle = Handle {
        commands,
        view: view_rx,
        certificates: certs_rx,
    };
    let publish = move |account: &mut Account, view_tx: &watch::Sender<Arc<View>>| {
        let view = account.view(&view_tx.borrow());
        view_tx.send_replace(Arc::new(view));
        let next = certs_tx.borrow().generation + 1;
        if let Some(snapshot) = account.key_snapshot(next) {
            let openpgp = match &snapshot.openpgp {
                Some(entries) => entries
                    .iter()
                    .map(|e| OpenpgpCertificate {
                        name: e.name.clone(),
                        fingerprint: e.fingerprint.clone(),
                        public: e.public.clone(),
                    })
                    .collect(),
                None => certs_tx.borrow().openpgp.clone(),
            };
            let certificates = Certificates {
                generation: next,
                openpgp,
            };
            // The keystore first: a generation announced is one it has.
            let _ = keys_tx.send(snapshot);
            certs_tx.send_replace(Arc::new(certificates));
        }
    };
    publish(&mut account, &view_tx);
    let task = async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = inbox.recv() => {
                    let Some((command, reply)) = command else { return };
                    // Boxed: the task's own future stays small (commands'
                    // futures are large), and is made only while it runs.
                    let result = watched(&view_tx, Box::pin(account.execute(command))).await;
                    publish(&mut account, &view_tx);
                    let _ = reply.send(result);
                }
                _ = ticker.tick() => {
                    if account.should_sync() {
                        let report = watched(&view_tx, Box::pin(account.sync())).await;
                        if !report.ok {
                            tracing::warn!(errors = ?report.errors, "sync found problems");
                        }
                        publish(&mut account, &view_tx);
                    }
                }
            }
        }
    };
    (handle, keys_rx, task)
}

/// Run `work`; while it waits on the service for longer than
/// [`SLOW_SERVICE`], the view says that the service does not answer.
async fn watched<T>(view: &watch::Sender<Arc<View>>, work: impl Future<Output = T>) -> T {
    let started = now_ms();
    let mut work = std::pin::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(SLOW_SERVICE) => {}
    }
    let mut slow = View::clone(&view.borrow());
    slow.status.sync_errors.insert(
        "service".into(),
        format!(
            "unreachable: no answer from the service for {} s",
            SLOW_SERVICE.as_secs()
        ),
    );
    slow.status.unanswered_since_ms = Some(started);
    view.send_replace(Arc::new(slow));
    work.await
}

/// A Device catalog entry of the account at `address`, opened with the
/// device's base key and checked to be signed by the administrator key.
fn open_cataloged(
    entry: &Envelope,
    device: &DeviceKeys,
    address: &str,
    admin: &PublicKey,
) -> Result<CatalogedDevice, AccountError> {
    let unopened = || AccountError::untrusted(Store::Device, "this device's entry does not open");
    let verified = mesh_protocol::entry::open(
        entry,
        address,
        Store::Device,
        Some(&device.encrypt),
        std::slice::from_ref(admin),
    )
    .map_err(|_| unopened())?;
    verified
        .record::<CatalogedDevice>()
        .filter(|c| c.device_udf == verified.head.unique_id)
        .ok_or_else(unopened)
}

/// The digest a PIN witness covers: SHA-512 of the request's device profile.
fn profile_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha512::digest(bytes).to_vec()
}

fn parse_seed(bytes: &[u8]) -> Result<Seed, AccountError> {
    let damaged = || AccountError::Io("the stored seed is damaged".into());
    let text = std::str::from_utf8(bytes).map_err(|_| damaged())?;
    let udf = Udf::parse(text.trim()).map_err(|_| damaged())?;
    Seed::from_udf(&udf).map_err(|_| damaged())
}
