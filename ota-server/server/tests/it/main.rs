//! The server's integration tests, one binary: a real server on 127.0.0.1:0 over a temp data dir
//! ([`common`]), driven over HTTP, by the command-line tools, and by a headless browser.

mod cli;
mod common;
mod dashboard_browser;
mod download;
mod guards;
mod observability;
mod replicas;
mod reverts;
mod rollout_flow;
mod s3_store;
mod security;
mod serve_config;
mod targets;
mod targets_cli;
mod tls_and_restart;
mod uploads;
