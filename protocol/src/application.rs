//! Application entries in the Application catalog (`MMM_Application`).
//!
//! An SSH identity is one catalog entry, unique id `ssh/<name>`, message
//! type [`SSH_MESSAGE_TYPE`]. The entry carries the private key, so it is
//! sealed, like every Application catalog entry, to the catalog's store
//! key: a device holds that key only if its roles grant the Application
//! catalog (the `device` or `admin` right), and the store key derives from
//! the account seed, so the escrow shares recover every SSH key with the
//! account. This follows the reference's model (an application key
//! escrowed to the account and delivered encrypted to each device with the
//! right), with the store key as the envelope every device opens.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize as _;

/// The message type of an SSH identity entry.
pub const SSH_MESSAGE_TYPE: &str = "CatalogedApplicationSsh";

/// The prefix of SSH identity entries' unique ids.
pub const SSH_PREFIX: &str = "ssh/";

/// The message type of a device's record of which keys which SSH servers
/// took (unique id `ssh-accepted/<device UDF>`).
pub const SSH_ACCEPTED_MESSAGE_TYPE: &str = "CatalogedApplicationSshAccepted";

/// The prefix of those records' unique ids.
pub const SSH_ACCEPTED_PREFIX: &str = "ssh-accepted/";

/// The most `(host, key)` pairs one device's record holds.
pub const MAX_SSH_ACCEPTED: usize = 1024;

/// Which keys which SSH servers took, as one device learned it from the
/// sign requests of `publickey-hostbound` logins: so that every device
/// of the account offers a server the key it takes first. No secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SshAccepted {
    /// The device that learned it (its UDF).
    pub device: String,
    /// `(host key, key)` SHA-256 fingerprints.
    pub pairs: Vec<(String, String)>,
}

/// The message type of a batch of a device's key uses (unique id
/// `usage/<device UDF>/<random>`).
pub const USAGE_MESSAGE_TYPE: &str = "CatalogedApplicationUsage";

/// The prefix of those batches' unique ids.
pub const USAGE_PREFIX: &str = "usage/";

/// The most uses one batch holds.
pub const MAX_USAGE_BATCH: usize = 256;

/// One use of one of the account's keys: a signature or a decryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Usage {
    /// When (ms since the epoch, the device's clock).
    pub time_ms: u64,
    /// `ssh` (a signature) or `gpg` (`sign`, `decrypt`).
    pub operation: String,
    /// The key's name or comment.
    pub key: String,
    /// Its fingerprint (SHA-256 for SSH, the keygrip for gpg).
    pub fingerprint: String,
    /// The process that asked: its pid and program, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The program's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The SSH host the connection was bound to (its host key's SHA-256
    /// fingerprint), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Whether the user was asked, and said yes.
    #[serde(default)]
    pub confirmed: bool,
}

/// A batch of one device's key uses, as it writes them to the Application
/// catalog: every device with the `device` right reads them (`mesh log`).
/// Signed by the device, in the account's Merkle log: tamper-evident.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UsageBatch {
    /// The device (its UDF).
    pub device: String,
    /// The uses, oldest first.
    pub uses: Vec<Usage>,
}

/// The Credential catalog entry that holds a known_hosts file the account
/// syncs: the SSH agent matches keys' host scopes against the names it
/// gives a host key too, on every device with the `web` right.
pub const KNOWN_HOSTS_ENTRY: &str = "ssh:known_hosts";

/// The message type of a device's request that another device of the
/// account approve a use of a key it was asked to confirm with nobody at
/// it (unique id `approval/<device UDF>/<random>`). No secret.
pub const APPROVAL_MESSAGE_TYPE: &str = "CatalogedApplicationApprovalRequest";

/// The prefix of approval requests' unique ids.
pub const APPROVAL_PREFIX: &str = "approval/";

/// The message type of an answer to an approval request (unique id
/// `approval-answer/<requesting device UDF>/<the request's random>`).
pub const ANSWER_MESSAGE_TYPE: &str = "CatalogedApplicationApprovalAnswer";

/// The prefix of approval answers' unique ids.
pub const ANSWER_PREFIX: &str = "approval-answer/";

/// The longest text field of an approval request (a key name, a host).
pub const MAX_APPROVAL_FIELD: usize = 256;

/// A device asks the account's other devices whether a key may be used:
/// what the person who answers is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ApprovalRequest {
    /// The device that asks (its UDF).
    pub device: String,
    /// `ssh` (a signature) or `gpg` (`sign`, `decrypt`).
    pub operation: String,
    /// The key's name or comment.
    pub key: String,
    /// Its fingerprint (SHA-256 for SSH, the keygrip for gpg).
    pub fingerprint: String,
    /// Where it logs in: the host (a name from known_hosts, else its host
    /// key's fingerprint), from the connection's session-bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// As whom: the user of the SSH login being signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The program that asked, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// When it was asked (ms since the epoch, the asking device's clock).
    pub asked_ms: u64,
    /// Until when an answer counts.
    pub expires_ms: u64,
}

