//! What the replicas mean: each store's frames folded, in order, into the
//! objects this device believes (a [`Ledger`] per store), under the
//! account's authority rules.
//!
//! Every frame is checked as a format-2 entry (`mesh_protocol::entry`:
//! signed head, header equal to it, this account and store, version chain)
//! when it arrives, before it is committed; a frame that fails is something
//! only the service (or the network) can have made, so the whole download
//! is refused and reported, and nothing of it is kept.
//!
//! A frame that passes those checks was written by a key of the account;
//! the rules below then decide whether it applies. One that does not is
//! kept in the log (the log is the service's and every device's alike) but
//! changes nothing, and `mesh account status` lists it.
//!
//! # The rules
//!
//! "Administrator" means the account's administrator key, or a device whose
//! roles include `admin`.
//!
//! 1. The Device, Access and Local stores are written by administrators
//!    only: devices, capabilities, PINs and whole OpenPGP certificates.
//! 2. Nothing a revoked device signed applies, whenever it was written:
//!    its key may be in anyone's hands now. An administrator writes again
//!    what should stay.
//! 3. The Application catalog is written by administrators and devices
//!    with the `device` role; the Credential catalog by administrators and
//!    devices with the `web` role.
//! 4. An object is changed or deleted by an administrator or by the device
//!    that wrote its live version: a device updates only what it wrote.
//!    One exception: any device with the `web` role deletes a credential
//!    (git's `reject` of a revoked token erases it everywhere).
//! 5. OpenPGP entries are written by administrators only (their
//!    certificates go into every device's gpg keyring).
//! 6. Only an administrator switches a key's confirmation off (an SSH
//!    identity's or an OpenPGP certificate's).
//! 7. Records filed under a device's name (`usage/<device>/…`,
//!    `ssh-accepted/<device>`, `approval/<device>/…`) are written by that
//!    device; an answer to a device's approval request
//!    (`approval-answer/<device>/…`) by another device, never the asking
//!    one (nor the bare administrator key, which no person holds at a
//!    screen).
//! 8. A store holds only its own kinds of record, under their own names
//!    (`ssh/…` is an SSH identity and nothing else is), and each record
//!    must read as its kind. An SSH identity's public key must be the one
//!    its private key derives (it feeds authorized_keys and
//!    allowed_signers); an OpenPGP entry's fingerprint must be its
//!    certificate's.

use std::collections::BTreeMap;

use mesh_protocol::account::{
    self, AccessCapability, CatalogedDevice, ConnectionDevice, PinRecord, Role, Store, message_type,
};
use mesh_protocol::application::{
    ANSWER_MESSAGE_TYPE, ANSWER_PREFIX, APPROVAL_MESSAGE_TYPE, APPROVAL_PREFIX, ApprovalAnswer,
    ApprovalRequest, MAX_APPROVAL_FIELD, MAX_SSH_ACCEPTED, MAX_USAGE_BATCH, OPENPGP_MESSAGE_TYPE,
    OPENPGP_PREFIX, OpenpgpEntry, SSH_ACCEPTED_MESSAGE_TYPE, SSH_ACCEPTED_PREFIX, SSH_MESSAGE_TYPE,
    SSH_PREFIX, SshAccepted, SshIdentity, USAGE_MESSAGE_TYPE, USAGE_PREFIX, UsageBatch,
};
use mesh_protocol::entry::{self, EntryError, Head, Ledger, Live, Verified};
use mesh_protocol::envelope::Event;
use mesh_protocol::keys::{PrivateKey, PublicKey};
use rand_core::OsRng;
use serde::Serialize;

use super::catalog::{CATALOG_ENTRY, CatalogEntry};
use super::{Account, AccountError};

/// What the rules keep about an object's live version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Summary {
    /// An SSH identity's or OpenPGP certificate's confirmation policy.
    confirm: bool,
}

/// A key whose signatures the account vouches for.
#[derive(Debug, Clone)]
enum Signer {
    /// The account's administrator key.
    Admin,
    /// A device the Device catalog holds, or once held.
    Device {
        /// Its UDF.
        udf: String,
        roles: Vec<Role>,
        revoked: bool,
    },
}

