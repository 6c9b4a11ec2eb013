//! Accounts, devices and the records that bind them (mesh-schema-08 and
//! the reference code; research digest §4).
//!
//! An **account** is one secret seed: every account key derives from it
//! (`CompleteAccount...`), so escrowing the seed escrows the account. Its
//! [`ProfileUser`] is self-signed by the profile key, whose fingerprint is
//! the account's permanent name. A **device** is another seed, whose base
//! keys (`BaseDevice...`) sign its [`ProfileDevice`].
//!
//! Connecting a device is done by an administrator device:
//!
//! 1. it makes an activation seed, and from it the activation keys;
//! 2. the device's keys in the account are co-generated: the public keys
//!    are the sums of the device's base and activation public keys, so the
//!    administrator can sign them into a [`ConnectionDevice`] without ever
//!    knowing the private keys;
//! 3. the activation seed travels in an [`ActivationAccount`] encrypted to
//!    the device's base encryption key; the grants the device's roles give
//!    (the account seed for administrators, the keys of the stores it may
//!    read) travel in an [`ActivationCommon`] encrypted to its co-generated
//!    encryption key;
//! 4. a [`CatalogedDevice`] holding all of that goes into the Device
//!    catalog, and an [`AccessCapability`] naming the device's signature
//!    key goes into the Access catalog, from which the service learns whom
//!    to serve.
//!
//! Every record is an envelope signed by the key that vouches for it, and
//! [`verify_profile`], [`verify_admin_signed`] and [`Activation::open`]
//! check the whole chain from the profile key down. The stores a device
//! may read follow from its [`Role`]s ([`stores_for`]).

use rand_core::CryptoRngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use mesh_ipc::names::{Role, Store};

use crate::entry;
use crate::envelope::{ContentMeta, Envelope, Event, OpenError, SealOptions};
use crate::keys::{KeyError, PrivateKey, PublicKey};
use crate::udf::Udf;
use crate::udf::seed::{KeyAlg, KeySpecifier, Seed};

/// Message types, as `MessageType` in a record's metadata.
pub mod message_type {
    /// [`super::ProfileUser`].
    pub const PROFILE_USER: &str = "ProfileUser";
    /// [`super::ProfileDevice`].
    pub const PROFILE_DEVICE: &str = "ProfileDevice";
    /// [`super::ConnectionDevice`].
    pub const CONNECTION_DEVICE: &str = "ConnectionDevice";
    /// [`super::ActivationAccount`].
    pub const ACTIVATION_ACCOUNT: &str = "ActivationAccount";
    /// [`super::ActivationCommon`].
    pub const ACTIVATION_COMMON: &str = "ActivationCommon";
    /// [`super::CatalogedDevice`].
    pub const CATALOGED_DEVICE: &str = "CatalogedDevice";
    /// [`super::AccessCapability`].
    pub const ACCESS_CAPABILITY: &str = "AccessCapability";
    /// [`super::RequestConnection`].
    pub const REQUEST_CONNECTION: &str = "RequestConnection";
    /// [`super::RespondConnection`].
    pub const RESPOND_CONNECTION: &str = "RespondConnection";
    /// [`super::PinRecord`].
    pub const PIN: &str = "MessagePin";
}

/// The stores a device with these roles may read.
pub fn stores_for(roles: &[Role]) -> Vec<Store> {
    if roles.contains(&Role::Admin) {
        return Store::ALL.to_vec();
    }
    let mut stores = vec![Store::Device];
    if roles.contains(&Role::Device) {
        stores.push(Store::Application);
    }
    if roles.contains(&Role::Web) {
        stores.push(Store::Credential);
    }
    stores
}

