//! The Mathematical Mesh, as pure code.
//!
//! This crate holds the formats and rules of the Mesh and of our own wire
//! protocols: the messages `mesh` and the shims exchange with `meshd`
//! ([`control`]), the messages of the Mesh service ([`service`]) and where a
//! user's Mesh files and sockets live ([`paths`]). Later layers add UDF,
//! DARE envelopes and sequences, profiles, catalogs and Shamir escrow.
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
pub mod application;
pub mod assuan;
pub mod control;
pub mod envelope;
pub mod keygrip;
pub mod keys;
pub mod merkle;
pub mod paths;
pub mod sequence;
pub mod service;
pub mod setup;
pub mod sexp;
pub mod shamir;
pub mod ssh_agent;
pub mod udf;
