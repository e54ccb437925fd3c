//! Shared test support: a simulated robot ([`robot`]) and a small HTTP server ([`http`]).
#![allow(dead_code)]

pub mod http;
pub mod robot;