/// Why a record could not be made, read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// A key could not be derived or used.
    #[error("key failure")]
    Key,
    /// An envelope did not open or verify.
    #[error("a record did not verify: {0}")]
    Open(#[from] OpenError),
    /// A record is not what it claims to be.
    #[error("malformed {0} record")]
    Malformed(&'static str),
    /// A record is signed or addressed by a key the chain does not vouch for.
    #[error("{0} is not vouched for by the account")]
    Untrusted(&'static str),
}

impl From<entry::SealError> for AccountError {
    fn from(e: entry::SealError) -> AccountError {
        match e {
            entry::SealError::Encode => AccountError::Malformed("entry"),
            _ => AccountError::Key,
        }
    }
}

impl From<KeyError> for AccountError {
    fn from(_: KeyError) -> AccountError {
        AccountError::Key
    }
}

/// A public key as records carry it: its fingerprint and the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct KeyData {
    /// The key's fingerprint (UDF).
    pub udf: String,
    /// The key, `<alg>:<base64url>` ([`PublicKey::to_text`]).
    pub public: String,
}

impl KeyData {
    /// The record of a key.
    pub fn of(key: &PublicKey) -> KeyData {
        KeyData {
            udf: key.fingerprint().to_string(),
            public: key.to_text(),
        }
    }

    /// The key, checked against its fingerprint.
    pub fn key(&self) -> Result<PublicKey, AccountError> {
        let key = PublicKey::from_text(&self.public).map_err(|_| AccountError::Malformed("key"))?;
        if key.fingerprint().to_string() != self.udf {
            return Err(AccountError::Malformed("key"));
        }
        Ok(key)
    }
}

/// An account's profile (`ProfileUser`). Its JSON is signed: changing a
/// field changes the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProfileUser {
    /// `alice@example.com`.
    pub account_address: String,
    /// The permanent key: its fingerprint names the account.
    pub profile_signature: KeyData,
    /// Signs devices into the account.
    pub administrator_signature: KeyData,
    /// Encryption to the account as a whole.
    pub common_encryption: KeyData,
    /// The account's signature.
    pub common_signature: KeyData,
}

/// A device's profile (`ProfileDevice`), signed by its profile key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProfileDevice {
    /// What the device calls itself.
    pub description: String,
    /// The device's permanent key: its fingerprint names the device.
    pub profile_signature: KeyData,
    /// The base encryption key (activations are sealed to it).
    pub encryption: KeyData,
    /// The base signature key.
    pub signature: KeyData,
}

/// A device's place in an account, signed by an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectionDevice {
    /// The device's profile fingerprint.
    pub subject: String,
    /// The account's profile fingerprint.
    pub authority: String,
    /// The device's name in the account.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// The co-generated signature key.
    pub signature: KeyData,
    /// The co-generated encryption key.
    pub encryption: KeyData,
}

/// The activation seed, for the device's eyes only.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ActivationAccount {
    /// The account's profile fingerprint.
    pub account_udf: String,
    /// The activation seed (a Z-type UDF).
    pub activation_key: String,
}

/// What a device's roles grant it: keys, for its eyes only.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ActivationCommon {
    /// The account seed, for administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_seed: Option<String>,
    /// The secret of each store key granted: `(store, base64url secret)`.
    pub store_keys: Vec<(Store, String)>,
}

macro_rules! secret_record {
    ($name:ident) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}
secret_record!(ActivationAccount);
secret_record!(ActivationCommon);
secret_record!(PinRecord);

impl Drop for ActivationAccount {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.activation_key);
    }
}

impl Drop for ActivationCommon {
    fn drop(&mut self) {
        if let Some(seed) = &mut self.account_seed {
            zeroize::Zeroize::zeroize(seed);
        }
        for (_, secret) in &mut self.store_keys {
            zeroize::Zeroize::zeroize(secret);
        }
    }
}

impl Drop for PinRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pin);
    }
}

/// A device in the Device catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CatalogedDevice {
    /// The device's profile fingerprint.
    pub device_udf: String,
    /// Its name in the account.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Its profile, as signed by itself.
    pub enveloped_profile_device: String,
    /// Its connection, as signed by an administrator.
    pub enveloped_connection_device: String,
    /// The sealed [`ActivationAccount`].
    pub enveloped_activation_account: String,
    /// The sealed [`ActivationCommon`].
    pub enveloped_activation_common: String,
}

/// What the service needs to serve a device, signed by an administrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccessCapability {
    /// The device's profile fingerprint.
    pub device_udf: String,
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// The key its requests are signed with (the co-generated one).
    pub signature: KeyData,
}

/// A device asking to join an account, signed by its profile key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RequestConnection {
    /// The account.
    pub account_address: String,
    /// The device's signed profile.
    pub enveloped_profile_device: String,
    /// The device's nonce (base64url, 16 bytes).
    pub client_nonce: String,
    /// With a PIN: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_id: Option<String>,
    /// With a PIN: the witness that proves knowledge of it (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_witness: Option<String>,
}