impl Signer {
    fn is_admin(&self) -> bool {
        match self {
            Signer::Admin => true,
            Signer::Device { roles, .. } => roles.contains(&Role::Admin),
        }
    }
}

/// The keys entries are checked against: the administrator key first, then
/// every device the Device catalog ever held (a revoked device's frames
/// still verify, and rule 2 denies them).
#[derive(Debug, Clone, Default)]
pub(super) struct Signers {
    keys: Vec<PublicKey>,
    who: Vec<Signer>,
}

/// Every store's ledger, and the signers they were checked against.
#[derive(Debug, Default)]
pub(super) struct Ledgers {
    stores: BTreeMap<Store, Ledger<Summary>>,
    signers: Signers,
}

/// A catalog's stores other than the spool, in the order they are folded:
/// the Access catalog first (it counts the key epochs), then the Device
/// catalog (it names the signers).
const FOLDED: [Store; 5] = [
    Store::Access,
    Store::Device,
    Store::Local,
    Store::Application,
    Store::Credential,
];

fn kind(store: Store, message_type: &str, id: &str) -> Result<(), String> {
    let allowed = match store {
        Store::Device => message_type == message_type::CATALOGED_DEVICE,
        Store::Access => message_type == message_type::ACCESS_CAPABILITY,
        Store::Local => {
            message_type == message_type::PIN
                || (message_type == OPENPGP_MESSAGE_TYPE && id.starts_with(OPENPGP_PREFIX))
        }
        Store::Application => match message_type {
            SSH_MESSAGE_TYPE => id.starts_with(SSH_PREFIX),
            SSH_ACCEPTED_MESSAGE_TYPE => id.starts_with(SSH_ACCEPTED_PREFIX),
            USAGE_MESSAGE_TYPE => id.starts_with(USAGE_PREFIX),
            APPROVAL_MESSAGE_TYPE => id.starts_with(APPROVAL_PREFIX),
            ANSWER_MESSAGE_TYPE => id.starts_with(ANSWER_PREFIX),
            OPENPGP_MESSAGE_TYPE => id.starts_with(OPENPGP_PREFIX),
            CATALOG_ENTRY => [
                SSH_PREFIX,
                OPENPGP_PREFIX,
                SSH_ACCEPTED_PREFIX,
                USAGE_PREFIX,
                APPROVAL_PREFIX,
                ANSWER_PREFIX,
            ]
            .iter()
            .all(|prefix| !id.starts_with(prefix)),
            _ => false,
        },
        Store::Credential => message_type == CATALOG_ENTRY,
        Store::Inbound => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{store} does not hold {message_type} records named {id:?}"
        ))
    }
}

/// The device a record is filed under by name (its uses, what servers
/// took its keys, its approval requests): only that device writes it.
fn filed_under(id: &str) -> Option<&str> {
    if let Some(device) = id.strip_prefix(SSH_ACCEPTED_PREFIX) {
        return Some(device);
    }
    [USAGE_PREFIX, APPROVAL_PREFIX].iter().find_map(|prefix| {
        id.strip_prefix(prefix)
            .and_then(|rest| rest.split_once('/'))
            .map(|(device, _)| device)
    })
}

