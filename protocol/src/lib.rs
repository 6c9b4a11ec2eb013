//! The Mathematical Mesh, as pure code.
//!
//! Two jobs, two groups. The Mesh itself, at the top level: fingerprints
//! ([`udf`]), keys ([`keys`]), Shamir escrow ([`shamir`]), DARE envelopes
//! and sequences ([`envelope`], [`merkle`], [`sequence`]), accounts,
//! devices and their records ([`account`], [`application`]) and the Mesh
//! service's messages ([`service`]). And the agent protocols meshd speaks
//! for programs we did not write ([`agent`]: SSH agent, Assuan,
//! S-expressions, keygrips). The third job, local IPC (the control
//! protocol, paths, setup blocks), is the crate `mesh-ipc`, which has no
//! crypto so that the shims link none.
//!
//! # Architecture invariant
//!
//! Nothing here does I/O of its own: no sockets, no files, no clock and no
//! random numbers taken implicitly. Whatever needs one of them takes it as a
//! parameter (an environment lookup, a `std::io::Read`, a time, an RNG), so
//! every function can be driven from a test or a fuzzer with fixed inputs.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod account;
pub mod agent;
pub mod application;
pub mod entry;
pub mod envelope;
pub mod keys;
pub mod merkle;
pub mod sequence;
pub mod service;
pub mod shamir;
pub mod udf;
