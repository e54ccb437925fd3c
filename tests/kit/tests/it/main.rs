//! The test kit's own tests, one binary: the shipped boot scripts against the contract, and the kit's server.

mod admission;
mod boot_scripts;
mod fleet;
mod server;
