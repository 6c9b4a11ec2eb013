//! The administrator's side: PINs, connection requests (listed, accepted,
//! rejected, or accepted by PIN), the device list, revocation.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_ipc::control::{
    Answered, ConnectionResult, DeviceRow, PendingRequest, PinIssued, Response, RevokedDevice,
};
use mesh_protocol::account::{
    self, PinRecord, ProfileDevice, RequestConnection, RespondConnection, Role, Store,
};
use mesh_protocol::envelope::{Envelope, Event};
use mesh_protocol::keys::PublicKey;
use mesh_protocol::service::{InboundConnection, PostedResponse};
use mesh_protocol::udf::name::ConnectUri;
use mesh_protocol::udf::{Udf, code, keyed};
use rand_core::{OsRng, RngCore};

use super::{Account, AccountError, now_ms, profile_digest};

/// A connection request as an administrator sees it, checked: the
/// device's signature verifies and the witness is recomputed.
#[derive(Debug, Clone)]
pub(super) struct Inbound {
    response_id: String,
    witness: String,
    description: String,
    device_udf: String,
    profile: String,
    pin_id: Option<String>,
    pin_witness: Option<String>,
    client_nonce: String,
}

impl Account {
    /// Register a PIN for a device to join without approval.
    pub(super) async fn pin(
        &mut self,
        roles: Vec<Role>,
        expires_in: Duration,
    ) -> Result<Response, AccountError> {
        let roles = if roles.is_empty() {
            vec![Role::Device]
        } else {
            roles
        };
        if roles.contains(&Role::Admin) {
            return Err(AccountError::Input(
                "a PIN never makes an administrator: connect without one, and accept the request by its code with --rights admin".into(),
            ));
        }
        let expires_ms =
            now_ms().saturating_add(u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX));
        let keys = self.admin()?;
        let mut key = [0u8; 10];
        OsRng.fill_bytes(&mut key);
        let failed = |e: mesh_protocol::udf::UdfError| AccountError::Io(e.to_string());
        let pin = Udf::new(code::AUTHENTICATOR_SHA2, &key).map_err(failed)?;
        let address = self.remote()?.account().to_owned();
        let salted = keyed::salted_pin(&pin, keyed::PIN_ACTION_DEVICE).map_err(failed)?;
        let pin_id = keyed::pin_id(&salted, &address)
            .map_err(failed)?
            .to_string();
        let record = PinRecord {
            pin: pin.to_string(),
            roles: roles.clone(),
            expires_ms,
        };
        let local_key = self.store_key(Store::Local)?.public();
        let entry = self.entry(
            Store::Local,
            &pin_id,
            Event::New,
            account::message_type::PIN,
            Some(&record),
            &keys.admin,
            &[local_key],
        )?;
        self.transact(vec![(Store::Local, vec![entry])], Vec::new())
            .await?;
        let state = self.state.as_ref().ok_or(AccountError::NoAccount)?;
        let uri = ConnectUri {
            account: address,
            pin,
            profile: Some(self.activation()?.profile.profile_signature.udf.clone()),
            service: Some(state.service.clone()),
        };
        Ok(Response::Pin(PinIssued {
            uri: uri.to_string(),
            roles,
        }))
    }

    /// The connection requests not answered yet.
    fn inbound(&self) -> Result<Vec<Inbound>, AccountError> {
        let activation = self.activation()?;
        let handled = self
            .state
            .as_ref()
            .map(|s| s.handled.clone())
            .unwrap_or_default();
        let account_udf = activation
            .profile
            .profile_signature
            .udf
            .parse::<Udf>()
            .map_err(|_| AccountError::untrusted(Store::Inbound, "malformed account profile"))?;
        let mut out = Vec::new();
        for index in 1..=self.replicas.head(Store::Inbound).0 {
            let Some(frame) = self.replicas.frame(Store::Inbound, index) else {
                continue;
            };
            // The service writes these: every field is checked below.
            let Ok(entry) = serde_json::from_slice::<InboundConnection>(frame.peek_unverified())
            else {
                continue;
            };
            if handled.contains(&entry.response_id) {
                continue;
            }
            let Ok(request_envelope) =
                Envelope::from_json(entry.enveloped_request_connection.as_bytes())
            else {
                continue;
            };
            let Ok(request) =
                serde_json::from_slice::<RequestConnection>(request_envelope.peek_unverified())
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
            let Ok(device_udf) = device.profile_signature.udf.parse::<Udf>() else {
                continue;
            };
            let server_nonce = URL_SAFE_NO_PAD
                .decode(&entry.server_nonce)
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
                response_id: entry.response_id,
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
    pub(super) fn pending(&self) -> Result<Vec<PendingRequest>, AccountError> {
        self.admin()?;
        Ok(self
            .inbound()?
            .into_iter()
            .map(|i| PendingRequest {
                witness: i.witness,
                description: i.description,
                device: i.device_udf,
                pin: i.pin_id.is_some(),
            })
            .collect())
    }

    /// Approve or refuse the request whose witness code is `code`.
    pub(super) async fn answer(
        &mut self,
        code: &str,
        accept: Option<(Vec<Role>, Option<String>)>,
    ) -> Result<Response, AccountError> {
        let normal = |c: &str| c.to_uppercase().replace('-', "");
        let request = self
            .inbound()?
            .into_iter()
            .find(|i| normal(&i.witness) == normal(code))
            .ok_or_else(|| {
                AccountError::NotFound(
                    "no pending request shows that code: check mesh device pending".into(),
                )
            })?;
        let accept = accept.map(|(roles, name)| {
            if roles.is_empty() {
                (vec![Role::Device], name)
            } else {
                (roles, name)
            }
        });
        self.answer_request(&request, accept, None).await
    }

    async fn answer_request(
        &mut self,
        request: &Inbound,
        accept: Option<(Vec<Role>, Option<String>)>,
        used_pin: Option<Envelope>,
    ) -> Result<Response, AccountError> {
        let keys = self.admin()?;
        let (respond, updates, name) = match &accept {
            Some((roles, name)) => {
                let name = name.clone().unwrap_or_else(|| request.description.clone());
                if self.devices()?.iter().any(|(n, _)| *n == name) {
                    return Err(AccountError::Exists(format!(
                        "a device named {name:?} exists: give another with --name"
                    )));
                }
                let address = self.remote()?.account();
                let epoch = self.activation()?.epoch();
                let (entry, access) = keys.connect(
                    &mut OsRng,
                    &request.profile,
                    &name,
                    roles,
                    epoch,
                    address,
                    |store, id| self.previous(store, id),
                )?;
                let respond = RespondConnection {
                    result: "Accepted".into(),
                    enveloped_cataloged_device: Some(entry.to_json()),
                    response_id: request.response_id.clone(),
                };
                (
                    respond,
                    vec![(Store::Device, vec![entry]), (Store::Access, vec![access])],
                    Some(name),
                )
            }
            None => (
                RespondConnection {
                    result: "Rejected".into(),
                    enveloped_cataloged_device: None,
                    response_id: request.response_id.clone(),
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
        let mut updates = updates;
        if let Some(delete) = used_pin {
            updates.push((Store::Local, vec![delete]));
        }
        self.transact(updates, posted).await?;
        if let Some(state) = &mut self.state {
            state.handled.push(request.response_id.clone());
        }
        self.save()?;
        Ok(Response::Answered(Answered {
            result: if accept.is_some() {
                ConnectionResult::Accepted
            } else {
                ConnectionResult::Rejected
            },
            name,
            device: request.device_udf.clone(),
        }))
    }

    /// The account's devices.
    pub(super) fn device_rows(&self) -> Result<Vec<DeviceRow>, AccountError> {
        let me = self
            .device
            .as_ref()
            .map(|d| d.udf().to_string())
            .unwrap_or_default();
        Ok(self
            .devices()?
            .into_iter()
            .map(|(name, d)| DeviceRow {
                name,
                this: d.device_udf == me,
                device: d.device_udf,
                roles: d.roles,
            })
            .collect())
    }

    /// Revoke a device: its Device and Access entries are deleted, and the
    /// store keys rotate: a new key epoch starts, every other device's
    /// Device entry is issued again with its keys (in the same
    /// transaction), and whatever is written from then on is sealed to keys
    /// the revoked device never held. What it could read before, it may
    /// have kept.
    pub(super) async fn revoke(&mut self, name: &str) -> Result<Response, AccountError> {
        let devices = self.devices()?;
        let device = devices
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| {
                AccountError::NotFound(format!("no device named {name:?}: see mesh device list"))
            })?;
        if Some(device.device_udf.clone()) == self.device.as_ref().map(|d| d.udf().to_string()) {
            return Err(AccountError::Input("a device cannot revoke itself".into()));
        }
        let keys = self.admin()?;
        let epoch = self.activation()?.epoch() + 1;
        let address = self.remote()?.account();
        // Like the reissued entries, readable with any epoch's key.
        let device_keys = keys.device_store_keys(epoch)?;
        let delete = |store: Store, message_type: &str, recipients: &[PublicKey]| {
            self.entry::<()>(
                store,
                &device.device_udf,
                Event::Delete,
                message_type,
                None,
                &keys.admin,
                recipients,
            )
        };
        let mut device_frames = vec![delete(
            Store::Device,
            account::message_type::CATALOGED_DEVICE,
            &device_keys,
        )?];
        for (_, other) in devices.iter().filter(|(n, _)| n != name) {
            device_frames.push(keys.reissue(
                &mut OsRng,
                other,
                epoch,
                address,
                self.previous(Store::Device, &other.device_udf),
            )?);
        }
        let updates = vec![
            (Store::Device, device_frames),
            (
                Store::Access,
                vec![delete(
                    Store::Access,
                    account::message_type::ACCESS_CAPABILITY,
                    &[],
                )?],
            ),
        ];
        // Hold the new epoch's keys to check our own frames with; give them
        // back if the revocation does not go through.
        let held = self.activation()?.store_keys.len();
        if let Some(activation) = &mut self.activation {
            activation.hold_epoch(epoch)?;
        }
        if let Err(e) = self.transact(updates, Vec::new()).await {
            if let Some(activation) = &mut self.activation {
                activation.store_keys.truncate(held);
            }
            return Err(e);
        }
        Ok(Response::Revoked(RevokedDevice {
            revoked: name.to_owned(),
            device: device.device_udf,
        }))
    }

    /// Accept the connection requests that prove knowledge of a PIN this
    /// account registered.
    pub(super) async fn accept_pins(&mut self) {
        let Ok(keys) = self.admin() else { return };
        let _ = keys;
        let mut pins = BTreeMap::new();
        let Ok(local) = self.open_live(Store::Local) else {
            return;
        };
        let now = now_ms();
        for (pin_id, verified) in local {
            // Expired, or (from an older meshd) granting admin: not used.
            if let Some(record) = verified
                .record::<PinRecord>()
                .filter(|r| r.expires_ms > now && !r.roles.contains(&Role::Admin))
            {
                pins.insert(pin_id, (record.pin.clone(), record.roles.clone()));
            }
        }
        let Ok(address) = self.remote().map(|r| r.account().to_owned()) else {
            return;
        };
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
                &profile_digest(request.profile.as_bytes()),
            );
            if URL_SAFE_NO_PAD.encode(expected) != *given {
                tracing::warn!("a connection request gave a wrong PIN witness");
                continue;
            }
            let roles = roles.clone();
            // Used once: its record goes with the acceptance.
            let Ok(local_key) = self.store_key(Store::Local).map(|k| k.public()) else {
                return;
            };
            let Ok(admin) = self.admin() else { return };
            let Ok(delete) = self.entry::<()>(
                Store::Local,
                pin_id,
                Event::Delete,
                account::message_type::PIN,
                None,
                &admin.admin,
                &[local_key],
            ) else {
                continue;
            };
            if let Err(e) = self
                .answer_request(&request, Some((roles, None)), Some(delete))
                .await
            {
                tracing::warn!(error = %e, "could not accept a PIN connection");
            }
        }
    }
}
