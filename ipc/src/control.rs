//! The control protocol: what `mesh` and the shims say to `meshd`.
//!
//! The control socket carries frames: a 4-byte big-endian length, then that
//! many bytes of one JSON object. A frame is at most [`MAX_FRAME`] bytes; the
//! length is checked before anything is allocated. Each connection is a
//! sequence of request/response pairs. The JSON of [`Request`] and
//! [`Response`] is this protocol's wire format: renaming a variant or a
//! field breaks older clients, so add, never rename, and bump [`VERSION`]
//! when the meaning of a message changes.
//!
//! The codec is sans-I/O: [`decode`] works on a buffer and tells "need more
//! bytes" (`Ok(None)`) apart from "this is wrong" (`Err`); [`read_frame`]
//! and [`write_frame`] drive any `std::io::Read`/`Write` for the blocking
//! clients.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::names::{Role, Store};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the control protocol that this build speaks.
pub const VERSION: u32 = 2;

/// The largest frame body, in bytes, either way.
pub const MAX_FRAME: usize = 64 * 1024;

/// The size of the length prefix.
const HEADER: usize = 4;

/// A catalog that `mesh catalog` works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Catalog {
    /// The Application catalog.
    Application,
    /// The Credential catalog (passwords, tokens).
    Credential,
}

impl Catalog {
    /// The store behind it.
    pub fn store(self) -> Store {
        match self {
            Catalog::Application => Store::Application,
            Catalog::Credential => Store::Credential,
        }
    }

    /// `application` or `credential`, as on the command line.
    pub fn parse(name: &str) -> Option<Catalog> {
        match name {
            "application" | "MMM_Application" => Some(Catalog::Application),
            "credential" | "MMM_Credential" => Some(Catalog::Credential),
            _ => None,
        }
    }
}

