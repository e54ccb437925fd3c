//! One module per subcommand: an `Args` struct and a `run` function.

pub mod activate;
pub mod approve;
pub mod confirm;
pub mod daemon;
pub mod identity;
pub mod install;
pub mod mark;
pub mod status;
pub mod trust;
