//! The transactions of the Mesh service, over a [`Storage`].
//!
//! The service is untrusted by design, but it still guards what it serves:
//! it authenticates every request but Hello and Connect ([`Auth`]): a
//! device the Access catalog revoked is refused before any capability it
//! brings is looked at, and a time not after the device's last or too far
//! ahead of the clock is refused, naming the time held. It serves
//! a device only the stores its roles allow, keeps each store a valid
//! Merkle sequence (a frame that does not extend it is refused), accepts
//! Access catalog entries only when the account's administrator key signed
//! them (it learns from them whom to serve), and applies each transaction
//! all or nothing, stating Conflict when the client's view is stale.
//! Connect, open to anyone, is bounded by the requests an account has
//! waiting ([`Limits::pending_per_account`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_protocol::account::{
    self, AccessCapability, ProfileDevice, ProfileUser, RequestConnection, Role, Store,
};
use mesh_protocol::entry;
use mesh_protocol::envelope::{ContentMeta, Envelope, Event};
use mesh_protocol::keys::PublicKey;
use mesh_protocol::sequence::{self, ContainerType, RawFrame, Sequence};
use mesh_protocol::service::{
    Auth, BindRequest, CompleteRequest, CompleteResponse, ConnectRequest, ConnectResponse,
    DownloadRequest, DownloadResponse, HelloResponse, InboundConnection, MAX_DOWNLOAD,
    MAX_TIME_AHEAD_MS, Reason, STATUS_SUCCESS, ServiceRequest, ServiceResponse, StatusOnly,
    StatusResponse, StoreStatus, TransactRequest, auth_message, witness,
};
use mesh_protocol::udf::Udf;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::hostile::{self, Hostile};
use crate::storage::{Commit, Storage, StorageError};

/// A refusal: HTTP status, machine reason, and a line for people.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// `DeviceRevoked`, `Conflict`, ...
    pub reason: Reason,
    /// One line that echoes nothing of the request.
    pub description: String,
    /// With `Replayed` and `TimeAhead`: the device's last request time
    /// the service holds, given only after the signature verified.
    pub last_time: Option<u64>,
}

impl Refusal {
    fn new(status: u16, reason: Reason, description: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason,
            description: description.into(),
            last_time: None,
        }
    }

    /// The refusal as a response body.
    pub fn body(&self) -> ServiceResponse {
        ServiceResponse::MeshResponse(StatusOnly {
            status: self.status,
            status_description: self.description.clone(),
            reason: Some(self.reason),
            last_time: self.last_time,
        })
    }
}

impl From<StorageError> for Refusal {
    fn from(err: StorageError) -> Refusal {
        tracing::error!(error = %err, "storage failed");
        Refusal::new(
            500,
            Reason::Storage,
            "the service could not store or read the account",
        )
    }
}

fn malformed(what: &str) -> Refusal {
    Refusal::new(400, Reason::Malformed, format!("malformed {what}"))
}

/// Limits on what one account may hold and on the requests it takes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames in all of an account's stores together.
    pub entries_per_account: u64,
    /// Connection requests waiting for an administrator's answer. Connect
    /// is open to anyone: this, not the account's entries, is what a
    /// flood of requests fills, and a full account refuses more (429)
    /// until an administrator answers.
    pub pending_per_account: u64,
    /// How far ahead of the service's clock a request's time may be, in
    /// milliseconds.
    pub time_ahead_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            entries_per_account: 1_000_000,
            pending_per_account: 64,
            time_ahead_ms: MAX_TIME_AHEAD_MS,
        }
    }
}

/// What the service keeps about an account besides its stores.
#[derive(Debug, Serialize, Deserialize)]
struct AccountRecord {
    profile: String,
}

/// The service's state: storage, plus each store loaded once as a
/// verified sequence.
pub struct Service {
    storage: Box<dyn Storage>,
    stores: Mutex<HashMap<(String, Store), Sequence>>,
    limits: Limits,
    hostile: Option<Hostile>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("hostile", &self.hostile)
            .finish_non_exhaustive()
    }
}