/// A request from a client to `meshd`. Its `Debug` is its name alone.
#[derive(Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Report what the daemon is and where it listens.
    Status,
    /// Answer, then stop: close every listener, remove the sockets, exit.
    Shutdown,
    /// Make an account with this device as its first administrator, and
    /// bind it to a service.
    AccountCreate {
        /// `alice@example.com`.
        address: String,
        /// The service's URL.
        service: String,
        /// This device's name in the account.
        name: String,
    },
    /// The account, this device, and how the last sync went.
    AccountStatus,
    /// Sync now, and say how it went.
    AccountSync,
    /// Split the account seed into recovery shares. `meshd` refuses a
    /// quorum under 2 (each share would be the seed itself) and asks the
    /// user to confirm first.
    AccountEscrow {
        /// How many shares.
        shares: usize,
        /// How many recover the account.
        quorum: usize,
    },
    /// Rebuild the account seed from recovery shares.
    AccountRecover {
        /// The shares (secrets: together they are the account seed).
        shares: Vec<SecretText>,
        /// Also join the account's service as a new administrator device:
        /// `(address, service, device name)`.
        rejoin: Option<(String, String, String)>,
    },
    /// Register a PIN that lets a device join without approval.
    AccountPin {
        /// Roles a device joining with it gets (none: `device`; never
        /// `admin`).
        roles: Vec<Role>,
        /// How long it is accepted, in seconds (none: ten minutes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in_s: Option<u64>,
    },
    /// Ask to join an account.
    DeviceConnect {
        /// The account.
        address: String,
        /// The account's service.
        service: String,
        /// This device's name.
        name: String,
        /// A PIN from `mesh account pin`, to skip approval.
        pin: Option<String>,
        /// The account's profile fingerprint (from a connect URI): the
        /// device refuses a service that answers with another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// How a connection request stands.
    DeviceConnectStatus,
    /// Connection requests waiting for an administrator.
    DevicePending,
    /// Approve the request showing this witness code.
    DeviceAccept {
        /// The code both devices show.
        code: String,
        /// The roles to grant (none: `device`).
        roles: Vec<Role>,
        /// The device's name in the account (default: its own).
        name: Option<String>,
    },
    /// Refuse the request showing this witness code.
    DeviceReject {
        /// The code.
        code: String,
    },
    /// The account's devices.
    DeviceList,
    /// Revoke a device.
    DeviceRevoke {
        /// Its name.
        name: String,
    },
    /// Add or replace an entry in a catalog.
    CatalogPut {
        /// Which catalog.
        store: Catalog,
        /// The entry's name.
        name: String,
        /// Its value (a secret: a password, a token).
        value: SecretText,
    },
    /// Add many entries at once (in as few service transactions as fit).
    CatalogImport {
        /// Which catalog.
        store: Catalog,
        /// `(name, value)` pairs.
        entries: Vec<(String, String)>,
    },
    /// One entry of a catalog, by name (what the git helper asks for: it
    /// never needs the whole catalog).
    CatalogGet {
        /// Which catalog.
        store: Catalog,
        /// The entry's name.
        name: String,
    },
    /// The entries of a catalog. For the Credential catalog, `meshd` asks
    /// the user to confirm first.
    CatalogList {
        /// Which catalog.
        store: Catalog,
    },
    /// Delete an entry.
    CatalogDelete {
        /// Which catalog.
        store: Catalog,
        /// The entry's name.
        name: String,
    },
    /// Make an SSH identity in the account.
    SshCreate {
        /// Its name.
        name: String,
        /// `ed25519`, `ecdsa` (`ecdsa-p384`, `ecdsa-p521`) or `rsa`.
        algorithm: String,
        /// Ask before each signature.
        confirm: bool,
        /// The hosts it is for (none: every host).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
    },
    /// Put an existing OpenSSH private key in the account.
    SshImport {
        /// Its name.
        name: String,
        /// The OpenSSH private key file's text.
        private: SecretText,
        /// The key file's passphrase, if it is encrypted.
        passphrase: Option<SecretText>,
        /// Ask before each signature.
        confirm: bool,
        /// The hosts it is for (none: every host).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        hosts: Vec<String>,
    },
    /// The account's SSH identities.
    SshList,
    /// The account's latest key uses, every device's (`mesh log`).
    UsageLog,
    /// Other devices' requests that this device approve a use of a key
    /// (`mesh approve`).
    ApprovalList,
    /// Answer another device's request.
    Approve {
        /// The request's id.
        id: String,
        /// Yes or no.
        approved: bool,
    },
    /// One SSH identity.
    SshGet {
        /// Its name.
        name: String,
    },
    /// Change which hosts an SSH identity is for.
    SshSet {
        /// Its name.
        name: String,
        /// The hosts it is for from now on (none: every host).
        hosts: Vec<String>,
    },
    /// Delete an SSH identity.
    SshDelete {
        /// Its name.
        name: String,
    },
    /// Lines for a server's `authorized_keys`.
    SshAuthorizedKeys,
    /// An allowed-signers file for `ssh-keygen -Y verify` and git.
    SshAllowedSigners,
    /// Make an OpenPGP certificate in the account.
    OpenpgpCreate {
        /// `Name <email>`.
        user_id: String,
        /// `ed25519` or `rsa3072`.
        algorithm: String,
        /// Its name in the account (default: the email address).
        name: Option<String>,
        /// Ask before each signature or decryption.
        #[serde(default)]
        confirm: bool,
    },
    /// Put an existing OpenPGP secret key in the account.
    OpenpgpImport {
        /// The armored (or binary, base64-free) secret key.
        secret: SecretText,
        /// Its name in the account (default: the email address).
        name: Option<String>,
        /// Ask before each signature or decryption (without it, a
        /// certificate the account has keeps its setting).
        #[serde(default)]
        confirm: bool,
    },
    /// Switch a certificate's confirmation on or off.
    OpenpgpSet {
        /// Its name.
        name: String,
        /// Ask before each signature or decryption.
        confirm: bool,
    },
    /// The account's OpenPGP certificates.
    OpenpgpList,
    /// One certificate, armored.
    OpenpgpExport {
        /// Its name.
        name: String,
    },
    /// Delete a certificate.
    OpenpgpDelete {
        /// Its name.
        name: String,
    },
}