/// An administrator's answer to a connection request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RespondConnection {
    /// `Accepted` or `Rejected`.
    pub result: String,
    /// When accepted: the device's catalog entry (its activations inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enveloped_cataloged_device: Option<String>,
    /// The request this answers (the service's response id for it): the
    /// device takes no answer meant for another request.
    pub response_id: String,
}

/// A PIN an administrator registered, in its Local spool (encrypted).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PinRecord {
    /// The PIN (a UDF).
    pub pin: String,
    /// Roles a device connecting with it gets (never `admin`).
    pub roles: Vec<Role>,
    /// When it stops being accepted (ms since the epoch).
    pub expires_ms: u64,
}

/// The keys of an account, from its seed. Only administrators hold this.
pub struct AccountKeys {
    seed: Seed,
    /// The profile key's fingerprint, worked out once: each sync names
    /// the account, and a public key from a private one is a scalar
    /// multiplication.
    udf: Udf,
    /// The profile key.
    pub profile: PrivateKey,
    /// The administrator key.
    pub admin: PrivateKey,
    /// The common encryption key.
    pub encryption: PrivateKey,
    /// The common signature key.
    pub signature: PrivateKey,
}

impl std::fmt::Debug for AccountKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKeys")
            .field("profile", &self.profile.public())
            .finish_non_exhaustive()
    }
}

/// The derivation name of a store key in key epoch `epoch`.
fn store_key_name(store: Store, epoch: u32) -> String {
    match epoch {
        0 => format!("CompleteAccountEncrypt{}", store.name()),
        n => format!("CompleteAccountEncrypt{}#{n}", store.name()),
    }
}

/// Derive `name` of `alg` from `seed`.
fn derive(seed: &Seed, alg: KeyAlg, name: &str) -> Result<PrivateKey, AccountError> {
    Ok(PrivateKey::derive(seed, alg, name)?)
}

