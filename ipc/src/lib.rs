//! Local IPC of the Mesh, without cryptography: the control protocol
//! between `mesh`, the shims and `meshd` ([`control`]), where a user's Mesh
//! files and sockets live ([`paths`]), whether a runtime directory and the
//! process behind a socket can be trusted ([`trust`]), the marked blocks
//! `mesh setup` and `meshd` write into other programs' files ([`setup`]),
//! and the closed sets the control protocol shares with the Mesh
//! ([`names`]).
//!
//! # Architecture invariant
//!
//! No crypto, no tokio, no I/O of its own but the blocking frame reader and
//! writer over a `Read`/`Write` given to it and [`trust`]'s checks (a
//! directory's metadata, a connect, the peer's credentials); environment
//! lookups come in as parameters. The shims link this and nothing else of
//! ours.

#![deny(missing_docs)]

pub mod control;
pub mod names;
pub mod paths;
pub mod setup;
pub mod trust;
