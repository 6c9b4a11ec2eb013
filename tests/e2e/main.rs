//! End-to-end tests: the real `mesh`, `meshd` and `mesh-service` binaries,
//! each test in a throwaway home, on loopback only. One test binary, one
//! module per area.

mod account;
mod approval;
mod blocks;
mod daemon;
mod doctor;
mod gpg;
mod keyring;
mod liveness;
mod memory;
mod quickstart;
mod service;
mod setup;
mod shims;
mod ssh;
mod units;
mod workspace;
