//! What goes wrong in the account layer, by kind: the control frontend
//! answers each with its [`ErrorKind`] and one line for a person, and the
//! account itself branches on the kind, never on text.

use mesh_ipc::control::ErrorKind;
use mesh_protocol::account::Store;
use mesh_protocol::service::Reason;

use crate::service_client::RemoteError;
use crate::store::secrets::SecretError;

/// Why an account operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// This device has no account.
    #[error("this device has no account: run mesh account create or mesh device connect")]
    NoAccount,
    /// This device belongs to an account (or waits to).
    #[error("this device already belongs to an account (or is waiting to)")]
    HasAccount,
    /// Only administrators may do this.
    #[error("this device is not an administrator of the account")]
    NotAdmin,
    /// The device waits for an administrator.
    #[error("this device is waiting for an administrator to accept it")]
    Pending,
    /// The device was revoked.
    #[error("this device was revoked from the account")]
    Revoked,
    /// The account's authority rules do not let this device do it (every
    /// other device would refuse the entry).
    #[error("the account's rules do not let this device do that: {0}")]
    Forbidden(String),
    /// The service kept reporting a stale view.
    #[error("the service kept reporting a conflict")]
    Conflict,
    /// The service refused the request.
    #[error("the service refused ({status}{}): {description}", reason.map(|r| format!(" {r}")).unwrap_or_default())]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its reason, if it gave one.
        reason: Option<Reason>,
        /// Its line.
        description: String,
    },
    /// The service cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// What the service sent (or a stored record) does not verify.
    #[error("{}{why}", store.map(|s| format!("{s}: ")).unwrap_or_default())]
    Untrusted {
        /// The store it came from, if one.
        store: Option<Store>,
        /// What does not verify.
        why: String,
    },
    /// The request's input is wrong.
    #[error("{0}")]
    Input(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Exists(String),
    /// A local file, the secret store or a program failed.
    #[error("{0}")]
    Io(String),
}

impl AccountError {
    /// Its kind, for the control protocol.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AccountError::NoAccount => ErrorKind::NoAccount,
            AccountError::HasAccount | AccountError::Exists(_) => ErrorKind::Exists,
            AccountError::NotAdmin | AccountError::Forbidden(_) => ErrorKind::NotAdmin,
            AccountError::Pending => ErrorKind::Pending,
            AccountError::Revoked => ErrorKind::Revoked,
            AccountError::Conflict => ErrorKind::Conflict,
            AccountError::Refused { .. } => ErrorKind::Refused,
            AccountError::Unreachable(_) => ErrorKind::Unreachable,
            AccountError::Untrusted { .. } => ErrorKind::Untrusted,
            AccountError::Input(_) => ErrorKind::Input,
            AccountError::NotFound(_) => ErrorKind::NotFound,
            AccountError::Io(_) => ErrorKind::Io,
        }
    }

    /// Something the service sent does not verify.
    pub(crate) fn untrusted(store: Store, why: impl Into<String>) -> AccountError {
        AccountError::Untrusted {
            store: Some(store),
            why: why.into(),
        }
    }
}

impl From<RemoteError> for AccountError {
    fn from(e: RemoteError) -> AccountError {
        match e {
            RemoteError::Refused {
                reason: Some(Reason::DeviceRevoked),
                ..
            } => AccountError::Revoked,
            RemoteError::Refused {
                reason: Some(Reason::Conflict),
                ..
            } => AccountError::Conflict,
            RemoteError::Refused {
                status,
                reason,
                description,
            } => AccountError::Refused {
                status,
                reason,
                description,
            },
            e @ (RemoteError::Unreachable { .. } | RemoteError::NotMesh { .. }) => {
                AccountError::Unreachable(e.to_string())
            }
            e @ RemoteError::Local { .. } => AccountError::Io(e.to_string()),
        }
    }
}

impl From<mesh_protocol::account::AccountError> for AccountError {
    fn from(e: mesh_protocol::account::AccountError) -> AccountError {
        match e {
            // Our own key work (generation, derivation, sealing) failed.
            mesh_protocol::account::AccountError::Key => AccountError::Io(e.to_string()),
            // A record from outside does not open, parse or verify.
            e => AccountError::Untrusted {
                store: None,
                why: e.to_string(),
            },
        }
    }
}

impl From<std::io::Error> for AccountError {
    fn from(e: std::io::Error) -> AccountError {
        AccountError::Io(e.to_string())
    }
}

impl From<SecretError> for AccountError {
    fn from(e: SecretError) -> AccountError {
        AccountError::Io(e.to_string())
    }
}
