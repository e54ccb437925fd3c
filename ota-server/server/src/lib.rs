//! The OTA fleet server: release engineers publish signed bundles, robots enroll, poll, download and report,
//! operators roll updates out in stages and watch the fleet.
//!
//! * [`api::app`] builds the axum router over an [`state::AppState`]; [`server::open`] opens a data directory
//!   into one and [`server::serve`] serves it (HTTP or HTTPS) until told to stop.
//! * [`store::Store`] is the persistence trait ([`store::sqlite::SqliteStore`] is the embedded backend).
//! * [`rollout`] holds the pure rollout decisions.
//! * [`cli`] is the admin command-line client (`ota-server rollout ...`, `ota-server devices ...`).
//!
//! `ota-server/API.md` describes the HTTP API.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod assets;
pub mod auth;
pub mod bundle_store;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod rollout;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;

pub use api::app;
pub use error::{ApiError, StoreError};
pub use state::AppState;