impl AccountKeys {
    /// A fresh account seed.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<AccountKeys, AccountError> {
        let seed = Seed::generate(rng, KeySpecifier::new(KeyAlg::MeshProfileAccount), 32)
            .map_err(|_| AccountError::Key)?;
        AccountKeys::from_seed(seed)
    }

    /// The keys of an existing account seed (from the keyring or escrow).
    pub fn from_seed(seed: Seed) -> Result<AccountKeys, AccountError> {
        if seed.specifier().alg != KeyAlg::MeshProfileAccount {
            return Err(AccountError::Malformed("account seed"));
        }
        let profile = derive(&seed, KeyAlg::Ed25519, "CompleteAccountProfile")?;
        Ok(AccountKeys {
            udf: profile.public().fingerprint(),
            profile,
            admin: derive(&seed, KeyAlg::Ed25519, "CompleteAccountAdminSign")?,
            encryption: derive(&seed, KeyAlg::X25519, "CompleteAccountEncrypt")?,
            signature: derive(&seed, KeyAlg::Ed25519, "CompleteAccountSign")?,
            seed,
        })
    }

    /// The seed (a secret).
    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The account's permanent name: its profile key's fingerprint.
    pub fn udf(&self) -> Udf {
        self.udf.clone()
    }

    /// The key of a store in key epoch `epoch`. Epoch 0 is the reference's
    /// (`CompleteAccountEncrypt` + the store's name); each revocation
    /// starts a new epoch (`…#<epoch>`), whose keys go only to the devices
    /// that remain, so a revoked device never holds the keys of entries
    /// written after it.
    pub fn store_key(&self, store: Store, epoch: u32) -> Result<PrivateKey, AccountError> {
        derive(&self.seed, KeyAlg::X25519, &store_key_name(store, epoch))
    }

    /// The secret a store key is derived from, for an [`ActivationCommon`].
    fn store_secret(&self, store: Store, epoch: u32) -> Zeroizing<Vec<u8>> {
        crate::keys::derive_okm(&self.seed, &store_key_name(store, epoch), 32)
    }

    /// What a device with `roles` is granted: the account seed for
    /// administrators, and the keys of every epoch up to `epoch` of each
    /// store its roles read (the old ones to read what was written before).
    fn grants(&self, roles: &[Role], epoch: u32) -> ActivationCommon {
        let mut common = ActivationCommon::default();
        if roles.contains(&Role::Admin) {
            common.account_seed = Some(self.seed.to_udf().to_string());
        }
        for store in stores_for(roles) {
            for at in 0..=epoch {
                use base64::Engine as _;
                let secret = self.store_secret(store, at);
                let b64 =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_slice());
                common.store_keys.push((store, b64));
            }
        }
        common
    }

    /// A device's Device catalog entry again, with the grants of key epoch
    /// `epoch` (after a revocation), its other records unchanged: its keys
    /// in the account stay what they were. Sealed to the device itself and
    /// to the Device store's key of every epoch so far, so that a device
    /// that missed some rotations still reads it and learns its new keys:
    /// the keys themselves are in the records sealed to each device alone.
    pub fn reissue(
        &self,
        rng: &mut impl CryptoRngCore,
        cataloged: &CatalogedDevice,
        epoch: u32,
        address: &str,
        previous: Option<Vec<u8>>,
    ) -> Result<Envelope, AccountError> {
        let admin = self.admin.public();
        let connection: ConnectionDevice =
            verify_admin_signed(&cataloged.enveloped_connection_device, &admin)?;
        let (device, _) = verify_profile::<ProfileDevice>(&cataloged.enveloped_profile_device)?;
        let common = self.grants(&connection.roles, epoch);
        let reissued = CatalogedDevice {
            enveloped_activation_common: sign_record(
                rng,
                &common,
                message_type::ACTIVATION_COMMON,
                &self.admin,
                &[connection.encryption.key()?],
            )?
            .to_json(),
            ..cataloged.clone()
        };
        let head = entry::Head {
            format: entry::FORMAT,
            account: address.to_owned(),
            store: Store::Device,
            unique_id: cataloged.device_udf.clone(),
            event: Event::Update,
            message_type: message_type::CATALOGED_DEVICE.to_owned(),
            previous,
        };
        let mut recipients = self.device_store_keys(epoch)?;
        recipients.push(device.encryption.key()?);
        Ok(entry::seal(
            rng,
            &head,
            Some(&reissued),
            &self.admin,
            &recipients,
        )?)
    }

    /// The Device store's public keys of every epoch up to `epoch`.
    pub fn device_store_keys(&self, epoch: u32) -> Result<Vec<PublicKey>, AccountError> {
        (0..=epoch)
            .map(|at| Ok(self.store_key(Store::Device, at)?.public()))
            .collect()
    }

    /// The account's profile, signed by its profile key.
    pub fn profile(
        &self,
        rng: &mut impl CryptoRngCore,
        address: &str,
    ) -> Result<Envelope, AccountError> {
        let profile = ProfileUser {
            account_address: address.to_owned(),
            profile_signature: KeyData::of(&self.profile.public()),
            administrator_signature: KeyData::of(&self.admin.public()),
            common_encryption: KeyData::of(&self.encryption.public()),
            common_signature: KeyData::of(&self.signature.public()),
        };
        sign_record(
            rng,
            &profile,
            message_type::PROFILE_USER,
            &self.profile,
            &[],
        )
    }

    /// Connect a device: the Device catalog entry (sealed to the Device
    /// store) and the Access catalog entry (signed, in the clear: the
    /// service reads it).
    ///
    /// `epoch` is the account's key epoch (see [`AccountKeys::store_key`]),
    /// `address` is the account's address and `previous` gives, for a
    /// store and an object, the `Previous` its next entry must carry (a
    /// device that was connected before, and revoked, has one).
    #[expect(
        clippy::too_many_arguments,
        reason = "the device, what it is granted, and where its entries go"
    )]
    pub fn connect(
        &self,
        rng: &mut impl CryptoRngCore,
        device_profile: &str,
        name: &str,
        roles: &[Role],
        epoch: u32,
        address: &str,
        previous: impl Fn(Store, &str) -> Option<Vec<u8>>,
    ) -> Result<(Envelope, Envelope), AccountError> {
        let (device, _) = verify_profile::<ProfileDevice>(device_profile)?;
        let base_sign = device.signature.key()?;
        let base_encrypt = device.encryption.key()?;
        let activation = Seed::generate(rng, KeySpecifier::new(KeyAlg::MeshActivationDevice), 32)
            .map_err(|_| AccountError::Key)?;
        let act_sign = derive(&activation, KeyAlg::Ed25519, "ActivationDeviceSign")?;
        let act_encrypt = derive(&activation, KeyAlg::X25519, "ActivationDeviceEncrypt")?;
        let signature = base_sign.combine(&act_sign.public())?;
        let encryption = base_encrypt.combine(&act_encrypt.public())?;
        let connection = ConnectionDevice {
            subject: device.profile_signature.udf.clone(),
            authority: self.udf().to_string(),
            name: name.to_owned(),
            roles: roles.to_vec(),
            signature: KeyData::of(&signature),
            encryption: KeyData::of(&encryption),
        };
        let account = ActivationAccount {
            account_udf: self.udf().to_string(),
            activation_key: activation.to_udf().to_string(),
        };
        let common = self.grants(roles, epoch);
        let cataloged = CatalogedDevice {
            device_udf: device.profile_signature.udf.clone(),
            name: name.to_owned(),
            roles: roles.to_vec(),
            enveloped_profile_device: device_profile.to_owned(),
            enveloped_connection_device: sign_record(
                rng,
                &connection,
                message_type::CONNECTION_DEVICE,
                &self.admin,
                &[],
            )?
            .to_json(),
            enveloped_activation_account: sign_record(
                rng,
                &account,
                message_type::ACTIVATION_ACCOUNT,
                &self.admin,
                &[base_encrypt],
            )?
            .to_json(),
            enveloped_activation_common: sign_record(
                rng,
                &common,
                message_type::ACTIVATION_COMMON,
                &self.admin,
                &[encryption],
            )?
            .to_json(),
        };
        // Readable by every device of the Device store, and by the device
        // itself before it has any store key.
        let recipients = [self.store_key(Store::Device, epoch)?.public(), base_encrypt];
        let head = |store: Store, message_type: &str| entry::Head {
            format: entry::FORMAT,
            account: address.to_owned(),
            store,
            unique_id: cataloged.device_udf.clone(),
            event: Event::New,
            message_type: message_type.to_owned(),
            previous: previous(store, &cataloged.device_udf),
        };
        let entry = entry::seal(
            rng,
            &head(Store::Device, message_type::CATALOGED_DEVICE),
            Some(&cataloged),
            &self.admin,
            &recipients,
        )?;
        let capability = AccessCapability {
            device_udf: cataloged.device_udf.clone(),
            name: name.to_owned(),
            roles: roles.to_vec(),
            signature: KeyData::of(&signature),
        };
        let access = entry::seal(
            rng,
            &head(Store::Access, message_type::ACCESS_CAPABILITY),
            Some(&capability),
            &self.admin,
            &[],
        )?;
        Ok((entry, access))
    }
}