impl Request {
    /// The request's kind, for logs (never its fields: some hold secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Shutdown => "shutdown",
            Request::AccountCreate { .. } => "account-create",
            Request::AccountStatus => "account-status",
            Request::AccountSync => "account-sync",
            Request::AccountEscrow { .. } => "account-escrow",
            Request::AccountRecover { .. } => "account-recover",
            Request::AccountPin { .. } => "account-pin",
            Request::DeviceConnect { .. } => "device-connect",
            Request::DeviceConnectStatus => "device-connect-status",
            Request::DevicePending => "device-pending",
            Request::DeviceAccept { .. } => "device-accept",
            Request::DeviceReject { .. } => "device-reject",
            Request::DeviceList => "device-list",
            Request::DeviceRevoke { .. } => "device-revoke",
            Request::CatalogPut { .. } => "catalog-put",
            Request::CatalogGet { .. } => "catalog-get",
            Request::CatalogList { .. } => "catalog-list",
            Request::CatalogImport { .. } => "catalog-import",
            Request::CatalogDelete { .. } => "catalog-delete",
            Request::SshCreate { .. } => "ssh-create",
            Request::SshImport { .. } => "ssh-import",
            Request::SshList => "ssh-list",
            Request::UsageLog => "usage-log",
            Request::ApprovalList => "approval-list",
            Request::Approve { .. } => "approve",
            Request::SshGet { .. } => "ssh-get",
            Request::SshSet { .. } => "ssh-set",
            Request::SshDelete { .. } => "ssh-delete",
            Request::SshAuthorizedKeys => "ssh-authorized-keys",
            Request::SshAllowedSigners => "ssh-allowed-signers",
            Request::OpenpgpCreate { .. } => "openpgp-create",
            Request::OpenpgpImport { .. } => "openpgp-import",
            Request::OpenpgpSet { .. } => "openpgp-set",
            Request::OpenpgpList => "openpgp-list",
            Request::OpenpgpExport { .. } => "openpgp-export",
            Request::OpenpgpDelete { .. } => "openpgp-delete",
        }
    }
}

impl std::fmt::Debug for Request {
    /// The kind alone: several requests carry secrets (keys, passphrases,
    /// shares, PINs, credential values).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Text that is a secret (a private key, a passphrase): never shown by
/// `Debug`, never compared or copied, wiped when dropped.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wrap a secret.
    pub fn new(text: String) -> SecretText {
        SecretText(text)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The answer `meshd` gives to a [`Request`]: one variant per kind of
/// answer, each a typed record (no free-form JSON crosses the socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The answer to [`Request::Status`].
    Status(DaemonStatus),
    /// The answer to [`Request::Shutdown`]: the daemon is stopping.
    ShuttingDown,
    /// The request was understood but refused, with a one-line reason that
    /// holds no secret.
    Error {
        /// What kind of failure, for programs.
        kind: ErrorKind,
        /// What went wrong, for a person to read.
        message: String,
    },
    /// [`Request::AccountCreate`].
    AccountCreated(AccountCreated),
    /// [`Request::AccountStatus`].
    Account(AccountStatus),
    /// [`Request::AccountSync`].
    Synced(SyncReport),
    /// [`Request::AccountEscrow`].
    Escrow(Escrow),
    /// [`Request::AccountRecover`].
    Recovered(Recovered),
    /// [`Request::AccountPin`].
    Pin(PinIssued),
    /// [`Request::DeviceConnect`] and [`Request::DeviceConnectStatus`].
    Connection(ConnectionState),
    /// [`Request::DevicePending`].
    Pending {
        /// The requests, oldest first.
        requests: Vec<PendingRequest>,
    },
    /// [`Request::DeviceAccept`] and [`Request::DeviceReject`].
    Answered(Answered),
    /// [`Request::DeviceList`].
    Devices {
        /// The devices, by name.
        devices: Vec<DeviceRow>,
    },
    /// [`Request::DeviceRevoke`].
    Revoked(RevokedDevice),
    /// [`Request::CatalogList`].
    Catalog {
        /// Entry name to value.
        entries: BTreeMap<String, String>,
    },
    /// [`Request::CatalogGet`].
    CatalogEntry(CatalogEntry),
    /// [`Request::CatalogPut`], [`Request::CatalogImport`],
    /// [`Request::CatalogDelete`].
    CatalogChanged(CatalogChange),
    /// [`Request::SshList`].
    SshIdentities {
        /// The identities, by name.
        identities: Vec<SshIdentityRow>,
    },
    /// [`Request::UsageLog`].
    Usage {
        /// The uses, oldest first.
        uses: Vec<UsageRow>,
    },
    /// [`Request::ApprovalList`]; for the account's own use, the request
    /// it wrote.
    Approvals {
        /// The requests waiting for this device's answer, oldest first.
        requests: Vec<ApprovalRow>,
    },
    /// [`Request::SshCreate`], [`Request::SshImport`], [`Request::SshGet`].
    SshIdentity(SshIdentityRow),
    /// [`Request::SshAuthorizedKeys`], [`Request::SshAllowedSigners`].
    Lines {
        /// The lines, without their ends.
        lines: Vec<String>,
    },
    /// [`Request::OpenpgpList`].
    OpenpgpKeys {
        /// The certificates, by name.
        keys: Vec<OpenpgpRow>,
    },
    /// [`Request::OpenpgpCreate`], [`Request::OpenpgpImport`].
    OpenpgpAdded(OpenpgpAdded),
    /// [`Request::OpenpgpExport`].
    OpenpgpCertificate(OpenpgpCertificate),
    /// [`Request::SshDelete`], [`Request::OpenpgpDelete`].
    Deleted {
        /// The name deleted.
        deleted: String,
    },
}

/// What kind of failure a [`Response::Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// This device has no account.
    NoAccount,
    /// Only an administrator device may do this.
    NotAdmin,
    /// This device waits for an administrator's answer.
    Pending,
    /// This device was revoked from the account.
    Revoked,
    /// The service kept reporting that our view was stale.
    Conflict,
    /// The service refused the request.
    Refused,
    /// The service could not be reached.
    Unreachable,
    /// What the service sent does not verify.
    Untrusted,
    /// The request's input is wrong (a name, a key, a code).
    Input,
    /// No such entry, device or request.
    NotFound,
    /// It exists already.
    Exists,
    /// A local file or program failed.
    Io,
    /// The request itself is malformed.
    Malformed,
    /// The request exports secrets and the user did not confirm it (or
    /// there was nobody to ask).
    Denied,
}