/// Check that a record reads as its kind, and what the rules keep of it.
fn record(store: Store, verified: &Verified) -> Result<Summary, String> {
    let head = &verified.head;
    let damaged = || format!("its {} record is damaged", head.message_type);
    match head.message_type.as_str() {
        message_type::CATALOGED_DEVICE => {
            let device: CatalogedDevice = verified.record().ok_or_else(damaged)?;
            if device.device_udf != head.unique_id {
                return Err("it files a device under another device's name".into());
            }
        }
        message_type::ACCESS_CAPABILITY => {
            let capability: AccessCapability = verified.record().ok_or_else(damaged)?;
            if capability.device_udf != head.unique_id {
                return Err("it files a capability under another device's name".into());
            }
        }
        message_type::PIN => {
            verified.record::<PinRecord>().ok_or_else(damaged)?;
        }
        SSH_MESSAGE_TYPE => {
            let identity: SshIdentity = verified.record().ok_or_else(damaged)?;
            if SshIdentity::unique_id(&identity.name) != head.unique_id {
                return Err("its name is not the one it is filed under".into());
            }
            let derived = crate::hygiene::then_wipe_stack(|| {
                ssh_key::PrivateKey::from_openssh(&identity.private)
                    .ok()
                    .and_then(|k| k.public_key().to_openssh().ok())
            })
            .ok_or_else(damaged)?;
            // Compare the key itself: type and base64, not the comment.
            fn key_of(line: &str) -> Vec<&str> {
                line.split_whitespace().take(2).collect()
            }
            if key_of(&derived) != key_of(&identity.public) {
                return Err("its public key is not its private key's".into());
            }
            return Ok(Summary {
                confirm: identity.confirm,
            });
        }
        OPENPGP_MESSAGE_TYPE => {
            use sequoia_openpgp::Cert;
            use sequoia_openpgp::parse::Parse as _;
            let pgp: OpenpgpEntry = verified.record().ok_or_else(damaged)?;
            if OpenpgpEntry::unique_id(&pgp.name) != head.unique_id {
                return Err("its name is not the one it is filed under".into());
            }
            let public = Cert::from_bytes(pgp.public.as_bytes()).map_err(|_| damaged())?;
            let secret = Cert::from_bytes(pgp.secret.as_bytes()).map_err(|_| damaged())?;
            if public.fingerprint().to_hex() != pgp.fingerprint
                || secret.fingerprint() != public.fingerprint()
            {
                return Err("its fingerprint is not its certificate's".into());
            }
            return Ok(Summary {
                confirm: pgp.confirm,
            });
        }
        SSH_ACCEPTED_MESSAGE_TYPE => {
            let accepted: SshAccepted = verified.record().ok_or_else(damaged)?;
            if format!("{SSH_ACCEPTED_PREFIX}{}", accepted.device) != head.unique_id
                || accepted.pairs.len() > MAX_SSH_ACCEPTED
            {
                return Err("its device or size is not the one it is filed under".into());
            }
        }
        USAGE_MESSAGE_TYPE => {
            let batch: UsageBatch = verified.record().ok_or_else(damaged)?;
            if !head
                .unique_id
                .starts_with(&format!("{USAGE_PREFIX}{}/", batch.device))
                || batch.uses.len() > MAX_USAGE_BATCH
            {
                return Err("its device or size is not the one it is filed under".into());
            }
        }
        APPROVAL_MESSAGE_TYPE => {
            let request: ApprovalRequest = verified.record().ok_or_else(damaged)?;
            if !head
                .unique_id
                .starts_with(&format!("{APPROVAL_PREFIX}{}/", request.device))
                || !request.bounded()
            {
                return Err("its device or size is not the one it is filed under".into());
            }
        }
        ANSWER_MESSAGE_TYPE => {
            let answer: ApprovalAnswer = verified.record().ok_or_else(damaged)?;
            if ApprovalAnswer::unique_id(&answer.request).as_deref() != Some(&head.unique_id)
                || answer.digest.len() > MAX_APPROVAL_FIELD
            {
                return Err("it answers another request than the one it is filed under".into());
            }
        }
        CATALOG_ENTRY => {
            let entry: CatalogEntry = verified.record().ok_or_else(damaged)?;
            if entry.name != head.unique_id {
                return Err("its name is not the one it is filed under".into());
            }
        }
        _ => {
            return Err(format!(
                "{store} does not hold {} records",
                head.message_type
            ));
        }
    }
    Ok(Summary::default())
}

