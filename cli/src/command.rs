//! One module per subcommand.

pub(crate) mod daemon;
pub(crate) mod status;