/// Who made an authenticated request.
struct Caller {
    device: String,
    roles: Vec<Role>,
}

impl Caller {
    fn may_read(&self, store: Store) -> bool {
        account::stores_for(&self.roles).contains(&store)
    }

    fn may_write(&self, store: Store) -> bool {
        match store {
            Store::Access | Store::Device | Store::Local => self.roles.contains(&Role::Admin),
            Store::Inbound => false,
            Store::Application | Store::Credential => self.may_read(store),
        }
    }
}

impl Service {
    /// A service over `storage`.
    pub fn new(storage: Box<dyn Storage>, limits: Limits, hostile: Option<Hostile>) -> Service {
        Service {
            storage,
            stores: Mutex::new(HashMap::new()),
            limits,
            hostile,
        }
    }

    /// How this service lies, if it was started to.
    pub fn hostile(&self) -> Option<Hostile> {
        self.hostile
    }

    /// Handle one transaction; `auth` is the request's `mesh-auth` header.
    ///
    /// `capability` is the request's `mesh-capability` header: an Access
    /// entry signed by the account's administrator key that introduces a
    /// device the Access catalog does not know yet (a device rebuilding an
    /// account from its escrowed seed). Only a holder of the account seed
    /// can make one.
    pub fn handle(
        &self,
        request: ServiceRequest,
        auth: Option<&str>,
        capability: Option<&str>,
        body: &[u8],
    ) -> Result<ServiceResponse, Refusal> {
        // One transaction at a time: the stores' cache is the lock.
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| Refusal::new(500, Reason::Internal, "service state lost"))?;
        let auth = auth
            .map(|a| Auth::parse(a).ok_or_else(|| malformed("mesh-auth header")))
            .transpose()?;
        match request {
            ServiceRequest::Hello(_) => {
                Ok(ServiceResponse::MeshHelloResponse(HelloResponse::current()))
            }
            ServiceRequest::BindAccount(bind) => self.bind(&mut stores, bind, auth, body),
            ServiceRequest::UnbindAccount(req) => {
                let (caller, mut commit) = self.authenticate(
                    &mut stores,
                    &req.account_address,
                    auth.as_ref(),
                    body,
                    None,
                )?;
                if !caller.roles.contains(&Role::Admin) {
                    return Err(Refusal::new(
                        403,
                        Reason::NotAdministrator,
                        "only an administrator may delete the account",
                    ));
                }
                commit.delete_account = Some(req.account_address.clone());
                self.storage.commit(commit)?;
                stores.retain(|(a, _), _| *a != req.account_address);
                Ok(success("account deleted"))
            }
            ServiceRequest::Connect(req) => self.connect(&mut stores, req),
            ServiceRequest::Complete(req) => self.complete(req, auth.as_ref(), body),
            ServiceRequest::Status(req) => {
                let caller = self.reader(
                    &mut stores,
                    &req.account_address,
                    auth.as_ref(),
                    capability,
                    body,
                )?;
                self.status(&mut stores, &req.account_address, &caller)
            }
            ServiceRequest::Download(req) => {
                let caller = self.reader(
                    &mut stores,
                    &req.account_address,
                    auth.as_ref(),
                    capability,
                    body,
                )?;
                self.download(&mut stores, req, &caller)
            }
            ServiceRequest::Transact(req) => self.transact(&mut stores, req, auth.as_ref(), body),
        }
    }

    /// How many frames an account holds in all its stores.
    fn entries(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        address: &str,
    ) -> Result<u64, Refusal> {
        let mut total = 0;
        for store in Store::ALL {
            total += self.store(stores, address, store)?.len();
        }
        Ok(total)
    }

    /// Authenticate a read (Status, Download), accepting a device that a
    /// `mesh-capability` header introduces, and record its time.
    fn reader(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        address: &str,
        auth: Option<&Auth>,
        capability: Option<&str>,
        body: &[u8],
    ) -> Result<Caller, Refusal> {
        let brought = match capability {
            Some(text) => {
                let json = URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| malformed("mesh-capability header"))?;
                let envelope =
                    Envelope::from_json(&json).map_err(|_| malformed("mesh-capability header"))?;
                let admin = self.admin_key(address)?;
                match open_access(&envelope, address, &admin)? {
                    Access::Grant(capability) => Some(capability),
                    Access::Revoke(_) => return Err(malformed("mesh-capability header")),
                }
            }
            None => None,
        };
        let (caller, commit) = self.authenticate(stores, address, auth, body, brought.as_ref())?;
        self.storage.commit(commit)?;
        Ok(caller)
    }

    /// The account's administrator key, which vouches for every device.
    fn admin_key(&self, address: &str) -> Result<PublicKey, Refusal> {
        self.profile(address)?
            .administrator_signature
            .key()
            .map_err(|_| malformed("profile"))
    }

    fn profile(&self, address: &str) -> Result<ProfileUser, Refusal> {
        let record = self.storage.account(address)?.ok_or_else(|| {
            Refusal::new(404, Reason::NotFound, "no such account on this service")
        })?;
        let record: AccountRecord =
            serde_json::from_slice(&record).map_err(|_| malformed("account record"))?;
        account::verify_profile::<ProfileUser>(&record.profile)
            .map(|(p, _)| p)
            .map_err(|_| Refusal::new(500, Reason::Internal, "stored profile does not verify"))
    }

    fn profile_json(&self, address: &str) -> Result<String, Refusal> {
        let record = self.storage.account(address)?.ok_or_else(|| {
            Refusal::new(404, Reason::NotFound, "no such account on this service")
        })?;
        let record: AccountRecord =
            serde_json::from_slice(&record).map_err(|_| malformed("account record"))?;
        Ok(record.profile)
    }

    /// The store, loaded from storage on first use.
    fn store<'a>(
        &self,
        stores: &'a mut HashMap<(String, Store), Sequence>,
        address: &str,
        store: Store,
    ) -> Result<&'a mut Sequence, Refusal> {
        let key = (address.to_owned(), store);
        if !stores.contains_key(&key) {
            let bytes: Vec<u8> = self.storage.frames(address, store.name())?.concat();
            let sequence = Sequence::decode(&bytes)
                .and_then(sequence::Unverified::verify)
                .map_err(|_| Refusal::new(500, Reason::Internal, "a stored log does not verify"))?;
            stores.insert(key.clone(), sequence);
        }
        stores
            .get_mut(&key)
            .ok_or_else(|| Refusal::new(500, Reason::Internal, "store vanished"))
    }

    /// The live Access capabilities of an account, and the devices that
    /// once had one (revoked).
    fn capabilities(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        address: &str,
    ) -> Result<(HashMap<String, AccessCapability>, Vec<String>), Refusal> {
        let admin = self.admin_key(address)?;
        let access = self.store(stores, address, Store::Access)?;
        let mut live = HashMap::new();
        let mut revoked = Vec::new();
        for index in 1..=access.len() {
            let Some(frame) = access.frame(index) else {
                continue;
            };
            match open_access(&frame, address, &admin) {
                Ok(Access::Grant(capability)) => {
                    revoked.retain(|r| *r != capability.device_udf);
                    live.insert(capability.device_udf.clone(), capability);
                }
                Ok(Access::Revoke(id)) => {
                    live.remove(&id);
                    revoked.push(id);
                }
                Err(_) => {}
            }
        }
        Ok((live, revoked))
    }

    /// Check a request's signature and freshness against the device's
    /// capability (or, for a recovering administrator, against a
    /// capability the request itself brings); return the caller and the
    /// commit that records its time.
    fn authenticate(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        address: &str,
        auth: Option<&Auth>,
        body: &[u8],
        brought: Option<&AccessCapability>,
    ) -> Result<(Caller, Commit), Refusal> {
        let auth = auth.ok_or_else(|| {
            Refusal::new(
                401,
                Reason::NotAuthorized,
                "this request must be signed by a device",
            )
        })?;
        let (live, revoked) = self.capabilities(stores, address)?;
        // Revocation first: a revoked device's old Access entry still
        // carries the administrator's signature, so a capability it
        // brings (header or Transact) must not bring it back. Only an
        // administrator writing a new Access entry for it does.
        if revoked.contains(&auth.device) {
            return Err(Refusal::new(
                410,
                Reason::DeviceRevoked,
                "this device was revoked from the account",
            ));
        }
        let capability = match (live.get(&auth.device), brought) {
            (Some(c), _) => c.clone(),
            (None, Some(c)) if c.device_udf == auth.device => c.clone(),
            (None, _) => {
                return Err(Refusal::new(
                    401,
                    Reason::NotAuthorized,
                    "this device is not connected to the account",
                ));
            }
        };
        let key = capability
            .signature
            .key()
            .map_err(|_| malformed("capability"))?;
        self.check_signature(address, auth, &key, body)?;
        let commit = Commit {
            times: vec![(address.to_owned(), auth.device.clone(), auth.time)],
            ..Commit::default()
        };
        Ok((
            Caller {
                device: auth.device.clone(),
                roles: capability.roles,
            },
            commit,
        ))
    }

    fn check_signature(
        &self,
        address: &str,
        auth: &Auth,
        key: &PublicKey,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let message = auth_message(address, &auth.device, auth.time, body);
        key.verify(&message, &auth.signature).map_err(|_| {
            Refusal::new(
                401,
                Reason::NotAuthorized,
                "the request's signature does not verify",
            )
        })?;
        // Only now, signed by the device, may the refusals below tell it
        // the time the service holds, for it to continue after.
        let last = self.storage.time(address, &auth.device)?;
        if auth.time <= last {
            return Err(Refusal {
                last_time: Some(last),
                ..Refusal::new(
                    401,
                    Reason::Replayed,
                    "the request is a replay (its time is not later than the last)",
                )
            });
        }
        if auth.time > now_ms().saturating_add(self.limits.time_ahead_ms) {
            return Err(Refusal {
                last_time: Some(last),
                ..Refusal::new(
                    401,
                    Reason::TimeAhead,
                    "the request's time is too far ahead of the service's clock",
                )
            });
        }
        Ok(())
    }

    fn bind(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        bind: BindRequest,
        auth: Option<Auth>,
        body: &[u8],
    ) -> Result<ServiceResponse, Refusal> {
        let address = bind.account_address.clone();
        if address.is_empty()
            || address.len() > 256
            || address.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(malformed("account address"));
        }
        if self.storage.account(&address)?.is_some() {
            return Err(Refusal::new(
                409,
                Reason::AccountRegistered,
                "an account with that address exists",
            ));
        }
        let (profile, _) = account::verify_profile::<ProfileUser>(&bind.enveloped_profile_user)
            .map_err(|_| Refusal::new(400, Reason::Malformed, "the profile does not verify"))?;
        if profile.account_address != address {
            return Err(Refusal::new(
                400,
                Reason::Malformed,
                "the profile is for another address",
            ));
        }
        let admin = profile
            .administrator_signature
            .key()
            .map_err(|_| malformed("profile"))?;
        let access = Envelope::from_json(bind.access_frame.as_bytes())
            .map_err(|_| malformed("access entry"))?;
        let Access::Grant(capability) = open_access(&access, &bind.account_address, &admin)? else {
            return Err(malformed("access entry"));
        };
        let device = Envelope::from_json(bind.device_frame.as_bytes())
            .map_err(|_| malformed("device entry"))?;
        let auth = auth.ok_or_else(|| {
            Refusal::new(
                401,
                Reason::NotAuthorized,
                "this request must be signed by a device",
            )
        })?;
        if auth.device != capability.device_udf {
            return Err(Refusal::new(
                401,
                Reason::NotAuthorized,
                "the request is not signed by the binding device",
            ));
        }
        self.check_signature(
            &address,
            &auth,
            &capability
                .signature
                .key()
                .map_err(|_| malformed("capability"))?,
            body,
        )?;
        let mut commit = Commit {
            new_account: Some((
                address.clone(),
                serde_json::to_vec(&AccountRecord {
                    profile: bind.enveloped_profile_user.clone(),
                })
                .map_err(|_| malformed("profile"))?,
            )),
            times: vec![(address.clone(), auth.device.clone(), auth.time)],
            ..Commit::default()
        };
        let mut fresh = Vec::new();
        for store in Store::ALL {
            let mut sequence = Sequence::new(ContainerType::Merkle);
            match store {
                Store::Access => {
                    sequence.append(access.clone());
                }
                Store::Device => {
                    sequence.append(device.clone());
                }
                _ => {}
            }
            for (index, raw) in sequence.raw_frames().iter().enumerate() {
                commit.frames.push((
                    address.clone(),
                    store.name().to_owned(),
                    index as u64,
                    sequence::encode_frame(raw),
                ));
            }
            fresh.push((store, sequence));
        }
        self.storage.commit(commit)?;
        for (store, sequence) in fresh {
            stores.insert((address.clone(), store), sequence);
        }
        tracing::info!("account bound");
        Ok(success("account created"))
    }

    fn connect(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        req: ConnectRequest,
    ) -> Result<ServiceResponse, Refusal> {
        let address = req.account_address;
        let profile = self.profile(&address)?;
        // Anyone may ask to connect: the requests waiting for an answer
        // are capped per account (checked before any signature work), so
        // a flood can neither fill the account nor use up its entries.
        if self.storage.unanswered(&address)? >= self.limits.pending_per_account {
            return Err(Refusal::new(
                429,
                Reason::TooLarge,
                "the account has too many connection requests waiting for an answer",
            ));
        }
        let request_envelope = Envelope::from_json(req.enveloped_request_connection.as_bytes())
            .map_err(|_| malformed("request"))?;
        let unchecked: RequestConnection =
            serde_json::from_slice(request_envelope.peek_unverified())
                .map_err(|_| malformed("request"))?;
        let (device, device_key) = account::verify_profile::<ProfileDevice>(
            &unchecked.enveloped_profile_device,
        )
        .map_err(|_| Refusal::new(400, Reason::Malformed, "the device profile does not verify"))?;
        request_envelope
            .open(None, Some(&device_key))
            .map_err(|_| {
                Refusal::new(
                    400,
                    Reason::Malformed,
                    "the request is not signed by the device",
                )
            })?;
        if unchecked.account_address != address {
            return Err(malformed("request"));
        }
        let client_nonce = URL_SAFE_NO_PAD
            .decode(&unchecked.client_nonce)
            .map_err(|_| malformed("nonce"))?;
        let mut server_nonce = [0u8; 16];
        OsRng.fill_bytes(&mut server_nonce);
        let substitute = match self.hostile {
            Some(Hostile::Substitute) => hostile::substitute_profile(&address),
            _ => None,
        };
        let shown = match &substitute {
            Some(json) => {
                account::verify_profile::<ProfileUser>(json)
                    .map_err(|_| malformed("profile"))?
                    .0
            }
            None => profile,
        };
        let account_udf =
            Udf::parse(&shown.profile_signature.udf).map_err(|_| malformed("profile"))?;
        let device_udf =
            Udf::parse(&device.profile_signature.udf).map_err(|_| malformed("profile"))?;
        let code = witness(&account_udf, &server_nonce, &device_udf, &client_nonce);
        let response_id = Udf::nonce(&mut OsRng, 16)
            .map_err(|_| malformed("nonce"))?
            .to_string();
        let entry = InboundConnection {
            enveloped_request_connection: req.enveloped_request_connection.clone(),
            server_nonce: URL_SAFE_NO_PAD.encode(server_nonce),
            witness: code.clone(),
            response_id: response_id.clone(),
        };
        let json = serde_json::to_vec(&entry).map_err(|_| malformed("request"))?;
        let meta = ContentMeta {
            message_type: Some(account::message_type::REQUEST_CONNECTION.into()),
            ..ContentMeta::for_event(&response_id, Event::New)
        };
        // Anyone may ask to connect: the account's limit bounds the spool.
        if self.entries(stores, &address)? >= self.limits.entries_per_account {
            return Err(Refusal::new(
                413,
                Reason::TooLarge,
                "the account holds too many entries",
            ));
        }
        // Append in place, and take the frame back if the commit fails:
        // no copy of the spool per request.
        let inbound = self.store(stores, &address, Store::Inbound)?;
        let before = inbound.len();
        let index = inbound.append(Envelope::unsealed(json, Some(&meta)));
        let Some(bytes) = inbound.raw_frames().last().map(sequence::encode_frame) else {
            inbound.truncate(before);
            return Err(Refusal::new(
                500,
                Reason::Internal,
                "the spool lost a frame",
            ));
        };
        let commit = Commit {
            frames: vec![(
                address.clone(),
                Store::Inbound.name().to_owned(),
                index,
                bytes,
            )],
            pending: vec![(
                address.clone(),
                response_id.clone(),
                unchecked.enveloped_profile_device.into_bytes(),
            )],
            ..Commit::default()
        };
        if let Err(err) = self.storage.commit(commit) {
            inbound.truncate(before);
            return Err(err.into());
        }
        Ok(ServiceResponse::ConnectResponse(ConnectResponse {
            status: STATUS_SUCCESS,
            server_nonce: URL_SAFE_NO_PAD.encode(server_nonce),
            witness: code,
            response_id,
            enveloped_profile_user: match substitute {
                Some(json) => json,
                None => self.profile_json(&address)?,
            },
        }))
    }

    fn complete(
        &self,
        req: CompleteRequest,
        auth: Option<&Auth>,
        body: &[u8],
    ) -> Result<ServiceResponse, Refusal> {
        let address = req.account_address;
        let device = self
            .storage
            .pending(&address, &req.response_id)?
            .ok_or_else(|| Refusal::new(404, Reason::NotFound, "no such connection request"))?;
        let device = String::from_utf8(device).map_err(|_| malformed("pending"))?;
        let (profile, key) =
            account::verify_profile::<ProfileDevice>(&device).map_err(|_| malformed("pending"))?;
        let auth = auth.ok_or_else(|| {
            Refusal::new(
                401,
                Reason::NotAuthorized,
                "this request must be signed by the device",
            )
        })?;
        if auth.device != profile.profile_signature.udf {
            return Err(Refusal::new(
                401,
                Reason::NotAuthorized,
                "the request is not from the device that asked",
            ));
        }
        self.check_signature(&address, auth, &key, body)?;
        let response = self.storage.response(&address, &req.response_id)?;
        self.storage.commit(Commit {
            times: vec![(address, auth.device.clone(), auth.time)],
            ..Commit::default()
        })?;
        let envelope = response
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| malformed("response"))?;
        Ok(ServiceResponse::CompleteResponse(CompleteResponse {
            status: if envelope.is_some() {
                STATUS_SUCCESS
            } else {
                202
            },
            enveloped_respond_connection: envelope,
        }))
    }

    fn status(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        address: &str,
        caller: &Caller,
    ) -> Result<ServiceResponse, Refusal> {
        let mut out = Vec::new();
        for store in Store::ALL {
            if !caller.may_read(store) {
                continue;
            }
            if self.hostile == Some(Hostile::Withhold) && store == Store::Application {
                continue;
            }
            let stored = self.store(stores, address, store)?;
            let injected = self.hostile.and_then(|h| h.served(address, store, stored));
            let sequence = injected.as_ref().unwrap_or(stored);
            let (index, apex) = match self.hostile {
                Some(Hostile::Endless) => (sequence.len() + hostile::ENDLESS, sequence.apex()),
                Some(Hostile::Rollback) if !sequence.is_empty() => {
                    let size = sequence.len() - 1;
                    (size, sequence.apex_at(size).unwrap_or([0u8; 64]))
                }
                Some(Hostile::Fork) if !sequence.is_empty() => {
                    (sequence.len(), forked(sequence).apex())
                }
                _ => (sequence.len(), sequence.apex()),
            };
            out.push(StoreStatus {
                store: store.to_owned(),
                index,
                apex: URL_SAFE_NO_PAD.encode(apex),
            });
        }
        tracing::debug!(device = %caller.device, "status");
        Ok(ServiceResponse::StatusResponse(StatusResponse {
            status: STATUS_SUCCESS,
            enveloped_profile_user: self.profile_json(address)?,
            stores: out,
        }))
    }

    fn download(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        req: DownloadRequest,
        caller: &Caller,
    ) -> Result<ServiceResponse, Refusal> {
        if !caller.may_read(req.store) {
            return Err(Refusal::new(
                403,
                Reason::Refused,
                "this device may not read that store",
            ));
        }
        let sequence = self.store(stores, &req.account_address, req.store)?;
        let changed = match self.hostile {
            Some(Hostile::Fork) if !sequence.is_empty() => Some(forked(sequence)),
            Some(hostile) => hostile.served(&req.account_address, req.store, sequence),
            None => None,
        };
        let served: &Sequence = changed.as_ref().unwrap_or(sequence);
        let mut frames: Vec<RawFrame> = served
            .raw_frames()
            .iter()
            .skip(
                usize::try_from(req.after)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            )
            .cloned()
            .collect();
        let len = match self.hostile {
            Some(Hostile::Rollback) => served.len().saturating_sub(1),
            _ => served.len(),
        };
        frames.truncate(usize::try_from(len.saturating_sub(req.after)).unwrap_or(0));
        match self.hostile {
            Some(Hostile::Reorder) if frames.len() >= 2 => {
                let n = frames.len();
                frames.swap(n - 1, n - 2);
            }
            Some(Hostile::Alter) => {
                for frame in &mut frames {
                    if let Some(byte) = frame.payload.first_mut() {
                        *byte ^= 0x20;
                    }
                }
            }
            _ => {}
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for frame in &frames {
            let encoded = sequence::encode_frame(frame);
            if bytes + encoded.len() > MAX_DOWNLOAD && !out.is_empty() {
                more = true;
                break;
            }
            bytes += encoded.len();
            out.push(URL_SAFE_NO_PAD.encode(encoded));
        }
        Ok(ServiceResponse::DownloadResponse(DownloadResponse {
            status: STATUS_SUCCESS,
            frames: out,
            more,
        }))
    }

    fn transact(
        &self,
        stores: &mut HashMap<(String, Store), Sequence>,
        req: TransactRequest,
        auth: Option<&Auth>,
        body: &[u8],
    ) -> Result<ServiceResponse, Refusal> {
        let address = req.account_address.clone();
        let admin = self.admin_key(&address)?;
        // Decode every frame first; Access entries must be the
        // administrator's, and one of them may introduce the caller.
        let mut decoded: Vec<(Store, u64, String, Vec<RawFrame>)> = Vec::new();
        let mut brought = None;
        for update in &req.updates {
            let mut frames = Vec::new();
            for text in &update.frames {
                let bytes = URL_SAFE_NO_PAD
                    .decode(text)
                    .map_err(|_| malformed("frame"))?;
                let (raw, used) = sequence::decode_frame(&bytes, 0)
                    .ok()
                    .flatten()
                    .ok_or_else(|| malformed("frame"))?;
                if used != bytes.len() {
                    return Err(malformed("frame"));
                }
                if update.store == Store::Access {
                    let envelope = raw.to_envelope().map_err(|_| malformed("frame"))?;
                    if let Access::Grant(capability) = open_access(&envelope, &address, &admin)? {
                        brought = Some(capability);
                    }
                }
                frames.push(raw);
            }
            decoded.push((update.store, update.index, update.apex.clone(), frames));
        }
        let (caller, mut commit) =
            self.authenticate(stores, &address, auth, body, brought.as_ref())?;
        let mut total = self.entries(stores, &address)?;
        // Check everything before touching anything.
        let mut conflicts = Vec::new();
        for (store, index, apex, frames) in &decoded {
            if !caller.may_write(*store) {
                return Err(Refusal::new(
                    403,
                    Reason::Refused,
                    format!("this device may not write {store}"),
                ));
            }
            let current = self.store(stores, &address, *store)?;
            if current.len() != *index || URL_SAFE_NO_PAD.encode(current.apex()) != *apex {
                conflicts.push(store.name());
            }
            total += frames.len() as u64;
        }
        if !conflicts.is_empty() {
            return Err(Refusal::new(
                409,
                Reason::Conflict,
                format!("stale view of {}: sync and try again", conflicts.join(", ")),
            ));
        }
        if total > self.limits.entries_per_account {
            return Err(Refusal::new(
                413,
                Reason::TooLarge,
                "the account holds too many entries",
            ));
        }
        if !req.responses.is_empty() && !caller.roles.contains(&Role::Admin) {
            return Err(Refusal::new(
                403,
                Reason::NotAdministrator,
                "only an administrator may answer a connection request",
            ));
        }
        for response in &req.responses {
            if self
                .storage
                .pending(&address, &response.response_id)?
                .is_none()
            {
                return Err(Refusal::new(
                    404,
                    Reason::NotFound,
                    "no such connection request",
                ));
            }
            commit.responses.push((
                address.clone(),
                response.response_id.clone(),
                response.envelope.clone().into_bytes(),
            ));
        }
        // Append in place; undo every store touched if anything fails.
        let mut touched: Vec<(Store, u64)> = Vec::new();
        let mut outcome = Ok(());
        for (store, index, _, frames) in decoded {
            touched.push((store, index));
            let sequence = self.store(stores, &address, store)?;
            for raw in frames {
                let bytes = sequence::encode_frame(&raw);
                match sequence.push_verified(raw) {
                    Ok(at) => {
                        commit
                            .frames
                            .push((address.clone(), store.name().to_owned(), at, bytes))
                    }
                    Err(_) => {
                        outcome = Err(Refusal::new(
                            400,
                            Reason::Malformed,
                            format!("a frame does not extend {store}"),
                        ));
                        break;
                    }
                }
            }
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            outcome = self.storage.commit(commit).map_err(Refusal::from);
        }
        if let Err(refusal) = outcome {
            for (store, len) in touched {
                if let Some(sequence) = stores.get_mut(&(address.clone(), store)) {
                    sequence.truncate(len);
                }
            }
            return Err(refusal);
        }
        self.status(stores, &address, &caller)
    }
}

