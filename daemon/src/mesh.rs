//! This device's view of its Mesh account: its seed, its activation, the
//! replicas of the catalogs, and the service they sync through.
//!
//! [`Mesh`] is what the control socket's account, device and catalog
//! requests act on, and what the sync loop drives. Everything the service
//! sends is checked before it is believed: frames must extend the local
//! replica (so a dropped, reordered, altered or forged frame, or a rewritten
//! history, is refused), a store may not shrink (rollback), and records are
//! opened only through the account's chain of signatures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_protocol::account::{
    self, AccountKeys, Activation, CatalogedDevice, ConnectionDevice, DeviceKeys, PinRecord,
    ProfileDevice, ProfileUser, RequestConnection, RespondConnection, Role, STORE_ACCESS,
    STORE_APPLICATION, STORE_CREDENTIAL, STORE_DEVICE, STORE_INBOUND, STORE_LOCAL, STORES,
};
use mesh_protocol::envelope::{Envelope, Opened};
use mesh_protocol::keys::PublicKey;
use mesh_protocol::paths::Paths;
use mesh_protocol::sequence;
use mesh_protocol::service::{
    BindRequest, CompleteRequest, ConnectRequest, DownloadRequest, PostedResponse, ServiceRequest,
    ServiceResponse, StatusRequest, StoreStatus, StoreUpdate, TransactRequest,
};
use mesh_protocol::shamir;
use mesh_protocol::udf::seed::Seed;
use mesh_protocol::udf::{Udf, code, keyed, name::ConnectUri};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gpg::keys::GpgKeyring;
use crate::remote::{Remote, RemoteError};
use crate::replica::Replicas;
use crate::secrets::SecretStore;
use crate::ssh::keys::Keyring;

mod openpgp;
mod ssh;

/// The secret-store name of the device seed.
const DEVICE_SEED: &str = "device-seed";
/// The secret-store name of a recovered account seed.
const ACCOUNT_SEED: &str = "account-seed";

/// What goes wrong, in one line for the person at the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MeshError(pub String);

fn err(message: impl Into<String>) -> MeshError {
    MeshError(message.into())
}

impl From<RemoteError> for MeshError {
    fn from(e: RemoteError) -> MeshError {
        err(e.to_string())
    }
}

impl From<account::AccountError> for MeshError {
    fn from(e: account::AccountError) -> MeshError {
        err(e.to_string())
    }
}

impl From<std::io::Error> for MeshError {
    fn from(e: std::io::Error) -> MeshError {
        err(e.to_string())
    }
}

/// What is kept on disk about the account (no secrets).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    address: String,
    service: String,
    device_name: String,
    /// `connected`, `pending`, `rejected` or `revoked`.
    status: String,
    /// The account's profile, as the service first gave it.
    profile: String,
    /// While a connection request waits: its id and code.
    pending: Option<PendingRequest>,
    /// Inbound requests this administrator has answered.
    #[serde(default)]
    handled: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingRequest {
    response_id: String,
    witness: String,
}

/// A connection request as an administrator sees it.
#[derive(Debug, Clone, Serialize)]
struct Inbound {
    response_id: String,
    witness: String,
    description: String,
    device_udf: String,
    profile: String,
    pin_id: Option<String>,
    pin_witness: Option<String>,
    client_nonce: String,
}

/// The account as this device holds it.
pub struct Mesh {
    paths: Paths,
    secrets: SecretStore,
    state: Option<State>,
    device: Option<DeviceKeys>,
    activation: Option<Activation>,
    replicas: Replicas,
    remote: Option<Remote>,
    /// The last sync's problems, store by store.
    sync_errors: BTreeMap<String, String>,
    last_sync: Option<u64>,
    /// The SSH agent's keys, which the Application catalog feeds.
    ssh_agent: Option<Arc<Keyring>>,
    /// The gpg-agent frontend's keys, fed the same way.
    gpg_agent: Option<Arc<GpgKeyring>>,
    /// Certificates already imported into gpg's keyring.
    gpg_imported: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// The Application catalog's length when the agents' keys were last
    /// loaded (`Some(None)`: loaded as "nothing readable").
    apps_loaded: Option<Option<u64>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Roles from the command line (`admin,web` or several values).
pub fn parse_roles(roles: &[String], default: Role) -> Result<Vec<Role>, MeshError> {
    if roles.is_empty() {
        return Ok(vec![default]);
    }
    roles
        .iter()
        .flat_map(|r| r.split(','))
        .map(|r| {
            Role::parse(r.trim())
                .ok_or_else(|| err(format!("unknown right {r:?}: use admin, device or web")))
        })
        .collect()
}

/// The message type of a plain catalog entry (`mesh catalog put`).
const CATALOG_ENTRY: &str = "CatalogEntry";

/// The message type an opened entry declares.
fn entry_type(opened: &Opened) -> Option<&str> {
    opened.meta.as_ref()?.message_type.as_deref()
}

/// Refuse the names `mesh ssh` and `mesh openpgp` manage.
fn reserved(name: &str) -> Result<(), MeshError> {
    if name.starts_with(mesh_protocol::application::SSH_PREFIX) {
        return Err(err(format!(
            "{name:?} is an SSH identity: use mesh ssh to change it"
        )));
    }
    if name.starts_with(mesh_protocol::application::OPENPGP_PREFIX) {
        return Err(err(format!(
            "{name:?} is an OpenPGP key: use mesh openpgp to change it"
        )));
    }
    Ok(())
}

/// The store behind a catalog's name on the command line.
fn catalog_store(name: &str) -> Result<&'static str, MeshError> {
    match name {
        "application" | STORE_APPLICATION => Ok(STORE_APPLICATION),
        "credential" | STORE_CREDENTIAL => Ok(STORE_CREDENTIAL),
        _ => Err(err(format!(
            "unknown catalog {name:?}: use application or credential"
        ))),
    }
}

