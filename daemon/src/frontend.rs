//! The sockets programs talk to: the control socket (`mesh`, the shims),
//! the SSH agent and gpg's agent. Each serves its protocol over
//! [`crate::server::accept_loop`] and reaches only the keystore, the
//! account's handle and the host; no frontend uses another.

pub mod control;
pub mod gpg_agent;
pub mod ssh_agent;
