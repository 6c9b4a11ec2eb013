//! One module per subcommand.

pub(crate) mod account;
pub(crate) mod approve;
pub(crate) mod daemon;
pub(crate) mod dare;
pub(crate) mod doctor;
pub(crate) mod input;
pub(crate) mod key;
pub(crate) mod openpgp;
pub(crate) mod setup;
pub(crate) mod ssh;
pub(crate) mod status;
pub(crate) mod udf;