impl Mesh {
    /// Load what this device knows: its state file, seed and replicas.
    /// The SSH identities in the Application catalog are kept loaded into
    /// `ssh_agent`, if given.
    pub fn open(
        paths: Paths,
        ssh_agent: Option<Arc<Keyring>>,
        gpg_agent: Option<Arc<GpgKeyring>>,
    ) -> Result<Mesh, MeshError> {
        let choice = std::env::var("MESH_KEYRING").ok();
        let secrets = SecretStore::open(&paths.data_dir.join("secrets"), choice.as_deref())
            .map_err(|e| err(e.to_string()))?;
        let state: Option<State> = match std::fs::read(paths.data_dir.join("account.json")) {
            Ok(bytes) => {
                Some(serde_json::from_slice(&bytes).map_err(|_| err("account.json is damaged"))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let device = match secrets.get(DEVICE_SEED).map_err(|e| err(e.to_string()))? {
            Some(seed) => Some(DeviceKeys::from_seed(parse_seed(&seed)?)?),
            None => None,
        };
        let replicas = Replicas::open(&paths.data_dir.join("stores"))?;
        let remote = match &state {
            Some(s) => Some(Remote::new(&s.service, &s.address)?),
            None => None,
        };
        let mut mesh = Mesh {
            paths,
            secrets,
            state,
            device,
            activation: None,
            replicas,
            remote,
            sync_errors: BTreeMap::new(),
            last_sync: None,
            ssh_agent,
            gpg_agent,
            gpg_imported: Arc::default(),
            apps_loaded: None,
        };
        if mesh.status() == "connected" {
            mesh.activate()?;
        }
        mesh.refresh_applications();
        Ok(mesh)
    }

    fn status(&self) -> &str {
        self.state.as_ref().map_or("none", |s| s.status.as_str())
    }

    fn save(&self) -> Result<(), MeshError> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let dir = &self.paths.data_dir;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".account.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(state).map_err(|e| err(e.to_string()))?,
        )?;
        std::fs::rename(tmp, dir.join("account.json"))?;
        Ok(())
    }

    /// This device's keys, made on first use and kept in the secret store.
    fn device_keys(&mut self) -> Result<&DeviceKeys, MeshError> {
        if self.device.is_none() {
            let keys = DeviceKeys::generate(&mut OsRng)?;
            let text = zeroize::Zeroizing::new(keys.seed().to_udf().to_string());
            self.secrets
                .set(DEVICE_SEED, text.as_bytes())
                .map_err(|e| err(e.to_string()))?;
            self.device = Some(keys);
        }
        self.device.as_ref().ok_or_else(|| err("no device keys"))
    }

    fn remote(&self) -> Result<&Remote, MeshError> {
        self.remote.as_ref().ok_or_else(|| {
            err("this device has no account: run mesh account create or mesh device connect")
        })
    }

    fn activation(&self) -> Result<&Activation, MeshError> {
        match self.status() {
            "revoked" => Err(err("this device was revoked from the account")),
            "pending" => Err(err(
                "this device is waiting for an administrator to accept it",
            )),
            _ => self.activation.as_ref().ok_or_else(|| {
                err("this device has no account: run mesh account create or mesh device connect")
            }),
        }
    }

    fn admin(&self) -> Result<&AccountKeys, MeshError> {
        self.activation()?
            .account
            .as_ref()
            .ok_or_else(|| err("this device is not an administrator of the account"))
    }

    /// Re-open this device's activation from its Device catalog entry.
    fn activate(&mut self) -> Result<(), MeshError> {
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| err("the device seed is missing from the secret store"))?;
        let udf = device.udf().to_string();
        let live = self.replicas.live(STORE_DEVICE);
        let index = live
            .get(&udf)
            .ok_or_else(|| err("this device is not in the account's Device catalog"))?;
        let frame = self
            .replicas
            .frame(STORE_DEVICE, *index)
            .ok_or_else(|| err("damaged Device catalog"))?;
        let cataloged = open_cataloged(&frame, device, None)?;
        let profile = &self
            .state
            .as_ref()
            .ok_or_else(|| err("no account"))?
            .profile;
        self.activation = Some(Activation::open(device, profile, &cataloged)?);
        Ok(())
    }

    /// Sign as this device: its co-generated key once active.
    fn signer(&self) -> Result<(String, &mesh_protocol::keys::PrivateKey), MeshError> {
        let device = self.device.as_ref().ok_or_else(|| err("no device keys"))?;
        Ok((device.udf().to_string(), &self.activation()?.sign))
    }

    async fn call(&self, request: ServiceRequest) -> Result<ServiceResponse, MeshError> {
        let (device, key) = self.signer()?;
        Ok(self.remote()?.call(&request, Some((&device, key))).await?)
    }

    // ---- account ----

    /// Create an account with this device as its first administrator.
    pub async fn create(
        &mut self,
        address: &str,
        service: &str,
        name: &str,
    ) -> Result<Value, MeshError> {
        if self.state.is_some() {
            return Err(err("this device already belongs to an account"));
        }
        let keys = AccountKeys::generate(&mut OsRng)?;
        self.bind_new(keys, address, service, name).await
    }

