//! What this device keeps on disk: the replicas of the account's stores
//! (keyed by [`mesh_protocol::account::Store`], never by a name from
//! outside) and its secrets.

pub mod replica;
pub mod secrets;
