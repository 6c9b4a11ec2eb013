//! What the shims and `mesh` share: reaching `meshd` from a small,
//! synchronous program.
//!
//! The shims (gpg's `agent-program`, the askpass, the git credential
//! helper) and `mesh` itself use plain blocking sockets and no async
//! runtime, so they start in a millisecond. There is no cryptography here:
//! anything that needs a key is asked of `meshd`.

pub mod daemon;