    async fn bind_new(
        &mut self,
        keys: AccountKeys,
        address: &str,
        service: &str,
        name: &str,
    ) -> Result<Value, MeshError> {
        let profile = keys.profile(&mut OsRng, address)?.to_json();
        let device = self.device_keys()?;
        let device_profile = device.profile(&mut OsRng, name)?.to_json();
        let (entry, access) = keys.connect(&mut OsRng, &device_profile, name, &[Role::Admin])?;
        let device_udf = device.udf().to_string();
        let remote = Remote::new(service, address)?;
        // Sign with the co-generated key the entry gives this device.
        let cataloged = open_cataloged(&entry, device, None)?;
        let activation = Activation::open(device, &profile, &cataloged)?;
        let request = ServiceRequest::BindAccount(BindRequest {
            account_address: address.to_owned(),
            enveloped_profile_user: profile.clone(),
            access_frame: access.to_json(),
            device_frame: entry.to_json(),
        });
        remote
            .call(&request, Some((&device_udf, &activation.sign)))
            .await?;
        self.state = Some(State {
            address: address.to_owned(),
            service: service.to_owned(),
            device_name: name.to_owned(),
            status: "connected".into(),
            profile,
            pending: None,
            handled: Vec::new(),
        });
        self.remote = Some(remote);
        self.activation = Some(activation);
        self.save()?;
        self.sync().await;
        Ok(json!({
            "address": address,
            "profile": keys.udf().to_string(),
            "device": device_udf,
            "secrets": self.secrets.describe(),
        }))
    }

    /// The account and this device.
    pub fn account_status(&self) -> Value {
        let Some(state) = &self.state else {
            return json!({"status": "none", "secrets": self.secrets.describe()});
        };
        let profile = account::verify_profile::<ProfileUser>(&state.profile)
            .map(|(p, _)| p.profile_signature.udf)
            .unwrap_or_default();
        let stores: BTreeMap<&str, u64> = STORES
            .iter()
            .filter_map(|s| self.replicas.sequence(s).map(|r| (*s, r.len())))
            .collect();
        json!({
            "status": state.status,
            "address": state.address,
            "service": state.service,
            "profile": profile,
            "device": self.device.as_ref().map(|d| d.udf().to_string()),
            "device_name": state.device_name,
            "admin": self.activation.as_ref().is_some_and(|a| a.account.is_some()),
            "roles": self.activation.as_ref().map(|a| a.connection.roles.clone()),
            "stores": stores,
            "last_sync_ms": self.last_sync,
            "sync_errors": self.sync_errors,
            "witness": state.pending.as_ref().map(|p| p.witness.clone()),
            "secrets": self.secrets.describe(),
        })
    }

    /// Split the account seed into recovery shares.
    pub fn escrow(&self, shares: usize, quorum: usize) -> Result<Value, MeshError> {
        let keys = self.admin()?;
        let secret = keys.seed().to_udf();
        let split = shamir::split(&mut OsRng, secret.as_bytes(), shares, quorum)
            .map_err(|e| err(e.to_string()))?;
        let texts: Vec<String> = split.iter().map(|s| s.to_udf().to_string()).collect();
        Ok(json!({"quorum": quorum, "shares": texts, "profile": keys.udf().to_string()}))
    }