/// Whether `signer` may do what `verified` does to `current`.
fn rule(
    store: Store,
    signers: &Signers,
    verified: &Verified,
    current: Option<&Live<Summary>>,
) -> Result<Summary, String> {
    let head = &verified.head;
    let signer = signers
        .who
        .get(verified.signer)
        .ok_or_else(|| "it is signed by an unknown key".to_owned())?;
    if let Signer::Device { revoked: true, .. } = signer {
        return Err("it was signed by a revoked device".into());
    }
    let admin = signer.is_admin();
    let role_writes = match (store, signer) {
        (_, _) if admin => true,
        (Store::Application, Signer::Device { roles, .. }) => roles.contains(&Role::Device),
        (Store::Credential, Signer::Device { roles, .. }) => roles.contains(&Role::Web),
        _ => false,
    };
    if !role_writes {
        return Err(format!("only an administrator writes {store}"));
    }
    let current_type = current.map(|c| c.message_type.as_str());
    kind(
        store,
        current_type.unwrap_or(&head.message_type),
        &head.unique_id,
    )?;
    if current_type.is_some_and(|t| t != head.message_type) {
        return Err("it changes the kind of an object".into());
    }
    // (git's `reject` erases a credential everywhere: any device with the
    // web right deletes one.)
    let erasing_credential = store == Store::Credential && head.event == Event::Delete;
    if let Some(current) = current
        && !admin
        && !erasing_credential
        && current.author != verified.signer
    {
        return Err("a device changes only what it wrote".into());
    }
    if head.message_type == OPENPGP_MESSAGE_TYPE && !admin {
        return Err("only an administrator writes OpenPGP keys".into());
    }
    let udf = match signer {
        Signer::Device { udf, .. } => Some(udf.as_str()),
        Signer::Admin => None,
    };
    if let Some(owner) = filed_under(&head.unique_id)
        && head.event != Event::Delete
        && udf != Some(owner)
    {
        return Err("a device writes records only under its own name".into());
    }
    if let Some(asker) = head
        .unique_id
        .strip_prefix(ANSWER_PREFIX)
        .and_then(|rest| rest.split('/').next())
        && (udf.is_none() || udf == Some(asker))
    {
        return Err("only another device answers a device's request".into());
    }
    if head.message_type == ANSWER_MESSAGE_TYPE
        && head.event != Event::Delete
        && verified
            .record::<ApprovalAnswer>()
            .is_some_and(|answer| Some(answer.device.as_str()) != udf)
    {
        return Err("an answer names another device than its signer".into());
    }
    if head.event == Event::Delete {
        return Ok(Summary::default());
    }
    let summary = record(store, verified)?;
    if let Some(current) = current
        && !admin
        && current.summary.confirm
        && !summary.confirm
    {
        return Err("only an administrator switches confirmation off".into());
    }
    Ok(summary)
}

impl Ledgers {
    /// A store's ledger (an empty one if it has none).
    pub(super) fn get(&self, store: Store) -> Option<&Ledger<Summary>> {
        self.stores.get(&store)
    }

    /// The signer keys, administrator first.
    pub(super) fn keys(&self) -> &[PublicKey] {
        &self.signers.keys
    }

    /// The frames the rules denied, one line each, for the status.
    pub(super) fn denied(&self) -> Vec<String> {
        self.stores
            .iter()
            .flat_map(|(store, ledger)| {
                ledger
                    .denied()
                    .iter()
                    .map(move |d| format!("{store} #{} {:?}: {}", d.index, d.unique_id, d.why))
            })
            .collect()
    }
}

impl Account {
    /// Fold `store`'s frames that `ledger` has not seen yet; the first one
    /// that is not a valid entry stops it.
    fn fold_onto(
        &self,
        store: Store,
        mut ledger: Ledger<Summary>,
        signers: &Signers,
    ) -> Result<Ledger<Summary>, AccountError> {
        let activation = self.activation()?;
        let address = self.remote()?.account();
        for index in ledger.next()..=self.replicas.len(store) {
            let frame = self
                .replicas
                .frame(store, index)
                .ok_or_else(|| AccountError::untrusted(store, "damaged replica"))?;
            let key = activation.store_key_for(store, &frame);
            let refused = |e: EntryError| {
                AccountError::untrusted(store, format!("frame {index} was refused: {e}"))
            };
            let verified =
                entry::open(&frame, address, store, key, &signers.keys).map_err(refused)?;
            ledger
                .fold(index, &verified, |v, current| {
                    rule(store, signers, v, current)
                })
                .map_err(refused)?;
        }
        Ok(ledger)
    }

