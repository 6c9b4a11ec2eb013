//! Where the device's seed is kept: the OS keyring, or a file.
//!
//! The seed is the device's one long-term secret (every other key is
//! derived from it or delivered encrypted to it). [`SecretStore::open`]
//! picks the Secret Service (gnome-keyring, KeePassXC ...) through
//! keyring-core when the session has one and it answers, and otherwise an
//! explicit file fallback: one file per secret, mode 0600, in a 0700
//! directory under the XDG data directory. `mesh` says which is in use,
//! and warns about the file. `MESH_KEYRING=file|secret-service` forces the
//! choice.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use keyring_core::api::CredentialStoreApi;
use zeroize::Zeroizing;

/// The keyring "service" our secrets are filed under.
const SERVICE: &str = "mesh";

/// A failure to read or write a secret; the message names no secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// `MESH_KEYRING` names no store we have.
    #[error("MESH_KEYRING={0}: use file or secret-service")]
    Choice(String),
    /// The Secret Service failed.
    #[error("secret store: the Secret Service: {0}")]
    SecretService(#[from] keyring_core::Error),
    /// A secret's file could not be read or written.
    #[error("secret store: cannot {what} {path}: {source}")]
    File {
        /// `read` or `write`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Where secrets live.
pub enum SecretStore {
    /// The Secret Service, over D-Bus.
    SecretService(std::sync::Arc<zbus_secret_service_keyring_store::Store>),
    /// Files in this directory.
    File(PathBuf),
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SecretStore {
    /// The Secret Service if the session has one (`session_bus`) that
    /// answers, else files in `dir`; `choice` (from `MESH_KEYRING`) forces
    /// one.
    pub fn open(
        dir: &Path,
        choice: Option<&str>,
        session_bus: bool,
    ) -> Result<SecretStore, SecretError> {
        let file = || SecretStore::File(dir.to_owned());
        match choice {
            Some("file") => return Ok(file()),
            Some("secret-service") => return secret_service(),
            Some(other) => return Err(SecretError::Choice(other.to_owned())),
            None => {}
        }
        if !session_bus {
            return Ok(file());
        }
        match secret_service() {
            Ok(store) => Ok(store),
            Err(err) => {
                tracing::warn!(error = %err, "no usable Secret Service; keeping secrets in files");
                Ok(file())
            }
        }
    }

    /// Which store this is, as `MESH_KEYRING` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretStore::SecretService(_) => "secret-service",
            SecretStore::File(_) => "file",
        }
    }

    /// What a person should know about where secrets are.
    pub fn describe(&self) -> String {
        match self {
            SecretStore::SecretService(_) => "the Secret Service (OS keyring)".into(),
            SecretStore::File(dir) => format!(
                "files in {} (mode 0600; no OS keyring was available: protect this directory)",
                dir.display()
            ),
        }
    }

    /// Read a secret, `None` if there is none.
    pub fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretError> {
        match self {
            SecretStore::SecretService(store) => {
                let entry = store.build(SERVICE, name, None)?;
                match entry.get_secret() {
                    Ok(secret) => Ok(Some(Zeroizing::new(secret))),
                    Err(keyring_core::Error::NoEntry) => Ok(None),
                    Err(err) => Err(err.into()),
                }
            }
            SecretStore::File(dir) => match fs::read(dir.join(name)) {
                Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(SecretError::File {
                    what: "read",
                    path: dir.join(name),
                    source,
                }),
            },
        }
    }

    /// Store a secret, replacing any before it.
    pub fn set(&self, name: &str, secret: &[u8]) -> Result<(), SecretError> {
        match self {
            SecretStore::SecretService(store) => store
                .build(SERVICE, name, None)
                .and_then(|entry| entry.set_secret(secret))
                .map_err(SecretError::from),
            SecretStore::File(dir) => {
                write_private(dir, name, secret).map_err(|source| SecretError::File {
                    what: "write",
                    path: dir.join(name),
                    source,
                })
            }
        }
    }
}

fn secret_service() -> Result<SecretStore, SecretError> {
    let store = zbus_secret_service_keyring_store::Store::new()?;
    // A store that cannot be read (locked, no daemon) is no store: probe.
    let probe = store.build(SERVICE, "probe", None)?;
    match probe.get_secret() {
        Ok(_) | Err(keyring_core::Error::NoEntry) => Ok(SecretStore::SecretService(store)),
        Err(err) => Err(err.into()),
    }
}

/// Write `dir/name` with mode 0600 (the directory 0700), atomically.
fn write_private(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_fallback_is_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("secrets");
        let store = SecretStore::open(&dir, Some("file"), false).expect("a store");
        assert!(store.get("seed").expect("reads").is_none());
        store.set("seed", b"secret").expect("writes");
        assert_eq!(
            store
                .get("seed")
                .expect("reads")
                .as_deref()
                .map(Vec::as_slice),
            Some(&b"secret"[..])
        );
        let mode = fs::metadata(dir.join("seed"))
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&dir).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
