//! The server's integration tests, one binary: a real server on 127.0.0.1:0 over a temp data dir
//! ([`common`]), driven over HTTP, by the command-line tools, and by a headless browser.

mod accounts;
mod admission;
mod alerts;
mod browser;
mod browser_accounts;
mod browser_alerts;
mod browser_console;
mod browser_history_map;
mod cli;
mod common;
mod connections;
mod dashboard_browser;
mod data_dir;
mod decommission;
mod download;
mod edge_errors;
mod guards;
mod history_charts;
mod observability;
mod proxies;
mod replicas;
mod reverts;
mod robot_input;
mod rollout_flow;
mod s3_store;
mod security;
mod serve_config;
mod sites;
mod targets;
mod targets_cli;
mod timestamp;
mod tls_and_restart;
mod tls_recipe;
mod trust_chain;
mod uploads;