    /// The administrator key alone, as signers.
    fn admin_only(&self) -> Result<Signers, AccountError> {
        let admin = self.activation()?.profile.administrator_signature.key()?;
        Ok(Signers {
            keys: vec![admin],
            who: vec![Signer::Admin],
        })
    }

    /// The signers the Device ledger names.
    fn signers_of(&self, devices: &Ledger<Summary>) -> Result<Signers, AccountError> {
        let mut signers = self.admin_only()?;
        let admin = signers.keys[0];
        let activation = self.activation()?;
        let address = self.remote()?.account();
        // Every device ever cataloged: each frame that applied in order.
        for index in 1..devices.next() {
            if devices.denied().iter().any(|d| d.index == index) {
                continue;
            }
            let Some(frame) = self.replicas.frame(Store::Device, index) else {
                continue;
            };
            let key = activation.store_key_for(Store::Device, &frame);
            let Ok(verified) = entry::open(&frame, address, Store::Device, key, &[admin]) else {
                continue;
            };
            let Some(device) = verified.record::<CatalogedDevice>() else {
                continue;
            };
            let Ok(connection) = account::verify_admin_signed::<ConnectionDevice>(
                &device.enveloped_connection_device,
                &admin,
            ) else {
                continue;
            };
            let Ok(key) = connection.signature.key() else {
                continue;
            };
            // A device issued again (after a revocation) keeps its key.
            if signers.keys.contains(&key) {
                continue;
            }
            let revoked = !devices.live().contains_key(&device.device_udf);
            signers.keys.push(key);
            signers.who.push(Signer::Device {
                udf: device.device_udf.clone(),
                roles: connection.roles,
                revoked,
            });
        }
        Ok(signers)
    }

    /// Check `store`'s staged frames on top of its ledger: `Ok` with the
    /// ledger they make, to [`Account::settle`] once committed.
    pub(super) fn check_staged(&self, store: Store) -> Result<Ledger<Summary>, AccountError> {
        if store == Store::Inbound {
            return Ok(Ledger::default());
        }
        let ledger = self.ledgers.get(store).cloned().unwrap_or_default();
        if matches!(store, Store::Device | Store::Access) {
            // The Device and Access catalogs are checked against the
            // administrator key alone: the other signers follow from them.
            return self.fold_onto(store, ledger, &self.admin_only()?);
        }
        self.fold_onto(store, ledger, &self.ledgers.signers)
    }

    /// Take a checked ledger as the store's. A new Access ledger may start
    /// a key epoch (each revocation does: an administrator holds its keys
    /// from then on); a new Device ledger names new signers, may carry this
    /// device's entry again with new grants (after a revocation), and every
    /// other store is folded again under them.
    pub(super) fn settle(&mut self, store: Store, ledger: Ledger<Summary>) {
        let epoch = u32::try_from(ledger.deletes()).unwrap_or(u32::MAX);
        match store {
            Store::Inbound => {}
            Store::Access => {
                self.ledgers.stores.insert(store, ledger);
                if let Some(activation) = &mut self.activation
                    && let Err(e) = activation.hold_epoch(epoch)
                {
                    tracing::warn!(error = %e, "cannot derive the store keys of a new epoch");
                }
            }
            Store::Device => {
                self.ledgers.stores.insert(store, ledger);
                let renewed = match self.activate() {
                    Err(AccountError::Untrusted { .. }) => self.refold(),
                    other => other,
                };
                if let Err(e) = renewed {
                    tracing::warn!(error = %e, "cannot fold the catalogs again");
                }
            }
            _ => {
                self.ledgers.stores.insert(store, ledger);
            }
        }
    }

