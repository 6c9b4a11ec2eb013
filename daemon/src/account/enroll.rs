//! The device's side of enrolment: create an account, ask to join one,
//! learn the answer, escrow and recover the account seed.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_ipc::control::{AccountCreated, ConnectionState, Escrow, Recovered, Response, Standing};
use mesh_protocol::account::{
    self, AccountKeys, Activation, ProfileUser, RequestConnection, RespondConnection, Role, Store,
};
use mesh_protocol::envelope::Envelope;
use mesh_protocol::service::{
    BindRequest, CompleteRequest, ConnectRequest, ServiceRequest, ServiceResponse,
};
use mesh_protocol::shamir;
use mesh_protocol::udf::seed::Seed;
use mesh_protocol::udf::{Udf, keyed};
use rand_core::{OsRng, RngCore};

use super::{Account, AccountError, PendingConnection, State, open_cataloged, profile_digest};

/// The service answered something that does not fit the request.
fn unexpected() -> AccountError {
    AccountError::Untrusted {
        store: None,
        why: "the service gave an unexpected answer".into(),
    }
}

impl Account {
    /// Create an account with this device as its first administrator.
    pub(super) async fn create(
        &mut self,
        address: &str,
        service: &str,
        name: &str,
    ) -> Result<Response, AccountError> {
        if self.state.is_some() {
            return Err(AccountError::HasAccount);
        }
        let keys = AccountKeys::generate(&mut OsRng)?;
        let profile = keys.profile(&mut OsRng, address)?.to_json();
        let remote = self.remote_for(service, address)?;
        let device = self.device_keys()?;
        let device_profile = device.profile(&mut OsRng, name)?.to_json();
        let (entry, access) = keys.connect(
            &mut OsRng,
            &device_profile,
            name,
            &[Role::Admin],
            0,
            address,
            |_, _| None,
        )?;
        let device_udf = device.udf().to_string();
        // Sign with the co-generated key the entry gives this device.
        let cataloged = open_cataloged(&entry, device, address, &keys.admin.public())?;
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
            standing: Standing::Connected,
            profile,
            pending: None,
            handled: Vec::new(),
            device_entry: Some(entry.to_json()),
        });
        self.remote = Some(remote);
        self.activation = Some(activation);
        self.save()?;
        self.refold()?;
        self.sync().await;
        Ok(Response::AccountCreated(AccountCreated {
            address: address.to_owned(),
            profile: keys.udf().to_string(),
            device: device_udf,
            secrets: self.secrets.describe(),
        }))
    }

    /// Split the account seed into recovery shares.
    pub(super) fn escrow(&self, shares: usize, quorum: usize) -> Result<Response, AccountError> {
        let keys = self.admin()?;
        let secret = keys.seed().to_udf();
        let split = shamir::split(&mut OsRng, secret.as_bytes(), shares, quorum)
            .map_err(|e| AccountError::Input(e.to_string()))?;
        Ok(Response::Escrow(Escrow {
            quorum,
            shares: split.iter().map(|s| s.to_udf().to_string()).collect(),
            profile: keys.udf().to_string(),
        }))
    }

    /// Rebuild the account seed from shares (and check that it is one);
    /// it is not kept at rest. With `rejoin`, also join the account's service as a new
    /// administrator device: the seed itself vouches for it.
    pub(super) async fn recover(
        &mut self,
        shares: &[String],
        rejoin: Option<(String, String, String)>,
    ) -> Result<Response, AccountError> {
        let udfs = shares
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Udf::parse(s).map_err(|e| {
                    AccountError::Input(format!("share {} is not a share: {e}", i + 1))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let secret = shamir::recover_udfs(&udfs).map_err(|e| AccountError::Input(e.to_string()))?;
        let not_seed = || AccountError::Input("the shares do not hold an account seed".into());
        let udf = Udf::from_binary(secret.to_vec()).map_err(|_| not_seed())?;
        let seed = Seed::from_udf(&udf).map_err(|_| not_seed())?;
        let keys = AccountKeys::from_seed(seed).map_err(|_| not_seed())?;
        let fingerprint = keys.udf().to_string();
        // The seed is not kept: rejoining puts it, sealed, in this
        // device's grants; without rejoining the shares are only checked.
        drop(udf);
        let Some((address, service, name)) = rejoin else {
            return Ok(Response::Recovered(Recovered {
                profile: fingerprint,
                device: None,
                secrets: self.secrets.describe(),
            }));
        };
        if self.state.is_some() {
            return Err(AccountError::HasAccount);
        }
        let profile = keys.profile(&mut OsRng, &address)?.to_json();
        let remote = self.remote_for(&service, &address)?;
        let device = self.device_keys()?;
        let device_profile = device.profile(&mut OsRng, &name)?.to_json();
        // A new device: it was never in the account, so no entry about
        // it has a previous version.
        let (entry, access) = keys.connect(
            &mut OsRng,
            &device_profile,
            &name,
            &[Role::Admin],
            0,
            &address,
            |_, _| None,
        )?;
        let cataloged = open_cataloged(&entry, device, &address, &keys.admin.public())?;
        let activation = Activation::open(device, &profile, &cataloged)?;
        remote.set_capability(Some(&access.to_json()));
        self.state = Some(State {
            address,
            service,
            device_name: name.clone(),
            standing: Standing::Recovering,
            profile,
            pending: None,
            handled: Vec::new(),
            device_entry: Some(entry.to_json()),
        });
        self.remote = Some(remote);
        self.activation = Some(activation);
        let report = self.sync().await;
        if !report.ok {
            self.state = None;
            self.remote = None;
            self.activation = None;
            let why = report
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let why = format!("cannot read the account from its service: {why}");
            // Only the service itself failing is "unreachable"; a store
            // that did not verify is not to be trusted.
            return Err(if report.errors.keys().all(|k| k == "service") {
                AccountError::Unreachable(why)
            } else {
                AccountError::Untrusted { store: None, why }
            });
        }
        self.transact(
            vec![(Store::Device, vec![entry]), (Store::Access, vec![access])],
            Vec::new(),
        )
        .await?;
        if let Some(remote) = &self.remote {
            remote.set_capability(None);
        }
        self.set_standing(Standing::Connected);
        self.save()?;
        Ok(Response::Recovered(Recovered {
            profile: fingerprint,
            device: Some(name),
            secrets: self.secrets.describe(),
        }))
    }

    /// Ask to join an account; returns the witness code to compare.
    pub(super) async fn connect(
        &mut self,
        address: &str,
        service: &str,
        name: &str,
        pin: Option<&str>,
        expected: Option<&str>,
    ) -> Result<Response, AccountError> {
        if matches!(self.standing(), Standing::Connected | Standing::Pending) {
            return Err(AccountError::HasAccount);
        }
        let remote = self.remote_for(service, address)?;
        let device = self.device_keys()?;
        let profile = device.profile(&mut OsRng, name)?.to_json();
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let (pin_id, pin_witness) = match pin {
            Some(pin) => {
                let bad = |e: String| AccountError::Input(format!("the PIN is not valid: {e}"));
                let pin = Udf::parse(pin).map_err(|e| bad(e.to_string()))?;
                let salted = keyed::salted_pin(&pin, keyed::PIN_ACTION_DEVICE)
                    .map_err(|e| bad(e.to_string()))?;
                let id = keyed::pin_id(&salted, address).map_err(|e| bad(e.to_string()))?;
                let digest = profile_digest(profile.as_bytes());
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
            return Err(unexpected());
        };
        // Check what we are joining, and that the code is honest.
        let untrusted = |why: &str| AccountError::Untrusted {
            store: None,
            why: why.into(),
        };
        let (account_profile, _) =
            account::verify_profile::<ProfileUser>(&answer.enveloped_profile_user)?;
        if account_profile.account_address != address {
            return Err(untrusted("the service answered for another account"));
        }
        if expected.is_some_and(|p| p != account_profile.profile_signature.udf) {
            return Err(untrusted(
                "the service answered with another account than the one the URI names: refusing",
            ));
        }
        let server_nonce = URL_SAFE_NO_PAD
            .decode(&answer.server_nonce)
            .map_err(|_| untrusted("the service's nonce is malformed"))?;
        let account_udf = Udf::parse(&account_profile.profile_signature.udf)
            .map_err(|_| untrusted("the account's fingerprint is malformed"))?;
        // Both sides compute it over the fingerprints as the records carry them.
        let device_udf = Udf::parse(&device.udf().to_string())
            .map_err(|_| untrusted("this device's fingerprint is malformed"))?;
        let code =
            mesh_protocol::service::witness(&account_udf, &server_nonce, &device_udf, &nonce);
        if code != answer.witness {
            return Err(untrusted(
                "the service's witness code does not match: refusing",
            ));
        }
        self.state = Some(State {
            address: address.to_owned(),
            service: service.to_owned(),
            device_name: name.to_owned(),
            standing: Standing::Pending,
            profile: answer.enveloped_profile_user,
            pending: Some(PendingConnection {
                response_id: answer.response_id,
                witness: code.clone(),
            }),
            handled: Vec::new(),
            device_entry: None,
        });
        self.remote = Some(remote);
        self.save()?;
        Ok(Response::Connection(ConnectionState {
            status: Standing::Pending,
            witness: Some(code),
            profile: Some(account_udf.to_string()),
        }))
    }

    /// Ask the service whether an administrator answered; activate if so.
    pub(super) async fn poll_connection(&mut self) -> Result<Response, AccountError> {
        let state_of = |status: Standing, witness: Option<String>| {
            Ok(Response::Connection(ConnectionState {
                status,
                witness,
                profile: None,
            }))
        };
        let Some(state) = self.state.clone() else {
            return state_of(Standing::None, None);
        };
        let Some(pending) = state
            .pending
            .clone()
            .filter(|_| state.standing == Standing::Pending)
        else {
            return state_of(state.standing, None);
        };
        let device = self.device.as_ref().ok_or(AccountError::NoAccount)?;
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
            return Err(unexpected());
        };
        let Some(respond) = answer.enveloped_respond_connection else {
            return state_of(Standing::Pending, Some(pending.witness));
        };
        let (profile, _) = account::verify_profile::<ProfileUser>(&state.profile)?;
        let admin = profile.administrator_signature.key()?;
        let respond: RespondConnection = account::verify_admin_signed(&respond, &admin)?;
        if respond.response_id != pending.response_id {
            return Err(AccountError::untrusted(
                Store::Device,
                "the administrator's answer is for another request",
            ));
        }
        let standing = if respond.result == "Accepted" {
            let untrusted =
                || AccountError::untrusted(Store::Device, "an acceptance without an entry");
            let entry = respond.enveloped_cataloged_device.ok_or_else(untrusted)?;
            let entry = Envelope::from_json(entry.as_bytes()).map_err(|_| untrusted())?;
            let cataloged = open_cataloged(&entry, device, &state.address, &admin)?;
            self.activation = Some(Activation::open(device, &state.profile, &cataloged)?);
            if let Some(state) = &mut self.state {
                state.device_entry = Some(entry.to_json());
            }
            Standing::Connected
        } else {
            Standing::Rejected
        };
        if let Some(state) = &mut self.state {
            state.standing = standing;
            state.pending = None;
        }
        self.save()?;
        if standing == Standing::Connected {
            Box::pin(self.sync()).await;
        }
        state_of(standing, None)
    }
}