/// How this device stands in its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// No account.
    None,
    /// Waiting for an administrator to answer its connection request.
    Pending,
    /// Joining with a recovered account seed.
    Recovering,
    /// In the account.
    Connected,
    /// Its connection request was refused.
    Rejected,
    /// Revoked from the account.
    Revoked,
}

impl Standing {
    /// Its name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Standing::None => "none",
            Standing::Pending => "pending",
            Standing::Recovering => "recovering",
            Standing::Connected => "connected",
            Standing::Rejected => "rejected",
            Standing::Revoked => "revoked",
        }
    }
}

/// [`Response::AccountCreated`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountCreated {
    /// The account's address.
    pub address: String,
    /// The account's profile fingerprint.
    pub profile: String,
    /// This device's fingerprint.
    pub device: String,
    /// Where the device's secrets are kept.
    pub secrets: String,
}

/// [`Response::Account`]: the account and this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountStatus {
    /// How this device stands.
    pub status: Standing,
    /// The account's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The service's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The account's profile fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// This device's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// This device's name in the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Whether this device is an administrator.
    pub admin: bool,
    /// This device's roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// Frames in each replica.
    #[serde(default)]
    pub stores: BTreeMap<Store, u64>,
    /// When the last sync ended well (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    /// The problems of the last sync: `service` or a store's name, to one line.
    #[serde(default)]
    pub sync_errors: BTreeMap<String, String>,
    /// Entries in the catalogs that the account's rules did not let apply
    /// (written by a device that may not), one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<String>,
    /// While a call to the service has gone unanswered for a while: when
    /// it was made (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered_since_ms: Option<u64>,
    /// While a connection request waits: the code to compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<String>,
    /// Where the device's secrets are kept.
    pub secrets: String,
}

/// [`Response::Synced`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncReport {
    /// Whether every store is in sync.
    pub ok: bool,
    /// Frames added to each store.
    #[serde(default)]
    pub updated: BTreeMap<Store, u64>,
    /// What went wrong, by `service` or store name.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
}

/// [`Response::Escrow`]: recovery shares (secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escrow {
    /// How many shares recover the account.
    pub quorum: usize,
    /// The shares.
    pub shares: Vec<String>,
    /// The account's profile fingerprint.
    pub profile: String,
}

/// [`Response::Recovered`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovered {
    /// The account's profile fingerprint.
    pub profile: String,
    /// This device's name, when it rejoined the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Where the seed is kept.
    pub secrets: String,
}