impl ApprovalRequest {
    /// Whether every field is within bounds.
    pub fn bounded(&self) -> bool {
        [&self.device, &self.operation, &self.key, &self.fingerprint]
            .into_iter()
            .chain(&self.host)
            .chain(&self.user)
            .chain(&self.program)
            .all(|field| field.len() <= MAX_APPROVAL_FIELD)
    }
}

/// Another device's answer to an [`ApprovalRequest`], signed by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// The request's unique id.
    pub request: String,
    /// The request's PayloadDigest (base64url): the answer is for that request
    /// as it was written, and no other.
    pub digest: String,
    /// The device that answers (its UDF).
    pub device: String,
    /// Yes or no.
    pub approved: bool,
}

impl ApprovalAnswer {
    /// The unique id of the answer to the request `request_id`.
    pub fn unique_id(request_id: &str) -> Option<String> {
        request_id
            .strip_prefix(APPROVAL_PREFIX)
            .map(|rest| format!("{ANSWER_PREFIX}{rest}"))
    }
}

/// The message type of an OpenPGP certificate entry (in the Application
/// catalog: public certificate and subkey secrets; in MMM_Local, for
/// administrators: the whole secret certificate).
pub const OPENPGP_MESSAGE_TYPE: &str = "CatalogedApplicationOpenpgp";

/// The prefix of OpenPGP entries' unique ids.
pub const OPENPGP_PREFIX: &str = "openpgp/";

/// The longest application name.
pub const MAX_NAME: usize = 64;

/// An SSH identity as the Application catalog holds it. A secret: not
/// `Clone`, not comparable, wiped when dropped.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SshIdentity {
    /// Its name in the account (`work`, `github`).
    pub name: String,
    /// The OpenSSH public key line.
    pub public: String,
    /// The OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`),
    /// unencrypted inside the sealed entry. Wiped when dropped.
    pub private: String,
    /// Ask the user (askpass) before each signature.
    #[serde(default)]
    pub confirm: bool,
    /// The hosts it is for (`github.com`, `*.example.com`), matched against
    /// the names the host key of a connection's bound session has in
    /// `known_hosts`; empty: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for SshIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshIdentity")
            .field("name", &self.name)
            .field("public", &self.public)
            .field("confirm", &self.confirm)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Drop for SshIdentity {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

impl SshIdentity {
    /// The entry's unique id in the catalog.
    pub fn unique_id(name: &str) -> String {
        format!("{SSH_PREFIX}{name}")
    }
}

/// An OpenPGP certificate as a catalog holds it (unique id
/// `openpgp/<name>`). A secret: not `Clone`, not comparable, wiped when
/// dropped.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OpenpgpEntry {
    /// Its name in the account.
    pub name: String,
    /// The primary key's fingerprint (hex).
    pub fingerprint: String,
    /// The armored public certificate.
    pub public: String,
    /// The armored secret keys this store's readers may hold.
    pub secret: String,
    /// Ask the user (askpass, or another device) before each signature
    /// or decryption. Written only when set, so that an entry without it
    /// reads as before (false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirm: bool,
}

impl std::fmt::Debug for OpenpgpEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenpgpEntry")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .field("confirm", &self.confirm)
            .finish_non_exhaustive()
    }
}

impl Drop for OpenpgpEntry {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl OpenpgpEntry {
    /// The entry's unique id in a catalog.
    pub fn unique_id(name: &str) -> String {
        format!("{OPENPGP_PREFIX}{name}")
    }
}

/// Check an application name: 1 to [`MAX_NAME`] characters of letters,
/// digits, `.`, `_`, `-` and `@`, not starting with `.` or `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["work", "github.com", "id_ed25519", "a@b", "x-1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a b", "a/b", &"x".repeat(65), "ключ"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let id = SshIdentity {
            name: "n".into(),
            public: "ssh-ed25519 AAAA n".into(),
            private: "SECRET".into(),
            confirm: false,
            hosts: Vec::new(),
        };
        assert!(!format!("{id:?}").contains("SECRET"));
    }

    #[test]
    fn an_openpgp_entry_without_confirm_reads_as_unconfirmed_and_is_written_as_before() {
        let old = r#"{"Name":"n","Fingerprint":"F","Public":"P","Secret":"S"}"#;
        let entry: OpenpgpEntry = serde_json::from_str(old).expect("reads");
        assert!(!entry.confirm);
        assert_eq!(serde_json::to_string(&entry).expect("writes"), old);
        let mut marked = entry;
        marked.confirm = true;
        let written = serde_json::to_string(&marked).expect("writes");
        assert!(written.contains(r#""Confirm":true"#), "{written}");
        let back: OpenpgpEntry = serde_json::from_str(&written).expect("reads");
        assert!(back.confirm);
    }
}
