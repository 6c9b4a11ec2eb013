//! What meshd does to the rest of the machine: gpg's configuration and
//! keyring. Each is a subscriber to the account's key snapshot, run as a
//! task of the daemon, never a call from the account.

pub mod gpg;