    /// Fold every store from its first frame (at start, and when the
    /// signers change). A store that does not fold is reported and left
    /// empty.
    pub(super) fn refold(&mut self) -> Result<(), AccountError> {
        self.ledgers = Ledgers::default();
        let admin_only = self.admin_only()?;
        if self.activation()?.store_key(Store::Access).is_some() {
            let access = self.fold_onto(Store::Access, Ledger::default(), &admin_only)?;
            let epoch = u32::try_from(access.deletes()).unwrap_or(u32::MAX);
            if let Some(activation) = &mut self.activation {
                activation.hold_epoch(epoch)?;
            }
            self.ledgers.stores.insert(Store::Access, access);
        }
        let devices = self.fold_onto(Store::Device, Ledger::default(), &admin_only)?;
        self.ledgers.signers = self.signers_of(&devices)?;
        self.ledgers.stores.insert(Store::Device, devices);
        for store in FOLDED.into_iter().skip(2) {
            if self.activation()?.store_key(store).is_none() {
                continue;
            }
            match self.fold_onto(store, Ledger::default(), &self.ledgers.signers) {
                Ok(ledger) => {
                    self.ledgers.stores.insert(store, ledger);
                }
                Err(e) => {
                    tracing::warn!(%store, error = %e, "a replica does not fold");
                    self.sync_errors.insert(store.name().into(), e.to_string());
                }
            }
        }
        Ok(())
    }

    /// The live objects of a store: UniqueId → their live version.
    pub(super) fn live(&self, store: Store) -> BTreeMap<String, Live<Summary>> {
        self.ledgers
            .get(store)
            .map(|l| l.live().clone())
            .unwrap_or_default()
    }

    /// The `Previous` the next entry about `unique_id` in `store` carries.
    pub(super) fn previous(&self, store: Store, unique_id: &str) -> Option<Vec<u8>> {
        self.ledgers.get(store).and_then(|l| l.previous(unique_id))
    }

    /// Seal an entry of `store` about `unique_id`, chained onto the
    /// object's latest frame.
    #[expect(
        clippy::too_many_arguments,
        reason = "what a signed head names, the record, and how it is sealed"
    )]
    pub(super) fn entry<T: Serialize>(
        &self,
        store: Store,
        unique_id: &str,
        event: Event,
        message_type: &str,
        record: Option<&T>,
        signer: &PrivateKey,
        recipients: &[PublicKey],
    ) -> Result<mesh_protocol::envelope::Envelope, AccountError> {
        let head = Head {
            format: entry::FORMAT,
            account: self.remote()?.account().to_owned(),
            store,
            unique_id: unique_id.to_owned(),
            event,
            message_type: message_type.to_owned(),
            previous: self.previous(store, unique_id),
        };
        entry::seal(&mut OsRng, &head, record, signer, recipients)
            .map_err(|e| account::AccountError::from(e).into())
    }

    /// Every live entry of a store, opened and checked.
    pub(super) fn open_live(&self, store: Store) -> Result<Vec<(String, Verified)>, AccountError> {
        self.open_live_where(store, |_| true)
    }

    /// [`Account::open_live`] for the objects `keep` picks only (the
    /// others, secrets among them, stay sealed).
    pub(super) fn open_live_where(
        &self,
        store: Store,
        keep: impl Fn(&Live<Summary>) -> bool,
    ) -> Result<Vec<(String, Verified)>, AccountError> {
        let activation = self.activation()?;
        let address = self.remote()?.account();
        let mut out = Vec::new();
        for (name, live) in self.live(store).into_iter().filter(|(_, l)| keep(l)) {
            let verified = self
                .replicas
                .frame(store, live.index)
                .and_then(|frame| {
                    let key = activation.store_key_for(store, &frame);
                    entry::open(&frame, address, store, key, self.ledgers.keys()).ok()
                })
                .ok_or_else(|| AccountError::untrusted(store, "damaged replica"))?;
            out.push((name, verified));
        }
        Ok(out)
    }
}