/// The keys of a device, from its seed.
pub struct DeviceKeys {
    seed: Seed,
    /// The profile key's fingerprint, worked out once (see
    /// [`AccountKeys`]).
    udf: Udf,
    /// The profile key.
    pub profile: PrivateKey,
    /// The base signature key.
    pub sign: PrivateKey,
    /// The base encryption key.
    pub encrypt: PrivateKey,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("profile", &self.profile.public())
            .finish_non_exhaustive()
    }
}

impl DeviceKeys {
    /// A fresh device seed.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Result<DeviceKeys, AccountError> {
        let seed = Seed::generate(rng, KeySpecifier::new(KeyAlg::MeshProfileDevice), 32)
            .map_err(|_| AccountError::Key)?;
        DeviceKeys::from_seed(seed)
    }

    /// The keys of an existing device seed.
    pub fn from_seed(seed: Seed) -> Result<DeviceKeys, AccountError> {
        if seed.specifier().alg != KeyAlg::MeshProfileDevice {
            return Err(AccountError::Malformed("device seed"));
        }
        let profile = derive(&seed, KeyAlg::Ed25519, "BaseDeviceProfile")?;
        Ok(DeviceKeys {
            udf: profile.public().fingerprint(),
            profile,
            sign: derive(&seed, KeyAlg::Ed25519, "BaseDeviceSign")?,
            encrypt: derive(&seed, KeyAlg::X25519, "BaseDeviceEncrypt")?,
            seed,
        })
    }

    /// The seed (a secret).
    pub fn seed(&self) -> &Seed {
        &self.seed
    }

    /// The device's permanent name.
    pub fn udf(&self) -> Udf {
        self.udf.clone()
    }

    /// The device's profile, signed by its profile key.
    pub fn profile(
        &self,
        rng: &mut impl CryptoRngCore,
        description: &str,
    ) -> Result<Envelope, AccountError> {
        let profile = ProfileDevice {
            description: description.to_owned(),
            profile_signature: KeyData::of(&self.profile.public()),
            encryption: KeyData::of(&self.encrypt.public()),
            signature: KeyData::of(&self.sign.public()),
        };
        sign_record(
            rng,
            &profile,
            message_type::PROFILE_DEVICE,
            &self.profile,
            &[],
        )
    }
}

