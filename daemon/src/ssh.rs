//! The SSH agent frontend: the agent protocol on its socket, the keys it
//! signs with, destination constraints and confirmation prompts.

pub mod agent;
pub mod confirm;
pub mod keys;