    /// Rebuild the account seed from shares; keep it in the secret store.
    /// With `rejoin`, also join the account's service as a new
    /// administrator device: the seed itself vouches for it.
    pub async fn recover(
        &mut self,
        shares: &[String],
        rejoin: Option<(String, String, String)>,
    ) -> Result<Value, MeshError> {
        let udfs = shares
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Udf::parse(s).map_err(|e| err(format!("share {} is not a share: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secret = shamir::recover_udfs(&udfs).map_err(|e| err(e.to_string()))?;
        let not_seed = || err("the shares do not hold an account seed");
        let udf = Udf::from_binary(secret.to_vec()).map_err(|_| not_seed())?;
        let seed = Seed::from_udf(&udf).map_err(|_| not_seed())?;
        let keys = AccountKeys::from_seed(seed).map_err(|_| not_seed())?;
        let fingerprint = keys.udf().to_string();
        self.secrets
            .set(ACCOUNT_SEED, udf.to_string().as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let Some((address, service, name)) = rejoin else {
            return Ok(json!({"profile": fingerprint, "secrets": self.secrets.describe()}));
        };
        if self.state.is_some() {
            return Err(err("this device already belongs to an account"));
        }
        let profile = keys.profile(&mut OsRng, &address)?.to_json();
        let device = self.device_keys()?;
        let device_profile = device.profile(&mut OsRng, &name)?.to_json();
        let (entry, access) = keys.connect(&mut OsRng, &device_profile, &name, &[Role::Admin])?;
        let cataloged = open_cataloged(&entry, device, None)?;
        let activation = Activation::open(device, &profile, &cataloged)?;
        let remote = Remote::new(&service, &address)?;
        remote.set_capability(Some(&access.to_json()));
        self.state = Some(State {
            address,
            service,
            device_name: name.clone(),
            status: "recovering".into(),
            profile,
            pending: None,
            handled: Vec::new(),
        });
        self.remote = Some(remote);
        self.activation = Some(activation);
        let report = self.sync().await;
        if report["ok"] != true {
            self.state = None;
            self.remote = None;
            self.activation = None;
            return Err(err(format!(
                "cannot read the account from its service: {}",
                report["errors"]
            )));
        }
        self.transact(
            vec![(STORE_DEVICE, vec![entry]), (STORE_ACCESS, vec![access])],
            Vec::new(),
        )
        .await?;
        if let Some(remote) = &self.remote {
            remote.set_capability(None);
        }
        if let Some(state) = &mut self.state {
            state.status = "connected".into();
        }
        self.save()?;
        Ok(json!({"profile": fingerprint, "device": name, "secrets": self.secrets.describe()}))
    }

    /// Register a PIN for a device to join without approval.
    pub async fn pin(&mut self, roles: &[String]) -> Result<Value, MeshError> {
        let roles = parse_roles(roles, Role::Device)?;
        let keys = self.admin()?;
        let mut key = [0u8; 10];
        OsRng.fill_bytes(&mut key);
        let pin = Udf::new(code::AUTHENTICATOR_SHA2, &key).map_err(|e| err(e.to_string()))?;
        let address = self
            .state
            .as_ref()
            .map(|s| s.address.clone())
            .unwrap_or_default();
        let salted =
            keyed::salted_pin(&pin, keyed::PIN_ACTION_DEVICE).map_err(|e| err(e.to_string()))?;
        let pin_id = keyed::pin_id(&salted, &address)
            .map_err(|e| err(e.to_string()))?
            .to_string();
        let record = PinRecord {
            pin: pin.to_string(),
            roles: roles.clone(),
        };
        let local_key = keys.store_key(STORE_LOCAL)?.public();
        let entry = account::seal_entry(
            &mut OsRng,
            &record,
            account::message_type::PIN,
            &pin_id,
            "New",
            &keys.admin,
            &[local_key],
        )?;
        self.transact(vec![(STORE_LOCAL, vec![entry])], Vec::new())
            .await?;
        let uri = ConnectUri {
            account: address,
            pin,
        };
        Ok(json!({"uri": uri.to_string(), "roles": roles}))
    }

    // ---- devices ----

    /// Ask to join an account; returns the witness code to compare.
    pub async fn connect(
        &mut self,
        address: &str,
        service: &str,
        name: &str,
        pin: Option<&str>,
    ) -> Result<Value, MeshError> {
        if matches!(self.status(), "connected" | "pending") {
            return Err(err(
                "this device already belongs to an account (or is waiting to)",
            ));
        }
        let remote = Remote::new(service, address)?;
        let device = self.device_keys()?;
        let profile = device.profile(&mut OsRng, name)?.to_json();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let (pin_id, pin_witness) = match pin {
            Some(pin) => {
                let pin = Udf::parse(pin).map_err(|e| err(format!("the PIN is not valid: {e}")))?;
                let salted = keyed::salted_pin(&pin, keyed::PIN_ACTION_DEVICE)
                    .map_err(|e| err(e.to_string()))?;
                let id = keyed::pin_id(&salted, address).map_err(|e| err(e.to_string()))?;
                let digest = sequence_digest(profile.as_bytes());
                let witness = keyed::pin_witness(&salted, address, &nonce, &digest);
                (Some(id.to_string()), Some(URL_SAFE_NO_PAD.encode(witness)))
            }
            None => (None, None),
        };
        let request = RequestConnection {
            account_address: address.to_owned(),
            enveloped_profile_device: profile,
            client_nonce: URL_SAFE_NO_PAD.encode(nonce),
            pin_id,
            pin_witness,
        };
        let envelope = account::sign_record(
            &mut OsRng,
            &request,
            account::message_type::REQUEST_CONNECTION,
            &device.profile,
            &[],
        )?;
        let answer = remote
            .call(
                &ServiceRequest::Connect(ConnectRequest {
                    account_address: address.to_owned(),
                    enveloped_request_connection: envelope.to_json(),
                }),
                None,
            )
            .await?;
        let ServiceResponse::ConnectResponse(answer) = answer else {
            return Err(err("the service gave an unexpected answer"));
        };
        // Check what we are joining, and that the code is honest.
        let (account_profile, _) =
            account::verify_profile::<ProfileUser>(&answer.enveloped_profile_user)?;
        if account_profile.account_address != address {
            return Err(err("the service answered for another account"));
        }
        let server_nonce = URL_SAFE_NO_PAD
            .decode(&answer.server_nonce)
            .map_err(|_| err("bad nonce"))?;
        let account_udf =
            Udf::parse(&account_profile.profile_signature.udf).map_err(|e| err(e.to_string()))?;
        // Both sides compute it over the fingerprints as the records carry them.
        let device_udf = Udf::parse(&device.udf().to_string()).map_err(|e| err(e.to_string()))?;
        let code =
            mesh_protocol::service::witness(&account_udf, &server_nonce, &device_udf, &nonce);
        if code != answer.witness {
            return Err(err("the service's witness code does not match: refusing"));
        }
        self.state = Some(State {
            address: address.to_owned(),
            service: service.to_owned(),
            device_name: name.to_owned(),
            status: "pending".into(),
            profile: answer.enveloped_profile_user,
            pending: Some(PendingRequest {
                response_id: answer.response_id,
                witness: code.clone(),
            }),
            handled: Vec::new(),
        });
        self.remote = Some(remote);
        self.save()?;
        Ok(json!({"status": "pending", "witness": code, "profile": account_udf.to_string()}))
    }

    /// Ask the service whether an administrator answered; activate if so.
    pub async fn poll_connection(&mut self) -> Result<Value, MeshError> {
        let Some(state) = self.state.clone() else {
            return Ok(json!({"status": "none"}));
        };
        let Some(pending) = state.pending.clone().filter(|_| state.status == "pending") else {
            return Ok(json!({"status": state.status}));
        };
        let device = self.device.as_ref().ok_or_else(|| err("no device keys"))?;
        let udf = device.udf().to_string();
        let answer = self
            .remote()?
            .call(
                &ServiceRequest::Complete(CompleteRequest {
                    account_address: state.address.clone(),
                    response_id: pending.response_id.clone(),
                }),
                Some((&udf, &device.profile)),
            )
            .await?;
        let ServiceResponse::CompleteResponse(answer) = answer else {
            return Err(err("the service gave an unexpected answer"));
        };
        let Some(respond) = answer.enveloped_respond_connection else {
            return Ok(json!({"status": "pending", "witness": pending.witness}));
        };
        let (profile, _) = account::verify_profile::<ProfileUser>(&state.profile)?;
        let admin = profile.administrator_signature.key()?;
        let respond: RespondConnection = account::verify_admin_signed(&respond, &admin)?;
        let new_status = if respond.result == "Accepted" {
            let entry = respond
                .enveloped_cataloged_device
                .ok_or_else(|| err("an acceptance without an entry"))?;
            let entry = Envelope::from_json(entry.as_bytes()).map_err(|_| err("bad entry"))?;
            let cataloged = open_cataloged(&entry, device, Some(&admin))?;
            self.activation = Some(Activation::open(device, &state.profile, &cataloged)?);
            "connected"
        } else {
            "rejected"
        };
        if let Some(state) = &mut self.state {
            state.status = new_status.into();
            state.pending = None;
        }
        self.save()?;
        if new_status == "connected" {
            Box::pin(self.sync()).await;
        }
        Ok(json!({"status": new_status}))
    }

    fn inbound(&self) -> Result<Vec<Inbound>, MeshError> {
        let handled = self
            .state
            .as_ref()
            .map(|s| s.handled.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for index in 1..=self.replicas.head(STORE_INBOUND).0 {
            let Some(frame) = self.replicas.frame(STORE_INBOUND, index) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Value>(&frame.body) else {
                continue;
            };
            let get = |k: &str| {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let response_id = get("ResponseId");
            if handled.contains(&response_id) {
                continue;
            }
            let request_json = get("EnvelopedRequestConnection");
            let Ok(request_envelope) = Envelope::from_json(request_json.as_bytes()) else {
                continue;
            };
            let Ok(request) = serde_json::from_slice::<RequestConnection>(&request_envelope.body)
            else {
                continue;
            };
            let Ok((device, key)) =
                account::verify_profile::<ProfileDevice>(&request.enveloped_profile_device)
            else {
                continue;
            };
            if request_envelope.open(None, Some(&key)).is_err() {
                continue;
            }
            // Recompute the witness: the service's word is not taken.
            let Ok(account_udf) = self
                .activation()?
                .profile
                .profile_signature
                .udf
                .parse::<Udf>()
            else {
                continue;
            };
            let Ok(device_udf) = device.profile_signature.udf.parse::<Udf>() else {
                continue;
            };
            let server_nonce = URL_SAFE_NO_PAD
                .decode(get("ServerNonce"))
                .unwrap_or_default();
            let client_nonce = URL_SAFE_NO_PAD
                .decode(&request.client_nonce)
                .unwrap_or_default();
            let witness = mesh_protocol::service::witness(
                &account_udf,
                &server_nonce,
                &device_udf,
                &client_nonce,
            );
            out.push(Inbound {
                response_id,
                witness,
                description: device.description.clone(),
                device_udf: device.profile_signature.udf.clone(),
                profile: request.enveloped_profile_device.clone(),
                pin_id: request.pin_id.clone(),
                pin_witness: request.pin_witness.clone(),
                client_nonce: request.client_nonce.clone(),
            });
        }
        Ok(out)
    }

    /// Connection requests waiting for an administrator.
    pub fn pending(&self) -> Result<Value, MeshError> {
        self.admin()?;
        let list: Vec<Value> = self
            .inbound()?
            .into_iter()
            .map(|i| json!({"witness": i.witness, "description": i.description, "device": i.device_udf, "pin": i.pin_id.is_some()}))
            .collect();
        Ok(Value::Array(list))
    }

    /// Approve or refuse the request whose witness code is `code`.
    pub async fn answer(
        &mut self,
        code: &str,
        accept: Option<(Vec<Role>, Option<String>)>,
    ) -> Result<Value, MeshError> {
        let normal = |c: &str| c.to_uppercase().replace('-', "");
        let request = self
            .inbound()?
            .into_iter()
            .find(|i| normal(&i.witness) == normal(code))
            .ok_or_else(|| err("no pending request shows that code: check mesh device pending"))?;
        self.answer_request(&request, accept).await
    }

    async fn answer_request(
        &mut self,
        request: &Inbound,
        accept: Option<(Vec<Role>, Option<String>)>,
    ) -> Result<Value, MeshError> {
        let keys = self.admin()?;
        let (respond, updates, name) = match &accept {
            Some((roles, name)) => {
                let name = name.clone().unwrap_or_else(|| request.description.clone());
                if self.devices()?.iter().any(|(n, _)| *n == name) {
                    return Err(err(format!(
                        "a device named {name:?} exists: give another with --name"
                    )));
                }
                let (entry, access) = keys.connect(&mut OsRng, &request.profile, &name, roles)?;
                let respond = RespondConnection {
                    result: "Accepted".into(),
                    enveloped_cataloged_device: Some(entry.to_json()),
                };
                (
                    respond,
                    vec![(STORE_DEVICE, vec![entry]), (STORE_ACCESS, vec![access])],
                    Some(name),
                )
            }
            None => (
                RespondConnection {
                    result: "Rejected".into(),
                    enveloped_cataloged_device: None,
                },
                Vec::new(),
                None,
            ),
        };
        let envelope = account::sign_record(
            &mut OsRng,
            &respond,
            account::message_type::RESPOND_CONNECTION,
            &keys.admin,
            &[],
        )?;
        let posted = vec![PostedResponse {
            response_id: request.response_id.clone(),
            envelope: envelope.to_json(),
        }];
        self.transact(updates, posted).await?;
        if let Some(state) = &mut self.state {
            state.handled.push(request.response_id.clone());
        }
        self.save()?;
        Ok(json!({"result": respond.result, "name": name, "device": request.device_udf}))
    }

    /// The live devices, by name: `(name, cataloged)`.
    fn devices(&self) -> Result<Vec<(String, CatalogedDevice)>, MeshError> {
        let activation = self.activation()?;
        let admin = activation.profile.administrator_signature.key()?;
        let key = activation
            .store_key(STORE_DEVICE)
            .ok_or_else(|| err("no key for the Device catalog"))?;
        let mut out = Vec::new();
        for index in self.replicas.live(STORE_DEVICE).values() {
            let frame = self
                .replicas
                .frame(STORE_DEVICE, *index)
                .ok_or_else(|| err("damaged Device catalog"))?;
            let opened = frame
                .open(Some(key), Some(&admin))
                .map_err(|_| err("a Device catalog entry does not verify"))?;
            let device: CatalogedDevice =
                serde_json::from_slice(&opened.payload).map_err(|_| err("damaged entry"))?;
            out.push((device.name.clone(), device));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The account's devices.
    pub fn list(&self) -> Result<Value, MeshError> {
        let me = self
            .device
            .as_ref()
            .map(|d| d.udf().to_string())
            .unwrap_or_default();
        let list: Vec<Value> = self
            .devices()?
            .into_iter()
            .map(|(name, d)| json!({"name": name, "device": d.device_udf, "roles": d.roles, "this": d.device_udf == me}))
            .collect();
        Ok(Value::Array(list))
    }

    /// Revoke a device: its Device and Access entries are deleted.
    pub async fn revoke(&mut self, name: &str) -> Result<Value, MeshError> {
        let (_, device) = self
            .devices()?
            .into_iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| err(format!("no device named {name:?}: see mesh device list")))?;
        if Some(device.device_udf.clone()) == self.device.as_ref().map(|d| d.udf().to_string()) {
            return Err(err("a device cannot revoke itself"));
        }
        let keys = self.admin()?;
        let device_key = keys.store_key(STORE_DEVICE)?.public();
        let delete = |recipients: &[PublicKey]| {
            account::seal_entry(
                &mut OsRng,
                &json!({}),
                "Delete",
                &device.device_udf,
                "Delete",
                &keys.admin,
                recipients,
            )
        };
        let updates = vec![
            (STORE_DEVICE, vec![delete(&[device_key])?]),
            (STORE_ACCESS, vec![delete(&[])?]),
        ];
        self.transact(updates, Vec::new()).await?;
        Ok(json!({"revoked": name, "device": device.device_udf}))
    }

    // ---- catalogs ----

    /// Add or replace a catalog entry.
    pub async fn catalog_put(
        &mut self,
        store: &str,
        name: &str,
        value: &str,
    ) -> Result<Value, MeshError> {
        self.catalog_import(store, &[(name.to_owned(), value.to_owned())])
            .await?;
        Ok(json!({"store": catalog_store(store)?, "name": name}))
    }

    /// Add or replace many entries, in transactions of a size the
    /// service takes.
    pub async fn catalog_import(
        &mut self,
        store: &str,
        entries: &[(String, String)],
    ) -> Result<Value, MeshError> {
        /// Entries per transaction: well inside the 64 KiB request limit.
        const BATCH: usize = 24;
        let store = catalog_store(store)?;
        for (name, _) in entries {
            reserved(name)?;
        }
        for batch in entries.chunks(BATCH) {
            let activation = self.activation()?;
            let key = activation
                .store_key(store)
                .ok_or_else(|| err(format!("this device may not use {store}")))?;
            let live = self.replicas.live(store);
            let mut envelopes = Vec::with_capacity(batch.len());
            for (name, value) in batch {
                envelopes.push(account::seal_entry(
                    &mut OsRng,
                    &json!({"Name": name, "Value": value}),
                    CATALOG_ENTRY,
                    name,
                    if live.contains_key(name) {
                        "Update"
                    } else {
                        "New"
                    },
                    &activation.sign,
                    &[key.public()],
                )?);
            }
            self.transact(vec![(store, envelopes)], Vec::new()).await?;
        }
        Ok(json!({"store": store, "imported": entries.len()}))
    }

    /// Delete a catalog entry.
    pub async fn catalog_delete(&mut self, store: &str, name: &str) -> Result<Value, MeshError> {
        let store = catalog_store(store)?;
        reserved(name)?;
        let activation = self.activation()?;
        if !self.replicas.live(store).contains_key(name) {
            return Err(err(format!("no entry named {name:?} in {store}")));
        }
        let entry = account::seal_entry(
            &mut OsRng,
            &json!({}),
            CATALOG_ENTRY,
            name,
            "Delete",
            &activation.sign,
            &[],
        )?;
        self.transact(vec![(store, vec![entry])], Vec::new())
            .await?;
        Ok(json!({"store": store, "deleted": name}))
    }

    /// The entries of a catalog, each checked: signed by the account's
    /// administrator key or by a device the Device catalog vouches for.
    pub fn catalog_list(&self, store: &str) -> Result<Value, MeshError> {
        let store = catalog_store(store)?;
        let mut out = BTreeMap::new();
        for (name, opened) in self.open_entries(store)? {
            if entry_type(&opened) != Some(CATALOG_ENTRY) {
                continue;
            }
            let entry: Value =
                serde_json::from_slice(&opened.payload).map_err(|_| err("damaged entry"))?;
            out.insert(name, entry.get("Value").cloned().unwrap_or(Value::Null));
        }
        Ok(json!(out))
    }

    /// Every live entry of a store, opened with the store key and checked:
    /// signed by the account's administrator key or by a device the Device
    /// catalog vouches for.
    fn open_entries(&self, store: &str) -> Result<Vec<(String, Opened)>, MeshError> {
        let activation = self.activation()?;
        let key = activation
            .store_key(store)
            .ok_or_else(|| err(format!("this device may not read {store}")))?;
        let mut signers = vec![activation.profile.administrator_signature.key()?];
        let admin = signers[0];
        for (_, device) in self.devices()? {
            let connection: ConnectionDevice =
                account::verify_admin_signed(&device.enveloped_connection_device, &admin)?;
            signers.push(connection.signature.key()?);
        }
        let mut out = Vec::new();
        for (name, index) in self.replicas.live(store) {
            let frame = self
                .replicas
                .frame(store, index)
                .ok_or_else(|| err("damaged catalog"))?;
            let opened = signers
                .iter()
                .find_map(|signer| frame.open(Some(key), Some(signer)).ok())
                .ok_or_else(|| {
                    err(format!(
                        "entry {name:?} is not signed by any device of the account"
                    ))
                })?;
            out.push((name, opened));
        }
        Ok(out)
    }

    /// Reload the agents' keys if the Application catalog (or this
    /// device's standing in the account) changed since the last time.
    fn refresh_applications(&mut self) {
        let readable = self
            .activation()
            .is_ok_and(|a| a.store_key(STORE_APPLICATION).is_some());
        let head = readable.then(|| self.replicas.head(STORE_APPLICATION).0);
        if self.apps_loaded == Some(head) {
            return;
        }
        self.load_ssh(readable);
        self.refresh_openpgp(readable);
        self.apps_loaded = Some(head);
    }

    // ---- sync ----

    /// Append entries to stores in one atomic transaction, then sync.
    /// A stale view (Conflict) is synced and tried once more.
    async fn transact(
        &mut self,
        updates: Vec<(&str, Vec<Envelope>)>,
        responses: Vec<PostedResponse>,
    ) -> Result<(), MeshError> {
        for attempt in 0..2 {
            let mut request = TransactRequest {
                account_address: self.remote()?.account().to_owned(),
                updates: Vec::new(),
                responses: responses.clone(),
            };
            for (store, entries) in &updates {
                let (index, apex) = self.replicas.head(store);
                let frames = self
                    .replicas
                    .stage(store, entries.clone())
                    .iter()
                    .map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                    .collect();
                request.updates.push(StoreUpdate {
                    store: (*store).to_owned(),
                    index,
                    apex: URL_SAFE_NO_PAD.encode(apex),
                    frames,
                });
            }
            let result = self.call(ServiceRequest::Transact(request)).await;
            for (store, _) in &updates {
                if result.is_ok() {
                    self.replicas.commit(store)?;
                } else {
                    self.replicas.rollback(store);
                }
            }
            match result {
                Ok(_) => {
                    self.refresh_applications();
                    return Ok(());
                }
                Err(e) if attempt == 0 && e.0.contains("Conflict") => {
                    Box::pin(self.sync()).await;
                }
                Err(e) => {
                    self.note_revocation(&e);
                    return Err(e);
                }
            }
        }
        Err(err("the service kept reporting a conflict"))
    }

    fn note_revocation(&mut self, e: &MeshError) {
        if e.0.contains("DeviceRevoked") {
            if let Some(state) = &mut self.state {
                state.status = "revoked".into();
            }
            self.activation = None;
            let _ = self.save();
            self.refresh_applications();
        }
    }

    /// Sync every store this device may read. Problems are recorded (and
    /// reported by `mesh account status`), never papered over.
    pub async fn sync(&mut self) -> Value {
        let result = self.sync_inner().await;
        self.refresh_applications();
        match result {
            Ok(updated) => {
                self.sync_errors.remove("service");
                self.last_sync = Some(now_ms());
                json!({"ok": self.sync_errors.is_empty(), "updated": updated, "errors": self.sync_errors})
            }
            Err(e) => {
                self.note_revocation(&e);
                self.sync_errors.insert("service".into(), e.0.clone());
                json!({"ok": false, "errors": self.sync_errors})
            }
        }
    }

    async fn sync_inner(&mut self) -> Result<BTreeMap<String, u64>, MeshError> {
        if self.status() == "pending" {
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
            return Err(err("the service gave an unexpected answer"));
        };
        let mut updated = BTreeMap::new();
        for remote in &status.stores {
            match self.sync_store(&address, remote).await {
                Ok(0) => {
                    self.sync_errors.remove(&remote.store);
                }
                Ok(n) => {
                    self.sync_errors.remove(&remote.store);
                    updated.insert(remote.store.clone(), n);
                }
                Err(e) => {
                    tracing::warn!(store = %remote.store, error = %e, "sync refused the service's data");
                    self.sync_errors.insert(remote.store.clone(), e.0);
                }
            }
        }
        // This device's own entry must still be there (a recovering
        // device is about to write its own).
        if let Some(device) = self
            .device
            .as_ref()
            .filter(|_| self.status() != "recovering")
        {
            let udf = device.udf().to_string();
            if !self.replicas.live(STORE_DEVICE).contains_key(&udf) {
                self.note_revocation(&err("DeviceRevoked"));
                return Err(err("this device was revoked from the account"));
            }
        }
        if updated.contains_key(STORE_INBOUND) || updated.contains_key(STORE_LOCAL) {
            self.accept_pins().await;
        }
        Ok(updated)
    }

    /// Bring one store up to the service's, checking everything.
    async fn sync_store(&mut self, address: &str, remote: &StoreStatus) -> Result<u64, MeshError> {
        let store = remote.store.as_str();
        let (local_len, local_apex) = self.replicas.head(store);
        if remote.index < local_len {
            return Err(err(format!(
                "the service rolled {store} back from {local_len} to {} entries",
                remote.index
            )));
        }
        if remote.index == local_len {
            if remote.apex != URL_SAFE_NO_PAD.encode(local_apex) {
                return Err(err(format!(
                    "the service's {store} has another history than ours (a fork)"
                )));
            }
            return Ok(0);
        }
        let result = self.download(address, remote).await;
        let (len, apex) = self.replicas.head(store);
        let checked = result.and_then(|()| {
            if URL_SAFE_NO_PAD.encode(apex) != remote.apex || len != remote.index {
                Err(err(format!(
                    "the service's {store} does not match what it announced"
                )))
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => {
                self.replicas.commit(store)?;
                Ok(len - local_len)
            }
            Err(e) => {
                self.replicas.rollback(store);
                Err(e)
            }
        }
    }

    /// Download and stage the frames a store lacks; each must extend it.
    async fn download(&mut self, address: &str, remote: &StoreStatus) -> Result<(), MeshError> {
        let store = remote.store.as_str();
        while self.replicas.head(store).0 < remote.index {
            let answer = self
                .call(ServiceRequest::Download(DownloadRequest {
                    account_address: address.to_owned(),
                    store: store.to_owned(),
                    after: self.replicas.head(store).0,
                }))
                .await?;
            let ServiceResponse::DownloadResponse(download) = answer else {
                return Err(err("the service gave an unexpected answer"));
            };
            if download.frames.is_empty() {
                return Err(err(format!(
                    "the service announced {} entries in {store} but sent fewer",
                    remote.index
                )));
            }
            let mut frames = Vec::with_capacity(download.frames.len());
            for text in download.frames {
                let bytes = URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| err("the service sent a malformed frame"))?;
                let (raw, used) = sequence::decode_frame(&bytes, 0)
                    .ok()
                    .flatten()
                    .filter(|(_, used)| *used == bytes.len())
                    .ok_or_else(|| err("the service sent a malformed frame"))?;
                let _ = used;
                frames.push(raw);
            }
            self.replicas.extend(store, frames).map_err(|e| {
                err(format!(
                    "the service sent {store} entries that do not extend ours (forged, reordered, altered or forked): {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Accept the connection requests that prove knowledge of a PIN this
    /// account registered.
    async fn accept_pins(&mut self) {
        let Ok(keys) = self.admin() else { return };
        let Ok(local_key) = keys.store_key(STORE_LOCAL) else {
            return;
        };
        let admin = keys.admin.public();
        let mut pins = BTreeMap::new();
        for (pin_id, index) in self.replicas.live(STORE_LOCAL) {
            let Some(frame) = self.replicas.frame(STORE_LOCAL, index) else {
                continue;
            };
            let Ok(opened) = frame.open(Some(&local_key), Some(&admin)) else {
                continue;
            };
            if let Ok(record) = serde_json::from_slice::<PinRecord>(&opened.payload) {
                pins.insert(pin_id, (record.pin.clone(), record.roles.clone()));
            }
        }
        let address = self
            .state
            .as_ref()
            .map(|s| s.address.clone())
            .unwrap_or_default();
        let Ok(requests) = self.inbound() else { return };
        for request in requests {
            let (Some(pin_id), Some(given)) = (&request.pin_id, &request.pin_witness) else {
                continue;
            };
            let Some((pin, roles)) = pins.get(pin_id) else {
                continue;
            };
            let Ok(pin) = Udf::parse(pin) else { continue };
            let Ok(salted) = keyed::salted_pin(&pin, keyed::PIN_ACTION_DEVICE) else {
                continue;
            };
            let nonce = URL_SAFE_NO_PAD
                .decode(&request.client_nonce)
                .unwrap_or_default();
            let expected = keyed::pin_witness(
                &salted,
                &address,
                &nonce,
                &sequence_digest(request.profile.as_bytes()),
            );
            if URL_SAFE_NO_PAD.encode(expected) != *given {
                tracing::warn!("a connection request gave a wrong PIN witness");
                continue;
            }
            let roles = roles.clone();
            if let Err(e) = self.answer_request(&request, Some((roles, None))).await {
                tracing::warn!(error = %e, "could not accept a PIN connection");
            }
        }
    }

    /// Whether this device is in an account (and so should sync).
    pub fn should_sync(&self) -> bool {
        matches!(self.status(), "connected" | "pending")
    }
}

/// A Device catalog entry, opened with the device's base key (and, if
/// given, checked to be signed by the administrator key).
fn open_cataloged(
    entry: &Envelope,
    device: &DeviceKeys,
    admin: Option<&PublicKey>,
) -> Result<CatalogedDevice, MeshError> {
    let opened = entry
        .open(Some(&device.encrypt), admin)
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&opened.payload).map_err(|_| err("damaged Device catalog entry"))
}

/// The digest a PIN witness covers: SHA-512 of the request's device profile.
fn sequence_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha512::digest(bytes).to_vec()
}

fn parse_seed(bytes: &[u8]) -> Result<Seed, MeshError> {
    let text = std::str::from_utf8(bytes).map_err(|_| err("the stored seed is damaged"))?;
    let udf = Udf::parse(text.trim()).map_err(|_| err("the stored seed is damaged"))?;
    Seed::from_udf(&udf).map_err(|_| err("the stored seed is damaged"))
}