/// What a device holds once activated in an account.
pub struct Activation {
    /// The account's profile.
    pub profile: ProfileUser,
    /// The device's connection.
    pub connection: ConnectionDevice,
    /// The co-generated signature key.
    pub sign: PrivateKey,
    /// The co-generated encryption key.
    pub encrypt: PrivateKey,
    /// The account's keys, for administrators.
    pub account: Option<AccountKeys>,
    /// The store keys granted.
    pub store_keys: Vec<(Store, PrivateKey)>,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

impl Activation {
    /// Open a device's catalog entry with its device keys, checking the
    /// chain: the account profile is self-signed, the connection is signed
    /// by the profile's administrator key and names this device and
    /// account, and the co-generated keys match the published ones.
    pub fn open(
        device: &DeviceKeys,
        profile: &str,
        cataloged: &CatalogedDevice,
    ) -> Result<Activation, AccountError> {
        let (profile, _) = verify_profile::<ProfileUser>(profile)?;
        let admin = profile.administrator_signature.key()?;
        let connection: ConnectionDevice =
            verify_admin_signed(&cataloged.enveloped_connection_device, &admin)?;
        if connection.subject != device.udf().to_string()
            || connection.authority != profile.profile_signature.udf
        {
            return Err(AccountError::Untrusted("connection"));
        }
        let account: ActivationAccount = open_record(
            &cataloged.enveloped_activation_account,
            Some(&device.encrypt),
            &admin,
        )?;
        let activation = Seed::from_udf(
            &Udf::parse(&account.activation_key)
                .map_err(|_| AccountError::Malformed("activation"))?,
        )
        .map_err(|_| AccountError::Malformed("activation"))?;
        let sign = device.sign.combine(&derive(
            &activation,
            KeyAlg::Ed25519,
            "ActivationDeviceSign",
        )?)?;
        let encrypt = device.encrypt.combine(&derive(
            &activation,
            KeyAlg::X25519,
            "ActivationDeviceEncrypt",
        )?)?;
        if KeyData::of(&sign.public()) != connection.signature
            || KeyData::of(&encrypt.public()) != connection.encryption
        {
            return Err(AccountError::Untrusted("co-generated key"));
        }
        let common: ActivationCommon = open_record(
            &cataloged.enveloped_activation_common,
            Some(&encrypt),
            &admin,
        )?;
        let account = match &common.account_seed {
            Some(seed) => {
                let seed =
                    Seed::from_udf(&Udf::parse(seed).map_err(|_| AccountError::Malformed("seed"))?)
                        .map_err(|_| AccountError::Malformed("seed"))?;
                let keys = AccountKeys::from_seed(seed)?;
                if keys.udf().to_string() != profile.profile_signature.udf {
                    return Err(AccountError::Untrusted("account seed"));
                }
                Some(keys)
            }
            None => None,
        };
        let mut store_keys = Vec::new();
        for (store, secret) in &common.store_keys {
            use base64::Engine as _;
            let secret = Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(secret)
                    .map_err(|_| AccountError::Malformed("store key"))?,
            );
            store_keys.push((*store, PrivateKey::from_okm(KeyAlg::X25519, &secret)?));
        }
        Ok(Activation {
            profile,
            connection,
            sign,
            encrypt,
            account,
            store_keys,
        })
    }

    /// The key of a store to seal to, if granted: its latest epoch's.
    pub fn store_key(&self, store: Store) -> Option<&PrivateKey> {
        self.store_keys
            .iter()
            .rev()
            .find(|(s, _)| *s == store)
            .map(|(_, k)| k)
    }

    /// The key of a store a frame is sealed to, if granted (any epoch's),
    /// else its latest (for a frame in the clear).
    pub fn store_key_for(&self, store: Store, frame: &Envelope) -> Option<&PrivateKey> {
        self.store_keys
            .iter()
            .filter(|(s, _)| *s == store)
            .map(|(_, k)| k)
            .find(|k| {
                let kid = k.public().fingerprint().to_string();
                frame.header.recipients.iter().any(|r| r.kid == kid)
            })
            .or_else(|| self.store_key(store))
    }

