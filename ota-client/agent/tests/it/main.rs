//! The agent's integration tests, one binary: each former test file is a module, the shared
//! pieces are in [`common`] and the test kit. Tests run as threads of one process, so none sets
//! environment variables or changes the working directory; each robot lives in its own
//! temporary directory.

mod carried_chain;
mod chunked;
mod common;
mod daemon_cli;
mod floor;
mod freshness;
mod gates;
mod hardening;
mod hostile_server;
mod http;
mod kill;
mod power_cut;
mod power_cut_delta;
mod ranges;
mod scenarios;
mod trust;
