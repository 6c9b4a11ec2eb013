//! The agent protocols meshd speaks for programs we did not write: the
//! SSH agent protocol (OpenSSH's PROTOCOL.agent, with its destination
//! constraints) and gpg-agent's Assuan, with the canonical S-expressions
//! and keygrips it uses.

pub mod assuan;
pub mod keygrip;
pub mod known_hosts;
pub mod sexp;
pub mod ssh_agent;