    /// For an administrator, hold the store keys of every key epoch up to
    /// `epoch` (derived from the account seed: an administrator recovering
    /// the account learns the epoch from the Access catalog, where each
    /// revocation is one administrator-signed Delete). Others hold what
    /// their grants give.
    pub fn hold_epoch(&mut self, epoch: u32) -> Result<(), AccountError> {
        let Some(account) = &self.account else {
            return Ok(());
        };
        for at in self.epoch() + 1..=epoch {
            for store in Store::ALL {
                self.store_keys.push((store, account.store_key(store, at)?));
            }
        }
        Ok(())
    }

    /// The key epoch this device knows: how many Device store keys it holds,
    /// less one.
    pub fn epoch(&self) -> u32 {
        let held = self
            .store_keys
            .iter()
            .filter(|(s, _)| *s == Store::Device)
            .count();
        u32::try_from(held.saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

/// Seal a record: its JSON, signed by `signer`, encrypted to `recipients`
/// (none: signed only), with its message type in the metadata.
pub fn sign_record<T: Serialize>(
    rng: &mut impl CryptoRngCore,
    record: &T,
    message_type: &str,
    signer: &PrivateKey,
    recipients: &[PublicKey],
) -> Result<Envelope, AccountError> {
    let meta = ContentMeta {
        message_type: Some(message_type.to_owned()),
        content_type: Some("application/mmm/object".into()),
        ..ContentMeta::default()
    };
    seal(rng, record, &meta, signer, recipients)
}

fn seal<T: Serialize>(
    rng: &mut impl CryptoRngCore,
    record: &T,
    meta: &ContentMeta,
    signer: &PrivateKey,
    recipients: &[PublicKey],
) -> Result<Envelope, AccountError> {
    let json =
        Zeroizing::new(serde_json::to_vec(record).map_err(|_| AccountError::Malformed("record"))?);
    let options = SealOptions {
        recipients,
        signer: Some(signer),
        meta: Some(meta),
        sequence_info: None,
    };
    Envelope::seal(rng, &json, &options).map_err(|_| AccountError::Key)
}

/// Open a record: decrypt with `key` if it is encrypted, require `signer`.
pub fn open_record<T: DeserializeOwned>(
    json: &str,
    key: Option<&PrivateKey>,
    signer: &PublicKey,
) -> Result<T, AccountError> {
    let envelope =
        Envelope::from_json(json.as_bytes()).map_err(|_| AccountError::Malformed("envelope"))?;
    let opened = envelope.open(key, Some(signer))?;
    serde_json::from_slice(&opened.payload).map_err(|_| AccountError::Malformed("record"))
}

/// A record signed by an administrator key (in the clear).
pub fn verify_admin_signed<T: DeserializeOwned>(
    json: &str,
    admin: &PublicKey,
) -> Result<T, AccountError> {
    open_record(json, None, admin)
}

/// The profiles' common shape: each names its own profile key.
pub trait Profile: DeserializeOwned {
    /// The profile key's record.
    fn profile_key(&self) -> &KeyData;
}

impl Profile for ProfileUser {
    fn profile_key(&self) -> &KeyData {
        &self.profile_signature
    }
}

impl Profile for ProfileDevice {
    fn profile_key(&self) -> &KeyData {
        &self.profile_signature
    }
}

/// Read a profile and check that it is signed by the key it names; return
/// it and that key.
pub fn verify_profile<P: Profile>(json: &str) -> Result<(P, PublicKey), AccountError> {
    let envelope =
        Envelope::from_json(json.as_bytes()).map_err(|_| AccountError::Malformed("profile"))?;
    // The signer is named inside the payload: read it, then require it.
    let unchecked: P =
        serde_json::from_slice(&envelope.body).map_err(|_| AccountError::Malformed("profile"))?;
    let key = unchecked.profile_key().key()?;
    let opened = envelope.open(None, Some(&key))?;
    let profile: P =
        serde_json::from_slice(&opened.payload).map_err(|_| AccountError::Malformed("profile"))?;
    Ok((profile, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_outside_the_fixed_set_are_refused() {
        for store in Store::ALL {
            assert_eq!(Store::from_name(store.name()), Some(store));
            let json = serde_json::to_string(&store).expect("serializes");
            assert_eq!(json, format!("\"{}\"", store.name()));
            assert_eq!(serde_json::from_str::<Store>(&json).ok(), Some(store));
        }
        for bad in [
            "../x",
            "/abs",
            "MMM_Other",
            "",
            "mmm_device",
            "MMM_Device/../x",
        ] {
            assert_eq!(Store::from_name(bad), None, "{bad}");
            let json = serde_json::to_string(bad).expect("serializes");
            assert!(serde_json::from_str::<Store>(&json).is_err(), "{bad}");
            // A service's Status answer naming such a store does not decode.
            let status = format!(r#"{{"Store":{json},"Index":1,"Apex":"AA"}}"#);
            assert!(
                serde_json::from_str::<crate::service::StoreStatus>(&status).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn connect_and_activate_a_device() {
        let mut rng = rand_core::OsRng;
        let account = AccountKeys::generate(&mut rng).expect("an account");
        let profile = account
            .profile(&mut rng, "alice@example.com")
            .expect("a profile")
            .to_json();
        let (checked, key) = verify_profile::<ProfileUser>(&profile).expect("self-signed");
        assert_eq!(key.fingerprint(), account.udf());
        assert_eq!(checked.account_address, "alice@example.com");

        let device = DeviceKeys::generate(&mut rng).expect("a device");
        let device_profile = device
            .profile(&mut rng, "laptop")
            .expect("a profile")
            .to_json();
        let (entry, access) = account
            .connect(
                &mut rng,
                &device_profile,
                "laptop",
                &[Role::Device],
                0,
                "alice@example.com",
                |_, _| None,
            )
            .expect("connects");
        let store_key = account.store_key(Store::Device, 0).expect("a key");
        let admin = [account.admin.public()];
        let opened = entry::open(
            &entry,
            "alice@example.com",
            Store::Device,
            Some(&store_key),
            &admin,
        )
        .expect("opens");
        assert_eq!(opened.head.unique_id, device.udf().to_string());
        let cataloged: CatalogedDevice = opened.record().expect("a device");
        let activation = Activation::open(&device, &profile, &cataloged).expect("activates");
        assert!(
            activation.account.is_none(),
            "a plain device gets no account seed"
        );
        assert!(activation.store_key(Store::Application).is_some());
        assert!(activation.store_key(Store::Credential).is_none());
        let capability: AccessCapability =
            entry::open(&access, "alice@example.com", Store::Access, None, &admin)
                .expect("signed")
                .record()
                .expect("a capability");
        assert_eq!(capability.signature, KeyData::of(&activation.sign.public()));

        // Another device cannot use this entry.
        let other = DeviceKeys::generate(&mut rng).expect("a device");
        assert!(Activation::open(&other, &profile, &cataloged).is_err());
        // A profile re-signed by another account does not vouch for it.
        let mallory = AccountKeys::generate(&mut rng).expect("an account");
        let forged = mallory
            .profile(&mut rng, "alice@example.com")
            .expect("a profile")
            .to_json();
        assert!(Activation::open(&device, &forged, &cataloged).is_err());
    }

    #[test]
    fn admins_get_the_account_seed() {
        let mut rng = rand_core::OsRng;
        let account = AccountKeys::generate(&mut rng).expect("an account");
        let profile = account
            .profile(&mut rng, "a@b")
            .expect("a profile")
            .to_json();
        let device = DeviceKeys::generate(&mut rng).expect("a device");
        let device_profile = device
            .profile(&mut rng, "tablet")
            .expect("a profile")
            .to_json();
        let (entry, _) = account
            .connect(
                &mut rng,
                &device_profile,
                "tablet",
                &[Role::Admin],
                0,
                "a@b",
                |_, _| None,
            )
            .expect("connects");
        let cataloged: CatalogedDevice = entry::open(
            &entry,
            "a@b",
            Store::Device,
            Some(&account.store_key(Store::Device, 0).expect("key")),
            &[account.admin.public()],
        )
        .expect("opens")
        .record()
        .expect("a device");
        let activation = Activation::open(&device, &profile, &cataloged).expect("activates");
        let keys = activation.account.expect("an admin holds the account");
        assert_eq!(keys.udf(), account.udf());
        assert_eq!(activation.store_keys.len(), Store::ALL.len());
    }
}
