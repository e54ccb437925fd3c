//! Where `ota-server serve` gets its settings besides the command line: the config file ([`file`]) and the
//! trust root kept in the data directory ([`trust`]). Both decide in pure functions; the few reads and writes
//! sit at their edges.

pub mod file;
pub mod trust;
