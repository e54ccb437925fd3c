//! ota-packaging's integration tests: the Debian packages end to end, and the install script's decision.

mod debs;
mod install_deps;
mod notify;
