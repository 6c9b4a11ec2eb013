//! The Mesh's closed sets that the control protocol carries too: an
//! account's stores and a device's roles. They live here, in the crate
//! without crypto, so that the shims can speak the control protocol; the
//! Mesh itself (`mesh_protocol::account`) re-exports them.

use serde::{Deserialize, Serialize};

/// One of an account's stores. The set is closed: a name outside it is a
/// decode error wherever it comes from (the service, the control socket, a
/// file), so no store name from outside ever becomes a path by itself.
///
/// The wire form is the store's name (`MMM_Device` ...); changing it changes
/// the store keys (they are derived from it) and the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Store {
    /// The Device catalog: one `CatalogedDevice` per connected device.
    #[serde(rename = "MMM_Device")]
    Device,
    /// The Access catalog: one `AccessCapability` per device the service serves.
    #[serde(rename = "MMM_Access")]
    Access,
    /// The Application catalog: SSH and OpenPGP keys and the like.
    #[serde(rename = "MMM_Application")]
    Application,
    /// The Credential catalog: passwords and tokens.
    #[serde(rename = "MMM_Credential")]
    Credential,
    /// The Inbound spool: connection requests and other messages to the account.
    #[serde(rename = "MMM_Inbound")]
    Inbound,
    /// The Local spool: administrators' own records (PINs).
    #[serde(rename = "MMM_Local")]
    Local,
}

impl Store {
    /// Every store an account has.
    pub const ALL: [Store; 6] = [
        Store::Device,
        Store::Access,
        Store::Application,
        Store::Credential,
        Store::Inbound,
        Store::Local,
    ];

    /// The store's name, as the wire and the store key derivation use it.
    pub const fn name(self) -> &'static str {
        match self {
            Store::Device => "MMM_Device",
            Store::Access => "MMM_Access",
            Store::Application => "MMM_Application",
            Store::Credential => "MMM_Credential",
            Store::Inbound => "MMM_Inbound",
            Store::Local => "MMM_Local",
        }
    }

    /// The store of this exact name, or `None` for any other text
    /// (`../x`, `/abs`, `MMM_Other`).
    pub fn from_name(name: &str) -> Option<Store> {
        Store::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A role: what a device may do and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: holds the account seed, approves and revokes devices.
    Admin,
    /// Uses the account's application keys (SSH, OpenPGP): reads the
    /// Application catalog. This is the "ssh right".
    Device,
    /// Also reads the Credential catalog (passwords, tokens).
    Web,
}

impl Role {
    /// `admin`, `device` or `web`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Device => "device",
            Role::Web => "web",
        }
    }

    /// Parse `admin`, `device` or `web`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "device" => Some(Role::Device),
            "web" => Some(Role::Web),
            _ => None,
        }
    }
}
