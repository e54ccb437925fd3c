//! The simulated robot lives in the library (`ota_client::simulation`, feature
//! `simulation`) so the demo fleet and the end-to-end tests use the same one.

pub use ota_client::simulation::*;