/// [`Response::Pin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinIssued {
    /// The `mcu://` URI that joins with it.
    pub uri: String,
    /// The roles it grants.
    pub roles: Vec<Role>,
}

/// [`Response::Connection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionState {
    /// How the request stands.
    pub status: Standing,
    /// The code both devices show, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<String>,
    /// The account's profile fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// One connection request an administrator may answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    /// The code the device shows.
    pub witness: String,
    /// The device's own description.
    pub description: String,
    /// The device's fingerprint.
    pub device: String,
    /// Whether it came with a PIN.
    pub pin: bool,
}

/// An administrator's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionResult {
    /// The device joins.
    Accepted,
    /// The device is refused.
    Rejected,
}

/// [`Response::Answered`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answered {
    /// The answer.
    pub result: ConnectionResult,
    /// The device's name in the account, if accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The device's fingerprint.
    pub device: String,
}

/// One device of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRow {
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub device: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Whether it is this device.
    pub this: bool,
}

/// [`Response::Revoked`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedDevice {
    /// Its name.
    pub revoked: String,
    /// Its fingerprint.
    pub device: String,
}

/// [`Response::CatalogEntry`]: one entry (its value a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The entry's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// [`Response::CatalogChanged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogChange {
    /// The catalog.
    pub store: Store,
    /// How many entries were written.
    pub written: usize,
    /// The entry deleted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// One SSH identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshIdentityRow {
    /// Its name.
    pub name: String,
    /// Its algorithm (`ssh-ed25519` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Its SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The OpenSSH public key line.
    pub public: String,
    /// Whether each signature is confirmed first.
    pub confirm: bool,
    /// The hosts it is for (none: every host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// How many servers (host keys) took it, as the account's devices
    /// learned it: it is offered them first.
    #[serde(default)]
    pub taken_by: usize,
}

/// Another device's request to use a key, as `mesh approve` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRow {
    /// The request's id (what [`Request::Approve`] names).
    pub id: String,
    /// The device that asks (its name in the account).
    pub device: String,
    /// `ssh`, `gpg sign` or `gpg decrypt`.
    pub operation: String,
    /// The key's name.
    pub key: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The host it logs in to, when the connection said.
    pub host: Option<String>,
    /// The user it logs in as, when it is a login.
    pub user: Option<String>,
    /// The program that asked, when known.
    pub program: Option<String>,
    /// When it was asked (ms since the epoch, the asking device's clock).
    pub asked_ms: u64,
    /// Until when an answer counts.
    pub expires_ms: u64,
}

impl ApprovalRow {
    /// The question, as a person reads it.
    pub fn question(&self) -> String {
        let mut q = format!(
            "Device {} asks to use key {} ({}) for {}",
            self.device, self.key, self.fingerprint, self.operation
        );
        match (&self.user, &self.host) {
            (Some(user), Some(host)) => q.push_str(&format!(" as {user} on {host}")),
            (None, Some(host)) => q.push_str(&format!(" on {host}")),
            (Some(user), None) => q.push_str(&format!(" as {user}")),
            (None, None) => {}
        }
        if let Some(program) = &self.program {
            q.push_str(&format!(", for {program}"));
        }
        q.push_str(". Allow?");
        q
    }
}

/// One use of one of the account's keys, as `mesh log` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    /// When (ms since the epoch, the using device's clock).
    pub time_ms: u64,
    /// The device that used the key (its name in the account).
    pub device: String,
    /// `ssh`, `gpg sign` or `gpg decrypt`.
    pub operation: String,
    /// The key's name.
    pub key: String,
    /// Its fingerprint (SHA-256 for SSH, the keygrip for gpg).
    pub fingerprint: String,
    /// The process that asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The SSH host's key fingerprint, when the connection was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Whether the user was asked and said yes.
    #[serde(default)]
    pub confirmed: bool,
}

/// One OpenPGP certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenpgpRow {
    /// Its name.
    pub name: String,
    /// Its primary key's fingerprint.
    pub fingerprint: String,
    /// Its user ids.
    pub user_ids: Vec<String>,
    /// Whether each use of its keys is confirmed first.
    #[serde(default)]
    pub confirm: bool,
}