/// The same store with its first data frame's payload changed and every
/// later frame re-treed: a consistent-looking, rewritten history.
fn forked(sequence: &Sequence) -> Sequence {
    let mut fork = Sequence::new(sequence.container());
    for index in 1..=sequence.len() {
        if let Some(mut frame) = sequence.frame(index) {
            if index == 1 {
                frame.tamper_body().push(b'!');
            }
            fork.append(frame);
        }
    }
    fork
}

/// What an Access entry does.
enum Access {
    /// Serve the device it names.
    Grant(AccessCapability),
    /// Stop serving the device it names.
    Revoke(String),
}

/// Open an Access entry of the account at `address`: a format-2 entry
/// signed by its administrator key (`mesh_protocol::entry`), whose signed
/// head, not its header, says what it does.
fn open_access(envelope: &Envelope, address: &str, admin: &PublicKey) -> Result<Access, Refusal> {
    let verified = entry::open(
        envelope,
        address,
        Store::Access,
        None,
        std::slice::from_ref(admin),
    )
    .map_err(|_| {
        Refusal::new(
            403,
            Reason::Refused,
            "Access entries must be signed by the account's administrator",
        )
    })?;
    if verified.head.event == Event::Delete {
        return Ok(Access::Revoke(verified.head.unique_id));
    }
    let capability: AccessCapability =
        verified.record().ok_or_else(|| malformed("access entry"))?;
    if capability.device_udf != verified.head.unique_id {
        return Err(malformed("access entry"));
    }
    Ok(Access::Grant(capability))
}

fn success(description: &str) -> ServiceResponse {
    ServiceResponse::MeshResponse(StatusOnly {
        status: STATUS_SUCCESS,
        status_description: description.to_owned(),
        reason: None,
        last_time: None,
    })
}

/// The service's clock, in milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