/// [`Response::OpenpgpAdded`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenpgpAdded {
    /// Its name.
    pub name: String,
    /// Its primary key's fingerprint.
    pub fingerprint: String,
    /// What was changed in gpg's configuration, or a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured: Option<String>,
}

/// [`Response::OpenpgpCertificate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenpgpCertificate {
    /// Its name.
    pub name: String,
    /// Its primary key's fingerprint.
    pub fingerprint: String,
    /// The armored public certificate.
    pub public: String,
}

/// What a running `meshd` says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonStatus {
    /// The daemon's release, e.g. `0.1.0`.
    pub version: String,
    /// The control protocol version it speaks ([`VERSION`]).
    pub protocol: u32,
    /// Its process id.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// The directory that holds its sockets.
    pub runtime_dir: PathBuf,
    /// The sockets it serves, one for each frontend, in the order started.
    pub listeners: Vec<Listener>,
}

/// One socket `meshd` serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// The frontend behind it: `control`, `ssh-agent`, `gpg-agent`.
    pub frontend: String,
    /// The socket's path.
    pub path: PathBuf,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix names more than [`MAX_FRAME`] bytes.
    #[error("control frame of {len} bytes is over the limit of {MAX_FRAME}")]
    TooLong {
        /// The length the prefix announced.
        len: usize,
    },
    /// The body is not the JSON of a message we know. Only the position is
    /// kept: the bytes themselves are never echoed back.
    #[error("malformed control message ({kind} error at line {line}, column {column})")]
    Malformed {
        /// What kind of JSON error: `syntax`, `data` or `eof`.
        kind: &'static str,
        /// The line where the error was found.
        line: usize,
        /// The column where the error was found.
        column: usize,
    },
    /// The stream ended inside a frame.
    #[error("the connection closed in the middle of a control frame")]
    Truncated,
    /// The transport failed.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
}

impl From<serde_json::Error> for FrameError {
    fn from(err: serde_json::Error) -> Self {
        if err.is_io() {
            return FrameError::Io(err.into());
        }
        let kind = match err.classify() {
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Eof => "eof",
            _ => "data",
        };
        FrameError::Malformed {
            kind,
            line: err.line(),
            column: err.column(),
        }
    }
}

/// Encode one message as a frame: its length, then its JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= MAX_FRAME)
        .ok_or(FrameError::TooLong { len: body.len() })?;
    let mut frame = Vec::with_capacity(HEADER + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decode the frame at the start of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole frame, and the
/// message with the number of bytes it used once it holds one. Bytes after
/// the frame are left for the next call.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len) = body_len(buf)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Ok(None);
    };
    let message = serde_json::from_slice(body)?;
    Ok(Some((message, HEADER + len)))
}

/// The body length announced by the header at the start of `buf`, checked
/// against the limit, or `None` while the header is incomplete.
fn body_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = buf.first_chunk::<HEADER>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(*header)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(FrameError::TooLong { len });
    }
    Ok(Some(len))
}

/// Write one message as a frame and flush it.
pub fn write_frame<T: Serialize>(writer: &mut impl Write, message: &T) -> Result<(), FrameError> {
    writer.write_all(&encode(message)?)?;
    writer.flush()?;
    Ok(())
}

/// Read one whole frame. Returns `Ok(None)` if the stream ended cleanly
/// before its first byte, and [`FrameError::Truncated`] if it ended inside.
pub fn read_frame<T: DeserializeOwned>(reader: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; HEADER];
    let mut filled = 0;
    while filled < HEADER {
        let Some(rest) = header.get_mut(filled..) else {
            break;
        };
        match reader.read(rest) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    let len = body_len(&header)?.ok_or(FrameError::Truncated)?;
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .map_err(|err| match err.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(err),
        })?;
    Ok(Some(serde_json::from_slice(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> Response {
        Response::Status(DaemonStatus {
            version: "0.1.0".into(),
            protocol: VERSION,
            pid: 4242,
            uptime_seconds: 7,
            runtime_dir: "/run/user/1000/mesh".into(),
            listeners: vec![Listener {
                frontend: "control".into(),
                path: "/run/user/1000/mesh/control.sock".into(),
            }],
        })
    }

    #[test]
    fn the_wire_form_is_stable() {
        let frame = encode(&Request::Status).expect("encodes");
        assert_eq!(frame, b"\0\0\0\x14{\"request\":\"status\"}");
        let frame = encode(&Response::Error {
            kind: ErrorKind::Input,
            message: "no".into(),
        })
        .expect("encodes");
        assert_eq!(
            &frame[4..],
            br#"{"response":"error","kind":"input","message":"no"}"#
        );
    }

    #[test]
    fn a_frame_round_trips_through_decode_and_read() {
        let frame = encode(&status()).expect("encodes");
        let (decoded, used) = decode::<Response>(&frame).expect("valid").expect("whole");
        assert_eq!(decoded, status());
        assert_eq!(used, frame.len());
        let read: Option<Response> = read_frame(&mut frame.as_slice()).expect("valid");
        assert_eq!(read, Some(status()));
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete_not_invalid() {
        let frame = encode(&status()).expect("encodes");
        for cut in 0..frame.len() {
            let partial = frame.get(..cut).expect("in range");
            assert!(
                matches!(decode::<Response>(partial), Ok(None)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bytes_after_a_frame_are_left_for_the_next() {
        let mut two = encode(&Request::Status).expect("encodes");
        let first = two.len();
        two.extend(encode(&Request::Shutdown).expect("encodes"));
        let (req, used) = decode::<Request>(&two).expect("valid").expect("whole");
        assert!(matches!(req, Request::Status));
        assert_eq!(used, first);
        let rest = two.get(used..).expect("in range");
        let (req, _) = decode::<Request>(rest).expect("valid").expect("whole");
        assert!(matches!(req, Request::Shutdown));
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocation() {
        let header = u32::MAX.to_be_bytes();
        assert!(matches!(
            decode::<Request>(&header),
            Err(FrameError::TooLong { len }) if len == u32::MAX as usize
        ));
        let just_over = u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes();
        assert!(matches!(
            read_frame::<Request>(&mut just_over.as_slice()),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn a_message_over_the_limit_is_not_encoded() {
        let big = Response::Error {
            kind: ErrorKind::Input,
            message: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn catalogs_outside_the_fixed_set_are_refused() {
        for bad in ["../x", "/abs", "MMM_Local", "secrets"] {
            let body = format!(r#"{{"request":"catalog_list","store":"{bad}"}}"#);
            let mut frame = u32::try_from(body.len())
                .expect("fits")
                .to_be_bytes()
                .to_vec();
            frame.extend_from_slice(body.as_bytes());
            assert!(decode::<Request>(&frame).is_err(), "{bad}");
        }
        assert_eq!(Catalog::parse("../x"), None);
        assert_eq!(Catalog::parse("credential"), Some(Catalog::Credential));
    }

    #[test]
    fn malformed_bodies_are_invalid_and_not_echoed() {
        for body in [
            &b"{\"request\":\"secret-passphrase\"}"[..],
            b"{\"response\":\"status\",\"version\":\"1\"}",
            b"not json",
            b"{\"request\":\"status\"} trailing",
            b"",
        ] {
            let mut frame = u32::try_from(body.len())
                .expect("fits")
                .to_be_bytes()
                .to_vec();
            frame.extend_from_slice(body);
            let err = decode::<Request>(&frame).expect_err("invalid");
            assert!(matches!(err, FrameError::Malformed { .. }), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_truncated() {
        let frame = encode(&Request::Status).expect("encodes");
        for cut in 1..frame.len() {
            let partial = frame.get(..cut).expect("in range");
            assert!(
                matches!(
                    read_frame::<Request>(&mut &partial[..]),
                    Err(FrameError::Truncated)
                ),
                "cut at {cut}"
            );
        }
        assert!(matches!(read_frame::<Request>(&mut &b""[..]), Ok(None)));
    }

    proptest! {
        #[test]
        fn error_messages_round_trip(message in ".{0,200}") {
            let response = Response::Error { kind: ErrorKind::Input, message };
            let frame = encode(&response).expect("encodes");
            let (decoded, used) = decode::<Response>(&frame).expect("valid").expect("whole");
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(encode(&decoded).expect("encodes"), frame);
            prop_assert_eq!(decoded, response);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Request>(&bytes);
            let _ = read_frame::<Request>(&mut bytes.as_slice());
        }
    }
}
